//! The allowlist's text form and meaning: a rule as the operator writes it (`tcp/22`,
//! `tcp/8000-8100` from a CIDR), its compilation into the port table and source-CIDR trie the
//! datapath reads, and what a rule set admits ([`admits`], [`vouched`]) for the host's own questions.

use core::{fmt, net::IpAddr, str::FromStr};

use crate::contract::{
    allow::{
        AllowRule, CidrKey, PORT_ANY_V4, PORT_ANY_V6, PORT_CIDR, PORT_TABLE_ENTRIES, port_slot,
    },
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, addr_bytes, ip_addr},
};

/// A rule that could not be parsed; the message names the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    Syntax,
    Protocol,
    Port,
    Range,
    Cidr,
    PrefixLen { max: u8 },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => f.write_str("expected PROTO/PORT or PROTO/LOW-HIGH, e.g. tcp/22"),
            Self::Protocol => f.write_str("unknown protocol: expected tcp or udp"),
            Self::Port => f.write_str("port must be a number from 1 to 65535"),
            Self::Range => f.write_str("port range must be LOW-HIGH with LOW <= HIGH"),
            Self::Cidr => f.write_str("malformed CIDR: expected ADDRESS/PREFIX, e.g. 10.0.0.0/8"),
            Self::PrefixLen { max } => write!(f, "CIDR prefix length must be 0 to {max}"),
        }
    }
}

impl core::error::Error for RuleError {}

fn parse_port(s: &str) -> Result<u16, RuleError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RuleError::Port);
    }
    match u32::from_str(s) {
        Ok(p @ 1..=65_535) => Ok(p as u16),
        _ => Err(RuleError::Port),
    }
}

/// Parses `tcp/22`, `udp/51820` or `tcp/8000-8100` into (proto, low, high).
pub fn parse_spec(spec: &str) -> Result<(u8, u16, u16), RuleError> {
    let (proto, ports) = spec.split_once('/').ok_or(RuleError::Syntax)?;
    let proto = match proto {
        p if p.eq_ignore_ascii_case("tcp") => PROTO_TCP,
        p if p.eq_ignore_ascii_case("udp") => PROTO_UDP,
        _ => return Err(RuleError::Protocol),
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let p = parse_port(ports)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(RuleError::Range);
    }
    Ok((proto, lo, hi))
}

/// Parses `ADDR/LEN` (or a bare address, a host route) into (family, prefix_len, network).
/// Host bits are cleared, as ip(8) and nft do.
pub fn parse_cidr(s: &str) -> Result<(u8, u8, [u8; 16]), RuleError> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let (family, mut bytes) = addr_bytes(IpAddr::from_str(addr).map_err(|_| RuleError::Cidr)?);
    let max = if family == FAMILY_V4 { 32u8 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            match u8::from_str(l) {
                Ok(n) if n <= max => n,
                _ => return Err(RuleError::PrefixLen { max }),
            }
        }
        Some(_) => return Err(RuleError::PrefixLen { max }),
    };
    mask(&mut bytes, len);
    Ok((family, len, bytes))
}

/// Clears every bit after the first `len`.
pub fn mask(bytes: &mut [u8; 16], len: u8) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = (i * 8) as u32;
        let keep = u32::from(len).saturating_sub(start).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
}

impl AllowRule {
    /// Builds a rule from a SPEC and an optional source CIDR.
    pub fn parse(spec: &str, from: Option<&str>) -> Result<Self, RuleError> {
        let (proto, port_lo, port_hi) = parse_spec(spec)?;
        let (family, prefix_len, addr) = match from {
            Some(c) => parse_cidr(c)?,
            None => (0, 0, [0; 16]),
        };
        Ok(Self {
            proto,
            family,
            prefix_len,
            _pad: 0,
            port_lo,
            port_hi,
            addr,
        })
    }

