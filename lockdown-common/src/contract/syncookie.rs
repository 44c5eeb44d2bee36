//! SYN cookies: what the loader, the XDP cookie stage and the TC hand-off agree on.
//!
//! While cookies are engaged on an allowed TCP port, the XDP cookie program
//! ([`COOKIE_PROG`], reached by a tail call from the ingress program through [`COOKIE_PROGS`])
//! answers each SYN itself with a SYN-ACK whose sequence number is a cookie (nothing stored), and
//! checks the handshake's ACK. A valid ACK goes up with a [`HandoffMeta`] in front of the frame
//! (XDP metadata); the TC ingress program [`HANDOFF_PROG`] (C: the kfunc needs BTF that the Rust
//! toolchain cannot emit) hands it to the listener with `bpf_sk_assign_tcp_reqsk()`, and the
//! kernel builds the socket. Every decision is made in Rust, in
//! [`crate::stages::syncookie`].

use bytemuck::{Pod, Zeroable};

/// The cookie configuration (array of one [`CookieConfig`]), written by the loader.
pub const SYNCOOKIE: &str = "LD_SYNCOOKIE";
/// The per-port SYN-flood detector (array of [`SYN_PORTS_ENTRIES`] [`PortFlood`], indexed by TCP
/// port).
pub const SYN_PORTS: &str = "LD_SYN_PORTS";
/// Entries of [`SYN_PORTS`]: every TCP port.
pub const SYN_PORTS_ENTRIES: u32 = 65_536;
/// The tail-call table of the ingress program (program array of one): index [`COOKIE_SLOT`] holds
/// [`COOKIE_PROG`] when the kernel can hand a cookie ACK over (empty otherwise: the tail call falls
/// through and the packet keeps the verdict it had).
pub const COOKIE_PROGS: &str = "LD_COOKIE_PROGS";
/// The slot of [`COOKIE_PROG`] in [`COOKIE_PROGS`].
pub const COOKIE_SLOT: u32 = 0;
/// The XDP cookie program (multi-buffer, like the ingress program that tail-calls it).
pub const COOKIE_PROG: &str = "lockdown_cookie";
/// The TC ingress hand-off program, in the separate C object.
pub const HANDOFF_PROG: &str = "lockdown_handoff";
/// The hand-off's own counters (array of [`HANDOFF_COUNTERS_LEN`] `u64`, in the C object): see
/// [`HandoffCounter`].
pub const HANDOFF_COUNTERS: &str = "LD_HANDOFF";
/// Entries of [`HANDOFF_COUNTERS`].
pub const HANDOFF_COUNTERS_LEN: u32 = 4;

/// What the TC hand-off counts (indices of [`HANDOFF_COUNTERS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffCounter {
    /// Validated cookie ACKs given to their listener (`bpf_sk_assign_tcp_reqsk` returned 0).
    Assigned = 0,
    /// The listener was gone by the time the ACK reached TC: the kernel answers with a reset.
    NoListener = 1,
    /// `bpf_sk_assign_tcp_reqsk` refused (the listener's options, memory): the kernel answers
    /// with a reset and the client retries.
    AssignFailed = 2,
    /// Metadata that was not lockdown's (wrong magic): left alone.
    Foreign = 3,
}

impl HandoffCounter {
    pub const ALL: [Self; 4] = [
        Self::Assigned,
        Self::NoListener,
        Self::AssignFailed,
        Self::Foreign,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Assigned => "handoff_assigned",
            Self::NoListener => "handoff_no_listener",
            Self::AssignFailed => "handoff_assign_failed",
            Self::Foreign => "handoff_foreign_meta",
        }
    }
}

/// `syn_cookies = "off"`: the kernel's own handshake, always.
pub const MODE_OFF: u32 = 0;
/// `syn_cookies = "auto"`: cookies on a port while its SYN rate is above the threshold, and for
/// the calm period after.
pub const MODE_AUTO: u32 = 1;
/// `syn_cookies = "on"`: cookies on every allowed TCP port, always.
pub const MODE_ON: u32 = 2;

/// Default engage threshold: SYNs per second to one port. A busy origin's legitimate new-connection
/// rate per port is far below it for SSH and well below the rate where the kernel's own listener
/// work starts to cost a core (about 450 000 SYN/s per core for kernel syncookies); well above
/// any burst of real clients to SSH. README: "SYN cookies".
pub const DEFAULT_THRESHOLD: u32 = 1_000;
/// Default calm period: seconds below the threshold before cookies disengage.
pub const DEFAULT_CALM_SECS: u32 = 30;

