#!/bin/sh
# The kernel matrix's scenario (`cargo xtask test-kernels`): one run of lockdown's verbs on a veth
# pair between two network namespaces, the same on every kernel, in a QEMU guest (from /init) and
# natively on the host. Run it with busybox sh, so that nsenter, timeout and friends are the same
# applets everywhere.
#
# Prints one line per check, `LDK-RESULT <check> PASS|FAIL <detail>`, and per eBPF program loaded
# by the model-vs-program test, `LDK-PROG <name> type=<t> xlated=<insns> verified=<insns>`, and
# last `LDK-EXIT <status>`. Exits non-zero if any check failed.
#
# Environment:
#   LOCKDOWN            the lockdown binary (required)
#   LOCKDOWN_PIN_ROOT   a private pin root on bpffs (required; created and removed here)
#   LOCKDOWN_RUN_DIR    a private run directory (required; created and removed here)
#   MODEL_VS_BPF        the compiled `model_vs_bpf` test executable (required)
#   MODEL_CASES         its number of test runs (LOCKDOWN_MODEL_CASES; required)
#   MODEL_SEED          its seed (LOCKDOWN_MODEL_SEED; required)
#   LDK_TAG             namespace name prefix (default ldk); the namespaces are $LDK_TAG-o/-p
#
# Everything in a namespace runs under `nsenter --net=/run/netns/NAME`, never `ip netns exec`
# (it remounts /sys, and the bpffs pins would vanish). iproute2's `ip`/`tc` and netcat-openbsd are
# called by path: busybox sh would run its own `ip`, `tc` and `nc` applets for the bare names.

set -u

: "${LOCKDOWN:?}" "${LOCKDOWN_PIN_ROOT:?}" "${LOCKDOWN_RUN_DIR:?}" "${MODEL_VS_BPF:?}"
: "${MODEL_CASES:?}" "${MODEL_SEED:?}"
export LOCKDOWN_PIN_ROOT LOCKDOWN_RUN_DIR
# The lockout guard looks at $SSH_CONNECTION; the sandbox serves no SSH session.
unset SSH_CONNECTION
TAG=${LDK_TAG:-ldk}

IP=/usr/sbin/ip
TC=/usr/sbin/tc
NC=/usr/bin/nc.openbsd
BPFTOOL=/usr/sbin/bpftool

O=$TAG-o
P=$TAG-p
OIF=ldk0
PIF=ldk1
O4=10.231.7.1
P4=10.231.7.2
O6=fd00:231:7::1
P6=fd00:231:7::2

WORK=$(mktemp -d)
PIDS=""
FAILED=0
WHY=""

in_o() { nsenter --net="/run/netns/$O" "$@"; }
in_p() { nsenter --net="/run/netns/$P" "$@"; }
# A background command in namespace $1. nsenter execs it, so $! is the command itself.
bg_in() { # NS COMMAND...
    ns=$1
    shift
    nsenter --net="/run/netns/$ns" "$@" &
    PIDS="$PIDS $!"
}

# lockdown in the origin namespace, bounded; its output goes to the console, indented, and its
# last line is kept in $WORK/last for the failure detail.
ld() {
    in_o timeout 120 "$LOCKDOWN" "$@" >"$WORK/out" 2>&1
    rc=$?
    sed 's/^/    | /' "$WORK/out"
    tail -n 1 "$WORK/out" >"$WORK/last"
    return $rc
}
ld_ok() {
    ld "$@" || { WHY="lockdown $*: $(cat "$WORK/last")"; return 1; }
}

# One TCP connect from the peer to ADDR PORT, waiting at most WAIT seconds.
connects() { # ADDR PORT WAIT
    in_p timeout $(($3 + 3)) $NC -z -n -w "$3" "$1" "$2" </dev/null >/dev/null 2>&1
}
open() { # ADDR PORT
    connects "$1" "$2" 3 || { WHY="tcp/$2 on $1 did not connect"; return 1; }
}
# A dropped SYN costs the probe's one-second wait.
dropped() { # ADDR PORT
    if connects "$1" "$2" 1; then
        WHY="tcp/$2 on $1 connected, but lockdown should have dropped it"
        return 1
    fi
}

