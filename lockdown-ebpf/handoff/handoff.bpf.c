// SPDX-License-Identifier: GPL-2.0
/*
 * lockdown's SYN-cookie hand-off (TC ingress, TCX).
 *
 * The XDP cookie stage (Rust, lockdown-common/src/stages/syncookie.rs) validates the cookie in a
 * handshake's ACK and puts a HandoffMeta (lockdown-common/src/contract/syncookie.rs: the
 * bpf_tcp_req_attrs, then the magic "LDck") in the XDP metadata, right in front of the frame.
 * This program only hands such an ACK to its listener with the kfunc bpf_sk_assign_tcp_reqsk(),
 * after which the kernel builds the socket (cookie_bpf_check). It decides nothing: every packet
 * without lockdown's metadata goes on untouched (TCX_NEXT). It is C because the kfunc call needs
 * BTF for an extern function, which the Rust eBPF toolchain does not emit.
 *
 * Built by lockdown-user/build.rs with clang; loaded by the loader only when the kernel has the
 * kfunc (lockdown-user/src/attach/cookies.rs).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

/* include/linux/bpf.h in the kernel (not in the uapi headers): = ReqAttrs in the contract. */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

/* = HandoffMeta in the contract: 24 bytes ending where the frame starts. */
struct handoff_meta {
	struct bpf_tcp_req_attrs attrs;
	__u32 magic;
};

_Static_assert(sizeof(struct bpf_tcp_req_attrs) == 20, "bpf_tcp_req_attrs is 20 bytes");
_Static_assert(sizeof(struct handoff_meta) == 24, "HandoffMeta is 24 bytes");

/* "LDck", little-endian, as META_MAGIC. */
#define META_MAGIC 0x6b63444cu

/* A complete (if empty) type: aya matches the extern's BTF against the kernel's kind by kind, and
 * a forward declaration (BTF_KIND_FWD) does not match the kernel's BTF_KIND_STRUCT. */
struct sock {
};

extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz) __ksym;

/* Indices = HandoffCounter in the contract. */
enum {
	HANDOFF_ASSIGNED = 0,
	HANDOFF_NO_LISTENER = 1,
	HANDOFF_ASSIGN_FAILED = 2,
	HANDOFF_FOREIGN = 3,
	HANDOFF_COUNTERS_LEN = 4,
};

/* Per-CPU: the loader sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HANDOFF_COUNTERS_LEN);
	__type(key, __u32);
	__type(value, __u64);
} LD_HANDOFF SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&LD_HANDOFF, &index);

	if (v)
		*v += 1;
}

SEC("classifier")
int lockdown_handoff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct handoff_meta *meta = (void *)(long)skb->data_meta;
	struct bpf_tcp_req_attrs attrs;
	struct bpf_sock_tuple tuple = {};
	struct ethhdr *eth = data;
	struct bpf_sock *sk;
	struct tcphdr *th;
	__u32 tuple_size;
	int ret;

	if ((void *)(meta + 1) > data)
		return TCX_NEXT; /* no metadata, or too little: not the cookie stage's */
	if (meta->magic != META_MAGIC) {
		count(HANDOFF_FOREIGN);
		return TCX_NEXT;
	}
	__builtin_memcpy(&attrs, &meta->attrs, sizeof(attrs));

	if ((void *)(eth + 1) > data_end)
		return TCX_NEXT;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 ihl;

		if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP)
			return TCX_NEXT;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return TCX_NEXT;
		th = (void *)ip + ihl;
		if ((void *)(th + 1) > data_end)
			return TCX_NEXT;
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple.ipv4.sport = th->source;
		tuple.ipv4.dport = th->dest;
		tuple_size = sizeof(tuple.ipv4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
			return TCX_NEXT;
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > data_end)
			return TCX_NEXT;
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, sizeof(tuple.ipv6.saddr));
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, sizeof(tuple.ipv6.daddr));
		tuple.ipv6.sport = th->source;
		tuple.ipv6.dport = th->dest;
		tuple_size = sizeof(tuple.ipv6);
	} else {
		return TCX_NEXT;
	}

	/* bpf_sk_lookup_tcp, not bpf_skc_lookup_tcp: the kfunc takes a full socket (the verifier
	 * refuses a sock_common), and a listener is one. */
	sk = bpf_sk_lookup_tcp(skb, &tuple, tuple_size, BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		count(HANDOFF_NO_LISTENER);
		return TC_ACT_OK;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		/* A socket of this 4-tuple exists already (a retransmitted ACK): the kernel's. */
		bpf_sk_release(sk);
		return TCX_NEXT;
	}
	ret = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)sk, &attrs, sizeof(attrs));
	bpf_sk_release(sk);
	count(ret == 0 ? HANDOFF_ASSIGNED : HANDOFF_ASSIGN_FAILED);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
