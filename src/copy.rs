//! `aop copy`: every session's events from one store into another, e.g. a laptop's SQLite history
//! into a fleet's PostgreSQL database, or a fleet's runs into a file to study offline.
//!
//! The destination ingests the events as a collector would, so what it holds already comes back
//! as a duplicate (or, for an event derived from an OTLP span, is recognised by its span) and
//! nothing is stored twice: a copy that was interrupted finishes when run again. Session rows and
//! alerts are not copied but derived anew by the destination from the same events; the
//! event-time detectors raise the same alerts there, stalls (on the collector's clock) none.
//!
//! [`copy_all`] is the copy itself, between two open stores, telling its caller what happens
//! through [`Note`]s; [`run`] opens the stores, prints, and shuts them down.

use crate::config::DEFAULT_QUEUE_CAPACITY;
use crate::detect::DetectConfig;
use crate::hub::{Hub, MIN_CAPACITY_BYTES};
use crate::model::{Event, SessionRow, SpanRef, SpanRole};
use crate::store::sqlite::{Durability, SqliteStore};
use crate::store::{self, Location, OpenOptions, Outcome, SessionQuery, Store, StoreError};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sessions asked of the source per page of its list.
const PAGE: usize = 500;
/// Events per ingest call, and a bound on their bytes (an event may be 64 KiB): each call is a
/// transaction at the destination, so this is what a copy commits at a time.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;
/// Waits between attempts after a transient failure (a busy database, a full queue, a database
/// server out of reach), doubling up to the last; after [`GIVE_UP_AFTER`] of failing, the copy
/// stops (it resumes when run again).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Conflicting sequences named per session; the rest are counted.
const NAMED_CONFLICTS: usize = 5;
/// Read connections to a PostgreSQL store: the copy reads one thing at a time.
const POOL_SIZE: usize = 2;

/// A copy to make: from where, to where, and with what the destination derives sessions and
/// alerts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: Location,
    pub to: Location,
    /// The summary as JSON rather than a sentence.
    pub json: bool,
    pub detect: DetectConfig,
}

impl Plan {
    /// Refuses a copy onto itself and a source file that does not exist (opening it would
    /// create an empty database and copy nothing, silently).
    pub fn new(from: Location, to: Location, json: bool, detect: DetectConfig) -> Result<Plan, String> {
        if same_place(&from, &to) {
            return Err(format!("--from and --to are the same database ({from}): give two different ones"));
        }
        if let Location::File(path) = &from {
            if !path.exists() {
                return Err(format!("--from {}: no such file; give the path of an aop database", path.display()));
            }
        }
        Ok(Plan { from, to, json, detect })
    }
}

fn same_place(a: &Location, b: &Location) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a, b) {
        (Location::File(a), Location::File(b)) => {
            // The same file by another path (relative, through a link) is the same database.
            a == b
                || matches!((std::fs::metadata(a), std::fs::metadata(b)),
                    (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
        }
        (Location::Postgres(a), Location::Postgres(b)) => {
            let database = |url: &str| {
                store::postgres::conn::Target::parse(url).ok().map(|t| {
                    let c = t.config();
                    (c.get_hosts().to_vec(), c.get_ports().to_vec(), c.get_dbname().or(c.get_user()).map(str::to_owned))
                })
            };
            a == b || database(a).is_some_and(|d| database(b) == Some(d))
        }
        _ => false,
    }
}

/// What a copy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Sessions copied to their last event.
    pub sessions: u64,
    /// Sessions the source has listed so far.
    #[serde(skip)]
    pub seen: u64,
    /// Events stored by the destination.
    pub copied: u64,
    /// Events the destination held already.
    pub already: u64,
    /// Events whose session and sequence the destination holds with other content: not copied.
    pub conflicts: u64,
    /// Events the source holds that are not valid events (from another version of aop): skipped.
    pub invalid: u64,
}

impl Tally {
    /// Events read from the source.
    pub fn events(&self) -> u64 {
        self.copied + self.already + self.conflicts + self.invalid
    }
}

