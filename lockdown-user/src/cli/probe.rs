use anyhow::Result;
use clap::Args;
use lockdown_common::contract::maps::PROG_EGRESS;
use lockdown_user::{
    attach::{egress, variant},
    host::{
        link::{self, XdpMode},
        probe::{Feature, Kernel, lacking},
    },
};

/// Show what the running kernel offers lockdown and what `up` would choose on IF, changing nothing
/// (for support and the kernel matrix; hidden from --help).
#[derive(Debug, Args)]
pub(super) struct Probe {
    /// The interface `up` would attach to.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl Probe {
    pub(super) fn run(self) -> Result<()> {
        let kernel = Kernel::probe()?;
        let link = link::query(&self.iface)?;
        let egress = egress::choose(&kernel.features);
        let choice = |mode| {
            variant::choose(&kernel.features, mode, &link, &kernel.release).and_then(|v| {
                kernel.require(&[v.program(), PROG_EGRESS], v.needs())?;
                Ok(v)
            })
        };
        let (native, skb) = (choice(XdpMode::Driver), choice(XdpMode::Skb));
        let lacks: Vec<String> = lacking(
            &kernel.features,
            &[variant::Variant::Linear.program(), PROG_EGRESS],
            &[],
        )?
        .iter()
        .map(ToString::to_string)
        .collect();
        let kfunc = kernel.features.has(Feature::SyncookieKfunc);
        let outcome = |r: &Result<variant::Variant>| match r {
            Ok(v) => serde_json::json!({ "program": v.program(), "variant": v }),
            Err(e) => serde_json::json!({ "refused": format!("{e:#}") }),
        };
        if self.json {
            let f = &kernel.features;
            println!(
                "{}",
                serde_json::json!({
                    "release": kernel.release,
                    "tcx": f.has(Feature::Tcx),
                    "tcx_hidden": kernel.forced_netlink,
                    "xdp_link": f.has(Feature::XdpLink),
                    "xdp_frags": f.has(Feature::XdpFrags),
                    "global_data": f.has(Feature::GlobalData),
                    "syncookie_kfunc": kfunc,
                    "lacking": lacks,
                    "egress": egress,
                    "native": outcome(&native),
                    "skb": outcome(&skb),
                })
            );
            return Ok(());
        }
        println!("kernel     {}", kernel.summary());
        println!(
            "kfunc      bpf_sk_assign_tcp_reqsk {}{}",
            if kfunc { "yes" } else { "no" },
            if kernel.forced_no_reqsk {
                " (hidden by LOCKDOWN_FORCE_NO_REQSK=1)"
            } else {
                ""
            }
        );
        println!(
            "lacking    {}",
            if lacks.is_empty() {
                "nothing".to_owned()
            } else {
                lacks.join("; ")
            }
        );
        println!("egress     {}", egress.name());
        for (mode, r) in [("native", &native), ("skb", &skb)] {
            match r {
                Ok(v) => println!("xdp {mode:<6} {}: {}", v.program(), v.describe()),
                Err(e) => println!("xdp {mode:<6} refused: {e:#}"),
            }
        }
        Ok(())
    }
}