/// The detector's window: `now_ns >> WINDOW_SHIFT` (about 1.07 s).
pub const WINDOW_SHIFT: u32 = 30;
/// The cookie's time period: `now_ns >> PERIOD_SHIFT` (about 68.7 s). A cookie is accepted in
/// its own period and the next, so for 68 to 137 s.
pub const PERIOD_SHIFT: u32 = 36;

/// Everything the cookie stage reads (array of one). 72 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CookieConfig {
    /// SipHash-2-4 keys, by key generation parity: a cookie carries the parity of the key that
    /// made it, so the previous key is still accepted after a rotation.
    pub keys: [[u64; 2]; 2],
    /// [`MODE_OFF`], [`MODE_AUTO`] or [`MODE_ON`].
    pub mode: u32,
    /// SYNs per detector window to one port above which cookies engage (`auto`).
    pub threshold: u32,
    /// Detector windows below the threshold before cookies disengage.
    pub calm: u32,
    /// The current key generation; `keys[key_gen & 1]` signs new cookies.
    pub key_gen: u32,
    /// The MSS values an IPv4 cookie can encode (index 0..4, ascending), from the interface MTU.
    pub mss4: [u16; 4],
    /// The same for IPv6.
    pub mss6: [u16; 4],
    /// The window scale the origin offers in its SYN-ACK (what the kernel's own handshake would:
    /// `tcp_select_initial_window` over `tcp_rmem`), at most 14.
    pub rcv_wscale: u32,
    pub _pad: u32,
}

impl CookieConfig {
    /// Off: what a zeroed map entry means too.
    pub const OFF: Self = Self {
        keys: [[0; 2]; 2],
        mode: MODE_OFF,
        threshold: DEFAULT_THRESHOLD,
        calm: DEFAULT_CALM_SECS,
        key_gen: 0,
        mss4: MSS4_1500,
        mss6: MSS6_1500,
        rcv_wscale: 7,
        _pad: 0,
    };
}

/// The kernel's IPv4 cookie MSS table (`msstab` in net/ipv4/syncookies.c) at MTU 1500.
pub const MSS4_1500: [u16; 4] = [536, 1300, 1440, 1460];
/// The kernel's IPv6 cookie MSS table (net/ipv6/syncookies.c) at MTU 1500.
pub const MSS6_1500: [u16; 4] = [1220, 1420, 1440, 1440];

/// The MSS tables for an interface MTU: the kernel's, with the top entry following the MTU (a
/// jumbo-frame origin keeps its large segments).
pub const fn mss_tables(mtu: u32) -> ([u16; 4], [u16; 4]) {
    let mut v4 = MSS4_1500;
    let mut v6 = MSS6_1500;
    let top4 = mtu.saturating_sub(40);
    let top6 = mtu.saturating_sub(60);
    if top4 > v4[3] as u32 {
        v4[3] = if top4 > 0xffff { 0xffff } else { top4 as u16 };
    }
    if top6 > v6[3] as u32 {
        v6[3] = if top6 > 0xffff { 0xffff } else { top6 as u16 };
    }
    (v4, v6)
}

/// One port's SYN-flood detector (16 bytes). Written by every CPU without locks: a lost
/// increment only delays engaging by a SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortFlood {
    /// The detector window `count` belongs to.
    pub window: u32,
    /// SYNs to the port seen in `window`.
    pub count: u32,
    /// The last window whose count went over the threshold (0: never).
    pub flood_window: u32,
    /// Reserved (zero): the entry stays 16 bytes.
    pub _reserved: u32,
}

/// The part of [`CookieConfig`] the flood detector runs on (12 bytes: what the ingress program
/// copies onto its stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detector {
    pub mode: u32,
    pub threshold: u32,
    pub calm: u32,
}

impl CookieConfig {
    /// Whether keys were ever written (a zeroed entry has none: nothing it "signs" counts).
    pub const fn has_keys(&self) -> bool {
        self.keys[0][0] | self.keys[0][1] | self.keys[1][0] | self.keys[1][1] != 0
    }

    /// Rotates in `key`: it goes into the other generation's slot and signs from now on, and the
    /// key it replaces as the signer stays in its slot, still accepted (the cookie carries the
    /// parity of the key that signed it). Two rotations retire a key.
    pub const fn rotate(&mut self, key: [u64; 2]) {
        self.key_gen = self.key_gen.wrapping_add(1);
        self.keys[(self.key_gen & 1) as usize] = key;
    }

    pub const fn detector(&self) -> Detector {
        Detector {
            mode: self.mode,
            threshold: self.threshold,
            calm: self.calm,
        }
    }
}