/// What a copy tells its caller as it goes.
#[derive(Debug)]
pub enum Note<'a> {
    /// After every batch and every session.
    Progress(&'a Tally),
    /// At the end of a session some of whose events conflicted (the destination's were kept):
    /// how many, and the first sequences.
    Conflicts { session: &'a str, count: u64, sequences: &'a [i64] },
    /// A line of a session's export that is not a valid event, skipped.
    Invalid { session: &'a str, reason: String },
}

/// Why a copy stopped before the end. What was copied stays: running it again goes on.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading the source failed: {0}")]
    Source(StoreError),
    #[error("writing to the destination failed: {0}")]
    Destination(StoreError),
}

/// Copies every session of `src` into `dst`, a page of the source's sessions list at a time
/// (most recently active first), each session's events in sequence order. Pinned sessions are
/// pinned at the destination too.
pub async fn copy_all(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    note: &mut (dyn FnMut(Note<'_>) + Send),
) -> Result<Tally, CopyError> {
    let mut copier = Copier {
        src: &*src,
        dst,
        tally: Tally::default(),
        note,
        batch: Vec::new(),
        at: Vec::new(),
        bytes: 0,
        storing: None,
        handed: 0,
        stored: 0,
        waiting: VecDeque::new(),
        conflicts: HashMap::new(),
    };
    let mut cursor = None;
    loop {
        let page = patiently(|| {
            copier.src.list_sessions(SessionQuery { limit: PAGE, cursor: cursor.clone(), ..SessionQuery::default() })
        })
        .await
        .map_err(CopyError::Source)?;
        copier.tally.seen += page.sessions.len() as u64;
        // A page at a time, not the whole list first: on a source that is being written to, a
        // session listed long ago may have moved on since.
        for row in page.sessions {
            copier.session(row).await?;
        }
        if page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    copier.send().await.map_err(CopyError::Destination)?;
    copier.settle().await.map_err(CopyError::Destination)?;
    Ok(copier.tally)
}

/// A copy in progress. Batches may hold the events of several sessions (a history of many
/// short runs would otherwise cost a transaction each); one batch is being stored while the
/// next is read, and one at a time, so the destination stores them in order.
struct Copier<'a> {
    src: &'a dyn Store,
    dst: Arc<dyn Store>,
    tally: Tally,
    note: &'a mut (dyn FnMut(Note<'_>) + Send),
    batch: Vec<Event>,
    /// The batch's events' sequences at the source (a span's event is sent at another).
    at: Vec<i64>,
    bytes: usize,
    storing: Option<Storing>,
    /// Batches handed to the destination, and stored, so far.
    handed: u64,
    stored: u64,
    /// Sessions read to their end, waiting for the batch that holds their last event to be
    /// stored (the number it will have), oldest first.
    waiting: VecDeque<(SessionRow, u64)>,
    /// Per session, its conflicts so far and the first sequences.
    conflicts: HashMap<String, (u64, Vec<i64>)>,
}

/// A batch being stored: what became of its events, and the events with their sequences at
/// the source.
type Storing = tokio::task::JoinHandle<(Result<Vec<Outcome>, StoreError>, Vec<Event>, Vec<i64>)>;

/// Why a session's events stopped: the source's reads may be retried; the destination's were.
enum Stop {
    Source(StoreError),
    Destination(StoreError),
}

