//! `aop bench`: a load generator that drives an already running collector over loopback, or
//! the instances of one fleet (several `aop start --db postgres://…` on one database).
//!
//! It starts nothing (except, for the start-up figure only, fresh collectors given by
//! `--binary`), sends realistic AOP events, and prints one greppable line per figure on stdout;
//! progress notes go to stderr. At the end it checks that every acknowledged event is stored.
//! Targets are never checked here: the figures are for `BENCHMARKS.md`, where they sit next to
//! their targets. Exit status: 0, or 1 when verification finds an acknowledged event missing,
//! or 2 when the collector cannot be reached (or the arguments are wrong).
//!
//! # Layout
//! - `client`: the HTTP/1.1 keep-alive client and the SSE parser (why hand-written: see there).
//! - `gen`: realistic events and sessions, and the per-session ledger of acknowledged events.
//! - `stats`: percentiles, the fan-out histogram, RSS and CPU from `/proc`.
//! - `ingest`: workloads 1 and 2 (single-event POSTs, NDJSON batches).
//! - `otlp`: OTLP/HTTP protobuf exports of 512 spans through `/v1/traces`.
//! - `otlp_logs`: OTLP/HTTP protobuf exports of 512 log records (Claude Code sessions, an
//!   application's traced records) through `/v1/logs`.
//! - `guard`: `POST /guard` at a fixed rate beside single-event ingest.
//! - `fanout`: workload 3 (subscribers on `/stream` under fixed-rate ingest).
//! - `delivery`: ack-to-receipt latency of one subscriber, across a fleet's instances.
//! - `fleet`: the instances of `--url`, and which of them each ingest connection talks to.
//! - `reads`: workload 4 (the large store and its reads).
//! - `resources`: workload 5 (RSS, start-up time of a fresh collector).
//! - `soak`: a long mixed run sampling the collector's RSS and open files (not part of `all`).
//!
//! Every loop is bounded by a duration and a count; every request has a timeout.

mod delivery;
mod fanout;
mod fleet;
mod gen;
mod guard;
mod ingest;
mod otlp;
mod otlp_logs;
mod reads;
mod resources;
mod soak;
mod stats;

use crate::client::{Conn, Target};
use ingest::Shape;
use serde::Deserialize;
use stats::{mib, CpuMeter};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXIT_VERIFY: u8 = 1;
const EXIT_UNREACHABLE: u8 = 2;
/// Connections used to check, session by session, that acknowledged events are stored.
const VERIFY_CONNECTIONS: usize = 8;

/// What `aop bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Everything below but the soak (start-up only when --binary and --db are given).
    All,
    /// Single-event POSTs at concurrency 1, 16 and 64.
    Single,
    /// NDJSON batches of 100 and 1000 events.
    Batch,
    /// OTLP/HTTP protobuf exports of 512 spans (as the SDK's batch processor sends them).
    Otlp,
    /// OTLP/HTTP protobuf exports of 512 log records (as the SDK's batch log record processor
    /// sends them): Claude Code sessions' records, and an application's with trace ids.
    OtlpLogs,
    /// `POST /guard` at 1,000 calls/s while single events are ingested at c=16: the guard's
    /// latency, and the ingest figure beside it.
    Guard,
    /// Subscribers on /stream during fixed-rate ingest, then during saturating ingest.
    Fanout,
    /// One subscriber on the last --url's /stream, single events posted to the first at
    /// min(--rate, 1000)/s: latency from ack to receipt, and events never delivered.
    Delivery,
    /// Reads on a large store (loaded once, then reused): lists, detail, export, compare.
    Reads,
    /// RSS idle and under load, storage per event, and start-up (with --binary and --db).
    Resources,
    /// Only the start-up figure: needs --binary and --db, not a running collector.
    Startup,
    /// Ingest, streams coming and going, reads and deletes at a steady pace for --duration
    /// (default 600 s), sampling the collector's RSS and open files. Not part of `all`.
    Soak,
}

