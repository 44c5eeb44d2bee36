//! The configuration file, `/etc/lockdown/lockdown.toml` by default.
//!
//! ```toml
//! # Settings for every interface; an interface's own [interface.timeouts] overrides them.
//! [timeouts]               # idle timeouts in seconds; defaults follow nf_conntrack
//! tcp_established = 432000
//! udp_replied = 120
//!
//! [[interface]]            # one table per interface to lock down
//! name = "eth0"            # required: 1 to 15 bytes, never "lo"
//! mode = "native"          # or "skb" (generic XDP); default "native"
//! max_flows = 65536        # each family's live flow-table capacity; default 65536
//! monitor = false          # count what would be dropped, but pass everything; default false
//! pass_dhcp = true         # DHCPv4/v6 replies and IPv6 router advertisements; default true
//! allow = [                # default ["tcp/22"]; `allow = []` allows no new inbound connections
//!     "tcp/22",
//!     { spec = "tcp/443", from = "203.0.113.0/24" },
//!     { spec = "udp/51820", from = "2001:db8::/32" },
//! ]
//! deny = ["198.51.100.0/24"]  # sources dropped before anything else, until `lockdown deny del`
//! syn_cookies = "auto"     # or "on", "off"; default "auto" (README: "SYN cookies")
//! syn_cookie_threshold = 1000  # SYNs per second to one port that engage cookies; default 1000
//! syn_cookie_calm = 30     # seconds below the threshold before they disengage; default 30
//!
//! [interface.timeouts]     # overrides [timeouts] for the interface above
//! udp_replied = 60
//! ```
//!
//! Keys:
//! - `[timeouts]` and `[interface.timeouts]`: any of [`Timeouts::NAMES`] (`tcp_syn_sent`,
//!   `tcp_established`, `tcp_closing`, `tcp_closed`, `udp_unreplied`, `udp_replied`, `icmp`,
//!   `fragment`) = whole seconds from 1 to 2147483647. Unset timeouts keep nf_conntrack's defaults.
//! - `[[interface]]` (at least one): `name` (required, unique), `mode`, `max_flows` (at least 1),
//!   `monitor`, `pass_dhcp`, `allow`, `deny`, `syn_cookies` (`auto`, `on` or `off`),
//!   `syn_cookie_threshold` (SYNs per second, at least 1), `syn_cookie_calm` (seconds, at least
//!   1). An allow entry is a spec (`tcp/22`, `udp/51820`,
//!   `tcp/8000-8100`) or a table `{ spec = SPEC, from = CIDR }`; a rule without `from` admits every
//!   IPv4 and IPv6 source, `from = "0.0.0.0/0"` or `"::/0"` admits one whole family.
//!
//! Unknown keys are errors, so a typo never silently falls back to a default. Everything is
//! validated by [`parse`] before anything is applied, and every error names its line and key:
//! `lockdown.toml:7: interface[0].allow[2]: port must be a number from 1 to 65535`.
//!
//! The file is the source of truth for the policy: the [`UpOptions`] it produces mark the allowlist
//! and the config (flags and timeouts) as given, so `run` adopting pinned state applies them; the
//! flow-table size counts as given only if the file sets `max_flows`. Command-line flags override
//! the file through [`Overrides`] and [`apply`].

use std::{collections::BTreeMap, fmt, fs, ops::Range, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use lockdown_common::{
    contract::{
        allow::AllowRule,
        config::{Config, FLAG_MONITOR, FLAG_PASS_DHCP, FLAG_PASS_RA, TimeoutError, Timeouts},
        maps::DEFAULT_MAX_FLOWS,
        rate::RateSpec,
    },
    rules::{
        allow::{PortSpec, RuleError},
        deny::DenyNet,
        rate::DEFAULT_BURST,
    },
};
use serde::{Deserialize, de};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    attach::{
        Given, UpOptions,
        cookies::{CookieMode, CookieOptions},
    },
    datapath::handles::compile_policy,
    host::link::XdpMode,
};

/// Where `lockdown run --config` and the systemd unit look by default.
pub const DEFAULT_PATH: &str = "/etc/lockdown/lockdown.toml";

/// The allowlist of an interface whose table has no `allow` key.
pub const DEFAULT_ALLOW: &str = "tcp/22";

/// Longest interface name (`IFNAMSIZ` less the NUL).
const MAX_IFACE_NAME: usize = 15;

/// A validated configuration file: the options of each interface it configures, in file order.
#[derive(Clone, Debug)]
pub struct FileConfig {
    origin: String,
    interfaces: Vec<UpOptions>,
}

impl FileConfig {
    /// Where the configuration came from (the path, for a loaded file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every configured interface, in file order.
    pub fn interfaces(&self) -> &[UpOptions] {
        &self.interfaces
    }