impl Copier<'_> {
    async fn session(&mut self, row: SessionRow) -> Result<(), CopyError> {
        // The last sequence (the source's) put in a batch: a read of the source that fails
        // midway starts the export again and skips up to it.
        let mut read = None;
        let mut backoff = Backoff::new();
        loop {
            match self.events(&row.id, &mut read).await {
                // Deleted at the source while being read: there is nothing more to copy.
                Ok(()) | Err(Stop::Source(StoreError::Gone(_))) => break,
                Err(Stop::Source(e)) if transient(&e) && backoff.wait().await => {}
                Err(Stop::Source(e)) => return Err(CopyError::Source(e)),
                Err(Stop::Destination(e)) => return Err(CopyError::Destination(e)),
            }
        }
        let last_in = self.handed + u64::from(!self.batch.is_empty());
        self.waiting.push_back((row, last_in));
        self.finish_stored().await.map_err(CopyError::Destination)
    }

    /// Streams the session's export into batches.
    async fn events(&mut self, id: &str, read: &mut Option<i64>) -> Result<(), Stop> {
        let Some(mut export) = self.src.export(id.to_owned()).await.map_err(Stop::Source)? else {
            return Ok(());
        };
        // A line may straddle two chunks.
        let mut partial: Vec<u8> = Vec::new();
        while let Some(chunk) = export.next().await {
            let chunk = chunk.map_err(Stop::Source)?;
            let mut rest = &chunk[..];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                let (line, after) = rest.split_at(end);
                rest = &after[1..];
                if partial.is_empty() {
                    self.line(id, read, line).await?;
                } else {
                    partial.extend_from_slice(line);
                    let whole = std::mem::take(&mut partial);
                    self.line(id, read, &whole).await?;
                }
            }
            partial.extend_from_slice(rest);
        }
        if !partial.is_empty() {
            self.line(id, read, &partial).await?;
        }
        Ok(())
    }

    async fn line(&mut self, id: &str, read: &mut Option<i64>, line: &[u8]) -> Result<(), Stop> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| Event::parse(text).map(|ev| (ev.sequence, as_sent(ev, text))).map_err(|e| e.to_string()));
        let (at, ev) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.tally.invalid += 1;
                (self.note)(Note::Invalid { session: id, reason });
                return Ok(());
            }
        };
        if read.is_some_and(|read| at <= read) {
            return Ok(());
        }
        *read = Some(at);
        self.bytes += ev.raw().len();
        self.batch.push(ev);
        self.at.push(at);
        if self.batch.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES {
            self.send().await.map_err(Stop::Destination)?;
        }
        Ok(())
    }

    /// Hands the batch to the destination once it has stored the previous one, and goes on
    /// reading meanwhile.
    async fn send(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let (batch, at) = (std::mem::take(&mut self.batch), std::mem::take(&mut self.at));
        self.bytes = 0;
        self.handed += 1;
        let dst = Arc::clone(&self.dst);
        // Sent again after a transient failure: a copy goes to the store.
        self.storing = Some(tokio::spawn(async move {
            let outcomes = patiently(|| dst.ingest(batch.clone())).await;
            (outcomes, batch, at)
        }));
        Ok(())
    }

    /// Waits until the batch being stored is, counts what became of its events, and finishes
    /// the sessions it completes.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(storing) = self.storing.take() else {
            return Ok(());
        };
        let (outcomes, batch, at) = storing.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        for ((ev, at), outcome) in batch.iter().zip(at).zip(outcomes?) {
            match outcome {
                Outcome::Stored => self.tally.copied += 1,
                Outcome::Duplicate => self.tally.already += 1,
                Outcome::Conflict => {
                    self.tally.conflicts += 1;
                    let (count, named) = self.conflicts.entry(ev.session_id.clone()).or_default();
                    *count += 1;
                    if named.len() < NAMED_CONFLICTS {
                        named.push(at);
                    }
                }
            }
        }
        self.stored += 1;
        (self.note)(Note::Progress(&self.tally));
        self.finish_stored().await
    }

    /// Sessions whose events are all stored: their conflicts are told, their pins set.
    async fn finish_stored(&mut self) -> Result<(), StoreError> {
        while self.waiting.front().is_some_and(|(_, last_in)| *last_in <= self.stored) {
            let Some((row, _)) = self.waiting.pop_front() else { break };
            if let Some((count, sequences)) = self.conflicts.remove(&row.id) {
                (self.note)(Note::Conflicts { session: &row.id, count, sequences: &sequences });
            }
            if row.pinned {
                let dst = &self.dst;
                patiently(|| dst.pin(row.id.clone(), true)).await?;
            }
            self.tally.sessions += 1;
            (self.note)(Note::Progress(&self.tally));
        }
        Ok(())
    }
}