# Lockdown holds the interface: `status` answers and an XDP program sits on the link.
attached() {
    if ! in_o "$LOCKDOWN" status --iface $OIF >"$WORK/status" 2>&1; then
        WHY="not locked down: lockdown status: $(tail -n 1 "$WORK/status")"
        return 1
    fi
    in_o $IP -d link show dev $OIF | grep -q 'prog/xdp' || {
        WHY="no XDP program on $OIF"
        return 1
    }
}

# A packet counter from `status --json`'s "counters" object (0 if absent).
counter() {
    in_o "$LOCKDOWN" status --iface $OIF --json 2>/dev/null | tr -d ' \n' |
        sed -n 's/.*"counters":{\([^}]*\)}.*/\1/p' | grep -o "\"$1\":[0-9]*" | cut -d: -f2 |
        grep . || echo 0
}

check() { # NAME FUNCTION
    WHY=""
    start=$(date +%s)
    echo "==> check $1"
    if "$2"; then
        echo "LDK-RESULT $1 PASS $(($(date +%s) - start))s"
    else
        echo "LDK-RESULT $1 FAIL ${WHY:-failed}"
        FAILED=1
    fi
}

setup() {
    for ns in $O $P; do
        [ -e "/run/netns/$ns" ] && $IP netns del "$ns"
        $IP netns add "$ns" || return 1
    done
    $IP link add $OIF netns $O type veth peer name $PIF netns $P || return 1
    for side in "o $OIF $O4 $O6" "p $PIF $P4 $P6"; do
        set -- $side
        nsenter --net="/run/netns/$TAG-$1" sh -c "
            $IP link set lo up &&
            $IP addr add $3/24 dev $2 &&
            $IP addr add $4/64 dev $2 nodad &&
            $IP link set $2 up" || return 1
    done
    mkdir -p "$LOCKDOWN_PIN_ROOT" "$LOCKDOWN_RUN_DIR"
    # The origin's services: tcp/22 and tcp/8080 accept and discard; the peer's tcp/9000 answers
    # every connection with one line.
    for port in 22 8080; do
        for addr in $O4 $O6; do
            bg_in $O $NC -dlkn $addr $port </dev/null >/dev/null 2>&1
        done
    done
    bg_in $P busybox nc -ll -p 9000 -e /bin/echo LDK-REPLY </dev/null >/dev/null 2>&1
    # Ready when every listener answers (nothing attached yet).
    i=0
    while ! { open $O4 22 && open $O6 22 && open $O4 8080 && open $O6 8080; }; do
        i=$((i + 1))
        [ $i -ge 20 ] && return 1
        sleep 0.5
    done
}

