fn main() -> anyhow::Result<()> {
    let mut ebpf = aya::Ebpf::load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lockdown")))?;
    let p: &mut aya::programs::Xdp = ebpf.program_mut("lockdown_ingress").unwrap().try_into()?;
    p.load()?;
    let p: &mut aya::programs::SchedClassifier = ebpf.program_mut("lockdown_egress").unwrap().try_into()?;
    p.load()?;
    println!("loaded");
    Ok(())
}