/// An event derived from an OTLP span, sent again as its exporter's retry would be: marked with
/// its span, at the sequence the collector first proposed for it (the span's clock; the trace's
/// `session.started` is 0), from which the collector moved it up to the first free one. The
/// destination then places it likewise (the events before it are copied first), or finds it on
/// the way: a trace that also reached the destination directly, where its events may sit at
/// other sequences, is not stored twice.
fn as_sent(ev: Event, text: &str) -> Event {
    if !ev.session_id.starts_with("otel-") {
        return ev;
    }
    let Some(span) = SpanRef::of_stored(text) else {
        return ev;
    };
    let proposed = if span.role == SpanRole::Trace { 0 } else { ev.ts_us };
    let ev = if proposed < ev.sequence { ev.with_sequence(proposed).unwrap_or(ev) } else { ev };
    ev.from_span(span)
}

fn transient(e: &StoreError) -> bool {
    matches!(e, StoreError::QueueFull | StoreError::Busy | StoreError::Unavailable(_))
}

struct Backoff {
    next: Duration,
    until: Instant,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: FIRST_BACKOFF, until: Instant::now() + GIVE_UP_AFTER }
    }

    /// Waits before the next attempt; `false` when it is time to give up instead.
    async fn wait(&mut self) -> bool {
        if Instant::now() >= self.until {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        true
    }
}

/// `op` until it succeeds, fails for good, or has failed transiently for too long.
async fn patiently<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match op().await {
            Err(e) if transient(&e) && backoff.wait().await => {}
            done => return done,
        }
    }
}

/// Why `aop copy` failed, by the exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// A store cannot be opened.
    Open(String),
    /// The copy stopped midway.
    Copy(String),
}

/// `aop copy`: opens both stores, copies with a progress line on a terminal, prints the summary
/// on stdout, and shuts both stores down.
pub async fn run(plan: Plan) -> Result<(), Failure> {
    let started = Instant::now();
    let src = open_source(&plan).await?;
    let dst = match open_destination(&plan).await {
        Ok(dst) => dst,
        Err(e) => {
            shut_down(src).await;
            return Err(e);
        }
    };
    let mut screen = Screen::new(std::io::stderr().is_terminal());
    let copied = copy_all(Arc::clone(&src), Arc::clone(&dst), &mut |n| screen.show(n)).await;
    screen.finish();
    tokio::join!(shut_down(src), shut_down(dst));
    let t = copied.map_err(|e| {
        Failure::Copy(format!("{e}; what was copied stays: run the same command again to copy the rest"))
    })?;
    let secs = started.elapsed().as_secs_f64();
    if plan.json {
        let mut summary = serde_json::to_value(t).unwrap_or_default();
        summary["seconds"] = serde_json::json!((secs * 1000.0).round() / 1000.0);
        println!("{}", crate::clean::json(summary.to_string()));
    } else {
        let invalid = if t.invalid > 0 { format!(", {} invalid events skipped", t.invalid) } else { String::new() };
        println!(
            "copied {} events of {} sessions ({} already there, {} conflicts{invalid}) in {secs:.1} s",
            t.copied, t.sessions, t.already, t.conflicts
        );
    }
    Ok(())
}

/// The source, opened to be read only: a SQLite file is neither migrated nor written to (nor
/// is anything created beside it); its reads have a deadline.
async fn open_source(plan: &Plan) -> Result<Arc<dyn Store>, Failure> {
    match &plan.from {
        Location::File(path) => {
            let path = path.clone();
            let opened = tokio::task::spawn_blocking(move || SqliteStore::open_to_read(&path))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            opened.map(|s| Arc::new(s) as Arc<dyn Store>).map_err(|e| refused("--from", &plan.from, e))
        }
        Location::Postgres(_) => open_store(plan, &plan.from).await.map_err(|e| refused("--from", &plan.from, e)),
    }
}

async fn open_destination(plan: &Plan) -> Result<Arc<dyn Store>, Failure> {
    open_store(plan, &plan.to).await.map_err(|e| refused("--to", &plan.to, e))
}

async fn open_store(plan: &Plan, at: &Location) -> Result<Arc<dyn Store>, StoreError> {
    let opts = OpenOptions {
        durability: Durability::Full,
        queue_capacity: DEFAULT_QUEUE_CAPACITY,
        detect: plan.detect.clone(),
        max_bytes: None,
        pool_size: POOL_SIZE,
        // The alerts a copy derives anew are history, not news: nobody is notified of them.
        outbox: Arc::default(),
    };
    store::open(at, opts, Arc::new(Hub::new(MIN_CAPACITY_BYTES))).await
}

