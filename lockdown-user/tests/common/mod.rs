//! What lockdown-user's root integration tests share: running a closure in a private network
//! namespace of its own thread, and running commands there.
//!
//! The thread `unshare(CLONE_NEWNET)`s and checks that it did before it runs anything: the commands
//! it spawns inherit the thread's namespace. The namespace has no name and no mount: it lives as
//! long as the thread and the sockets opened in it, so it is gone when the test ends, however it
//! ends; there is nothing to delete.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    thread,
};

use nix::sched::{CloneFlags, unshare};

/// The namespace of the calling thread, as `net:[inode]`.
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("reading /proc/thread-self/ns/net")
        .to_string_lossy()
        .into_owned()
}

/// Runs `f` in a new network namespace with `lo` up; panics in `f` propagate. `what` names the
/// test binary for the message when not root.
pub fn in_private_netns<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the {what} tests need root (they create network namespaces); run them as root: \
         `cargo test -p lockdown-user --test {what}`"
    );
    let worker = thread::spawn(move || {
        let host = thread_netns();
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let own = thread_netns();
        assert_ne!(
            own, host,
            "unshare did not move the thread to a new network namespace"
        );
        // A spawned command must land in this namespace, never in the host's.
        let out = Command::new("readlink")
            .arg("/proc/self/ns/net")
            .output()
            .expect("running readlink");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            own,
            "a spawned command is not in the test's network namespace; refusing to go on"
        );
        run("ip", &["link", "set", "lo", "up"], None);
        f()
    });
    worker
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `prog args…` (with `stdin` fed to it); panics with its stderr if it fails.
pub fn run(prog: &str, args: &[&str], stdin: Option<&str>) {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running `{prog}`: {e} (is it installed?)"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing to `{prog}`: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{prog}`: {e}"));
    assert!(
        out.status.success(),
        "`{prog} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