    /// The port-table flags this rule sets on each of its ports.
    pub const fn port_flags(&self) -> u8 {
        match self.family {
            0 => PORT_ANY_V4 | PORT_ANY_V6,
            _ => PORT_CIDR,
        }
    }

    /// Number of ports the rule covers.
    pub const fn port_count(&self) -> u32 {
        self.port_hi as u32 - self.port_lo as u32 + 1
    }

    /// The trie key for one port of a CIDR rule.
    pub const fn cidr_key(&self, port: u16) -> CidrKey {
        CidrKey {
            prefix_len: CidrKey::HEADER_BITS + self.prefix_len as u32,
            family: self.family,
            proto: self.proto,
            port_be: port.to_be_bytes(),
            addr: self.addr,
        }
    }

    pub const fn proto_name(&self) -> &'static str {
        proto_name(self.proto)
    }

    /// The source address, if the rule has one.
    pub fn source(&self) -> Option<(IpAddr, u8)> {
        match self.family {
            FAMILY_V4 | FAMILY_V6 => Some((ip_addr(self.family, &self.addr), self.prefix_len)),
            _ => None,
        }
    }
}

/// The name a spec gives a protocol: `tcp`, `udp` (`?` for others).
pub const fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    }
}

/// Sets the flags of `rule` on each of its ports in a port table of [`PORT_TABLE_ENTRIES`]
/// entries. The table for a rule set is the union of its rules' marks.
pub fn mark_ports(rule: &AllowRule, table: &mut [u64]) {
    let flags = u64::from(rule.port_flags());
    for port in rule.port_lo..=rule.port_hi {
        if let Some((index, shift)) = port_slot(rule.proto, port)
            && let Some(entry) = table.get_mut(index as usize)
        {
            *entry |= flags << shift;
        }
    }
}

/// A rule set that does not fit the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileError {
    TooManyRules(usize),
    TooManyCidrEntries,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::contract::maps::{MAX_CIDR_ENTRIES, MAX_RULES};
        match self {
            Self::TooManyRules(n) => write!(f, "too many allow rules: {n} (at most {MAX_RULES})"),
            Self::TooManyCidrEntries => write!(
                f,
                "source-CIDR rules need more than {MAX_CIDR_ENTRIES} (port, CIDR) entries; use fewer ports per --from rule"
            ),
        }
    }
}

impl core::error::Error for CompileError {}

/// The port table and the source-CIDR trie entries that implement a rule set: what the loader
/// writes to the maps, and what the reference model decides with.
#[cfg(any(test, feature = "std"))]
pub fn compile(
    rules: &std::collections::BTreeSet<AllowRule>,
) -> Result<(Vec<u64>, std::collections::BTreeSet<CidrKey>), CompileError> {
    use crate::contract::maps::{MAX_CIDR_ENTRIES, MAX_RULES};
    if rules.len() > MAX_RULES as usize {
        return Err(CompileError::TooManyRules(rules.len()));
    }
    let mut ports = vec![0u64; PORT_TABLE_ENTRIES as usize];
    let mut cidrs = std::collections::BTreeSet::new();
    for r in rules {
        mark_ports(r, &mut ports);
        if r.family != 0 {
            for port in r.port_lo..=r.port_hi {
                cidrs.insert(r.cidr_key(port));
            }
        }
        if cidrs.len() > MAX_CIDR_ENTRIES as usize {
            return Err(CompileError::TooManyCidrEntries);
        }
    }
    Ok((ports, cidrs))
}

impl fmt::Display for AllowRule {
    /// `tcp/22`, `tcp/8000-8100 from 10.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", PortSpec::of(self))?;
        if let Some((addr, len)) = self.source() {
            write!(f, " from {addr}/{len}")?;
        }
        Ok(())
    }
}

/// A protocol and port range, as in a rule's spec (`tcp/22`, `tcp/8000-8100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

