//! Dropped-packet events (`lockdown log`): the ring-buffer record and its per-CPU rate limit.

use bytemuck::{Pod, Zeroable};

/// Bytes of each dropped packet copied into its event: enough for Ethernet, two VLAN tags, IPv6
/// with a few extension headers, and the L4 header.
pub const EVENT_CAPTURE: usize = 128;

/// One dropped packet: 152 bytes, no padding. The kernel copies the packet's first bytes instead
/// of parsing them again; userspace parses them with the same parser ([`crate::stages::parse::headers`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct DropEvent {
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds.
    pub time_ns: u64,
    pub ifindex: u32,
    /// [`crate::contract::counters::Counter`] index of the drop reason.
    pub reason: u32,
    /// The packet's length on the wire.
    pub packet_len: u32,
    /// How many bytes of `data` hold the packet's start.
    pub captured: u32,
    pub data: [u8; EVENT_CAPTURE],
}

impl DropEvent {
    /// The captured bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..(self.captured as usize).min(EVENT_CAPTURE)]
    }
}

/// A per-CPU one-second window for the event rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LogWindow {
    pub start_ns: u64,
    pub count: u64,
}

impl LogWindow {
    /// Whether one more event may be written at `now` under `per_sec`; counts it if so.
    #[inline(always)]
    pub fn admit(&mut self, now: u64, per_sec: u32) -> bool {
        if now.saturating_sub(self.start_ns) >= 1_000_000_000 {
            self.start_ns = now;
            self.count = 0;
        }
        if self.count < u64::from(per_sec) {
            self.count += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_sec_events_per_window() {
        let mut w = LogWindow::default();
        let t0 = 5_000_000_000;
        assert_eq!((0..10).filter(|i| w.admit(t0 + i, 3)).count(), 3);
        assert!(!w.admit(t0 + 999_999_999, 3));
        assert!(w.admit(t0 + 1_000_000_000, 3), "a new window");
        let mut off = LogWindow::default();
        assert!(!off.admit(t0, 0), "0 turns events off");
        assert_eq!(size_of::<DropEvent>(), 24 + EVENT_CAPTURE);
    }
}
