//! TCP options of a SYN and of the handshake's ACK, read from a copy of the option bytes at
//! fixed offsets: the layouts the common stacks send (Linux, Windows, macOS, FreeBSD, with and
//! without timestamps). A general option walk (a position advanced by each option's length) is
//! far beyond what the verifier accepts here; a SYN in any other layout keeps its MSS when it
//! leads with one (it always does in practice) and is answered without the other options — the
//! connection works, with what RFC 9293 defaults to. Bytes past the segment's options are zeros
//! in the copy, so a layout longer than the segment's options never matches.

use super::cookie::NO_WSCALE;

/// Bytes of TCP options at most.
pub const MAX_OPTIONS: usize = 40;

/// What a SYN offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOptions {
    /// The MSS option's value; 0: none (RFC 9293's default of 536 applies).
    pub mss: u16,
    /// The window scale shift (at most 14), or [`NO_WSCALE`].
    pub wscale: u8,
    pub sack: bool,
    /// The SYN's timestamp value, if it sent the timestamps option.
    pub tsval: Option<u32>,
}

impl SynOptions {
    pub const NONE: Self = Self {
        mss: 0,
        wscale: NO_WSCALE,
        sack: false,
        tsval: None,
    };
}

#[inline(always)]
const fn be32(o: &[u8; MAX_OPTIONS], i: usize) -> u32 {
    u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]])
}

#[inline(always)]
const fn is(o: &[u8; MAX_OPTIONS], i: usize, a: u8, b: u8) -> bool {
    o[i] == a && o[i + 1] == b
}

/// Window scale option (kind 3, length 3) preceded by a NOP at `i`.
#[inline(always)]
const fn nop_ws(o: &[u8; MAX_OPTIONS], i: usize) -> Option<u8> {
    if o[i] == 1 && o[i + 1] == 3 && o[i + 2] == 3 {
        // RFC 7323: a shift above 14 is taken as 14.
        Some(if o[i + 3] > 14 { 14 } else { o[i + 3] })
    } else {
        None
    }
}

/// The options of a SYN, from its option bytes (`o`, zero past the segment's options).
#[inline(always)]
pub fn syn(o: &[u8; MAX_OPTIONS]) -> SynOptions {
    if !is(o, 0, 2, 4) {
        return SynOptions::NONE;
    }
    let mut out = SynOptions {
        mss: u16::from_be_bytes([o[2], o[3]]),
        ..SynOptions::NONE
    };
    let ws_at = |i| nop_ws(o, i).unwrap_or(NO_WSCALE);
    if is(o, 4, 4, 2) {
        // Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
        out.sack = true;
        if is(o, 6, 8, 10) {
            out.tsval = Some(be32(o, 8));
            out.wscale = ws_at(16);
        }
    } else if is(o, 4, 1, 1) && is(o, 6, 4, 2) {
        // Linux without timestamps: MSS, NOP, NOP, SACK-permitted, NOP, window scale.
        out.sack = true;
        out.wscale = ws_at(8);
    } else if is(o, 4, 1, 1) && is(o, 6, 8, 10) {
        // Linux without SACK: MSS, NOP, NOP, timestamps, NOP, window scale.
        out.tsval = Some(be32(o, 8));
        out.wscale = ws_at(16);
    } else if let Some(ws) = nop_ws(o, 4) {
        out.wscale = ws;
        if is(o, 8, 1, 1) && is(o, 10, 4, 2) {
            // Windows: MSS, NOP, window scale, NOP, NOP, SACK-permitted.
            out.sack = true;
        } else if is(o, 8, 1, 1) && is(o, 10, 8, 10) {
            // macOS: MSS, NOP, window scale, NOP, NOP, timestamps, SACK-permitted, EOL.
            out.tsval = Some(be32(o, 12));
            out.sack = is(o, 20, 4, 2);
        } else if is(o, 8, 4, 2) {
            // FreeBSD: MSS, NOP, window scale, SACK-permitted, timestamps.
            out.sack = true;
            if is(o, 10, 8, 10) {
                out.tsval = Some(be32(o, 12));
            }
        }
    }
    out
}

