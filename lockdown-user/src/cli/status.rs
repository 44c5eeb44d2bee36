use anyhow::Result;
use clap::Args;
use lockdown_user::{pins, report};

/// Show an interface's mode, allowlist, flow count and counters.
///
/// Example: lockdown status --json
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The locked-down interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    pub fn run(self) -> Result<()> {
        let dir = pins::select(&pins::root(), self.iface.as_deref())?;
        let s = report::status(&dir)?;
        if self.json {
            println!("{}", serde_json::to_string(&s)?);
            return Ok(());
        }
        println!("interface  {}", s.interface);
        println!(
            "mode       {} ({})",
            s.mode,
            if s.monitor { "monitor" } else { "enforce" }
        );
        println!("allow      {}", s.allow.join(", "));
        println!("flows      {} / {}", s.flows, s.max_flows);
        println!("{:<28} {:>14} {:>16}", "counter", "packets", "bytes");
        for (name, packets) in &s.counters {
            println!("{name:<28} {packets:>14} {:>16}", s.bytes[name]);
        }
        Ok(())
    }
}
