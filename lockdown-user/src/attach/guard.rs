//! The lockout guard: a change that would cut the operator off is refused before anything changes.
//! It protects the SSH sessions this host serves (`$SSH_CONNECTION`, and established connections to
//! a port where an sshd listens): an allowlist must still admit a new connection from each
//! session's client to its port, and the blocklist must hold none of their clients. `--force`
//! passes it.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use lockdown_common::{
    contract::{allow::AllowRule, flow::PROTO_TCP},
    rules::{allow::admits, deny::DenyNet},
};

use crate::host::sockets::{self, SshSession};

/// Refuses the allowlist `rules` and the blocklist entries `deny` if either would cut an SSH
/// session this host serves.
pub fn check(rules: &BTreeSet<AllowRule>, deny: &[DenyNet]) -> Result<()> {
    let sessions = sessions()?;
    refuse_rules(rules, &sessions)?;
    refuse_deny(deny, &sessions)
}

/// Refuses the blocklist entries `deny` if one holds the client of an SSH session into this host.
pub fn check_deny(deny: &[DenyNet]) -> Result<()> {
    refuse_deny(deny, &sessions()?)
}

/// The SSH sessions this host serves now.
fn sessions() -> Result<Vec<SshSession>> {
    Ok(sockets::ssh_sessions(&sockets::all()?))
}

/// Fails, naming the port, if `rules` would refuse a new connection from one of `sessions`.
fn refuse_rules(rules: &BTreeSet<AllowRule>, sessions: &[SshSession]) -> Result<()> {
    for s in sessions {
        if !admits(rules, PROTO_TCP, s.client, s.port) {
            bail!(
                "this policy would lock out the SSH session from {} to port {}: it does not allow tcp/{} from that address. Add `--allow tcp/{}` or pass --force",
                s.client,
                s.port,
                s.port,
                s.port
            );
        }
    }
    Ok(())
}

/// Fails, naming the entry, if one of `nets` holds the client of one of `sessions`.
fn refuse_deny(nets: &[DenyNet], sessions: &[SshSession]) -> Result<()> {
    for s in sessions {
        if let Some(net) = nets.iter().find(|n| n.contains(s.client)) {
            bail!(
                "refusing to deny {net}: the SSH session from {} into this host would be cut \
                 (pass --force to deny it anyway)",
                s.client
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sockets::ssh_connection;

    #[test]
    fn lockout_guard_names_the_port() {
        let rules: BTreeSet<_> = [AllowRule::parse("tcp/22", None).unwrap()].into();
        let s = ssh_connection("10.0.0.9 51234 10.0.0.1 2222").unwrap();
        assert_eq!(s.port, 2222);
        let err = refuse_rules(&rules, &[s]).unwrap_err().to_string();
        assert!(err.contains("port 2222"), "{err}");
        assert!(refuse_rules(&rules, &[SshSession { port: 22, ..s }]).is_ok());
        let cidr: BTreeSet<_> =
            [AllowRule::parse("tcp/2000-3000", Some("10.0.0.0/24")).unwrap()].into();
        assert!(refuse_rules(&cidr, &[s]).is_ok());
        let other: BTreeSet<_> =
            [AllowRule::parse("tcp/2222", Some("10.0.1.0/24")).unwrap()].into();
        assert!(refuse_rules(&other, &[s]).is_err());
    }

    #[test]
    fn a_deny_entry_holding_a_sessions_client_is_refused() {
        let s = ssh_connection("10.0.0.9 51234 10.0.0.1 22").unwrap();
        let net = |c: &str| DenyNet::parse(c).unwrap();
        let err = refuse_deny(&[net("10.0.0.0/24")], &[s])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.0.0.0/24") && err.contains("10.0.0.9"),
            "{err}"
        );
        assert!(refuse_deny(&[net("10.0.1.0/24"), net("fd00::/8")], &[s]).is_ok());
        assert!(refuse_deny(&[net("10.0.0.0/24")], &[]).is_ok());
    }
}