impl PortSpec {
    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let (proto, lo, hi) = parse_spec(spec)?;
        Ok(Self { proto, lo, hi })
    }

    /// The ports of a rule.
    pub const fn of(rule: &AllowRule) -> Self {
        Self {
            proto: rule.proto,
            lo: rule.port_lo,
            hi: rule.port_hi,
        }
    }

    pub const fn contains(&self, proto: u8, port: u16) -> bool {
        self.proto == proto && self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortSpec {
    /// `tcp/22`, `udp/8000-8100`: a rule's spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", proto_name(self.proto), self.lo)?;
        if self.hi != self.lo {
            write!(f, "-{}", self.hi)?;
        }
        Ok(())
    }
}

/// Whether `rules` let `client` (the lockout guard's question: may this session reconnect?) send a new `proto` packet to `port`.
pub fn admits(
    rules: &std::collections::BTreeSet<AllowRule>,
    proto: u8,
    client: IpAddr,
    port: u16,
) -> bool {
    rules.iter().any(|r| {
        r.proto == proto
            && (r.port_lo..=r.port_hi).contains(&port)
            && match r.source() {
                None => true,
                Some((net, len)) => in_cidr(client, net, len),
            }
    })
}

/// Whether `rules` vouch for the connection of flow `key`: a new connection from its remote end to
/// its local port would be allowed, so its packets pass without an entry.
pub fn vouched(rules: &std::collections::BTreeSet<AllowRule>, key: &FlowKey) -> bool {
    admits(
        rules,
        key.proto,
        ip_addr(key.family, &key.remote),
        key.local_port,
    )
}

/// Whether `addr` lies in `net/len`.
fn in_cidr(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    let ((fa, mut a), (fn_, mut n)) = (addr_bytes(addr), addr_bytes(net));
    mask(&mut a, len);
    mask(&mut n, len);
    fa == fn_ && a == n
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString as _;

    use super::*;
    use crate::contract::allow::slot_flags;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("tcp/22"), Ok((PROTO_TCP, 22, 22)));
        assert_eq!(parse_spec("UDP/51820"), Ok((PROTO_UDP, 51820, 51820)));
        assert_eq!(parse_spec("tcp/8000-8100"), Ok((PROTO_TCP, 8000, 8100)));
        assert_eq!(parse_spec("tcp/0"), Err(RuleError::Port));
        assert_eq!(parse_spec("tcp/65536"), Err(RuleError::Port));
        assert_eq!(parse_spec("tcp/+22"), Err(RuleError::Port));
        assert_eq!(parse_spec("tcp/"), Err(RuleError::Port));
        assert_eq!(parse_spec("sctp/22"), Err(RuleError::Protocol));
        assert_eq!(parse_spec("tcp22"), Err(RuleError::Syntax));
        assert_eq!(parse_spec("tcp/9-8"), Err(RuleError::Range));
        assert_eq!(parse_spec("tcp/1-65535"), Ok((PROTO_TCP, 1, 65535)));
    }

    #[test]
    fn cidrs() {
        let (f, l, a) = parse_cidr("10.1.2.3/8").unwrap();
        assert_eq!((f, l, &a[..4]), (FAMILY_V4, 8, &[10, 0, 0, 0][..]));
        assert_eq!(
            parse_cidr("10.0.0.0/33"),
            Err(RuleError::PrefixLen { max: 32 })
        );
        assert_eq!(
            parse_cidr("10.0.0.0/"),
            Err(RuleError::PrefixLen { max: 32 })
        );
        assert_eq!(parse_cidr("10.0.0/8"), Err(RuleError::Cidr));
        assert_eq!(
            parse_cidr("fd00::1/129"),
            Err(RuleError::PrefixLen { max: 128 })
        );
        let (f, l, a) = parse_cidr("fd00:1:2:3::1/36").unwrap();
        assert_eq!((f, l), (FAMILY_V6, 36));
        assert_eq!(&a[..6], &[0xfd, 0, 0, 1, 0, 0]);
        let (_, l, a) = parse_cidr("192.0.2.7").unwrap();
        assert_eq!((l, &a[..4]), (32, &[192, 0, 2, 7][..]));
        let (_, _, a) = parse_cidr("255.255.255.255/0").unwrap();
        assert_eq!(a, [0; 16]);
    }

    #[test]
    fn marks_are_a_union() {
        let mut table = [0u64; PORT_TABLE_ENTRIES as usize];
        mark_ports(&AllowRule::parse("tcp/22", None).unwrap(), &mut table);
        mark_ports(
            &AllowRule::parse("tcp/20-23", Some("10.0.0.0/8")).unwrap(),
            &mut table,
        );
        mark_ports(
            &AllowRule::parse("udp/22", Some("fd00::/8")).unwrap(),
            &mut table,
        );
        let flags = |proto, port| {
            let (i, s) = port_slot(proto, port).unwrap();
            slot_flags(table[i as usize], s)
        };
        assert_eq!(flags(PROTO_TCP, 22), PORT_ANY_V4 | PORT_ANY_V6 | PORT_CIDR);
        assert_eq!(flags(PROTO_TCP, 20), PORT_CIDR);
        assert_eq!(flags(PROTO_TCP, 24), 0);
        assert_eq!(flags(PROTO_UDP, 22), PORT_CIDR);
        assert_eq!(flags(PROTO_UDP, 23), 0);
        assert_eq!(
            table.iter().filter(|e| **e != 0).count(),
            2,
            "ports 16-31 share one entry"
        );
    }

    #[test]
    fn display_round_trips() {
        let r = AllowRule::parse("tcp/8000-8100", Some("10.9.0.0/16")).unwrap();
        assert_eq!(r.to_string(), "tcp/8000-8100 from 10.9.0.0/16");
        assert_eq!(r.port_flags(), PORT_CIDR);
        let r = AllowRule::parse("udp/53", None).unwrap();
        assert_eq!(r.to_string(), "udp/53");
        assert_eq!(r.port_flags(), PORT_ANY_V4 | PORT_ANY_V6);
    }
}

