//! Latency statistics, and what `/proc` says about a process's memory and CPU.

use std::time::{Duration, Instant};

/// p50, p99 and max of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

impl Summary {
    /// From raw samples (sorted in place).
    pub(crate) fn of(samples: &mut [u32]) -> Summary {
        samples.sort_unstable();
        Summary {
            count: samples.len() as u64,
            p50: percentile(samples, 50.0).map_or(0, u64::from),
            p99: percentile(samples, 99.0).map_or(0, u64::from),
            max: samples.last().map_or(0, |&m| u64::from(m)),
        }
    }

    /// `p50 1.23 ms p99 4.56 ms max 7.89 ms`, or `no samples`.
    pub(crate) fn ms(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!("p50 {} ms p99 {} ms max {} ms", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

/// Microseconds as milliseconds with enough digits to tell 0.15 ms from 0.25 ms.
pub(crate) fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `p`% of the
/// samples at or below it. No interpolation: every reported figure is a latency that happened.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(crate) fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Values below this are their own bucket; above, each power of two is split into
/// `SUB` buckets, so a bucket is at most 1/64 (1.6 %) of its value wide.
const DIRECT: u64 = 128;
const SUB: u64 = 64;
const BUCKETS: usize = (DIRECT + 26 * SUB) as usize;

/// A log-linear latency histogram (microseconds) for the fan-out figure, where every subscriber
/// records every event: a thousand subscribers times a minute of events is too many raw samples
/// to keep and sort, while this costs 7 KiB each. Max is kept exactly.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u32>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], count: 0, max: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < DIRECT {
        return v as usize;
    }
    let v = v.min((1 << 32) - 1);
    let e = 63 - u64::from(v.leading_zeros()); // >= 7
    let shift = e - 6;
    let top = v >> shift; // in [64, 128)
    (DIRECT + (shift - 1) * SUB + (top - SUB)) as usize
}

/// The middle of a bucket's range.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < DIRECT {
        return i;
    }
    let shift = (i - DIRECT) / SUB + 1;
    let top = (i - DIRECT) % SUB + SUB;
    (top << shift) + (1 << shift) / 2
}

impl Histogram {
    pub(crate) fn record(&mut self, us: u64) {
        let c = &mut self.counts[bucket(us)];
        *c = c.saturating_add(1);
        self.count += 1;
        self.max = self.max.max(us);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Nearest-rank percentile, to within a bucket's width, never above the max.
    pub(crate) fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = (((p / 100.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(bucket_value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            p50: self.percentile(50.0).unwrap_or(0),
            p99: self.percentile(99.0).unwrap_or(0),
            max: self.max,
        }
    }
}

/// The resident set size of a process, from `/proc/<pid>/status`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether `pid` on this machine is an aop process. The pid comes from `/health`, and a
/// collector in another pid namespace (a container) may report a number that is someone else's.
pub(crate) fn is_aop(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "aop")
}

/// User + system CPU time of a process, in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of all these processes together; `None` when there are none, or when one cannot be
/// read (it exited): a partial sum would pass for the whole.
fn servers_ticks(pids: &[String]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_ticks(p)).sum()
}

/// Clock ticks per second; `getconf` because reading it directly needs libc.
fn ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Busy CPU time of the whole machine (everything but idle and iowait), in clock ticks.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = cpu.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(f.get(..8)?.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
}

/// CPU used by the collector, by this process, and by everything else over a measurement, in
/// cores: the share each took tells a server limit from a load-generator limit, and "rest" flags
/// a figure taken while other work (a build) shared the machine. "rest" also holds kernel time
/// not charged to a process, such as some of loopback networking's softirq work. The collector
/// may be several processes (the instances of a fleet a workload spreads over): their CPU is
/// summed, as one collector's would be.
pub(crate) struct CpuMeter {
    servers: Vec<String>,
    start: Instant,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
    machine_ticks: Option<u64>,
}

impl CpuMeter {
    /// `server_pids` empty: the collector's CPU is not reported.
    pub(crate) fn start(server_pids: &[u32]) -> CpuMeter {
        let servers: Vec<String> = server_pids.iter().map(u32::to_string).collect();
        CpuMeter {
            server_ticks: servers_ticks(&servers),
            own_ticks: cpu_ticks("self"),
            machine_ticks: machine_busy_ticks(),
            servers,
            start: Instant::now(),
        }
    }