teardown() {
    [ -e "/run/netns/$O" ] && in_o "$LOCKDOWN" down --iface $OIF >/dev/null 2>&1
    [ -e "/run/netns/$P" ] && in_p env LOCKDOWN_PIN_ROOT="$LOCKDOWN_PIN_ROOT-peer" \
        LOCKDOWN_RUN_DIR="$LOCKDOWN_RUN_DIR-peer" "$LOCKDOWN" down --iface $PIF >/dev/null 2>&1
    for pid in $PIDS; do kill "$pid" 2>/dev/null; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null; done
    for ns in $O $P; do [ -e "/run/netns/$ns" ] && $IP netns del "$ns"; done
    rm -rf "$LOCKDOWN_PIN_ROOT" "$LOCKDOWN_RUN_DIR" "$LOCKDOWN_PIN_ROOT-peer" \
        "$LOCKDOWN_RUN_DIR-peer" "$WORK"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------- the checks

c_up_skb() {
    ld_ok up --iface $OIF --mode skb --allow tcp/22 || return 1
    attached && open $O4 22 && open $O6 22 && dropped $O4 8080 && dropped $O6 8080 || return 1
    in_o $IP link show dev $OIF | grep -qw xdpgeneric || {
        WHY="--mode skb attached no generic XDP program"
        return 1
    }
    ld_ok down --iface $OIF
}

c_up_native() {
    ld_ok up --iface $OIF --allow tcp/22 --allow tcp/2222 || return 1
    attached && open $O4 22 && open $O6 22 && dropped $O4 8080 && dropped $O6 8080 || return 1
    in_o $IP link show dev $OIF | grep -qw xdp || {
        WHY="no native XDP program on $OIF"
        return 1
    }
}

c_allow_live() {
    attached || return 1
    ld_ok allow add tcp/8080 --iface $OIF && open $O4 8080 && open $O6 8080 || return 1
    ld_ok allow del tcp/8080 --iface $OIF && dropped $O4 8080 && dropped $O6 8080 && open $O4 22
}

# The origin connects out to the peer's tcp/9000: the SYN-ACK and the answer reach it although
# no rule opens the origin's ephemeral port.
c_outbound() {
    attached || return 1
    for addr in $P4 $P6; do
        got=$(in_o timeout 8 $NC -n -w 3 $addr 9000 </dev/null 2>&1)
        [ "$got" = LDK-REPLY ] || {
            WHY="connection from the origin to $addr tcp/9000 got '$got', not LDK-REPLY"
            return 1
        }
    done
}

# A UDP probe from the origin to a closed port of the peer (traceroute, one hop): the peer's
# port-unreachable quotes it and must pass as related.
c_icmp_related() {
    attached || return 1
    before=$(counter pass_related)
    for t in "traceroute $P4" "traceroute6 $P6"; do
        set -- $t
        out=$(in_o timeout 10 busybox "$1" -n -q 1 -w 2 -m 1 "$2" 2>&1)
        echo "$out" | grep -q "^ *1  *$2 " || {
            WHY="$1: no port-unreachable from $2 came back: $(echo "$out" | tail -n 1)"
            return 1
        }
    done
    after=$(counter pass_related)
    [ "$after" -ge $((before + 2)) ] || {
        WHY="pass_related went from $before to $after, expected +2"
        return 1
    }
}

c_deny_expiry() {
    attached || return 1
    ld_ok deny add $P4 --for 4s --iface $OIF || return 1
    added=$(date +%s)
    dropped $O4 22 && open $O6 22 || return 1
    # Expiry is enforced in the datapath: no lockdown command runs until the source is back.
    sleep $((added + 6 - $(date +%s)))
    open $O4 22 || { WHY="still dropped after the 4 s deny expired: $WHY"; return 1; }
}

c_rate_limit() {
    attached || return 1
    ld_ok allow add tcp/22 --rate 1/min --burst 2 --iface $OIF || return 1
    open $O4 22 && open $O4 22 || return 1
    dropped $O4 22 || { WHY="third connection within the burst of 2: $WHY"; return 1; }
    open $O6 22 || { WHY="another source was limited: $WHY"; return 1; }
    ld_ok allow add tcp/22 --rate none --iface $OIF && open $O4 22
}

c_run_sigkill() {
    ld down --iface $OIF >/dev/null
    nsenter --net="/run/netns/$O" "$LOCKDOWN" run --iface $OIF --allow tcp/22 --allow tcp/2222 \
        >"$WORK/run.log" 2>&1 &
    pid=$!
    i=0
    until in_o "$LOCKDOWN" status --iface $OIF >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 120 ] || ! kill -0 $pid 2>/dev/null; then
            WHY="lockdown run did not lock $OIF down: $(tail -n 1 "$WORK/run.log")"
            kill -9 $pid 2>/dev/null
            return 1
        fi
        sleep 0.5
    done
    kill -9 $pid
    wait $pid 2>/dev/null
    kill -0 $pid 2>/dev/null && { WHY="lockdown run survived SIGKILL"; return 1; }
    attached && open $O4 22 && open $O6 22 && dropped $O4 8080 && dropped $O6 8080
}