impl PortFlood {
    /// Whether cookies answer SYNs to this port in detector window `window` under `config`:
    /// always with [`MODE_ON`]; with [`MODE_AUTO`] from the window the SYN count went over the
    /// threshold until `calm` windows have passed without it doing so again.
    pub const fn engaged(&self, config: &CookieConfig, window: u32) -> bool {
        self.engaged_by(config.detector(), window)
    }

    /// [`PortFlood::engaged`] under a detector's settings.
    pub const fn engaged_by(&self, d: Detector, window: u32) -> bool {
        match d.mode {
            MODE_ON => true,
            MODE_AUTO => self.flood_window != 0 && window.wrapping_sub(self.flood_window) <= d.calm,
            _ => false,
        }
    }

    /// Counts one SYN seen in `window`; returns whether cookies answer it. With [`MODE_AUTO`],
    /// the SYN that takes the window's count over the threshold is the first answered.
    pub const fn count_syn(&mut self, d: Detector, window: u32) -> bool {
        if self.window != window {
            self.window = window;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > d.threshold && self.flood_window != window {
            self.flood_window = window;
        }
        self.engaged_by(d, window)
    }
}

/// The detector window of a `CLOCK_MONOTONIC_COARSE` time in ns (never 0, which means "never").
pub const fn window_of(now_ns: u64) -> u32 {
    let w = (now_ns >> WINDOW_SHIFT) as u32;
    if w == 0 { 1 } else { w }
}

/// Marks [`HandoffMeta`] as lockdown's: "LDck".
pub const META_MAGIC: u32 = u32::from_le_bytes(*b"LDck");

/// `struct bpf_tcp_req_attrs` (include/linux/bpf.h users: net/core/filter.c), the kfunc's
/// argument: 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReqAttrs {
    pub rcv_tsval: u32,
    pub rcv_tsecr: u32,
    pub mss: u16,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub ecn_ok: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub tstamp_ok: u8,
    pub usec_ts_ok: u8,
    pub reserved: [u8; 3],
}

/// What the XDP cookie stage puts in front of a validated cookie ACK (XDP metadata, 24 bytes,
/// ending where the frame starts) for the TC hand-off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HandoffMeta {
    pub attrs: ReqAttrs,
    /// [`META_MAGIC`].
    pub magic: u32,
}

const _: () = assert!(size_of::<CookieConfig>() == 72);
const _: () = assert!(size_of::<ReqAttrs>() == 20);
const _: () = assert!(size_of::<HandoffMeta>() == 24);
const _: () = assert!(size_of::<PortFlood>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(threshold: u32, calm: u32) -> CookieConfig {
        CookieConfig {
            mode: MODE_AUTO,
            threshold,
            calm,
            ..CookieConfig::OFF
        }
    }

    #[test]
    fn the_detector_engages_over_the_threshold_and_disengages_after_the_calm() {
        let c = auto(3, 2);
        let mut f = PortFlood::default();
        for _ in 0..3 {
            assert!(!f.count_syn(c.detector(), 10), "at or below the threshold");
        }
        assert!(
            f.count_syn(c.detector(), 10),
            "the fourth SYN in one window"
        );
        // Quiet windows: engaged through the calm period, then not.
        assert!(f.engaged(&c, 11) && f.engaged(&c, 12));
        assert!(!f.engaged(&c, 13));
        // A SYN in a new window starts a new count.
        assert!(!f.count_syn(c.detector(), 13));
        assert_eq!(f.count, 1);
    }

    #[test]
    fn modes_on_and_off_ignore_the_detector() {
        let f = PortFlood::default();
        let on = CookieConfig {
            mode: MODE_ON,
            ..CookieConfig::OFF
        };
        assert!(f.engaged(&on, 5));
        let mut busy = PortFlood::default();
        for _ in 0..5000 {
            assert!(!busy.count_syn(CookieConfig::OFF.detector(), 5));
        }
        assert_eq!(window_of(0), 1);
    }

    #[test]
    fn mss_tables_follow_the_mtu_only_upwards() {
        assert_eq!(mss_tables(1500), (MSS4_1500, MSS6_1500));
        assert_eq!(mss_tables(1280), (MSS4_1500, MSS6_1500));
        let (v4, v6) = mss_tables(9000);
        assert_eq!(v4, [536, 1300, 1440, 8960]);
        assert_eq!(v6, [1220, 1420, 1440, 8940]);
        assert_eq!(mss_tables(200_000).0[3], 0xffff);
    }
}
