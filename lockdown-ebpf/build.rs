use which::which;

/// Rebuild when bpf-linker changes, as aya-template does.
fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found: run `cargo xtask setup` (it installs bpf-linker 0.10.1)");
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
