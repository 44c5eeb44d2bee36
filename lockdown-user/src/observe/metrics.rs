//! Prometheus metrics, read from the pinned maps at each scrape.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use lockdown_common::contract::counters::CounterKind;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{datapath::pins, observe::report};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabels {
    interface: String,
}

/// One flow map of one interface.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    interface: String,
    /// live or closing.
    table: String,
    /// ipv4 or ipv6.
    family: String,
}

/// One allowed TCP port of one interface.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    interface: String,
    port: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    interface: String,
    reason: String,
    /// pass, drop, egress, log or table.
    kind: String,
}

/// The metrics text (Prometheus exposition format) for every locked-down interface, or one.
pub fn render(root: &Path, iface: Option<&str>) -> Result<String> {
    let dirs = match iface {
        Some(i) => vec![pins::select(root, Some(i))?],
        None => pins::locked(root),
    };
    let packets = Family::<ReasonLabels, Counter>::default();
    let bytes = Family::<ReasonLabels, Counter>::default();
    let flows = Family::<TableLabels, Gauge>::default();
    let capacity = Family::<TableLabels, Gauge>::default();
    let high_water = Family::<TableLabels, Gauge>::default();
    let pressure = Family::<TableLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let rules = Family::<IfaceLabels, Gauge>::default();
    let monitor = Family::<IfaceLabels, Gauge>::default();
    let engaged = Family::<PortLabels, Gauge>::default();
    let answering = Family::<IfaceLabels, Gauge>::default();
    let handoff = Family::<ReasonLabels, Counter>::default();
    for dir in &dirs {
        let s = report::status(dir, std::time::Duration::ZERO)
            .with_context(|| format!("reading {}", dir.iface))?;
        let l = IfaceLabels {
            interface: s.interface.clone(),
        };
        for c in lockdown_common::contract::counters::Counter::ALL {
            let labels = ReasonLabels {
                interface: s.interface.clone(),
                reason: c.name().to_owned(),
                kind: match c.kind() {
                    CounterKind::Pass => "pass",
                    CounterKind::Drop => "drop",
                    CounterKind::Egress => "egress",
                    CounterKind::Log => "log",
                    CounterKind::Table => "table",
                    CounterKind::Answer => "answer",
                }
                .to_owned(),
            };
            packets.get_or_create(&labels).inc_by(s.counters[c.name()]);
            bytes.get_or_create(&labels).inc_by(s.bytes[c.name()]);
        }
        for o in &s.tables {
            let t = TableLabels {
                interface: s.interface.clone(),
                table: o.table.to_owned(),
                family: o.family.to_owned(),
            };
            flows.get_or_create(&t).set(o.entries as i64);
            capacity.get_or_create(&t).set(i64::from(o.capacity));
            high_water.get_or_create(&t).set(i64::from(o.high_water));
            pressure.get_or_create(&t).set(o.fill());
        }
        rules.get_or_create(&l).set(s.allow.len() as i64);
        let c = &s.syn_cookies;
        answering.get_or_create(&l).set(i64::from(c.answering));
        for port in &c.engaged_ports {
            engaged
                .get_or_create(&PortLabels {
                    interface: s.interface.clone(),
                    port: *port,
                })
                .set(1);
        }
        for (name, v) in &c.handoff {
            handoff
                .get_or_create(&ReasonLabels {
                    interface: s.interface.clone(),
                    reason: (*name).to_owned(),
                    kind: "handoff".to_owned(),
                })
                .inc_by(*v);
        }
        monitor.get_or_create(&l).set(i64::from(s.monitor));
    }
    let mut registry = Registry::with_prefix("lockdown");
    registry.register("packets", "Packets by verdict reason", packets);
    registry.register("bytes", "Bytes by verdict reason", bytes);
    registry.register("flows", "Live entries per flow table", flows);
    registry.register(
        "flows_capacity",
        "Capacity per flow table (entries)",
        capacity,
    );
    registry.register(
        "flows_high_water",
        "Most live entries counted per flow table since the interface was locked down",
        high_water,
    );
    registry.register(
        "flow_table_pressure",
        "Live entries as a fraction of capacity, per flow table",
        pressure,
    );
    registry.register("allow_rules", "Rules in the allowlist", rules);
    registry.register(
        "monitor_mode",
        "1 when counting drops without enforcing",
        monitor,
    );
    registry.register(
        "syn_cookies_engaged",
        "1 for each allowed TCP port where SYN cookies answer SYNs now",
        engaged,
    );
    registry.register(
        "syn_cookies_answering",
        "1 when SYN cookies can answer on the interface (cookie program and hand-off installed)",
        answering,
    );
    registry.register(
        "syn_cookie_handoff",
        "Cookie ACKs the TC hand-off saw, by outcome",
        handoff,
    );
    let mut out = String::new();
    encode(&mut out, &registry).context("encoding metrics")?;
    Ok(out)
}

/// Serves `/metrics` on `listen` until the process ends. Any other path is 404.
pub fn serve(listen: &str, root: &Path, iface: Option<&str>) -> Result<()> {
    let server = tiny_http::Server::http(listen)
        .map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
    for req in server.incoming_requests() {
        let response = if req.url() == "/metrics" {
            match render(root, iface) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .expect("static header"),
                ),
                Err(e) => {
                    let mut body = String::new();
                    let _ = writeln!(body, "lockdown: {e:#}");
                    tiny_http::Response::from_string(body).with_status_code(500)
                }
            }
        } else {
            tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
        };
        let _ = req.respond(response);
    }
    Ok(())
}