/// Options of `aop bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The collector to drive (loopback only, unless --allow-remote). Several comma-separated
    /// URLs are the instances of one fleet: single and batch ingest spread their connections
    /// over them, delivery posts to the first and listens on the last, the rest use the first.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub url: String,
    /// Access token, sent as `Authorization: Bearer …`.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Workloads to run, repeatable or comma-separated. [default: all]
    #[arg(long = "workload", value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Seconds per measurement; for the soak, its whole length. [default: 10, soak 600; 1, soak 5 with --smoke]
    #[arg(long)]
    pub duration: Option<f64>,
    /// Subscribers on /stream for the fan-out figures. [default: 1000; 10 with --smoke]
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Events per second ingested during the fan-out figure; the delivery figure takes at most 1000. [default: 5000]
    #[arg(long)]
    pub rate: Option<f64>,
    /// Events in the large store of the reads figures. [default: 1000000; 20000 with --smoke]
    #[arg(long = "large-events")]
    pub large_events: Option<u64>,
    /// Sessions in the large store (one holds a tenth of the events). [default: 10000; 200 with --smoke]
    #[arg(long = "large-sessions")]
    pub large_sessions: Option<u64>,
    /// Most events sent by one measurement, whatever its duration. [default: 3000000; 500000 with --smoke]
    #[arg(long = "max-events")]
    pub max_events: Option<u64>,
    /// Everything tiny (about 1 s per measurement, 10 subscribers, a 20k-event store): for CI.
    #[arg(long)]
    pub smoke: bool,
    /// An aop binary to time from start to ready (with --db); it is started and stopped here.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The database for --binary: a copy or a stopped collector's, not one in use.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Allow a --url that is not a loopback address.
    #[arg(long = "allow-remote")]
    pub allow_remote: bool,
    /// Threads of the load generator. One keeps it off the server's second core.
    #[arg(long = "client-threads", default_value_t = 1)]
    pub client_threads: usize,
}

/// The arguments with the defaults (plain or smoke) filled in.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    workloads: Vec<Workload>,
    pub(crate) duration: Duration,
    /// The whole length of the soak.
    pub(crate) soak_duration: Duration,
    pub(crate) subscribers: usize,
    pub(crate) rate: f64,
    pub(crate) large_events: u64,
    pub(crate) large_sessions: u64,
    pub(crate) max_events: u64,
    smoke: bool,
    binary: Option<PathBuf>,
    db: Option<PathBuf>,
}

impl Plan {
    fn from(args: &BenchArgs) -> Result<Plan, String> {
        let smoke = args.smoke;
        let duration = args.duration.unwrap_or(if smoke { 1.0 } else { 10.0 });
        if !(duration > 0.0 && duration <= 3600.0) {
            return Err("--duration must be between 0 and 3600 seconds".into());
        }
        let pick = |v: Option<u64>, full: u64, tiny: u64| v.unwrap_or(if smoke { tiny } else { full });
        let plan = Plan {
            workloads: if args.workloads.is_empty() { vec![Workload::All] } else { args.workloads.clone() },
            duration: Duration::from_secs_f64(duration),
            soak_duration: Duration::from_secs_f64(args.duration.unwrap_or(if smoke { 5.0 } else { 600.0 })),
            subscribers: args.subscribers.unwrap_or(if smoke { 10 } else { 1000 }),
            rate: args.rate.unwrap_or(5000.0),
            large_events: pick(args.large_events, 1_000_000, 20_000),
            large_sessions: pick(args.large_sessions, 10_000, 200),
            max_events: pick(args.max_events, 3_000_000, 500_000).max(1),
            smoke,
            binary: args.binary.clone(),
            db: args.db.clone(),
        };
        if plan.rate.is_nan() || plan.rate <= 0.0 {
            return Err("--rate must be positive".into());
        }
        if plan.large_sessions == 0 || plan.large_events < 2 * plan.large_sessions {
            return Err("--large-events must be at least twice --large-sessions".into());
        }
        if plan.binary.is_some() != plan.db.is_some() {
            return Err("--binary and --db go together".into());
        }
        Ok(plan)
    }

    fn has(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
            || (self.workloads.contains(&Workload::All) && !matches!(w, Workload::Startup | Workload::Soak))
    }

    fn only_startup(&self) -> bool {
        self.workloads.iter().all(|w| *w == Workload::Startup)
    }
}

/// Database growth over a known number of events, against their JSON size.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    pub(crate) db_bytes: u64,
    pub(crate) events: u64,
    pub(crate) raw_bytes: u64,
    pub(crate) how: String,
}