    /// `; cpu server 1.52 bench 0.40 rest 0.03 cores`, or nothing when `/proc` cannot tell.
    pub(crate) fn finish(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let cores =
            |before: Option<u64>, now: Option<u64>| Some(now?.saturating_sub(before?) as f64 / ticks_per_sec() / secs);
        let server = cores(self.server_ticks, servers_ticks(&self.servers));
        let own = cores(self.own_ticks, cpu_ticks("self"));
        let machine = cores(self.machine_ticks, machine_busy_ticks());
        match (server, own, machine) {
            (Some(s), Some(o), Some(m)) => {
                format!("; cpu server {s:.2} bench {o:.2} rest {:.2} cores", (m - s - o).max(0.0))
            }
            (Some(s), Some(o), None) => format!("; cpu server {s:.2} bench {o:.2} cores"),
            (None, Some(o), _) => format!("; cpu bench {o:.2} cores"),
            _ => String::new(),
        }
    }
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let check = |samples: &[u32], p: f64, want: Option<u32>| {
            let mut s = samples.to_vec();
            s.sort_unstable();
            assert_eq!(percentile(&s, p), want, "p{p} of {samples:?}");
        };
        check(&[], 50.0, None);
        check(&[7], 50.0, Some(7));
        check(&[7], 99.0, Some(7));
        check(&[1, 2, 3, 4], 50.0, Some(2));
        check(&[4, 3, 2, 1], 75.0, Some(3));
        check(&[1, 2, 3, 4], 100.0, Some(4));
        check(&[1, 2, 3, 4], 0.0, Some(1));
        let hundred: Vec<u32> = (1..=100).collect();
        check(&hundred, 50.0, Some(50));
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.5, Some(100));
        let thousand: Vec<u32> = (1..=1000).rev().collect();
        check(&thousand, 99.0, Some(990));
    }

    #[test]
    fn summary_of_samples() {
        let mut s: Vec<u32> = (1..=1000).rev().collect();
        let sum = Summary::of(&mut s);
        assert_eq!(sum, Summary { count: 1000, p50: 500, p99: 990, max: 1000 });
        assert_eq!(sum.ms(), "p50 0.50 ms p99 0.99 ms max 1.00 ms");
        assert_eq!(Summary::of(&mut []).ms(), "no samples");
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(123_456), "123");
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in 0..200_000u64 {
            let b = bucket(v);
            assert!(b == last || b == last + 1, "gap at {v}");
            last = b;
            let mid = bucket_value(b);
            let err = mid.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / 64.0, "{v} -> bucket {b} ({mid}), error {err}");
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_percentiles_match_samples() {
        let mut h = Histogram::default();
        let mut raw = Vec::new();
        let mut x = 12345u64;
        for _ in 0..50_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (x >> 33) % 50_000;
            h.record(v);
            raw.push(v as u32);
        }
        let mut other = Histogram::default();
        other.record(3);
        h.merge(&other);
        raw.push(3);
        raw.sort_unstable();
        for p in [50.0, 90.0, 99.0, 99.9] {
            let exact = f64::from(percentile(&raw, p).unwrap());
            let approx = h.percentile(p).unwrap() as f64;
            assert!((approx - exact).abs() <= exact / 50.0 + 1.0, "p{p}: {approx} vs {exact}");
        }
        assert_eq!(h.summary().max, u64::from(*raw.last().unwrap()));
        assert_eq!(h.summary().count, 50_001);
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn proc_readers_see_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_ticks("self").is_some());
        assert!(machine_busy_ticks().is_some());
        assert!(CpuMeter::start(&[me]).finish().starts_with("; cpu server "));
        assert!(CpuMeter::start(&[me, me]).finish().starts_with("; cpu server "));
        assert!(CpuMeter::start(&[]).finish().starts_with("; cpu bench "));
        assert_eq!(servers_ticks(&[]), None);
        assert_eq!(servers_ticks(&["self".into(), "0".into()]), None);
    }
}