    /// The names of the configured interfaces, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|o| o.iface.as_str())
    }

    /// The options of interface `name`, or of the only interface when `name` is `None`.
    pub fn interface(&self, name: Option<&str>) -> Result<UpOptions> {
        let names = || self.names().collect::<Vec<_>>().join(", ");
        match name {
            Some(name) => self
                .interfaces
                .iter()
                .find(|o| o.iface == name)
                .cloned()
                .ok_or_else(|| {
                    anyhow!(
                        "{} does not configure interface {name:?}; it configures: {}",
                        self.origin,
                        names()
                    )
                }),
            None => match self.interfaces.as_slice() {
                [only] => Ok(only.clone()),
                _ => bail!(
                    "{} configures several interfaces ({}); choose one with --iface",
                    self.origin,
                    names()
                ),
            },
        }
    }
}

/// Command-line settings that override the file for one interface.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--allow SPEC`: when non-empty, replaces the file's allowlist.
    pub allow: Vec<String>,
    /// `--mode`.
    pub mode: Option<XdpMode>,
    /// `--max-flows`.
    pub max_flows: Option<u32>,
    /// `--monitor`: turns monitor mode on (a file's `monitor = true` cannot be turned off).
    pub monitor: bool,
    /// `--no-dhcp`: stops passing DHCP replies and router advertisements.
    pub no_dhcp: bool,
    /// `--timeout NAME=SECS`, applied in order over the file's timeouts.
    pub timeouts: Vec<String>,
    /// `--force`: apply even if the lockout guard objects.
    pub force: bool,
    /// `--syn-cookies`.
    pub syn_cookies: Option<CookieMode>,
    /// `--syn-cookie-threshold` (SYNs per second to one port).
    pub syn_cookie_threshold: Option<u32>,
    /// `--syn-cookie-calm` (seconds).
    pub syn_cookie_calm: Option<u32>,
}

/// Applies command-line overrides to the options from the file. On error `opts` is unchanged.
pub fn apply(opts: &mut UpOptions, o: &Overrides) -> Result<()> {
    let mut new = opts.clone();
    if !o.allow.is_empty() {
        new.rules = o
            .allow
            .iter()
            .map(|s| AllowRule::parse(s, None).with_context(|| format!("--allow {s}")))
            .collect::<Result<_>>()?;
        lockdown_common::rules::allow::compile(&new.rules)?;
        new.given.rules = true;
    }
    if let Some(mode) = o.mode {
        new.mode = mode;
    }
    if let Some(n) = o.max_flows {
        if n == 0 {
            bail!("--max-flows must be at least 1");
        }
        new.max_flows = n;
        new.given.max_flows = true;
    }
    if o.monitor {
        new.config.flags |= FLAG_MONITOR;
        new.given.config = true;
    }
    if o.no_dhcp {
        new.config.flags &= !(FLAG_PASS_DHCP | FLAG_PASS_RA);
        new.given.config = true;
    }
    for t in &o.timeouts {
        new.config
            .timeouts
            .set(t)
            .with_context(|| format!("--timeout {t}"))?;
        new.given.config = true;
    }
    if let Some(mode) = o.syn_cookies {
        new.cookies.mode = mode;
        new.given.cookies = true;
    }
    if let Some(n) = o.syn_cookie_threshold {
        new.cookies.threshold_per_sec = n;
        new.given.cookies = true;
    }
    if let Some(n) = o.syn_cookie_calm {
        new.cookies.calm_secs = n;
        new.given.cookies = true;
    }
    new.cookies
        .check("--syn-cookie-threshold", "--syn-cookie-calm")?;
    new.force |= o.force;
    *opts = new;
    Ok(())
}

/// Marks an error in the configuration or the options (as opposed to one applying them), so that
/// the process exits with [`EXIT_CONFIG`] and a supervisor does not retry what cannot succeed.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Invalid(anyhow::Error);

/// Exit status for [`Invalid`]: `EX_CONFIG` of sysexits.h. The systemd units name it in
/// `RestartPreventExitStatus=`.
pub const EXIT_CONFIG: u8 = 78;

/// Wraps an options error as [`Invalid`].
pub fn invalid(e: anyhow::Error) -> anyhow::Error {
    Invalid(e).into()
}

/// Whether `e` (or an error it wraps) is an [`Invalid`] configuration.
pub fn is_invalid(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Invalid>() || c.is::<crate::attach::cookies::Unavailable>())
}

/// Reads and validates a configuration file. Error messages start with the path.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates configuration text. `origin` (a path or a name) starts every error
/// message: `ORIGIN:LINE: KEY: problem`.
pub fn parse(text: &str, origin: &str) -> Result<FileConfig> {
    let src = Source { origin, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    build(&src, raw)
}

// ---------------------------------------------------------------------------------------------
// The file as deserialised: spans kept on everything validated after deserialising.

type RawTimeouts = BTreeMap<Spanned<String>, Spanned<i64>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    interface: Vec<Spanned<RawInterface>>,
    timeouts: Option<RawTimeouts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    /// Optional here so that a missing name gets its own message (the packaged example leaves it
    /// for the operator to fill in).
    name: Option<Spanned<String>>,
    mode: Option<XdpMode>,
    max_flows: Option<Spanned<i64>>,
    monitor: Option<bool>,
    pass_dhcp: Option<bool>,
    allow: Option<Spanned<Vec<Spanned<RawRule>>>>,
    /// Sources to deny until removed: addresses or CIDRs.
    deny: Option<Vec<Spanned<String>>>,
    timeouts: Option<RawTimeouts>,
    syn_cookies: Option<CookieMode>,
    syn_cookie_threshold: Option<Spanned<i64>>,
    syn_cookie_calm: Option<Spanned<i64>>,
}

