//! Host-side stub so the eBPF crate can be a build-dependency of `lockdown-user`; the programs are
//! the `lockdown` binary target, built for the BPF target by `aya-build`.
#![no_std]