#[cfg(test)]
mod semantics_tests {
    use std::collections::BTreeSet;

    use super::*;

    fn rules(list: &[(&str, Option<&str>)]) -> BTreeSet<AllowRule> {
        list.iter()
            .map(|(spec, from)| AllowRule::parse(spec, *from).unwrap())
            .collect()
    }

    #[test]
    fn the_allowlist_vouches_by_port_protocol_and_source() {
        let ((family, local), (_, remote)) = (
            addr_bytes("10.231.0.1".parse().unwrap()),
            addr_bytes("10.231.0.2".parse().unwrap()),
        );
        let k = FlowKey {
            local,
            remote,
            local_port: 22,
            remote_port: 50000,
            proto: PROTO_TCP,
            family,
            _pad: 0,
        };
        assert!(vouched(&rules(&[("tcp/22", None)]), &k));
        assert!(vouched(&rules(&[("tcp/20-30", Some("10.231.0.0/24"))]), &k));
        assert!(!vouched(&rules(&[("tcp/22", Some("10.1.0.0/16"))]), &k));
        assert!(!vouched(&rules(&[("udp/22", None)]), &k));
        assert!(!vouched(&rules(&[("tcp/8080", None)]), &k));
    }

    #[test]
    fn a_client_is_admitted_by_protocol_port_and_source() {
        let client = "10.0.0.9".parse().unwrap();
        assert!(admits(&rules(&[("tcp/22", None)]), PROTO_TCP, client, 22));
        assert!(admits(
            &rules(&[("tcp/2000-3000", Some("10.0.0.0/24"))]),
            PROTO_TCP,
            client,
            2222
        ));
        assert!(!admits(
            &rules(&[("tcp/2222", Some("10.0.1.0/24"))]),
            PROTO_TCP,
            client,
            2222
        ));
        assert!(!admits(
            &rules(&[("tcp/22", None)]),
            PROTO_TCP,
            "fd00::1".parse().unwrap(),
            23
        ));
    }
}
