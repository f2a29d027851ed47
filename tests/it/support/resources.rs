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
