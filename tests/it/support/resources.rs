//! What a process holds, read from `/proc`: the collector's resident memory, this process's
//! file descriptor limit. For "bounded in memory" checks, which assert generous resource bounds,
//! never timings.

use super::TestServer;
use nix::unistd::Pid;

/// The resident set size of a process (`VmRSS` in `/proc/<pid>/status`), in bytes.
pub(crate) fn rss_bytes(pid: Pid) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// The most a process has ever had resident (`VmHWM`, its high-water mark), in bytes: a peak
/// no sampling can miss.
pub(crate) fn peak_rss_bytes(pid: Pid) -> u64 {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: Pid, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

/// This process's soft limit on open files (`Max open files` in `/proc/self/limits`);
/// `u64::MAX` when unlimited.
pub(crate) fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a `Max open files` line");
    let soft = line.trim_start_matches("Max open files").split_whitespace().next().expect("a soft limit");
    soft.parse().unwrap_or(u64::MAX)
}

/// How many files this process has open now.
pub(crate) fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

impl TestServer {
    /// The collector's resident memory, in bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// The collector's peak resident memory so far, in bytes.
    pub(crate) fn peak_rss_bytes(&self) -> u64 {
        peak_rss_bytes(self.pid())
    }
}

/// Runs `cmd` to its end and reads its peak resident memory (`VmHWM`, the kernel's high-water
/// mark) from `/proc` while it runs: the last reading before it exits. Blocking.
pub(crate) fn output_and_peak_rss(mut cmd: std::process::Command) -> (std::process::Output, u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let child = cmd.spawn().expect("the command runs");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                // Gone, or a zombie without memory: the last reading stands.
                let hwm = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                });
                peak = peak.max(hwm.unwrap_or(0) * 1024);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let out = child.wait_with_output().expect("the command ends");
    done.store(true, Ordering::Relaxed);
    (out, watcher.join().expect("the watcher"))
}