/// An allow entry: `"tcp/22"` or `{ spec = "tcp/22", from = "10.0.0.0/8" }`.
struct RawRule {
    spec: String,
    from: Option<Spanned<String>>,
    /// `10/min`: the per-source rate of new connections to the spec's ports.
    rate: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> de::Visitor<'de> for Visitor {
            type Value = RawRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a rule: "tcp/22" or { spec = "tcp/22", from = "10.0.0.0/8" }"#)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawRule, E> {
                Ok(RawRule {
                    spec: s.to_owned(),
                    from: None,
                    rate: None,
                    burst: None,
                })
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
                const FIELDS: &[&str] = &["spec", "from", "rate", "burst"];
                let (mut spec, mut from, mut rate, mut burst) = (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "spec" => spec = Some(map.next_value::<String>()?),
                        "from" => from = Some(map.next_value::<Spanned<String>>()?),
                        "rate" => rate = Some(map.next_value::<Spanned<String>>()?),
                        "burst" => burst = Some(map.next_value::<Spanned<i64>>()?),
                        _ => return Err(de::Error::unknown_field(&key, FIELDS)),
                    }
                }
                Ok(RawRule {
                    spec: spec.ok_or_else(|| de::Error::missing_field("spec"))?,
                    from,
                    rate,
                    burst,
                })
            }
        }

        d.deserialize_any(Visitor)
    }
}

/// The rate of an allow entry, if it has one: `rate` (and `burst`, default
/// [`DEFAULT_BURST`]); an error message names the key.
fn rule_rate(src: &Source<'_>, r: &RawRule, key: &str) -> Result<Option<RateSpec>, String> {
    let burst = match &r.burst {
        None => DEFAULT_BURST,
        Some(b) => match u64::try_from(*b.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(src.message(
                    b.span(),
                    &format!("{key}.burst"),
                    "must be a whole number of at least 1",
                ));
            }
        },
    };
    match (&r.rate, &r.burst) {
        (None, None) => Ok(None),
        (None, Some(b)) => Err(src.message(
            b.span(),
            &format!("{key}.burst"),
            "a burst needs a rate (`rate = \"10/min\"`)",
        )),
        (Some(rate), _) => RateSpec::parse_rate(rate.get_ref(), burst)
            .map(Some)
            .map_err(|e| src.message(rate.span(), &format!("{key}.rate"), e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Error reporting.

struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// `ORIGIN:LINE: KEY: message`.
    fn message(&self, span: Range<usize>, key: &str, msg: impl fmt::Display) -> String {
        format!("{}:{}: {key}: {msg}", self.origin, self.line(span.start))
    }

    /// A syntax or deserialisation error from the toml crate, with the key it concerns.
    fn toml_error(&self, e: &toml::de::Error) -> anyhow::Error {
        let msg = e.message().trim_end();
        let Some(span) = e.span() else {
            return anyhow!("{}: {msg}", self.origin);
        };
        // A syntax error leaves a partial document, enough to name the key in most cases.
        let (doc, _) = DeTable::parse_recoverable(self.text);
        let key = locate_in_table(doc.get_ref(), span.start, "");
        match key {
            Some(key) => anyhow!(self.message(span, &key, msg)),
            None => anyhow!("{}:{}: {msg}", self.origin, self.line(span.start)),
        }
    }
}

fn key_path(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    match prefix {
        "" => key,
        _ => format!("{prefix}.{key}"),
    }
}

/// The dotted path of the deepest key or value at `offset`: `interface[0].allow[2]`.
fn locate_in_table(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = key_path(prefix, key.get_ref());
        locate_in_value(value, offset, &path)
            .or_else(|| key.span().contains(&offset).then_some(path))
    })
}

