//! `aop demo`: simulated agents against a running collector, so a new user sees the dashboard
//! come alive: a multi-agent research task with thoughts, decisions, tool calls (some failing),
//! a child agent per researcher, heartbeats, and, on purpose, one loop and one confidence drop.

use crate::client::{Conn, Target};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The collector to send to.
    #[arg(long, env = "AOP_URL", default_value = "http://127.0.0.1:4317")]
    pub url: String,
    /// Research agents to run at once (each spawns a child).
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Speed-up of the simulated time: 2 runs twice as fast, 0.5 half as fast.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Access token, when the collector requires one.
    #[arg(long, env = "AOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A webhook (http or https) that receives the demo's alerts as JSON notifications. Targets
    /// live only in a collector's config file, so with this the demo runs a collector of its own
    /// (on a free port, a temporary database) instead of using --url.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
}

/// A collector the demo runs for itself (`--notify`): its address, and how to stop it.
struct Own {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: std::path::PathBuf,
}

impl Own {
    async fn start(webhook: &str, run: &str) -> Result<Own, String> {
        let mut table = toml::Table::new();
        table.insert("name".into(), "aop demo".into());
        table.insert("url".into(), webhook.into());
        let targets = crate::notify::targets(Some(toml::Value::Array(vec![toml::Value::Table(table)])))
            .map_err(|e| format!("--notify: {e}"))?;
        let dir = std::env::temp_dir().join(format!("aop-demo-{run}-{}", std::process::id()));
        let mut config = crate::config::Config::with_db(dir.join("events.db"));
        config.port = 0;
        config.notify.targets = targets;
        let app =
            crate::app::App::build(config).await.map_err(|e| format!("cannot start the demo's collector: {e}"))?;
        let url = format!("http://{}", app.addr());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Own { url, stop, served, dir })
    }

    /// Waits (up to 30 s) until no delivery is pending, says how it went, and stops.
    async fn finish(self, target: &Arc<Target>) {
        let mut said = "still pending after 30 s".to_owned();
        for _ in 0..300 {
            let health = match Conn::connect(target).await {
                Ok(mut c) => c
                    .request("GET", "/health", None, b"")
                    .await
                    .ok()
                    .and_then(|r| serde_json::from_slice::<Value>(r.body).ok()),
                Err(_) => None,
            };
            let notify = health.as_ref().map(|h| &h["notify"]);
            if let Some(n) = notify.filter(|n| n["pending"] == 0) {
                said = if n["failed"] == 0 {
                    "delivered".to_owned()
                } else {
                    format!("{} failed (see the session's alerts)", n["failed"])
                };
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("  notifications to --notify: {said}");
        let _ = self.stop.send(());
        let _ = self.served.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TOPICS: [&str; 6] = [
    "agent observability protocols",
    "retrieval-augmented generation evaluation",
    "tool-use failure modes in LLM agents",
    "cost control for autonomous agents",
    "multi-agent coordination patterns",
    "long-context summarisation quality",
];

/// One simulated agent: a session and the connection it reports on.
struct Agent {
    conn: Conn,
    session: String,
    agent: String,
    parent: Option<String>,
    seq: i64,
    speed: f64,
    steps: i64,
    tokens: i64,
    cost: f64,
    calls: u32,
}

impl Agent {
    async fn new(
        target: &Arc<Target>,
        agent: &str,
        session: String,
        parent: Option<String>,
        speed: f64,
    ) -> std::io::Result<Agent> {
        let conn = Conn::connect(target).await?;
        Ok(Agent {
            conn,
            session,
            agent: agent.to_owned(),
            parent,
            seq: 0,
            speed,
            steps: 0,
            tokens: 0,
            cost: 0.0,
            calls: 0,
        })
    }

    async fn emit(&mut self, kind: &str, payload: Value) -> std::io::Result<()> {
        self.seq += 1;
        let now =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let event = json!({
            "spec": "aop/1.0",
            "session_id": self.session,
            "parent_session_id": self.parent,
            "agent_id": self.agent,
            "sequence": self.seq,
            "timestamp": now,
            "type": kind,
            "payload": payload,
        });
        if kind.starts_with("cognition.") || kind.starts_with("operation.") {
            self.steps += 1;
        }
        let body = event.to_string();
        let resp = self.conn.request("POST", "/events", Some("application/json"), body.as_bytes()).await?;
        if resp.head.status != 200 {
            let text = String::from_utf8_lossy(resp.body).into_owned();
            return Err(std::io::Error::other(format!("the collector answered {}: {text}", resp.head.status)));
        }
        Ok(())
    }

    /// Asks the collector's guard about a call (`POST /guard`), as an agent wired to aop does
    /// before it acts: `None` for an allow, else the decision and its reasons. Fails open: a
    /// guard that cannot be asked allows.
    async fn ask_guard(&mut self, tool: &str, input: &Value) -> Option<(String, String)> {
        let body =
            json!({ "session_id": self.session, "agent_id": self.agent, "tool": tool, "input": input }).to_string();
        let resp = self.conn.request("POST", "/guard", Some("application/json"), body.as_bytes()).await.ok()?;
        let answer: Value = serde_json::from_slice(resp.body).ok()?;
        let decision = answer.get("decision")?.as_str()?;
        if decision == "allow" {
            return None;
        }
        let reasons = answer["reasons"].as_array().map_or_else(Vec::new, |r| {
            r.iter().filter_map(|r| r.get("message")?.as_str().map(str::to_owned)).collect()
        });
        Some((decision.to_owned(), reasons.join("; ")))
    }

    async fn pause(&self, secs: f64) {
        tokio::time::sleep(Duration::from_secs_f64((secs / self.speed).max(0.0))).await;
    }

    async fn thought(&mut self, content: &str, confidence: &str) -> std::io::Result<()> {
        self.emit("cognition.thought", json!({ "content": content, "confidence": confidence })).await?;
        self.pause(0.6).await;
        Ok(())
    }

    /// A tool call: start, a pause for the tool's latency, end with its outcome and cost.
    async fn tool(
        &mut self,
        tool: &str,
        input: Value,
        outcome: Result<&str, &str>,
        latency: f64,
    ) -> std::io::Result<()> {
        self.calls += 1;
        let call_id = format!("call_{}_{}", self.seq + 1, self.calls);
        self.emit("operation.tool_start", json!({ "tool": tool, "input": input, "tool_call_id": call_id })).await?;
        self.pause(latency).await;
        let tokens = 150 + (self.calls as i64 * 37) % 400;
        let cost = tokens as f64 * 0.000_01;
        self.tokens += tokens;
        self.cost += cost;
        let mut end = json!({
            "tool": tool,
            "tool_call_id": call_id,
            "success": outcome.is_ok(),
            "latency_ms": (latency * 1000.0) as i64,
            "token_spend_delta": tokens,
            "cost_usd": (cost * 1e6).round() / 1e6,
        });
        match outcome {
            Ok(summary) => end["output_summary"] = json!(summary),
            Err(error) => end["error"] = json!(error),
        }
        self.emit("operation.tool_end", end).await?;
        self.pause(0.3).await;
        Ok(())
    }

    async fn heartbeat(&mut self) -> std::io::Result<()> {
        let payload = json!({
            "status": "running",
            "step": self.steps,
            "token_spend": self.tokens,
            "total_cost_usd": (self.cost * 1e6).round() / 1e6,
        });
        self.emit("session.heartbeat", payload).await
    }

    async fn end(&mut self, outcome: &str, summary: &str) -> std::io::Result<()> {
        let payload = json!({
            "outcome": outcome,
            "outcome_summary": summary,
            "total_steps": self.steps,
            "total_tokens": self.tokens,
            "total_cost_usd": (self.cost * 1e6).round() / 1e6,
        });
        self.emit("session.ended", payload).await
    }
}

/// A researcher: plans, searches, loops on purpose (agent 0), delegates to a child, loses
/// confidence on purpose (agent 0), and reports.
async fn researcher(target: Arc<Target>, n: usize, run: String, speed: f64) -> std::io::Result<String> {
    let topic = TOPICS[n % TOPICS.len()];
    let session = format!("demo_{run}_research_{n}");
    let mut a = Agent::new(&target, "research-agent", session.clone(), None, speed).await?;
    a.emit(
        "session.started",
        json!({ "goal": format!("Write a short survey of {topic}"), "agent_version": "1.4.0", "llm": "demo-llm-large" }),
    )
    .await?;
    a.emit("cognition.goal", json!({ "goal": format!("Find 5 recent sources on {topic}"), "status": "set" })).await?;
    a.thought(&format!("I should start broad: a web search on {topic}, then read the best hits."), "high").await?;
    a.emit(
        "cognition.decision",
        json!({
            "decision": "search the web first",
            "alternatives": ["query the paper index directly", "ask the user for sources"],
            "reasoning": "broad coverage before depth; the paper index misses blog posts",
        }),
    )
    .await?;
    a.tool("web_search", json!({ "query": topic, "limit": 10 }), Ok("10 results, 4 look relevant"), 1.2).await?;
    a.emit("operation.memory", json!({ "operation": "write", "key": "candidate_sources", "summary": "4 URLs" }))
        .await?;
    a.tool(
        "fetch_page",
        json!({ "url": format!("https://example.org/{n}/overview") }),
        Ok("2,400 words on the topic"),
        0.8,
    )
    .await?;
    a.tool("fetch_page", json!({ "url": format!("https://example.org/{n}/paywalled") }), Err("HTTP 403: paywall"), 0.5)
        .await?;
    a.heartbeat().await?;
    if n == 0 {
        // On purpose: the same search, the same empty result, again and again — a loop. The
        // agent asks aop's guard before each search: told `ask` at the search that completes the
        // loop, it goes on (as if its user said yes) and the loop alert is raised; told again,
        // it gives up.
        a.thought("The second source failed; let me search for an open copy.", "medium").await?;
        let input = json!({ "query": format!("{topic} open access pdf") });
        let mut told = 0;
        for _ in 0..6 {
            if let Some((decision, why)) = a.ask_guard("web_search", &input).await {
                told += 1;
                println!("  {}: aop's guard says {decision}: {}", a.session, crate::clean::text(&why));
                if told > 1 {
                    a.thought(
                        &format!("aop's guard says {decision}: {why}. I will stop repeating this search."),
                        "medium",
                    )
                    .await?;
                    break;
                }
            }
            a.tool("web_search", input.clone(), Ok("0 results"), 0.7).await?;
        }
    }
    let child_session = format!("demo_{run}_summarizer_{n}");
    a.emit(
        "operation.agent_spawn",
        json!({ "child_agent_id": "summarizer-agent", "child_session_id": child_session, "goal": "Summarise the fetched sources", "reason": "parallelise reading" }),
    )
    .await?;
    let child = tokio::spawn(summarizer(Arc::clone(&target), child_session, session.clone(), speed, n));
    a.emit("operation.external_call", json!({ "service": "paper-index", "method": "GET", "endpoint": "/search", "status_code": 200, "latency_ms": 340 }))
        .await?;
    a.emit("cognition.uncertainty", json!({ "content": "Two sources disagree on how the protocol versions events." }))
        .await?;
    if n == 0 {
        // On purpose: confidence falls three thoughts in a row.
        a.thought("The sources contradict each other on the event schema.", "low").await?;
        a.thought("I cannot tell which version is current from what I have.", "low").await?;
        a.thought("My draft may be wrong on the versioning section.", "low").await?;
    }
    a.heartbeat().await?;
    let child_ok = child.await.map_err(std::io::Error::other)??;
    a.thought(
        if child_ok {
            "The summary is in; time to write the survey."
        } else {
            "The summariser failed; I will write from my notes."
        },
        "medium",
    )
    .await?;
    a.tool("write_file", json!({ "path": format!("survey-{n}.md") }), Ok("survey written, 1,150 words"), 0.6).await?;
    a.emit("cognition.goal", json!({ "goal": format!("Find 5 recent sources on {topic}"), "status": "completed" }))
        .await?;
    a.end("completed", "Survey written from 4 sources").await?;
    Ok(session)
}

/// A child agent; the second researcher's child fails, so a failed child shows in the tree.
async fn summarizer(
    target: Arc<Target>,
    session: String,
    parent: String,
    speed: f64,
    n: usize,
) -> std::io::Result<bool> {
    let mut a = Agent::new(&target, "summarizer-agent", session, Some(parent), speed).await?;
    a.emit("session.started", json!({ "goal": "Summarise the fetched sources", "agent_version": "0.9.2" })).await?;
    a.emit(
        "cognition.thought",
        json!({ "reasoning": "Read each source and keep three key points.", "confidence": "high" }),
    )
    .await?;
    a.emit("operation.memory", json!({ "action": "read", "key": "candidate_sources" })).await?;
    a.tool("summarize", json!({ "source": 1, "max_words": 200 }), Ok("3 key points"), 1.0).await?;
    let fails = n % 2 == 1;
    if fails {
        a.tool("summarize", json!({ "source": 2, "max_words": 200 }), Err("context window exceeded"), 0.8).await?;
        a.end("failed", "Could not summarise source 2").await?;
    } else {
        a.tool("summarize", json!({ "source": 2, "max_words": 200 }), Ok("3 key points"), 0.9).await?;
        a.end("completed", "6 key points from 2 sources").await?;
    }
    Ok(!fails)
}

pub fn run(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aop demo: {}", crate::clean::text(&e.to_string()));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let run = format!(
            "{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        );
        let own = match args.notify.as_deref() {
            Some(webhook) => match Own::start(webhook, &run).await {
                Ok(own) => Some(own),
                Err(e) => {
                    eprintln!("aop demo: {}", crate::clean::text(&e));
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        let url = own.as_ref().map_or(args.url.as_str(), |o| o.url.as_str());
        let target = match Target::parse(url, args.token.as_deref(), false) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                eprintln!("aop demo: {}", crate::clean::text(&e.to_string()));
                return ExitCode::from(2);
            }
        };
        if Conn::connect(&target).await.is_err() {
            eprintln!("aop demo: no collector answers at {}; start one with `aop start` (or pass --url)", target.url);
            return ExitCode::FAILURE;
        }
        let speed = if args.speed.is_finite() && args.speed > 0.0 { args.speed } else { 1.0 };
        if own.is_some() {
            println!(
                "aop demo: a collector of its own at {} (a temporary database), its alerts to --notify",
                target.url
            );
        }
        println!(
            "aop demo: {} research agents reporting to {} — watch {}/dashboard/",
            args.agents.max(1),
            target.url,
            target.url
        );
        let tasks: Vec<_> = (0..args.agents.max(1))
            .map(|n| tokio::spawn(researcher(Arc::clone(&target), n, run.clone(), speed)))
            .collect();
        let mut failed = false;
        for task in tasks {
            match task.await {
                Ok(Ok(session)) => println!("  done: {}/dashboard/#/sessions/{session}", target.url),
                Ok(Err(e)) => {
                    eprintln!("aop demo: {}", crate::clean::text(&e.to_string()));
                    failed = true;
                }
                Err(e) => {
                    eprintln!("aop demo: {}", crate::clean::text(&e.to_string()));
                    failed = true;
                }
            }
        }
        if let Some(own) = own {
            own.finish(&target).await;
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}