# An established stream to tcp/2222 (ten lines a second) and a loop of new connections to tcp/22
# (two a second) run while `up --replace` swaps the programs: the stream loses nothing and stays
# up, every connect succeeds. Gentle rates: under TCG they share one vCPU with the verifier.
c_replace() {
    attached || return 1
    rm -f "$WORK/stop" "$WORK/stream" "$WORK/connects"
    nsenter --net="/run/netns/$O" $NC -dln $O4 2222 >"$WORK/stream" 2>/dev/null &
    server=$!
    sleep 0.3
    (
        i=0
        while [ ! -e "$WORK/stop" ]; do
            echo "line $i"
            i=$((i + 1))
            sleep 0.1
        done
    ) | nsenter --net="/run/netns/$P" $NC -n -N $O4 2222 &
    client=$!
    (
        while [ ! -e "$WORK/stop" ]; do
            if connects $O4 22 3; then echo ok; else echo fail; fi
            sleep 0.5
        done >"$WORK/connects"
    ) &
    loop=$!
    sleep 1
    n0=$(wc -l <"$WORK/stream")
    ld_ok up --replace --iface $OIF
    replaced=$?
    sleep 1
    n1=$(wc -l <"$WORK/stream")
    sleep 1
    n2=$(wc -l <"$WORK/stream")
    touch "$WORK/stop"
    wait $client
    client_rc=$?
    wait $loop
    # The client ends once the server has read everything and closed; a server whose client
    # never connected would wait forever.
    kill $server 2>/dev/null
    wait $server 2>/dev/null
    [ $replaced -eq 0 ] || return 1
    last=$(tail -n 1 "$WORK/stream" | cut -d' ' -f2)
    lines=$(wc -l <"$WORK/stream")
    ok=$(grep -c ok "$WORK/connects")
    fail=$(grep -c fail "$WORK/connects")
    echo "    stream: $n0 lines before --replace, $n1 and $n2 after, $lines in all; connects: $ok ok, $fail failed"
    [ "$n0" -gt 0 ] && [ "$n2" -gt "$n1" ] || { WHY="the stream stopped flowing ($n0, $n1, $n2 lines)"; return 1; }
    [ $client_rc -eq 0 ] && [ "$last" = $((lines - 1)) ] || {
        WHY="the stream broke (client exit $client_rc, last line $last of $lines)"
        return 1
    }
    [ "$fail" -eq 0 ] && [ "$ok" -gt 0 ] || { WHY="$fail of $((ok + fail)) connects failed"; return 1; }
    attached && dropped $O4 8080
}

c_down() {
    attached || return 1
    ld_ok down --iface $OIF || return 1
    if in_o $IP -d link show dev $OIF | grep -q 'prog/xdp'; then
        WHY="an XDP program is still on $OIF"
        return 1
    fi
    for dir in ingress egress; do
        f=$(in_o $TC filter show dev $OIF $dir 2>/dev/null)
        [ -z "$f" ] || { WHY="a tc $dir filter is left on $OIF: $f"; return 1; }
    done
    [ -z "$(ls -A "$LOCKDOWN_PIN_ROOT" 2>/dev/null)" ] || {
        WHY="pins left: $(ls -A "$LOCKDOWN_PIN_ROOT")"
        return 1
    }
    if in_o "$LOCKDOWN" status --iface $OIF >/dev/null 2>&1; then
        WHY="lockdown status still reports $OIF locked down"
        return 1
    fi
    open $O4 8080 && open $O6 8080
}

# The kernel's version as a number: 6.12 is 612.
kver() { uname -r | awk -F. '{ printf "%d", $1 * 100 + $2 }'; }

# lockdown on the peer, with pins and run directory of its own: a veth delivers the origin's
# XDP_TX frames (the cookie SYN-ACKs) only to a peer with an XDP program of its own.
peer_ld() {
    in_p env LOCKDOWN_PIN_ROOT="$LOCKDOWN_PIN_ROOT-peer" LOCKDOWN_RUN_DIR="$LOCKDOWN_RUN_DIR-peer" \
        timeout 120 "$LOCKDOWN" "$@" >"$WORK/peer" 2>&1 || {
        WHY="peer lockdown $*: $(tail -n 1 "$WORK/peer")"
        return 1
    }
}

# SYN cookies where the kernel can hand a cookie ACK to its listener (Linux 6.9+): with
# `--syn-cookies on`, every connection to tcp/22 is answered from XDP and its ACK handed over, and
# works. Without it (6.1): `on` is refused and leaves nothing attached, and `auto` says so once
# and runs with the kernel's own handshake.
c_syn_cookies() {
    if [ "$(kver)" -ge 609 ]; then
        ld_ok up --iface $OIF --allow tcp/22 --syn-cookies on || return 1
        peer_ld up --iface $PIF --allow tcp/9000 --syn-cookies off || return 1
        attached && open $O4 22 && open $O6 22 || return 1
        sent=$(counter syn_cookie_sent)
        acks=$(counter pass_syn_cookie_ack)
        echo "    syn_cookie_sent $sent, pass_syn_cookie_ack $acks"
        [ "$sent" -ge 2 ] && [ "$acks" -ge 2 ] || {
            WHY="two connections made $sent cookies and $acks cookie ACKs"
            return 1
        }
        in_o "$LOCKDOWN" status --iface $OIF --json | tr -d ' \n' | grep -q '"answering":true' || {
            WHY="status does not say the cookies answer"
            return 1
        }
        peer_ld down --iface $PIF || return 1
    else
        if ld up --iface $OIF --allow tcp/22 --syn-cookies on; then
            WHY="--syn-cookies on was accepted without bpf_sk_assign_tcp_reqsk"
            return 1
        fi
        if in_o $IP -d link show dev $OIF | grep -q 'prog/xdp'; then
            WHY="a refused up left an XDP program on $OIF"
            return 1
        fi
        ld_ok up --iface $OIF --allow tcp/22 || return 1
        n=$(grep -c '^syn cookies: off' "$WORK/out")
        [ "$n" -eq 1 ] || { WHY="up printed the cookie notice $n times, not once"; return 1; }
        attached && open $O4 22 && open $O6 22 && dropped $O4 8080 || return 1
        in_o "$LOCKDOWN" status --iface $OIF --json | tr -d ' \n' | grep -q '"answering":false' || {
            WHY="status does not say the cookies cannot answer"
            return 1
        }
    fi
    ld_ok down --iface $OIF
}