/// State shared by the workloads of one run.
pub(crate) struct Ctx {
    /// The collector, or the first instance of the fleet: every workload that does not spread uses it.
    pub(crate) target: Arc<Target>,
    /// Every instance given to `--url`, `target` first; one for a lone collector.
    pub(crate) fleet: Vec<Arc<Target>>,
    /// In every session id of this run, so runs never collide with each other or older data.
    pub(crate) run_id: String,
    pub(crate) seed: u64,
    pub(crate) plan: Plan,
    /// The collector's pid, when it is an aop process on this machine (for RSS and CPU).
    pub(crate) server_pid: Option<u32>,
    /// The pids of every instance, for the CPU of the workloads that use several; empty unless
    /// each is an aop process on this machine.
    pub(crate) fleet_pids: Vec<u32>,
    /// `(session id, events acknowledged)` of every session this run wrote.
    pub(crate) ledger: Vec<(String, u64)>,
    /// Throughput of single c=64 on the first instance alone, the fan-out comparison's baseline.
    pub(crate) single64: Option<f64>,
    pub(crate) storage: Option<Storage>,
}

impl Ctx {
    /// Says that a workload which means nothing spread over instances runs on the first only.
    fn first_only(&self, workload: &str) {
        if self.fleet.len() > 1 {
            note(&format!("{workload}: on the first instance only ({})", self.target.url));
        }
    }
}

/// One figure: stdout, flushed at once so a long run can be followed (and grepped) live. A failure
/// may quote the collector's answer, hence the cleaning.
pub(crate) fn figure(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", crate::clean::text(line));
    let _ = out.flush();
}

/// Progress and caveats: stderr.
pub(crate) fn note(line: &str) {
    eprintln!("aop bench: {}", crate::clean::text(line));
}

/// The `/health` fields the benchmark uses.
#[derive(Debug, Deserialize)]
pub(crate) struct Health {
    #[serde(default)]
    version: String,
    pid: Option<u32>,
    #[serde(default)]
    store: HealthStore,
}

#[derive(Debug, Default, Deserialize)]
struct HealthStore {
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    path: String,
}

pub(crate) struct HealthInfo {
    pub(crate) version: String,
    pub(crate) pid: Option<u32>,
    pub(crate) store_bytes: u64,
    pub(crate) store_path: String,
}

pub(crate) async fn health(target: &Arc<Target>) -> Result<HealthInfo, String> {
    let attempt = async {
        let mut c = Conn::connect(target).await.map_err(|e| e.to_string())?;
        let r = c.get("/health").await.map_err(|e| e.to_string())?;
        if r.head.status != 200 {
            return Err(format!("/health answered {}", r.head.status));
        }
        let h: Health = serde_json::from_slice(r.body).map_err(|e| format!("/health is not aop's: {e}"))?;
        Ok(HealthInfo { version: h.version, pid: h.pid, store_bytes: h.store.bytes, store_path: h.store.path })
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "/health did not answer within 10 s".to_owned())?
}