/// The timestamps (TSval, TSecr) of a segment after the handshake: NOP, NOP, timestamps (Linux,
/// FreeBSD, macOS) or timestamps first.
#[inline(always)]
pub fn timestamps(o: &[u8; MAX_OPTIONS]) -> Option<(u32, u32)> {
    if is(o, 0, 1, 1) && is(o, 2, 8, 10) {
        Some((be32(o, 4), be32(o, 8)))
    } else if is(o, 0, 8, 10) {
        Some((be32(o, 2), be32(o, 6)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(bytes: &[u8]) -> [u8; MAX_OPTIONS] {
        let mut o = [0; MAX_OPTIONS];
        o[..bytes.len()].copy_from_slice(bytes);
        o
    }

    const TS: [u8; 8] = [0, 0, 0x12, 0x34, 0, 0, 0, 0];

    fn with_ts(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(&[8, 10]);
        v.extend_from_slice(&TS);
        v.extend_from_slice(suffix);
        v
    }

    #[test]
    fn the_common_stacks_syn_layouts() {
        let mss = [2, 4, 0x05, 0xb4];
        let cases: Vec<(&str, Vec<u8>, SynOptions)> = vec![
            (
                "linux",
                with_ts(&[2, 4, 0x05, 0xb4, 4, 2], &[1, 3, 3, 7]),
                SynOptions {
                    mss: 1460,
                    wscale: 7,
                    sack: true,
                    tsval: Some(0x1234),
                },
            ),
            (
                "linux, no timestamps",
                [&mss[..], &[1, 1, 4, 2, 1, 3, 3, 9]].concat(),
                SynOptions {
                    mss: 1460,
                    wscale: 9,
                    sack: true,
                    tsval: None,
                },
            ),
            (
                "linux, no SACK",
                with_ts(&[2, 4, 0x05, 0xb4, 1, 1], &[1, 3, 3, 7]),
                SynOptions {
                    mss: 1460,
                    wscale: 7,
                    sack: false,
                    tsval: Some(0x1234),
                },
            ),
            (
                "linux, timestamps, no window scale",
                with_ts(&[2, 4, 0x05, 0xb4, 4, 2], &[]),
                SynOptions {
                    mss: 1460,
                    wscale: NO_WSCALE,
                    sack: true,
                    tsval: Some(0x1234),
                },
            ),
            (
                "windows",
                [&mss[..], &[1, 3, 3, 8, 1, 1, 4, 2]].concat(),
                SynOptions {
                    mss: 1460,
                    wscale: 8,
                    sack: true,
                    tsval: None,
                },
            ),
            (
                "macos",
                with_ts(&[2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1], &[4, 2, 0, 0]),
                SynOptions {
                    mss: 1460,
                    wscale: 6,
                    sack: true,
                    tsval: Some(0x1234),
                },
            ),
            (
                "freebsd",
                with_ts(&[2, 4, 0x05, 0xb4, 1, 3, 3, 6, 4, 2], &[]),
                SynOptions {
                    mss: 1460,
                    wscale: 6,
                    sack: true,
                    tsval: Some(0x1234),
                },
            ),
            (
                "window scale above 14",
                [&mss[..], &[1, 3, 3, 15]].concat(),
                SynOptions {
                    mss: 1460,
                    wscale: 14,
                    sack: false,
                    tsval: None,
                },
            ),
            (
                "MSS only",
                mss.to_vec(),
                SynOptions {
                    mss: 1460,
                    ..SynOptions::NONE
                },
            ),
            (
                "unknown layout after the MSS",
                [&mss[..], &[3, 3, 7, 1]].concat(),
                SynOptions {
                    mss: 1460,
                    ..SynOptions::NONE
                },
            ),
            ("no options", vec![], SynOptions::NONE),
            ("no leading MSS", vec![1, 3, 3, 7], SynOptions::NONE),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(syn(&opts(&bytes)), want, "{name}");
        }
    }

    #[test]
    fn a_layout_cut_short_by_the_segment_does_not_match() {
        // Linux's layout without its last four bytes: the zeros after the copy do not make a
        // window scale option.
        let full = with_ts(&[2, 4, 0x05, 0xb4, 4, 2], &[1, 3, 3, 7]);
        assert_eq!(syn(&opts(&full[..16])).wscale, NO_WSCALE);
    }

    #[test]
    fn ack_timestamps() {
        assert_eq!(
            timestamps(&opts(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9])),
            Some((5, 9))
        );
        assert_eq!(
            timestamps(&opts(&[8, 10, 0, 0, 0, 5, 0, 0, 0, 9, 1, 1])),
            Some((5, 9))
        );
        assert_eq!(timestamps(&opts(&[])), None);
        assert_eq!(timestamps(&opts(&[1, 1, 5, 10])), None);
    }
}