fn locate_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(t) => locate_in_table(t, offset, path),
        DeValue::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, item)| locate_in_value(item, offset, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn build(src: &Source<'_>, raw: RawFile) -> Result<FileConfig> {
    let mut errors = Vec::new();
    let mut base = Timeouts::DEFAULT;
    if let Some(t) = &raw.timeouts {
        set_timeouts(src, &mut base, t, "timeouts", &mut errors);
    }
    if raw.interface.is_empty() {
        errors.push(format!(
            "{}: no [[interface]] table: the file must configure at least one interface",
            src.origin
        ));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut interfaces = Vec::new();
    for (i, iface) in raw.interface.iter().enumerate() {
        let path = format!("interface[{i}]");
        let table = iface.span();
        let iface = iface.get_ref();
        let Some(name_sp) = &iface.name else {
            errors.push(src.message(
                table,
                &path,
                "has no `name`: set it to the external interface to lock down (`ip -br link` lists them)",
            ));
            continue;
        };
        let name = name_sp.get_ref().as_str();
        let name_key = format!("{path}.name");
        if let Err(msg) = check_name(name) {
            errors.push(src.message(name_sp.span(), &name_key, msg));
        } else if let Some(line) = seen.insert(name, src.line(name_sp.span().start)) {
            errors.push(src.message(
                name_sp.span(),
                &name_key,
                format_args!("interface {name:?} is already configured at line {line}"),
            ));
        }

        let mut max_flows = DEFAULT_MAX_FLOWS;
        if let Some(n) = &iface.max_flows {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => max_flows = v,
                _ => errors.push(src.message(
                    n.span(),
                    &format!("{path}.max_flows"),
                    format_args!("must be a number from 1 to {}", u32::MAX),
                )),
            }
        }

        let mut cookies = CookieOptions {
            mode: iface.syn_cookies.unwrap_or_default(),
            ..CookieOptions::default()
        };
        for (key, value, field, unit) in [
            (
                "syn_cookie_threshold",
                &iface.syn_cookie_threshold,
                &mut cookies.threshold_per_sec,
                "SYNs per second to one port",
            ),
            (
                "syn_cookie_calm",
                &iface.syn_cookie_calm,
                &mut cookies.calm_secs,
                "seconds",
            ),
        ] {
            if let Some(n) = value {
                match u32::try_from(*n.get_ref()) {
                    Ok(v) if v >= 1 => *field = v,
                    _ => errors.push(src.message(
                        n.span(),
                        &format!("{path}.{key}"),
                        format_args!("must be a number from 1 to {} ({unit})", u32::MAX),
                    )),
                }
            }
        }

        let mut rates = BTreeMap::new();
        let rules = match &iface.allow {
            None => [AllowRule::parse(DEFAULT_ALLOW, None).expect("the default rule parses")]
                .into_iter()
                .collect(),
            Some(list) => {
                let mut rules = std::collections::BTreeSet::new();
                let mut ok = true;
                for (j, rule) in list.get_ref().iter().enumerate() {
                    let key = format!("{path}.allow[{j}]");
                    let r = rule.get_ref();
                    match AllowRule::parse(&r.spec, r.from.as_ref().map(|f| f.get_ref().as_str())) {
                        Ok(parsed) => {
                            rules.insert(parsed);
                            match rule_rate(src, r, &key) {
                                Ok(Some(rate)) => {
                                    if let Some(other) = rates.insert(PortSpec::of(&parsed), rate)
                                        && other != rate
                                    {
                                        ok = false;
                                        errors.push(src.message(
                                            rule.span(),
                                            &key,
                                            format_args!(
                                                "{} already has the rate {other}; a port has one rate",
                                                PortSpec::of(&parsed)
                                            ),
                                        ));
                                    }
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    ok = false;
                                    errors.push(e);
                                }
                            }
                        }
                        Err(e @ (RuleError::Cidr | RuleError::PrefixLen { .. })) => {
                            ok = false;
                            let span = r.from.as_ref().map_or(rule.span(), Spanned::span);
                            errors.push(src.message(span, &format!("{key}.from"), e));
                        }
                        Err(e) => {
                            ok = false;
                            errors.push(src.message(rule.span(), &key, e));
                        }
                    }
                }
                if ok && let Err(e) = compile_policy(&rules, &rates) {
                    errors.push(src.message(
                        list.span(),
                        &format!("{path}.allow"),
                        format_args!("{e:#}"),
                    ));
                }
                rules
            }
        };

        let mut deny = Vec::new();
        for (j, net) in iface.deny.iter().flatten().enumerate() {
            match DenyNet::parse(net.get_ref()) {
                Ok(n) => deny.push(n),
                Err(e) => errors.push(src.message(net.span(), &format!("{path}.deny[{j}]"), e)),
            }
        }

        let mut config = Config {
            timeouts: base,
            ..Config::DEFAULT
        };
        if let Some(t) = &iface.timeouts {
            set_timeouts(
                src,
                &mut config.timeouts,
                t,
                &format!("{path}.timeouts"),
                &mut errors,
            );
        }
        if iface.monitor == Some(true) {
            config.flags |= FLAG_MONITOR;
        }
        if iface.pass_dhcp == Some(false) {
            config.flags &= !(FLAG_PASS_DHCP | FLAG_PASS_RA);
        }

        interfaces.push(UpOptions {
            iface: name.to_owned(),
            rules,
            rates,
            deny,
            mode: iface.mode.unwrap_or(XdpMode::Driver),
            max_flows,
            config,
            given: Given {
                rules: true,
                config: true,
                max_flows: iface.max_flows.is_some(),
                cookies: true,
            },
            force: false,
            debug_log: false,
            cookies,
        });
    }
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(FileConfig {
        origin: src.origin.to_owned(),
        interfaces,
    })
}

/// Checks an interface name as the kernel's `dev_valid_name` does, and refuses loopback.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name must not be empty".into());
    }
    if name.len() > MAX_IFACE_NAME {
        return Err(format!(
            "interface name {name:?} is longer than {MAX_IFACE_NAME} bytes"
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name == "lo" {
        return Err(
            "refusing the loopback interface \"lo\": loopback traffic is never filtered".into(),
        );
    }
    Ok(())
}

fn set_timeouts(
    src: &Source<'_>,
    timeouts: &mut Timeouts,
    raw: &RawTimeouts,
    path: &str,
    errors: &mut Vec<String>,
) {
    for (name, secs) in raw {
        let key = key_path(path, name.get_ref());
        if timeouts.field_mut(name.get_ref()).is_none() {
            errors.push(src.message(name.span(), &key, TimeoutError::Name));
        } else if let Err(e) = timeouts.set(&format!("{}={}", name.get_ref(), secs.get_ref())) {
            errors.push(src.message(secs.span(), &key, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use lockdown_common::contract::config::TimeoutError;

    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text, "lockdown.toml").unwrap_err())
    }

    fn rules(o: &UpOptions) -> Vec<String> {
        o.rules.iter().map(ToString::to_string).collect()
    }

    const FULL: &str = r#"
[timeouts]
tcp_established = 3600
udp_replied = 120

[[interface]]
name = "eth0"
mode = "skb"
max_flows = 1024
monitor = true
pass_dhcp = false
allow = ["tcp/22", { spec = "tcp/443", from = "203.0.113.7/24" }, { spec = "udp/51820", from = "2001:db8::/32" }]
syn_cookies = "on"
syn_cookie_threshold = 500
syn_cookie_calm = 10

[interface.timeouts]
udp_replied = 60

[[interface]]
name = "wg0"
"#;

    #[test]
    fn valid_file() {
        let f = parse(FULL, "lockdown.toml").unwrap();
        assert_eq!(f.names().collect::<Vec<_>>(), ["eth0", "wg0"]);
        let eth0 = f.interface(Some("eth0")).unwrap();
        assert_eq!(eth0.mode, XdpMode::Skb);
        assert_eq!(eth0.max_flows, 1024);
        assert_eq!(
            rules(&eth0),
            [
                "tcp/22",
                "tcp/443 from 203.0.113.0/24",
                "udp/51820 from 2001:db8::/32"
            ]
        );
        assert!(eth0.config.has(FLAG_MONITOR));
        assert!(!eth0.config.has(FLAG_PASS_DHCP));
        assert!(!eth0.config.has(FLAG_PASS_RA));
        assert_eq!(eth0.config.timeouts.tcp_established, 3600);
        assert_eq!(eth0.config.timeouts.udp_replied, 60, "the interface's own");
        assert_eq!(eth0.config.timeouts.icmp, Timeouts::DEFAULT.icmp);
        assert_eq!(
            eth0.given,
            Given {
                rules: true,
                config: true,
                max_flows: true,
                cookies: true,
            }
        );
        assert_eq!(
            eth0.cookies,
            CookieOptions {
                mode: CookieMode::On,
                threshold_per_sec: 500,
                calm_secs: 10
            }
        );

        let wg0 = f.interface(Some("wg0")).unwrap();
        assert_eq!(wg0.mode, XdpMode::Driver);
        assert_eq!(wg0.max_flows, DEFAULT_MAX_FLOWS);
        assert_eq!(rules(&wg0), ["tcp/22"], "the default allowlist");
        assert_eq!(wg0.config.flags, Config::DEFAULT.flags);
        assert_eq!(wg0.config.timeouts.tcp_established, 3600, "the file-wide");
        assert_eq!(wg0.config.timeouts.udp_replied, 120);
        assert!(!wg0.given.max_flows);
        assert_eq!(wg0.cookies, CookieOptions::default(), "auto, 1000/s, 30 s");
    }

    /// The packaged example, with the interface name the operator must fill in set to eth0.
    fn packaged_filled_in() -> String {
        let text = include_str!("../../../packaging/lockdown.toml");
        assert!(
            text.contains("\n# name = \"eth0\"\n"),
            "the example's name line moved"
        );
        text.replace("\n# name = \"eth0\"\n", "\nname = \"eth0\"\n")
    }

    #[test]
    fn the_packaged_example_wants_an_interface_name() {
        let text = include_str!("../../../packaging/lockdown.toml");
        let line = text
            .lines()
            .position(|l| l == "[[interface]]")
            .expect("the example has an [[interface]] table")
            + 1;
        let e = err(text);
        assert_eq!(
            e,
            format!(
                "lockdown.toml:{line}: interface[0]: has no `name`: set it to the external interface to lock down (`ip -br link` lists them)"
            )
        );
    }

    #[test]
    fn the_packaged_example_is_valid_once_named() {
        let f = parse(&packaged_filled_in(), "packaging/lockdown.toml").unwrap();
        let o = f.interface(None).unwrap();
        assert_eq!(o.iface, "eth0");
        assert_eq!(rules(&o), ["tcp/22"]);
        assert_eq!(o.config, Config::DEFAULT);
    }

    #[test]
    fn rates() {
        let f = parse(
            "[[interface]]\nname = \"eth0\"\nallow = [{ spec = \"tcp/22\", rate = \"10/min\", burst = 3 }, \"tcp/443\"]\n",
            "x",
        )
        .unwrap();
        let o = f.interface(None).unwrap();
        let rates: Vec<String> = o.rates.iter().map(|(p, r)| format!("{p} {r}")).collect();
        assert_eq!(rates, ["tcp/22 10/min burst 3"]);
        for (text, want) in [
            (
                "allow = [{ spec = \"tcp/22\", rate = \"0/min\" }]",
                "lockdown.toml:3: interface[0].allow[0].rate: ",
            ),
            (
                "allow = [{ spec = \"tcp/22\", rate = \"10/fortnight\" }]",
                "lockdown.toml:3: interface[0].allow[0].rate: ",
            ),
            (
                "allow = [{ spec = \"tcp/22\", burst = 3 }]",
                "lockdown.toml:3: interface[0].allow[0].burst: a burst needs a rate",
            ),
            (
                "allow = [{ spec = \"tcp/22\", rate = \"1/s\", burst = 0 }]",
                "lockdown.toml:3: interface[0].allow[0].burst: must be a whole number of at least 1",
            ),
            (
                "allow = [{ spec = \"udp/53\", rate = \"1/s\" }]",
                "lockdown.toml:3: interface[0].allow: udp/53: rates limit TCP connection requests",
            ),
            (
                "allow = [{ spec = \"tcp/22\", rate = \"1/s\" }, { spec = \"tcp/22\", from = \"10.0.0.0/8\", rate = \"2/s\" }]",
                "lockdown.toml:3: interface[0].allow[1]: tcp/22 already has the rate 1/s burst 5",
            ),
        ] {
            let e = err(&format!("[[interface]]\nname = \"eth0\"\n{text}\n"));
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn deny_entries() {
        let f = parse(
            "[[interface]]\nname = \"eth0\"\ndeny = [\"203.0.113.7\", \"2001:db8::/32\"]\n",
            "x",
        )
        .unwrap();
        let o = f.interface(None).unwrap();
        let nets: Vec<String> = o.deny.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["203.0.113.7/32", "2001:db8::/32"]);
        assert_eq!(
            err(
                "[[interface]]\nname = \"eth0\"\ndeny = [\n  \"10.0.0.1\",\n  \"10.0.0.0/40\",\n]\n"
            ),
            "lockdown.toml:5: interface[0].deny[1]: CIDR prefix length must be 0 to 32"
        );
    }

    #[test]
    fn an_empty_allowlist_allows_nothing() {
        let f = parse("[[interface]]\nname = \"eth0\"\nallow = []\n", "x").unwrap();
        assert!(f.interface(None).unwrap().rules.is_empty());
    }

    #[test]
    fn choosing_an_interface() {
        let f = parse(FULL, "lockdown.toml").unwrap();
        let e = f.interface(None).unwrap_err().to_string();
        assert!(e.contains("several interfaces (eth0, wg0)"), "{e}");
        let e = f.interface(Some("eth1")).unwrap_err().to_string();
        assert!(
            e.contains("does not configure interface \"eth1\"; it configures: eth0, wg0"),
            "{e}"
        );
        let one = parse("[[interface]]\nname = \"eth9\"\n", "x").unwrap();
        assert_eq!(one.interface(None).unwrap().iface, "eth9");
    }

    #[test]
    fn rule_errors_name_the_line_and_key() {
        let text =
            "[[interface]]\nname = \"eth0\"\n\n\n\n\nallow = [\"tcp/22\", \"udp/53\", \"tcp/0\"]\n";
        assert_eq!(
            err(text),
            "lockdown.toml:7: interface[0].allow[2]: port must be a number from 1 to 65535"
        );
        let text = "[[interface]]\nname = \"eth0\"\nallow = [\n  \"tcp/22\",\n  { spec = \"tcp/443\", from = \"10.0.0.0/33\" },\n  \"sctp/1\",\n]\n";
        assert_eq!(
            err(text),
            "lockdown.toml:5: interface[0].allow[1].from: CIDR prefix length must be 0 to 32\n\
             lockdown.toml:6: interface[0].allow[2]: unknown protocol: expected tcp or udp"
        );
        let e =
            err("[[interface]]\nname = \"eth0\"\nallow = [{ spec = \"tcp/1\", form = \"x\" }]\n");
        assert_eq!(
            e,
            "lockdown.toml:3: interface[0].allow[0]: unknown field `form`, expected one of `spec`, `from`, `rate`, `burst`"
        );
        let e = err("[[interface]]\nname = \"eth0\"\nallow = [{ from = \"10.0.0.0/8\" }]\n");
        assert_eq!(
            e,
            "lockdown.toml:3: interface[0].allow[0]: missing field `spec`"
        );
        let e = err("[[interface]]\nname = \"eth0\"\nallow = [22]\n");
        assert!(
            e.starts_with("lockdown.toml:3: interface[0].allow[0]: invalid type: integer `22`"),
            "{e}"
        );
        let e = err(
            "[[interface]]\nname = \"eth0\"\nallow = [\"tcp/1-65535\"]\n[[interface]]\nname = \"eth1\"\nallow = [{ spec = \"tcp/1-65535\", from = \"10.0.0.0/8\" }, { spec = \"udp/1-65535\", from = \"10.0.0.0/8\" }]\n",
        );
        assert!(
            e.starts_with("lockdown.toml:6: interface[1].allow: source-CIDR rules need more"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nmaxflows = 5\n"),
            "lockdown.toml:3: interface[0].maxflows: unknown field `maxflows`, expected one of \
             `name`, `mode`, `max_flows`, `monitor`, `pass_dhcp`, `allow`, `deny`, `timeouts`, \
             `syn_cookies`, `syn_cookie_threshold`, `syn_cookie_calm`"
        );
        assert_eq!(
            err("\n[interfaces]\nname = \"eth0\"\n"),
            "lockdown.toml:2: interfaces: unknown field `interfaces`, expected `interface` or `timeouts`"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n[interface.timeout]\nicmp = 5\n"),
            "lockdown.toml:3: interface[0].timeout: unknown field `timeout`, expected one of \
             `name`, `mode`, `max_flows`, `monitor`, `pass_dhcp`, `allow`, `deny`, `timeouts`, \
             `syn_cookies`, `syn_cookie_threshold`, `syn_cookie_calm`"
        );
    }

    #[test]
    fn type_and_syntax_errors_name_the_line() {
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nmonitor = \"yes\"\n"),
            "lockdown.toml:3: interface[0].monitor: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nmode = \"fast\"\n"),
            "lockdown.toml:3: interface[0].mode: unknown variant `fast`, expected `native` or `skb`"
        );
        // The modes the kernel reports but lockdown never attaches in are not for the file.
        for reported in ["hardware", "multi"] {
            assert_eq!(
                err(&format!(
                    "[[interface]]\nname = \"eth0\"\nmode = \"{reported}\"\n"
                )),
                format!(
                    "lockdown.toml:3: interface[0].mode: unknown variant `{reported}`, expected \
                     `native` or `skb`"
                )
            );
        }
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n[[interface]]\nmode = \"skb\"\n"),
            "lockdown.toml:3: interface[1]: has no `name`: set it to the external interface to lock \
             down (`ip -br link` lists them)"
        );
        let e = err("[[interface]]\nname = \"eth0\"\nallow = [\"tcp/22\"\n");
        assert!(e.starts_with("lockdown.toml:3"), "{e}");
        let e = err("[[interface]]\nname = eth0\n");
        assert!(e.starts_with("lockdown.toml:2"), "{e}");
    }

    #[test]
    fn timeout_errors() {
        let e = err(
            "[timeouts]\ntcp_established = 3600\ntcp_bogus = 5\n[[interface]]\nname = \"eth0\"\n",
        );
        assert_eq!(
            e,
            format!(
                "lockdown.toml:3: timeouts.tcp_bogus: {}",
                TimeoutError::Name
            )
        );
        let e = err("[[interface]]\nname = \"eth0\"\n[interface.timeouts]\nicmp = 0\n");
        assert_eq!(
            e,
            format!(
                "lockdown.toml:4: interface[0].timeouts.icmp: {}",
                TimeoutError::Value
            )
        );
        let e = err("[timeouts]\nicmp = -5\n[[interface]]\nname = \"eth0\"\n");
        assert_eq!(
            e,
            format!("lockdown.toml:2: timeouts.icmp: {}", TimeoutError::Value)
        );
        let e = err("[timeouts]\nicmp = 2147483648\n[[interface]]\nname = \"eth0\"\n");
        assert!(
            e.starts_with("lockdown.toml:2: timeouts.icmp: timeout must be"),
            "{e}"
        );
        let e = err("[timeouts]\nicmp = \"30\"\n[[interface]]\nname = \"eth0\"\n");
        assert!(
            e.starts_with("lockdown.toml:2: timeouts.icmp: invalid type: string"),
            "{e}"
        );
    }

    #[test]
    fn interface_errors() {
        assert_eq!(
            err("[timeouts]\nicmp = 5\n"),
            "lockdown.toml: no [[interface]] table: the file must configure at least one interface"
        );
        assert_eq!(
            err("[[interface]]\nname = \"\"\n"),
            "lockdown.toml:2: interface[0].name: interface name must not be empty"
        );
        assert_eq!(
            err("[[interface]]\nname = \"a-very-long-name0\"\n"),
            "lockdown.toml:2: interface[0].name: interface name \"a-very-long-name0\" is longer than 15 bytes"
        );
        assert!(
            err("[[interface]]\nname = \"lo\"\n")
                .starts_with("lockdown.toml:2: interface[0].name: refusing the loopback interface")
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth 0\"\n"),
            "lockdown.toml:2: interface[0].name: \"eth 0\" is not a valid interface name"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n\n[[interface]]\nname = \"eth0\"\n"),
            "lockdown.toml:5: interface[1].name: interface \"eth0\" is already configured at line 2"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nmax_flows = 0\n"),
            "lockdown.toml:3: interface[0].max_flows: must be a number from 1 to 4294967295"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nmax_flows = 4294967296\n"),
            "lockdown.toml:3: interface[0].max_flows: must be a number from 1 to 4294967295"
        );
    }

    #[test]
    fn syn_cookie_errors() {
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\nsyn_cookie_threshold = 0\n"),
            "lockdown.toml:3: interface[0].syn_cookie_threshold: must be a number from 1 to \
             4294967295 (SYNs per second to one port)"
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n\nsyn_cookie_calm = -3\n"),
            "lockdown.toml:4: interface[0].syn_cookie_calm: must be a number from 1 to 4294967295 \
             (seconds)"
        );
        let e = err("[[interface]]\nname = \"eth0\"\nsyn_cookies = \"sometimes\"\n");
        assert!(
            e.starts_with("lockdown.toml:3: interface[0].syn_cookies: unknown variant `sometimes`"),
            "{e}"
        );
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("lockdown-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lockdown.toml");
        fs::write(
            &path,
            "[[interface]]\nname = \"eth0\"\nallow = [\"tcp/x\"]\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}:3: interface[0].allow[0]: port must be a number from 1 to 65535",
                path.display()
            )
        );
        fs::write(&path, "[[interface]]\nname = \"eth0\"\n").unwrap();
        assert_eq!(load(&path).unwrap().origin(), path.display().to_string());
        fs::remove_dir_all(&dir).unwrap();
        let e = format!("{:#}", load(&dir.join("missing.toml")).unwrap_err());
        assert!(e.starts_with("reading "), "{e}");
    }

    #[test]
    fn overrides() {
        let f = parse(FULL, "lockdown.toml").unwrap();
        let mut o = f.interface(Some("wg0")).unwrap();
        apply(&mut o, &Overrides::default()).unwrap();
        assert_eq!(rules(&o), ["tcp/22"]);
        assert!(!o.given.max_flows);

        apply(
            &mut o,
            &Overrides {
                allow: vec!["udp/51820".into(), "tcp/8000-8100".into()],
                mode: Some(XdpMode::Skb),
                max_flows: Some(4096),
                monitor: true,
                no_dhcp: true,
                timeouts: vec!["icmp=5".into(), "udp_replied=7".into()],
                force: true,
                syn_cookies: Some(CookieMode::Off),
                syn_cookie_threshold: Some(20),
                syn_cookie_calm: Some(5),
            },
        )
        .unwrap();
        assert_eq!(rules(&o), ["tcp/8000-8100", "udp/51820"]);
        assert_eq!(o.mode, XdpMode::Skb);
        assert_eq!(o.max_flows, 4096);
        assert!(o.given.max_flows);
        assert!(o.config.has(FLAG_MONITOR));
        assert!(!o.config.has(FLAG_PASS_DHCP) && !o.config.has(FLAG_PASS_RA));
        assert_eq!(o.config.timeouts.icmp, 5);
        assert_eq!(o.config.timeouts.udp_replied, 7);
        assert_eq!(o.config.timeouts.tcp_established, 3600, "the file's");
        assert!(o.force);
        assert!(o.given.cookies);
        assert_eq!(
            o.cookies,
            CookieOptions {
                mode: CookieMode::Off,
                threshold_per_sec: 20,
                calm_secs: 5
            }
        );
        // Bad cookie values are refused, naming the flag, and change nothing.
        let before = format!("{o:?}");
        for (o2, flag) in [
            (
                Overrides {
                    syn_cookie_threshold: Some(0),
                    syn_cookies: Some(CookieMode::On),
                    ..Overrides::default()
                },
                "--syn-cookie-threshold must be at least 1",
            ),
            (
                Overrides {
                    syn_cookie_calm: Some(0),
                    ..Overrides::default()
                },
                "--syn-cookie-calm must be at least 1",
            ),
        ] {
            let e = apply(&mut o, &o2).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
            assert_eq!(format!("{o:?}"), before);
        }

        // A failed override leaves the options unchanged.
        let before = format!("{o:?}");
        let e = apply(
            &mut o,
            &Overrides {
                allow: vec!["tcp/1".into()],
                timeouts: vec!["icmp=0".into()],
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("--timeout icmp=0: {}", TimeoutError::Value)
        );
        assert_eq!(format!("{o:?}"), before);
        let e = apply(
            &mut o,
            &Overrides {
                allow: vec!["tcp/22".into(), "tcp/99999".into()],
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "--allow tcp/99999: port must be a number from 1 to 65535"
        );
        let e = apply(
            &mut o,
            &Overrides {
                max_flows: Some(0),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "--max-flows must be at least 1");
    }
}