async fn authorized(target: &Arc<Target>) -> Result<(), String> {
    let attempt = async {
        let mut c = Conn::connect(target).await.map_err(|e| e.to_string())?;
        let r = c.get("/sessions?limit=1").await.map_err(|e| e.to_string())?;
        match r.head.status {
            200 => Ok(()),
            401 | 403 => Err(format!(
                "the collector at {} refuses requests without its access token (HTTP {}): give --token or AOP_TOKEN",
                target.url, r.head.status
            )),
            s => Err(format!("GET /sessions answered {s}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "GET /sessions did not answer within 10 s".to_owned())?
}

/// Runs the selected workloads and prints one line per figure.
pub fn run(args: BenchArgs) -> ExitCode {
    let plan = match Plan::from(&args) {
        Ok(p) => p,
        Err(e) => {
            note(&e);
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let fleet = match fleet::targets(&args.url, args.token.as_deref(), args.allow_remote) {
        Ok(f) => f,
        Err(e) => {
            note(&e);
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    // One thread by default: the collector gets the machine's other core.
    let runtime = if args.client_threads > 1 {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    match runtime {
        Ok(rt) => rt.block_on(bench(plan, fleet)),
        Err(e) => {
            note(&format!("cannot start the runtime: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "? GiB".into());
    // Other work on the machine moves every figure; say how busy it was when the run began.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    format!("{cpus} CPUs ({model}), {mem} RAM, load average {load}")
}

async fn bench(plan: Plan, fleet: Vec<Arc<Target>>) -> ExitCode {
    let began = Instant::now();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 40);
    // Base 36 of time and pid: short, and unique per run on one machine.
    let run_id = base36((nanos / 1_000_000) ^ u64::from(std::process::id()));

    if plan.only_startup() {
        startup(&plan).await;
        return ExitCode::SUCCESS;
    }
    let mut infos = Vec::with_capacity(fleet.len());
    for target in &fleet {
        match health(target).await {
            Ok(h) => infos.push(h),
            Err(e) => {
                note(&format!("cannot reach the collector at {}: {e}", target.url));
                return ExitCode::from(EXIT_UNREACHABLE);
            }
        }
        // /health needs no token; everything else may. Find out now rather than after a run of 401s.
        if let Err(e) = authorized(target).await {
            note(&e);
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    }
    let local: Vec<Option<u32>> = infos.iter().map(|h| h.pid.filter(|&p| stats::is_aop(p))).collect();
    let server_pid = local[0];
    if server_pid.is_none() {
        note("the collector's pid (from /health) is not an aop process on this machine: RSS and server CPU are not reported");
    }
    let mut fleet_pids: Vec<u32> = local.iter().map_while(|p| *p).collect();
    if fleet_pids.len() < fleet.len() {
        fleet_pids.clear();
        if fleet.len() > 1 {
            note("not every instance's pid (from /health) is an aop process on this machine: the server CPU of single, batch and delivery is not reported");
        }
    }
    // Two addresses of one process: its CPU must be counted once, and the "fleet" is smaller than it looks.
    let given = fleet_pids.len();
    fleet_pids.sort_unstable();
    fleet_pids.dedup();
    if fleet_pids.len() < given {
        note("two of the --url addresses reach the same collector process (same pid): this is not a fleet of that many instances");
    }
    if infos.iter().any(|h| h.version != infos[0].version) {
        let versions: Vec<&str> = infos.iter().map(|h| h.version.as_str()).collect();
        note(&format!("the instances run different versions of aop: {}", versions.join(", ")));
    }
    let target = Arc::clone(&fleet[0]);
    let info = &infos[0];
    let pid_of = |h: &HealthInfo| h.pid.map_or("?".into(), |p| p.to_string());
    let against = if fleet.len() == 1 {
        format!("{} (aop {}, pid {}, ", target.url, info.version, pid_of(info))
    } else {
        let members: Vec<String> =
            fleet.iter().zip(&infos).map(|(t, h)| format!("{} pid {}", t.url, pid_of(h))).collect();
        format!("{} instances of one fleet: {} (aop {}, ", fleet.len(), members.join(", "), info.version)
    };
    figure(&format!(
        "bench: run {run_id} against {against}store {} at {}), {}{}, on {}",
        mib(info.store_bytes),
        info.store_path,
        if plan.workloads == [Workload::Soak] {
            format!("a soak of {} s", plan.soak_duration.as_secs_f64())
        } else {
            format!("{} s per measurement", plan.duration.as_secs_f64())
        },
        if plan.smoke { " (smoke)" } else { "" },
        machine()
    ));
    let mut ctx = Ctx {
        target,
        fleet,
        run_id,
        seed,
        plan,
        server_pid,
        fleet_pids,
        ledger: Vec::new(),
        single64: None,
        storage: None,
    };

    if ctx.plan.has(Workload::Resources) {
        ctx.first_only("resources");
        match ctx.server_pid.and_then(stats::rss_bytes) {
            Some(rss) => figure(&format!(
                "resources idle RSS: {} (collector pid {}, before this run's load)",
                mib(rss),
                ctx.server_pid.unwrap_or_default()
            )),
            None => figure("resources idle RSS: not measured (collector pid not readable)"),
        }
    }
    // Reads first: on a fresh database they then run on exactly the large store, and the ingest
    // figures after them are taken on a store that already holds a million events.
    if ctx.plan.has(Workload::Reads) {
        ctx.first_only("reads");
        if let Err(e) = reads::run(&mut ctx).await {
            figure(&format!("reads: failed: {e}"));
        }
    }
    let mut load_rss = None;
    if ctx.plan.has(Workload::Single) {
        let sampler = ctx.server_pid.map(|p| resources::RssSampler::start(p, Duration::from_millis(20)));
        for c in [1, 16, 64] {
            ingest_figure(&mut ctx, Shape::Single { concurrency: c }, true).await;
        }
        if let Some(s) = sampler {
            load_rss = Some(s.stop().await);
        }
    }
    if ctx.plan.has(Workload::Batch) {
        for per_request in [100, 1000] {
            ingest_figure(&mut ctx, Shape::Batch { per_request }, true).await;
        }
    }
    if ctx.plan.has(Workload::Otlp) {
        ctx.first_only("otlp");
        otlp_figure(&mut ctx).await;
    }
    if ctx.plan.has(Workload::OtlpLogs) {
        ctx.first_only("otlp-logs");
        otlp_logs_figure(&mut ctx).await;
    }
    if ctx.plan.has(Workload::Guard) {
        ctx.first_only("guard");
        let d = ctx.plan.duration;
        let label = format!("guard {} calls/s beside single c={}", guard::RATE, guard::INGEST_CONCURRENCY);
        match guard::measure(&mut ctx, d).await {
            Ok((g, ingest)) => {
                let mut line = format!(
                    "{label}: {:.0} calls/s answered, {} (from when each was due), {} asks, errors {}; ingest {}",
                    g.calls_per_s,
                    g.latency.ms(),
                    g.asks,
                    g.errors,
                    ingest.line()
                );
                if let Some(e) = g.first_error {
                    line.push_str(&format!(" [first guard error: {e}]"));
                }
                figure(&line);
            }
            Err(e) => figure(&format!("{label}: failed: {e}")),
        }
    }
    if ctx.plan.has(Workload::Fanout) {
        ctx.first_only("fanout");
        if let Err(e) = fanout::run(&mut ctx).await {
            figure(&format!("fanout: failed: {e}"));
        }
    }
    if ctx.plan.has(Workload::Delivery) {
        if let Err(e) = delivery::run(&mut ctx).await {
            figure(&format!("delivery: failed: {e}"));
        }
    }
    if ctx.plan.has(Workload::Resources) {
        resources_figures(&mut ctx, load_rss).await;
    }
    if ctx.plan.has(Workload::Startup) || (ctx.plan.has(Workload::Resources) && ctx.plan.binary.is_some()) {
        startup(&ctx.plan).await;
    } else if ctx.plan.has(Workload::Resources) {
        figure("resources start to ready: not measured (give --binary PATH and --db PATH of a database not in use)");
    }
    // Last: the sessions it leaves running would raise stall alerts in the middle of other figures.
    if ctx.plan.has(Workload::Soak) {
        ctx.first_only("soak");
        if let Err(e) = soak::run(&mut ctx).await {
            figure(&format!("soak: failed: {e}"));
        }
    }
    let code = verify(&ctx).await;
    note(&format!("done in {:.1} s", began.elapsed().as_secs_f64()));
    code
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    while n > 0 || s.is_empty() {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// One ingest figure, over every instance (`spread`) or the first only.
async fn ingest_figure(ctx: &mut Ctx, shape: Shape, spread: bool) {
    let tag = match shape {
        Shape::Single { concurrency } => format!("s{concurrency}"),
        Shape::Batch { per_request } => format!("b{per_request}"),
    };
    let (targets, pids) = if spread {
        (ctx.fleet.clone(), ctx.fleet_pids.clone())
    } else {
        (vec![Arc::clone(&ctx.target)], ctx.server_pid.into_iter().collect())
    };
    let over = match targets.len() {
        1 => String::new(),
        n => format!(" [{n} instances: {} connections]", fleet::shares(shape.connections(), n)),
    };
    let bytes_before = health(&ctx.target).await.map(|h| h.store_bytes).ok();
    let cpu = CpuMeter::start(&pids);
    let d = ctx.plan.duration;
    match ingest::measure(ctx, &targets, shape, d, &tag).await {
        Ok(f) => {
            figure(&format!("{}: {}{over}{}", shape.label(), f.line(), cpu.finish()));
            if matches!(shape, Shape::Single { concurrency: 64 }) && targets.len() == 1 {
                ctx.single64 = Some(f.events_per_s);
            }
            // Storage from this run's own ingest, when no large-store load measured it.
            if ctx.storage.is_none() && matches!(shape, Shape::Batch { per_request: 1000 }) && f.errors == 0 {
                if let (Some(before), Ok(after)) = (bytes_before, health(&ctx.target).await) {
                    ctx.storage = Some(Storage {
                        db_bytes: after.store_bytes.saturating_sub(before),
                        events: f.acked_total,
                        raw_bytes: f.raw_bytes,
                        how: "measured over the batch 1000/req figure".into(),
                    });
                }
            }
        }
        Err(e) => figure(&format!("{}: failed: {e}", shape.label())),
    }
}

async fn otlp_figure(ctx: &mut Ctx) {
    let label = format!("otlp {} spans/req c={}", otlp::SPANS_PER_REQUEST, ingest::BATCH_CONCURRENCY);
    let cpu = CpuMeter::start(ctx.server_pid.as_slice());
    let d = ctx.plan.duration;
    match otlp::measure(ctx, d).await {
        Ok((spans_per_s, f)) => figure(&format!("{label}: {spans_per_s:.0} spans/s = {}{}", f.line(), cpu.finish())),
        Err(e) => figure(&format!("{label}: failed: {e}")),
    }
}

/// Derived events acknowledged per second, as for the traces, and the records they came from.
async fn otlp_logs_figure(ctx: &mut Ctx) {
    let label = format!("otlp-logs {} records/req c={}", otlp_logs::RECORDS_PER_REQUEST, ingest::BATCH_CONCURRENCY);
    let cpu = CpuMeter::start(ctx.server_pid.as_slice());
    let d = ctx.plan.duration;
    match otlp_logs::measure(ctx, d).await {
        Ok((records_per_s, f)) => {
            figure(&format!("{label}: {records_per_s:.0} records/s = {}{}", f.line(), cpu.finish()))
        }
        Err(e) => figure(&format!("{label}: failed: {e}")),
    }
}

async fn resources_figures(ctx: &mut Ctx, load_rss: Option<resources::RssStats>) {
    let Some(pid) = ctx.server_pid else {
        figure("resources RSS: not measured (collector pid not readable)");
        return;
    };
    // The single-event figures spread over a fleet: this instance carried only its share.
    let share = load_rss.is_some() && ctx.fleet.len() > 1;
    let load_rss = match load_rss {
        Some(r) => r,
        None => {
            // Workload 1 did not run: run its heaviest shape here to have a figure under load.
            let sampler = resources::RssSampler::start(pid, Duration::from_millis(20));
            ingest_figure(ctx, Shape::Single { concurrency: 64 }, false).await;
            sampler.stop().await
        }
    };
    figure(&format!(
        "resources RSS under load (single-event ingest{}): peak {}, mean {}",
        if share { ", this instance's share of it" } else { "" },
        mib(load_rss.peak),
        mib(load_rss.mean)
    ));
    match &ctx.storage {
        Some(s) if s.events > 0 && s.raw_bytes > 0 => figure(&format!(
            "resources storage: {:.2}x the raw JSON ({:.0} bytes/event in the database and WAL vs {:.0} bytes/event of JSON, {} events, {})",
            s.db_bytes as f64 / s.raw_bytes as f64,
            s.db_bytes as f64 / s.events as f64,
            s.raw_bytes as f64 / s.events as f64,
            s.events,
            s.how
        )),
        _ => figure("resources storage: not measured (run the reads or batch workload too)"),
    }
    // Idle again: what the load left behind (caches, buffers).
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(rss) = stats::rss_bytes(pid) {
        figure(&format!("resources idle RSS after load: {} (1 s after the last request)", mib(rss)));
    }
}

async fn startup(plan: &Plan) {
    let (Some(binary), Some(db)) = (&plan.binary, &plan.db) else {
        figure("resources start to ready: not measured (give --binary PATH and --db PATH)");
        return;
    };
    let size = std::fs::metadata(db).map_or(0, |m| m.len());
    let runs = if plan.smoke { 2 } else { 5 };
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..runs {
        match resources::start_once(binary, db).await {
            Ok(r) => {
                ready.push(stats::micros(r.ready));
                rss.extend(r.idle_rss);
                stops.extend(r.stop.map(stats::micros));
            }
            Err(e) => {
                figure(&format!("resources start to ready: failed: {e}"));
                return;
            }
        }
    }
    let first = ready[0];
    let ready = stats::Summary::of(&mut ready);
    rss.sort_unstable();
    let stop = stats::Summary::of(&mut stops);
    figure(&format!(
        "resources start to ready: median {} ms, first {} ms, max {} ms over {runs} starts on {} ({}); idle RSS after start {}; SIGTERM to exit median {} ms",
        stats::ms(ready.p50),
        stats::ms(u64::from(first)),
        stats::ms(ready.max),
        db.display(),
        mib(size),
        rss.get(rss.len() / 2).map_or("not measured".into(), |&r| mib(r)),
        stats::ms(stop.p50),
    ));
}

#[derive(Deserialize)]
struct Detail {
    session: DetailSession,
}

#[derive(Deserialize)]
struct DetailSession {
    event_count: u64,
}

/// Checks every session this run wrote: stored `event_count` against events acknowledged.
async fn verify(ctx: &Ctx) -> ExitCode {
    if ctx.ledger.is_empty() {
        return ExitCode::SUCCESS;
    }
    // The instances share one database: any of them sees what all of them acknowledged.
    ctx.first_only("verify");
    let ledger = Arc::new(ctx.ledger.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut tasks = Vec::new();
    for _ in 0..VERIFY_CONNECTIONS {
        let (target, ledger, next) = (Arc::clone(&ctx.target), Arc::clone(&ledger), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            // (stored, missing, extra, unverifiable, first problem)
            let mut t = (0u64, 0u64, 0u64, 0u64, None::<String>);
            let mut conn: Option<Conn> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, acked)) = ledger.get(i) else { break };
                if Instant::now() > deadline {
                    t.3 += acked;
                    continue;
                }
                match stored_count(&target, &mut conn, id).await {
                    Ok(stored) => {
                        t.0 += stored;
                        if stored < *acked {
                            t.1 += acked - stored;
                            t.4.get_or_insert_with(|| format!("{id}: {acked} acknowledged, {stored} stored"));
                        } else {
                            t.2 += stored - acked;
                        }
                    }
                    Err(e) => {
                        t.3 += acked;
                        t.4.get_or_insert_with(|| format!("{id}: {e}"));
                    }
                }
            }
            t
        }));
    }
    let (mut stored, mut missing, mut extra, mut unverified, mut problem) = (0, 0, 0, 0, None);
    for t in tasks {
        if let Ok(r) = t.await {
            stored += r.0;
            missing += r.1;
            extra += r.2;
            unverified += r.3;
            problem = problem.or(r.4);
        }
    }
    let acked: u64 = ctx.ledger.iter().map(|(_, n)| n).sum();
    let mut line = format!(
        "verify: {acked} acknowledged, {stored} stored, {missing} missing ({} sessions checked)",
        ctx.ledger.len()
    );
    if extra > 0 {
        line.push_str(&format!(", {extra} stored without an ack (requests that failed after reaching the collector)"));
    }
    if unverified > 0 {
        line.push_str(&format!(", {unverified} could not be checked"));
    }
    if let Some(p) = problem {
        line.push_str(&format!(" [first problem: {p}]"));
    }
    figure(&line);
    if unverified > 0 {
        ExitCode::from(EXIT_UNREACHABLE)
    } else if missing > 0 {
        ExitCode::from(EXIT_VERIFY)
    } else {
        ExitCode::SUCCESS
    }
}

async fn stored_count(target: &Arc<Target>, conn: &mut Option<Conn>, id: &str) -> Result<u64, String> {
    for attempt in 0..3 {
        if conn.is_none() {
            *conn = Some(Conn::connect(target).await.map_err(|e| e.to_string())?);
        }
        let Some(c) = conn.as_mut() else { continue };
        let path = format!("/sessions/{id}?limit=1");
        let answer = tokio::time::timeout(ingest::REQUEST_TIMEOUT, c.get(&path)).await;
        let result = match answer {
            Ok(Ok(r)) if r.head.status == 200 => serde_json::from_slice::<Detail>(r.body)
                .map(|d| d.session.event_count)
                .map_err(|e| format!("unreadable session: {e}")),
            Ok(Ok(r)) if r.head.status == 404 => Ok(0),
            Ok(Ok(r)) => Err(format!("HTTP {}", r.head.status)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        if c.closed || result.is_err() {
            *conn = None;
        }
        match result {
            Err(e) if attempt == 2 => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            ok => return ok,
        }
    }
    Err("unreachable".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    pub(super) fn plan(argv: &[&str]) -> Result<Plan, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map_err(|e| e.to_string())?;
        Plan::from(&cli.args)
    }

    #[test]
    fn defaults_and_smoke() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.duration, Duration::from_secs(10));
        assert_eq!((p.subscribers, p.large_events, p.large_sessions), (1000, 1_000_000, 10_000));
        assert!(p.has(Workload::Fanout) && !p.has(Workload::Startup) && !p.only_startup());
        let s = plan(&["--smoke"]).unwrap();
        assert_eq!(s.duration, Duration::from_secs(1));
        assert_eq!((s.subscribers, s.large_events, s.large_sessions), (10, 20_000, 200));
        let s = plan(&["--smoke", "--duration", "2.5"]).unwrap();
        assert_eq!(s.duration, Duration::from_millis(2500));
        assert_eq!(s.soak_duration, Duration::from_millis(2500));
    }

    #[test]
    fn soak_is_asked_for_by_name_only() {
        let p = plan(&[]).unwrap();
        assert!(!p.has(Workload::Soak));
        assert_eq!(p.soak_duration, Duration::from_secs(600));
        assert_eq!(plan(&["--smoke"]).unwrap().soak_duration, Duration::from_secs(5));
        let p = plan(&["--workload", "soak", "--duration", "600"]).unwrap();
        assert!(p.has(Workload::Soak) && !p.has(Workload::Single) && !p.only_startup());
        assert_eq!((p.duration, p.soak_duration), (Duration::from_secs(600), Duration::from_secs(600)));
    }

    #[test]
    fn workload_lists() {
        let p = plan(&["--workload", "single,batch", "--workload", "reads"]).unwrap();
        assert!(p.has(Workload::Single) && p.has(Workload::Batch) && p.has(Workload::Reads));
        assert!(!p.has(Workload::Fanout) && !p.has(Workload::Resources));
        let p = plan(&["--workload", "otlp,otlp-logs"]).unwrap();
        assert!(p.has(Workload::Otlp) && p.has(Workload::OtlpLogs) && !p.has(Workload::Batch));
        assert!(plan(&[]).unwrap().has(Workload::OtlpLogs), "in all, so the smoke run covers it");
        let p = plan(&["--workload", "startup", "--binary", "x", "--db", "y"]).unwrap();
        assert!(p.only_startup());
        assert!(plan(&["--workload", "nope"]).is_err());
        assert!(plan(&["--binary", "x"]).is_err());
        assert!(plan(&["--duration", "0"]).is_err());
        assert!(plan(&["--large-events", "10", "--large-sessions", "10"]).is_err());
    }

    #[test]
    fn delivery_runs_in_all_and_in_smoke() {
        assert!(plan(&[]).unwrap().has(Workload::Delivery));
        assert!(plan(&["--smoke"]).unwrap().has(Workload::Delivery));
        let p = plan(&["--workload", "single,batch,delivery"]).unwrap();
        assert!(p.has(Workload::Delivery) && p.has(Workload::Batch) && !p.has(Workload::Fanout));
        assert!(!plan(&["--workload", "fanout"]).unwrap().has(Workload::Delivery));
    }

    #[test]
    fn a_fleet_is_one_url_argument() {
        let cli = Cli::try_parse_from(["bench", "--url", "http://127.0.0.1:4401,http://127.0.0.1:4402"]).unwrap();
        let fleet = fleet::targets(&cli.args.url, None, false).unwrap();
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet[1].url, "http://127.0.0.1:4402");
    }

    #[test]
    fn run_ids_are_short_and_valid_in_session_ids() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let id = base36(u64::MAX);
        assert!(id.len() <= 13 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
