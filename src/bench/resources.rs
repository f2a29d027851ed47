//! Workload 5: memory of the running collector, and time from start to ready of a fresh one.

use super::stats::rss_bytes;
use crate::client::{Conn, Target};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Peak and mean RSS over a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RssStats {
    pub(crate) first: u64,
    pub(crate) peak: u64,
    pub(crate) mean: u64,
    pub(crate) samples: u64,
}

/// Samples a process's RSS on a timer until stopped. Reading `/proc` is a few microseconds, so
/// even a 5 ms period costs the measurement nothing visible.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<RssStats>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut s = RssStats::default();
            let mut sum = 0u128;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let done = flag.load(Ordering::Relaxed);
                if let Some(rss) = rss_bytes(pid) {
                    if s.samples == 0 {
                        s.first = rss;
                    }
                    s.peak = s.peak.max(rss);
                    sum += u128::from(rss);
                    s.samples += 1;
                }
                if done {
                    break;
                }
            }
            s.mean = (sum / u128::from(s.samples.max(1))) as u64;
            s
        });
        RssSampler { stop, task }
    }

    pub(crate) async fn stop(self) -> RssStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The address in the collector's `listening addr=IP:PORT` log line.
pub(crate) fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening addr=")? + "listening addr=".len();
    let rest = &line[at..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '\u{1b}').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One start of a fresh collector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartRun {
    /// Spawn to the first `200` from `/health`.
    pub(crate) ready: Duration,
    /// RSS one second after ready, with no traffic.
    pub(crate) idle_rss: Option<u64>,
    /// SIGTERM to exit.
    pub(crate) stop: Option<Duration>,
}

/// Spawns `binary start --port 0 --db DB --no-open`, times it to a healthy `/health`, reads its
/// idle RSS, and stops it with SIGTERM (through `kill`, as there is no signal crate here).
pub(crate) async fn start_once(binary: &Path, db: &Path) -> Result<StartRun, String> {
    let spawned = Instant::now();
    let mut child = Command::new(binary)
        .args(["start", "--port", "0", "--no-open", "--db"])
        .arg(db)
        // The address is read from the info-level log line; a user's quieter setting would hide it.
        .env("AOP_LOG", "info")
        .env_remove("AOP_PORT")
        .env_remove("AOP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take();
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
    // A thread, not a task: the pipe is a blocking std handle, and it must be drained to the end
    // so the collector never blocks on a full pipe while it is being measured.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut tail = Vec::new();
        if let Some(err) = stderr {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(addr));
                    }
                } else if tx.is_some() {
                    tail.push(line);
                }
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(tail.join(" | ")));
        }
    });
    let outcome = async {
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(tail))) => return Err(format!("the collector exited before listening: {tail}")),
            _ => return Err("no `listening addr=` line within 30 s".to_owned()),
        };
        let target = Arc::new(Target { addr, host: addr.to_string(), auth: None, url: format!("http://{addr}") });
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = loop {
            if health_ok(&target).await {
                break spawned.elapsed();
            }
            if Instant::now() > deadline {
                return Err("/health did not answer 200 within 30 s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok((ready, rss_bytes(pid)))
    }
    .await;
    let stop = terminate(&mut child).await;
    let (ready, idle_rss) = outcome?;
    Ok(StartRun { ready, idle_rss, stop })
}

async fn health_ok(target: &Arc<Target>) -> bool {
    let Ok(Ok(mut c)) = tokio::time::timeout(Duration::from_millis(500), Conn::connect(target)).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), c.get("/health")).await,
        Ok(Ok(r)) if r.head.status == 200
    )
}

/// SIGTERM, then up to 10 s for a clean exit, then SIGKILL. Returns the time to exit on SIGTERM.
async fn terminate(child: &mut std::process::Child) -> Option<Duration> {
    let sent = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    while sent.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let cases = [
            ("2026-11-29T13:00:00.000000Z  INFO aop: listening addr=127.0.0.1:43123", Some("127.0.0.1:43123")),
            ("\u{1b}[2m2026\u{1b}[0m INFO aop: listening addr=[::1]:4317 extra=1", Some("[::1]:4317")),
            ("INFO aop: listening addr=\u{1b}[3m127.0.0.1:9\u{1b}[0m", None),
            ("INFO aop: opened store", None),
        ];
        for (line, want) in cases {
            assert_eq!(listening_addr(line), want.map(|w| w.parse().unwrap()), "{line:?}");
        }
    }
}