# Prints an LDK-PROG line for each eBPF program process $1 holds that is not in file $2 yet
# (from its fdinfo; the name, which the kernel cuts to 15 characters, and the translated length
# from bpftool when it is there), and adds its id to $2.
prog_stats() { # PID SEEN
    for fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = anon_inode:bpf-prog ] || continue
        info=/proc/$1/fdinfo/${fd##*/}
        id=$(sed -n 's/^prog_id:[[:space:]]*//p' "$info")
        [ -n "$id" ] && ! grep -qx "$id" "$2" || continue
        echo "$id" >>"$2"
        type=$(sed -n 's/^prog_type:[[:space:]]*//p' "$info")
        verified=$(sed -n 's/^verified_insns:[[:space:]]*//p' "$info")
        name="" xlated="?"
        if [ -x $BPFTOOL ]; then
            show=$($BPFTOOL prog show id "$id" 2>/dev/null)
            name=$(echo "$show" | sed -n 's/.* name \([^ ]*\) .*/\1/p' | head -n 1)
            bytes=$(echo "$show" | sed -n 's/.*xlated \([0-9]*\)B.*/\1/p')
            [ -n "$bytes" ] && xlated=$((bytes / 8))
        fi
        # The harness's own kernel probes (tiny unnamed programs) are not lockdown's.
        [ -x $BPFTOOL ] && [ -z "$name" ] && continue
        echo "LDK-PROG ${name:-type$type} type=$type xlated=$xlated verified=${verified:-?}"
    done
}

c_model_vs_bpf() {
    # The test ages entries against the uptime and wants 40 s of it.
    up=$(cut -d. -f1 /proc/uptime)
    [ "$up" -lt 42 ] && sleep $((42 - up))
    LOCKDOWN_MODEL_CASES=$MODEL_CASES LOCKDOWN_MODEL_SEED=$MODEL_SEED "$MODEL_VS_BPF" --test-threads=1 --nocapture \
        >"$WORK/model" 2>&1 &
    pid=$!
    deadline=$(($(date +%s) + 600))
    # Its programs stay loaded while it runs: read their statistics then.
    : >"$WORK/progs"
    while kill -0 $pid 2>/dev/null; do
        if [ "$(date +%s)" -ge $deadline ]; then
            kill -9 $pid
            WHY="did not finish within 600 s"
            return 1
        fi
        prog_stats $pid "$WORK/progs"
        sleep 0.5
    done
    wait $pid
    rc=$?
    sed 's/^/    | /' "$WORK/model" | grep -v '^    | *$'
    [ $rc -eq 0 ] || { WHY="exit $rc: $(grep -m 1 -E 'panicked|disagreement|error' "$WORK/model")"; return 1; }
}

echo "LDK-KERNEL $(uname -r)"
if ! setup; then
    echo "LDK-RESULT setup FAIL namespaces, veth or listeners could not be set up"
    echo "LDK-EXIT 1"
    exit 1
fi
check up-skb c_up_skb
check up-native c_up_native
check allow-live c_allow_live
check outbound-flow c_outbound
check icmp-related c_icmp_related
check deny-expiry c_deny_expiry
check rate-limit c_rate_limit
check run-sigkill c_run_sigkill
check replace-under-traffic c_replace
check down-clean c_down
check syn-cookies c_syn_cookies
check model-vs-bpf c_model_vs_bpf
echo "LDK-EXIT $FAILED"
exit $FAILED
