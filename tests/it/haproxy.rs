//! Three instances on one PostgreSQL behind a real HAProxy running the committed
//! `deploy/haproxy.cfg` (its addresses given through the environment, as the README shows):
//! requests spread and served as by one collector, streams unbuffered and kept alive, OTLP/gRPC
//! through the TCP frontend, and an instance killed under a subscriber and a writer without a
//! lost or repeated event.
//!
//! The instances run as the README says: `--allow-host` for the balancer's name and `--token`. The
//! clients here reach the balancer by that name (`aop-lb.test`, resolved to loopback), so the Host
//! the instances check is the one a real deployment's clients send.

use crate::support::pg::Pg;
use crate::support::sse::{Read, SseStream};
use crate::support::{event, eventually, Launch, TestServer, PATIENCE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The name clients give the balancer; the instances accept it with `--allow-host`.
pub(crate) const LB_HOST: &str = "aop-lb.test";
/// The instances' token.
pub(crate) const LB_TOKEN: &str = "fleet-behind-haproxy";

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join("haproxy.cfg")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// `haproxy -db -f deploy/haproxy.cfg` in front of three instances, killed when dropped.
pub(crate) struct Balancer {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    /// HAProxy's log (its stdout and stderr): requests, and servers going down and up.
    dir: TempDir,
}

impl Balancer {
    /// Starts HAProxy on free ports with `nodes` as `AOP1`..`AOP3`; returns once it answers
    /// `/health` through its HTTP frontend.
    pub(crate) async fn start(nodes: &[TestServer]) -> Balancer {
        assert_eq!(nodes.len(), 3, "deploy/haproxy.cfg balances three instances");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut lb = Balancer::spawn(nodes);
            match lb.wait_ready().await {
                Ok(()) => return lb,
                // A port that was free a moment ago may have been taken by a parallel test.
                Err(log) if log.contains("cannot bind socket") && attempts < 5 => continue,
                Err(log) => panic!("haproxy did not start with {}:\n{log}", config().display()),
            }
        }
    }

    fn spawn(nodes: &[TestServer]) -> Balancer {
        let dir = tempfile::Builder::new().prefix("aop-haproxy-").tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("the log file");
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let grpc = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(config())
            .env("AOP_LB_BIND", http.to_string())
            .env("AOP_LB_GRPC_BIND", grpc.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        for (i, n) in nodes.iter().enumerate() {
            cmd.env(format!("AOP{}", i + 1), n.addr().to_string());
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "haproxy is not installed: these tests run deploy/haproxy.cfg in a real HAProxy. \
                 Install it (Debian: apt-get install haproxy; .ci/run does)"
            ),
            Err(e) => panic!("cannot run haproxy: {e}"),
        };
        Balancer { child, http, grpc, dir }
    }

    /// `Err` with the log if HAProxy exits (or never answers) instead.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = self.client();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exit status {status}\n{}", self.log()));
            }
            if let Ok(resp) = client.get(self.url("/health")).send().await {
                if resp.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no answer on {} within {PATIENCE:?}\n{}", self.http, self.log()))
    }

    /// The HTTP frontend by the balancer's name: `http://aop-lb.test:<port>`.
    pub(crate) fn base(&self) -> String {
        format!("http://{LB_HOST}:{}", self.http.port())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// A client that reaches the balancer by its name and sends the instances' token.
    fn client(&self) -> Client {
        self.client_builder().timeout(Duration::from_secs(30)).build().expect("client")
    }

    /// The same without an overall timeout, for streams.
    fn streaming(&self) -> Client {
        self.client_builder().connect_timeout(Duration::from_secs(10)).build().expect("client")
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {LB_TOKEN}")).unwrap());
        Client::builder()
            .no_proxy()
            .resolve(LB_HOST, self.http)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
    }

    /// Posts an event through the balancer until it is acknowledged; returns the failed attempts.
    pub(crate) async fn post_until_acked(&self, ev: &Value) -> u32 {
        post_until_acked(&self.client(), &self.url("/events"), ev).await
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Opens `/stream` through the balancer (with `headers`) and reads its `: connected`.
    async fn stream(&self, path: &str, headers: &[(&'static str, String)]) -> SseStream {
        let mut req = self.streaming().get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut stream = SseStream::new(req.send().await.expect("GET /stream through the balancer"));
        assert_eq!(stream.status, StatusCode::OK, "GET {path} through the balancer\n{}", self.log());
        let first = stream.frame().await;
        assert_eq!(first.comments, vec!["connected".to_owned()], "the first frame: {first:?}");
        stream
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three instances on a fresh database, started as the README says (the balancer's name allowed,
/// a token), and the balancer in front of them.
/// Which instance holds the one stream open through the balancer (by each one's `/health`).
pub(crate) async fn instance_serving_the_stream(nodes: &[TestServer]) -> usize {
    eventually("exactly one instance serving the stream", || async {
        let mut counts = Vec::new();
        for n in nodes {
            counts.push(n.health().await["subscribers"].as_u64().unwrap());
        }
        (counts.iter().sum::<u64>() == 1).then(|| counts.iter().position(|&c| c == 1).unwrap())
    })
    .await
}

pub(crate) async fn fleet_behind_haproxy() -> (Vec<TestServer>, Balancer) {
    let url = Pg::shared().create_db();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Launch::new().db(url.as_str()).args(["--allow-host", LB_HOST]).token(LB_TOKEN).start().await);
    }
    let lb = Balancer::start(&nodes).await;
    (nodes, lb)
}

/// Posts an event through the balancer until it is acknowledged, as an SDK retries; returns the
/// failed attempts.
async fn post_until_acked(client: &Client, url: &str, ev: &Value) -> u32 {
    let mut failures = 0;
    loop {
        let resp = client.post(url).header("content-type", "application/json").body(ev.to_string()).send().await;
        if let Ok(resp) = resp {
            if resp.status() == StatusCode::OK && resp.json::<Value>().await.is_ok_and(|b| b["ok"] == true) {
                return failures;
            }
        }
        failures += 1;
        assert!(failures < 200, "{ev} was never acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_requests_over_the_instances_and_sends_those_that_hit_a_dead_one_elsewhere() {
    let (mut nodes, lb) = fleet_behind_haproxy().await;
    let started = Instant::now();
    let client = lb.client();
    let id = "through-haproxy";
    let events: Vec<Value> = std::iter::once(event(id, 1, "session.started", json!({"goal": "be balanced"})))
        .chain((2..=30).map(|seq| event(id, seq, "cognition.thought", json!({"content": seq}))))
        .collect();
    for ev in &events {
        let resp = client
            .post(lb.url("/events"))
            .header("content-type", "application/json")
            .body(ev.to_string())
            .send()
            .await
            .expect("POST through the balancer");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ok": true}));
    }
    let mut per_node = Vec::new();
    for n in &nodes {
        per_node.push(n.metrics().await.get("aop_ingest_requests_total"));
    }
    assert_eq!(per_node.iter().sum::<f64>(), 30.0, "{per_node:?}");
    assert!(per_node.iter().all(|&n| n >= 5.0), "requests were not spread over the instances: {per_node:?}");

    // Read back through the balancer, whichever instance answers.
    for _ in 0..3 {
        let detail: Value = client.get(lb.url(&format!("/sessions/{id}"))).send().await.unwrap().json().await.unwrap();
        let seqs: Vec<i64> =
            detail["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
        assert_eq!(detail["session"]["event_count"], 30, "{}", detail["session"]);
    }

    // The balancer passes Host through: a name the instances were not given is refused, and the
    // token is still theirs to check.
    let resp = client.get(lb.url("/sessions")).header("host", "elsewhere.test").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let anonymous = Client::builder().no_proxy().resolve(LB_HOST, lb.http).build().unwrap();
    assert_eq!(anonymous.get(lb.url("/sessions")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Health checks pass on live instances: three seconds is longer than two failed checks
    // (`fall 2`, `inter 1s`) take, and none was taken out of the pool.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    let log = lb.log();
    assert!(!log.contains(" is DOWN"), "a live instance failed its health checks:\n{log}");

    // An instance dies. Until the checks notice (a second or more), requests are still sent to
    // it: HAProxy retries each on another instance, and the client sees none fail.
    nodes[0].sigkill().await;
    for seq in 31..=39 {
        let ev = event(id, seq, "cognition.thought", json!({"content": seq}));
        let resp = client.post(lb.url("/events")).header("content-type", "application/json").body(ev.to_string());
        let resp = resp.send().await.expect("POST through the balancer");
        assert_eq!(resp.status(), StatusCode::OK, "{}", lb.log());
    }
    let log = lb.log();
    let redispatched = log.lines().filter(|l| l.contains("\"POST /events ") && retries_field(l).starts_with('+'));
    assert!(redispatched.count() > 0, "no request went to the dead instance and on to another:\n{log}");
    let detail: Value = client.get(lb.url(&format!("/sessions/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["session"]["event_count"], 39);
}

/// The retries of an `option httplog` line (`actconn/feconn/beconn/srv_conn/retries`): a number,
/// after a `+` when the request was sent on to another server.
fn retries_field(line: &str) -> &str {
    line.split_whitespace().nth(10).and_then(|counts| counts.rsplit('/').next()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_haproxy_is_not_buffered_and_its_keep_alives_pass() {
    let (_nodes, lb) = fleet_behind_haproxy().await;
    let client = lb.client();
    // A client that would take compression: a stream must not get it.
    let mut stream = lb.stream("/stream", &[("accept-encoding", "gzip, deflate, br".to_owned())]).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert!(stream.headers.get("content-encoding").is_none(), "{:?}", stream.headers);

    for seq in 1..=5 {
        let ev = event("prompt", seq, "cognition.thought", json!({"content": seq}));
        post_until_acked(&client, &lb.url("/events"), &ev).await;
        let acked = Instant::now();
        let frame = loop {
            match stream.read(Duration::from_secs(5)).await {
                Read::Frame(f) if f.is_comment() => continue,
                Read::Frame(f) => break f,
                other => panic!("event {seq}: {other:?}\n{}", lb.log()),
            }
        };
        let waited = acked.elapsed();
        assert_eq!(frame.key(), ("prompt".to_owned(), seq));
        assert!(waited < Duration::from_secs(1), "event {seq} reached the subscriber {waited:?} after its ack");
    }

    // Nothing happens for longer than aop's keep-alive interval (15 s): its comment comes through,
    // and the stream is still open and live after it.
    let quiet = Instant::now();
    match stream.read(Duration::from_secs(20)).await {
        Read::Frame(f) => assert_eq!(f.comments, vec!["keep-alive".to_owned()], "{f:?}"),
        other => panic!("no keep-alive after {:?}: {other:?}\n{}", quiet.elapsed(), lb.log()),
    }
    let ev = event("prompt", 6, "cognition.thought", json!({"content": 6}));
    post_until_acked(&client, &lb.url("/events"), &ev).await;
    assert_eq!(stream.message().await.key(), ("prompt".to_owned(), 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_grpc_goes_through_the_tcp_frontend_and_over_http_through_the_http_one() {
    let (_nodes, lb) = fleet_behind_haproxy().await;
    let export = |trace: u8| {
        let span = Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: "invoke_agent planner".into(),
            kind: 1,
            start_time_unix_nano: 1_764_756_000_000_000_000,
            end_time_unix_nano: 1_764_756_001_000_000_000,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let session = |trace: u8| format!("otel-{}", format!("{trace:02x}").repeat(16));

    // gRPC: HTTP/2 with prior knowledge, by the balancer's name, to its TCP frontend.
    let grpc = Client::builder().no_proxy().http2_prior_knowledge().resolve(LB_HOST, lb.grpc).build().unwrap();
    let message = export(0x61);
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let resp = grpc
        .post(format!("http://{LB_HOST}:{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", lb.grpc.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(AUTHORIZATION, format!("Bearer {LB_TOKEN}"))
        .body(body)
        .send()
        .await
        .expect("a gRPC call through the balancer");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    // An error would come as grpc-status in the headers; success in the trailers, after the reply.
    assert!(resp.headers().get("grpc-status").is_none(), "{:?}", resp.headers());
    assert_eq!(&resp.bytes().await.unwrap()[..], &[0, 0, 0, 0, 0], "an empty ExportTraceServiceResponse, framed");

    // OTLP/HTTP: the HTTP frontend, like any request.
    let resp = lb
        .client()
        .post(lb.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(export(0x62))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    for trace in [0x61, 0x62] {
        let detail: Value = lb
            .client()
            .get(lb.url(&format!("/sessions/{}", session(trace))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!detail["events"].as_array().expect("a stored session").is_empty(), "{detail}");
    }
}

/// What a subscriber read: positions in the order they came, and the events they carried.
#[derive(Default)]
struct Delivered {
    ids: Vec<i64>,
    keys: Vec<(String, i64)>,
}

impl Delivered {
    /// Reads events until `done` says so (`true`) or the stream ends (`false`); panics after `limit`.
    async fn read_until(&mut self, stream: &mut SseStream, limit: Duration, done: impl Fn(&Delivered) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "the subscriber has {} events after {limit:?}", self.ids.len());
            match stream.read(Duration::from_secs(1)).await {
                Read::Frame(f) if f.is_event() => {
                    self.ids.push(f.id());
                    self.keys.push(f.key());
                }
                Read::Frame(f) => assert!(f.is_comment(), "unexpected frame: {f:?}"),
                Read::TimedOut => {}
                Read::End | Read::Error(_) => return false,
            }
        }
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_moves_a_stream_off_a_killed_instance_without_a_gap_while_writes_go_on() {
    let (mut nodes, lb) = fleet_behind_haproxy().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    // Three writers, one session each, every event retried until acknowledged before the next.
    for w in 0..3 {
        let (client, url, stop, acked) = (lb.client(), lb.url("/events"), Arc::clone(&stop), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let session = format!("failover-{w}");
            let mut retries = 0;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let ev = event(&session, seq, "cognition.thought", json!({"content": seq}));
                retries += post_until_acked(&client, &url, &ev).await;
                acked.lock().unwrap().insert((session.clone(), seq));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            retries
        }));
    }

    // From the first position: then every acknowledged event is due to this subscriber.
    let mut stream = lb.stream("/stream?since=0", &[]).await;
    let mut got = Delivered::default();
    assert!(
        got.read_until(&mut stream, PATIENCE, |d| d.ids.len() >= 100).await,
        "the stream ended early\n{}",
        lb.log()
    );
    let serving = instance_serving_the_stream(&nodes).await;

    nodes[serving].sigkill().await;
    let killed = Instant::now();
    let acked_at_kill = acked.lock().unwrap().len();
    // What was sent before the connection broke, then its end.
    got.read_until(&mut stream, PATIENCE, |_| false).await;
    let last = *got.ids.last().unwrap();
    // What EventSource does: reconnect to the same URL with the last id it read.
    let mut resumed = lb.stream("/stream?since=0", &[("last-event-id", last.to_string())]).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != serving).collect();
    eventually("the resumed stream on a surviving instance", || async {
        let mut sum = 0;
        for &i in &survivors {
            sum += nodes[i].health().await["subscribers"].as_u64().unwrap();
        }
        (sum == 1).then_some(())
    })
    .await;

    // The balancer's checks take the dead instance out of the pool within a few seconds.
    let down = format!("Server aop_http/aop{} is DOWN", serving + 1);
    eventually("the killed instance marked down", || async { lb.log().contains(&down).then_some(()) }).await;
    let out_after = killed.elapsed();
    assert!(out_after < Duration::from_secs(5), "marked down {out_after:?} after the kill\n{}", lb.log());

    // Writes go on through the switch, then stop; every one acknowledged must come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut retries = 0;
    for w in writers {
        retries += w.await.expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > acked_at_kill + 50,
        "too few writes after the kill: {} of {}",
        acked.len() - acked_at_kill,
        acked.len()
    );
    let want = acked.len();
    let all_in = got.read_until(&mut resumed, PATIENCE * 2, |d| d.keys.len() >= want).await;
    assert!(all_in, "the resumed stream ended\n{}", lb.log());
    let extra = resumed.read(Duration::from_millis(500)).await;
    assert!(!matches!(&extra, Read::Frame(f) if f.is_event()), "an event nobody acknowledged: {extra:?}");

    assert!(got.ids.windows(2).all(|w| w[0] < w[1]), "positions out of order or repeated across the switch");
    let keys: BTreeSet<(String, i64)> = got.keys.iter().cloned().collect();
    assert_eq!(keys.len(), got.keys.len(), "an event was delivered twice");
    assert_eq!(keys, acked, "delivered events differ from acknowledged ones ({retries} posts were retried)");
    let mut by_session: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (session, seq) in &got.keys {
        by_session.entry(session).or_default().push(*seq);
    }
    for (session, seqs) in by_session {
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{session} out of order");
    }
}