fn refused(flag: &str, at: &Location, e: StoreError) -> Failure {
    let hint = match e {
        StoreError::Locked { .. } => {
            "; stop the collector that uses it (a copy needs the file to itself), then run the copy again"
        }
        _ => "",
    };
    Failure::Open(format!("{flag} {at}: {e}{hint}"))
}

async fn shut_down(store: Arc<dyn Store>) {
    // The writer is drained by a blocking join.
    let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
}

/// Lines of conflicts or invalid events printed, each; the summary counts them all.
const LISTED: u64 = 20;

/// What a person sees on stderr: the progress line (on a terminal only, rewritten at most ten
/// times a second) and the conflicts and invalid events, the first [`LISTED`] of each.
struct Screen {
    tty: bool,
    started: Instant,
    drawn: Option<Instant>,
    conflicts: u64,
    invalid: u64,
}

impl Screen {
    fn new(tty: bool) -> Screen {
        Screen { tty, started: Instant::now(), drawn: None, conflicts: 0, invalid: 0 }
    }

    fn show(&mut self, note: Note<'_>) {
        match note {
            Note::Progress(t) => {
                if !self.tty || self.drawn.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
                    return;
                }
                self.drawn = Some(Instant::now());
                let rate = t.events() as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                eprint!(
                    "\r{}/{} sessions, {} events copied, {} already there, {} conflicts, {rate:.0} events/s\x1b[K",
                    t.sessions, t.seen, t.copied, t.already, t.conflicts
                );
            }
            Note::Conflicts { session, count, sequences } => {
                self.conflicts += 1;
                if self.conflicts <= LISTED {
                    self.clear();
                    let listed: Vec<String> = sequences.iter().map(i64::to_string).collect();
                    let more = if count > sequences.len() as u64 { ", …" } else { "" };
                    let differ =
                        if count == 1 { "1 event differs".to_owned() } else { format!("{count} events differ") };
                    eprintln!(
                        "aop: session {session:?}: {differ} from what the destination holds at the same sequence ({}{more}); the destination's were kept",
                        listed.join(", ")
                    );
                }
            }
            Note::Invalid { session, reason } => {
                self.invalid += 1;
                if self.invalid <= LISTED {
                    self.clear();
                    // The reason may quote the event.
                    let line = format!("aop: session {session:?}: an event that is not valid was skipped: {reason}");
                    eprintln!("{}", crate::clean::text(&line));
                }
            }
        }
    }

    /// Erases the progress line, if one is drawn.
    fn clear(&mut self) {
        if self.drawn.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }

    fn finish(&mut self) {
        self.clear();
        for (count, what) in [(self.conflicts, "sessions with conflicts"), (self.invalid, "invalid events")] {
            if count > LISTED {
                eprintln!("aop: {count} {what} in all; the first {LISTED} are listed above");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_database_by_another_name_is_the_same_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.db");
        std::fs::write(&file, "").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link.db")).unwrap();
        let at = |p: &str| Location::parse(p).unwrap();
        let here = |name: &str| Location::File(dir.path().join(name));
        assert!(same_place(&here("a.db"), &here("link.db")));
        assert!(same_place(&here("a.db"), &Location::File(dir.path().join(".").join("a.db"))));
        assert!(!same_place(&here("a.db"), &here("b.db")));
        assert!(same_place(&at("postgres://u:one@h:5432/aop"), &at("postgresql://u:two@h:5432/aop?sslmode=disable")));
        assert!(
            same_place(&at("postgres://aop@h/aop"), &at("postgres://aop@h")),
            "the database defaults to the user's name"
        );
        assert!(!same_place(&at("postgres://u@h/aop"), &at("postgres://u@h/other")));
        assert!(!same_place(&at("postgres://u@h/aop"), &at("postgres://u@elsewhere/aop")));
        assert!(!same_place(&here("aop"), &at("postgres://u@h/aop")));
    }
}
