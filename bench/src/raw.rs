//! Tiny programs assembled by hand and loaded with the raw `bpf(2)` syscall (aya loads programs
//! only from ELF): a bare TC program (`return TC_ACT_UNSPEC`), the floor for the egress
//! program's cost as the object's `baseline_pass` is for XDP; and bare XDP_DROP programs that
//! call one clock helper first, to show what a clock read costs on this machine.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;

pub(crate) const HELPER_KTIME_GET_BOOT_NS: i32 = 125;
pub(crate) const HELPER_KTIME_GET_COARSE_NS: i32 = 160;
pub(crate) const HELPER_JIFFIES64: i32 = 118;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr prefix of the size passed; pointers in it are
    // valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_long,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) struct RawProg {
    fd: OwnedFd,
}

/// Result of one test run: the program's return value and the kernel's mean ns per run.
pub(crate) struct Run {
    pub retval: u32,
    pub ns: u32,
}

/// `mov64 r0, imm`.
fn mov_r0(imm: i32) -> u64 {
    let i = imm.to_le_bytes();
    u64::from_le_bytes([0xb7, 0, 0, 0, i[0], i[1], i[2], i[3]])
}

/// `call helper`.
fn call(helper: i32) -> u64 {
    let i = helper.to_le_bytes();
    u64::from_le_bytes([0x85, 0, 0, 0, i[0], i[1], i[2], i[3]])
}

const EXIT: u64 = 0x95;

impl RawProg {
    /// TC: `return TC_ACT_UNSPEC`.
    pub(crate) fn bare_tc() -> Result<Self> {
        Self::load(BPF_PROG_TYPE_SCHED_CLS, &[mov_r0(-1), EXIT], "bare_tc")
    }

    /// XDP: call `helper` (no arguments), then `return XDP_DROP`.
    pub(crate) fn xdp_drop_after(helper: i32) -> Result<Self> {
        Self::load(
            BPF_PROG_TYPE_XDP,
            &[call(helper), mov_r0(1), EXIT],
            "bare_clock",
        )
    }

    fn load(prog_type: u32, insns: &[u64], what: &str) -> Result<Self> {
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..what.len().min(15)].copy_from_slice(&what.as_bytes()[..what.len().min(15)]);
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..ProgLoadAttr::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr)
            .with_context(|| format!("BPF_PROG_LOAD of the hand-assembled {what} program"))?;
        // SAFETY: the kernel returned a fresh program fd that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { fd })
    }

    pub(crate) fn test_run(&self, data: &[u8], repeat: u32) -> Result<Run> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: data.len() as u32,
            data_in: data.as_ptr() as u64,
            repeat,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)
            .context("BPF_PROG_TEST_RUN of a hand-assembled program")?;
        Ok(Run {
            retval: attr.retval,
            ns: attr.duration,
        })
    }
}
