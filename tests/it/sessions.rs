//! Sessions as the API derives and serves them: the row, the list with its order, paging and
//! filters, the detail with its paging, children, export and deletion.

use crate::support::events::key;
use crate::support::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tokio::io::AsyncReadExt;

/// The same events under another session id.
fn as_session(events: &[Value], session: &str) -> Vec<Value> {
    events.iter().map(|e| e.clone().with("session_id", json!(session))).collect()
}

/// One derivation case: events in the order they are sent, and the fields the row must have.
struct Derivation {
    name: &'static str,
    sent: Vec<Value>,
    want: Value,
}

fn derivations() -> Vec<Derivation> {
    let s = "S";
    vec![
        Derivation {
            name: "a full run, sent backwards",
            sent: {
                let mut evs = vec![
                    event(s, 1, "session.started", json!({"goal": "Find papers", "agent_version": "2.1"}))
                        .stamped("2026-04-03T12:00:00+02:00"),
                    event(s, 2, "cognition.thought", json!({"content": "hmm", "confidence": "high"})),
                    event(s, 3, "operation.tool_start", json!({"tool": "web_search", "input": {"q": "x"}})),
                    event(
                        s,
                        4,
                        "operation.tool_end",
                        json!({"tool": "web_search", "success": true, "token_spend_delta": 120, "cost_usd": 0.25}),
                    ),
                    event(
                        s,
                        5,
                        "operation.tool_end",
                        json!({"tool": "web_search", "success": true, "token_spend_delta": 80, "cost_usd": 0.5}),
                    ),
                    event(s, 6, "session.ended", json!({"outcome": "failed", "error_message": "boom"}))
                        .stamped("2026-04-03T10:00:09.5Z"),
                ];
                evs.reverse();
                evs
            },
            want: json!({
                "agent_id": "test-agent", "parent_session_id": null, "goal": "Find papers",
                "agent_version": "2.1", "status": "failed",
                "started_at": "2026-04-03T12:00:00+02:00", "ended_at": "2026-04-03T10:00:09.5Z",
                "last_seen_at": "2026-04-03T10:00:09.5Z",
                "total_steps": 4, "total_tokens": 200, "total_cost_usd": 0.75,
                "event_count": 6, "child_count": 0,
            }),
        },
        Derivation {
            name: "status from payload.status when there is no outcome",
            sent: vec![
                event(s, 1, "session.started", json!({})),
                event(s, 2, "session.ended", json!({"status": "cancelled"})),
            ],
            want: json!({"status": "cancelled", "ended_at": at(2)}),
        },
        Derivation {
            name: "outcome wins over status",
            sent: vec![event(s, 2, "session.ended", json!({"outcome": "timeout", "status": "failed"}))],
            want: json!({"status": "timeout"}),
        },
        Derivation {
            name: "an end without outcome or status is completed",
            sent: vec![event(s, 1, "session.started", json!({})), event(s, 2, "session.ended", json!({}))],
            want: json!({"status": "completed"}),
        },
        Derivation {
            name: "running until it ends",
            sent: vec![
                event(s, 1, "session.started", json!({"goal": "g"})),
                event(s, 2, "session.heartbeat", json!({"status": "running"})),
            ],
            want: json!({"status": "running", "ended_at": null, "started_at": at(1), "last_seen_at": at(2)}),
        },
        Derivation {
            name: "a late session.started still sets goal, agent and parent",
            sent: vec![
                event(s, 2, "cognition.thought", json!({"content": "early"})).agent("early-name").at(1),
                event(s, 3, "cognition.goal", json!({"goal": "a sub-goal", "status": "set"})).agent("early-name").at(2),
                event(s, 1, "session.started", json!({"goal": "the goal"})).agent("real-name").parent("root_9").at(5),
            ],
            want: json!({
                "goal": "the goal", "agent_id": "real-name", "parent_session_id": "root_9",
                "started_at": at(5), "last_seen_at": at(5), "total_steps": 2,
            }),
        },
        Derivation {
            name: "sub-goals do not replace the goal",
            sent: vec![
                event(s, 1, "session.started", json!({"goal": "main"})),
                event(s, 2, "cognition.goal", json!({"goal": "sub", "status": "in_progress"})),
            ],
            want: json!({"goal": "main"}),
        },
        Derivation {
            name: "without a start, the earliest event starts the session",
            sent: vec![
                event(s, 5, "cognition.thought", json!({})).at(3),
                event(s, 4, "cognition.thought", json!({})).at(1),
            ],
            want: json!({
                "started_at": at(1), "last_seen_at": at(3), "goal": null, "status": "running",
                "total_cost_usd": null, "total_tokens": 0, "total_steps": 2, "event_count": 2,
            }),
        },
        Derivation {
            name: "events after the end do not reopen the session",
            sent: vec![
                event(s, 1, "session.started", json!({})),
                event(s, 2, "session.ended", json!({"outcome": "completed"})).at(5),
                event(s, 3, "session.heartbeat", json!({"status": "running"})).at(7),
            ],
            want: json!({"status": "completed", "ended_at": at(5), "last_seen_at": at(7)}),
        },
        Derivation {
            name: "reported totals win, and the latest report by sequence counts",
            sent: vec![
                event(
                    s,
                    4,
                    "session.heartbeat",
                    json!({"status": "running", "step": 7, "token_spend": 700, "total_cost_usd": 2.5}),
                ),
                event(
                    s,
                    3,
                    "session.heartbeat",
                    json!({"status": "running", "step": 3, "token_spend": 300, "total_cost_usd": 1.25}),
                ),
                event(
                    s,
                    2,
                    "operation.tool_end",
                    json!({"tool": "t", "success": true, "token_spend_delta": 5, "cost_usd": 0.5}),
                ),
            ],
            want: json!({"total_steps": 7, "total_tokens": 700, "total_cost_usd": 2.5}),
        },
        Derivation {
            name: "de-facto totals on session.ended",
            sent: vec![
                event(s, 1, "session.heartbeat", json!({"step": 9, "token_spend": 900})),
                event(
                    s,
                    2,
                    "session.ended",
                    json!({"status": "completed", "total_steps": 12, "total_tokens": 1200, "total_cost_usd": 3}),
                ),
            ],
            want: json!({"status": "completed", "total_steps": 12, "total_tokens": 1200, "total_cost_usd": 3.0}),
        },
        Derivation {
            name: "time is compared as instants, not as text",
            sent: vec![
                // 09:00:05Z, although its text sorts after the other one.
                event(s, 1, "cognition.thought", json!({})).stamped("2026-04-03T11:00:05+02:00"),
                event(s, 2, "cognition.thought", json!({})).stamped("2026-04-03T10:00:03Z"),
            ],
            want: json!({"started_at": "2026-04-03T11:00:05+02:00", "last_seen_at": "2026-04-03T10:00:03Z"}),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_derived_from_its_events_whatever_their_order() {
    let server = TestServer::start().await;
    let cases = derivations();
    for (i, case) in cases.iter().enumerate() {
        let id = format!("derive_{i}");
        server.ingest(&as_session(&case.sent, &id)).await;

        let detail = server.session(&id).await;
        let row = server.sessions("limit=1000").await.into_iter().find(|r| r["id"] == id.as_str());
        assert_eq!(row.as_ref(), Some(&detail), "{}: the list row and the detail differ", case.name);
        for (field, want) in case.want.as_object().unwrap() {
            assert_eq!(&detail[field], want, "{}: field {field} in {detail:#}", case.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_has_the_documented_fields_with_their_types() {
    let server = TestServer::start().await;
    server.ingest(&[event("shape", 1, "cognition.thought", json!({}))]).await;
    let row = &server.sessions("").await[0];
    let nullable_strings = ["parent_session_id", "goal", "ended_at"];
    let strings = ["id", "agent_id", "status", "started_at", "last_seen_at"];
    let integers = ["total_steps", "total_tokens", "event_count", "alert_count", "child_count"];
    for f in strings {
        assert!(row[f].is_string(), "{f} in {row}");
    }
    for f in nullable_strings {
        assert!(row[f].is_string() || row[f].is_null(), "{f} in {row}");
    }
    for f in integers {
        assert!(row[f].is_i64(), "{f} in {row}");
    }
    assert!(row.get("total_cost_usd").is_some_and(|c| c.is_null() || c.is_number()), "{row}");
}

/// Arrival order does not matter: every permutation of one run derives one row.
#[test]
fn any_arrival_order_derives_the_same_row() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(TestServer::start());
    let run = vec![
        event("x", 1, "session.started", json!({"goal": "order-free", "agent_version": "1"})).agent("a"),
        event("x", 2, "cognition.thought", json!({"content": "c"})).agent("b"),
        event(
            "x",
            3,
            "operation.tool_end",
            json!({"tool": "t", "success": true, "token_spend_delta": 7, "cost_usd": 0.1}),
        ),
        event("x", 4, "session.heartbeat", json!({"status": "running", "step": 2})),
        event(
            "x",
            5,
            "operation.tool_end",
            json!({"tool": "t", "success": true, "token_spend_delta": 5, "cost_usd": 0.2}),
        ),
        event("x", 6, "session.ended", json!({"outcome": "completed"})).stamped("2026-04-03T12:00:06+02:00"),
        event("x", 7, "session.heartbeat", json!({"status": "running"})).at(9),
    ];
    let reference = rt.block_on(async {
        server.ingest(&as_session(&run, "reference")).await;
        server.session("reference").await
    });
    let n = std::sync::atomic::AtomicUsize::new(0);
    let mut runner =
        TestRunner::new(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() });
    runner
        .run(&Just(run.clone()).prop_shuffle(), |shuffled| {
            let id = format!("perm_{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            rt.block_on(async {
                server.ingest(&as_session(&shuffled, &id)).await;
                let mut row = server.session(&id).await;
                row["id"] = reference["id"].clone();
                prop_assert_eq!(&row, &reference);
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posters_into_one_session_derive_the_same_row_as_one_poster() {
    let server = TestServer::start().await;
    let run: Vec<Value> = (1..=120)
        .map(|i| match i {
            1 => event("c", i, "session.started", json!({"goal": "together"})),
            120 => event("c", i, "session.ended", json!({"outcome": "completed", "total_cost_usd": 1.5})),
            _ => event("c", i, "operation.tool_end", json!({"tool": "t", "success": true, "token_spend_delta": i})),
        })
        .collect();
    server.ingest(&as_session(&run, "one_poster")).await;

    let together = as_session(&run, "four_posters");
    join_all((0..4).map(|k| {
        let mine: Vec<Value> = together.iter().skip(k).step_by(4).rev().cloned().collect();
        let server = &server;
        async move { server.ingest(&mine).await }
    }))
    .await;

    let mut row = server.session("four_posters").await;
    row["id"] = json!("one_poster");
    assert_eq!(row, server.session("one_poster").await);
    assert_eq!(row["event_count"], 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_ordered_by_latest_activity_newest_first() {
    let server = TestServer::start().await;
    server
        .ingest(&[
            event("a", 1, "session.started", json!({})).at(10),
            event("b", 1, "session.started", json!({})).at(20),
            // 09:00:30Z: the oldest, although its text sorts last.
            event("c", 1, "session.started", json!({})).stamped("2026-04-03T11:00:30+02:00"),
            event("d", 1, "session.started", json!({})).at(15),
        ])
        .await;
    assert_eq!(server.session_ids("").await, ["b", "d", "a", "c"]);

    // New activity moves a session to the front; an old event arriving late does not.
    server.ingest(&[event("a", 2, "cognition.thought", json!({})).at(30)]).await;
    server.ingest(&[event("d", 0, "cognition.thought", json!({})).at(-50)]).await;
    assert_eq!(server.session_ids("").await, ["a", "b", "d", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_cursor_walk_every_session_exactly_once() {
    let server = TestServer::start().await;
    // 1005 sessions in 7 distinct instants: many ties for the cursor to get through.
    let events: Vec<Value> =
        (0..1005).map(|i| event(&format!("s{i:04}"), 1, "session.started", json!({})).at(i % 7)).collect();
    server.import(&events).await;

    let first = server.get_ok("/sessions").await;
    assert_eq!(first["sessions"].as_array().unwrap().len(), 100, "default limit");
    assert!(first["next_cursor"].is_string(), "{}", first["next_cursor"]);
    let capped = server.get_ok("/sessions?limit=5000").await;
    assert_eq!(capped["sessions"].as_array().unwrap().len(), 1000, "maximum limit");

    let walk = |limit: usize, filter: &'static str| {
        let server = &server;
        async move {
            let mut ids = Vec::new();
            let mut last_seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/sessions?limit={limit}{filter}&cursor={c}"),
                    None => format!("/sessions?limit={limit}{filter}"),
                };
                let page = server.get_ok(&path).await;
                let rows = page["sessions"].as_array().unwrap();
                assert!(rows.len() <= limit);
                for r in rows {
                    ids.push(r["id"].as_str().unwrap().to_owned());
                    last_seen.push(r["last_seen_at"].as_str().unwrap().to_owned());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => {
                        assert!(!rows.is_empty(), "a cursor after an empty page");
                        cursor = Some(c.to_owned());
                    }
                    None => return (ids, last_seen),
                }
            }
        }
    };

    let (by_7, seen) = walk(7, "").await;
    let (by_1000, _) = walk(1000, "").await;
    assert_eq!(by_7.len(), 1005);
    assert_eq!(by_7.iter().collect::<BTreeSet<_>>().len(), 1005, "a session was listed twice");
    assert_eq!(by_7, by_1000, "the page size changed the order");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "not newest first");

    // A filter and a cursor together.
    let (sixes, _) = walk(9, "&q=6").await;
    let want: Vec<String> = by_1000.iter().filter(|id| id.contains('6')).cloned().collect();
    assert_eq!(sixes, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_paging_parameters_are_a_400() {
    let server = TestServer::start().await;
    server.ingest(&[event("one", 1, "session.started", json!({}))]).await;
    for path in [
        "/sessions?limit=0",
        "/sessions?limit=-1",
        "/sessions?limit=ten",
        "/sessions/one?limit=0",
        "/sessions/one?after=later",
        "/sessions/one?alerts_after=x",
        "/alerts?limit=0",
        // A cursor the collector never gave out is not silently the first page.
        "/sessions?cursor=garbage",
        "/sessions?cursor=x~one",
        "/sessions?limit=1&cursor=~one",
        "/alerts?cursor=garbage",
    ] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let names = ["limit", "after", "cursor"];
        assert!(body["error"].as_str().is_some_and(|e| names.iter().any(|n| e.contains(n))), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_the_list() {
    let server = TestServer::start().await;
    let start = |id: &str, agent: &str, goal: &str| event(id, 1, "session.started", json!({"goal": goal})).agent(agent);
    let end =
        |id: &str, agent: &str, outcome: &str| event(id, 2, "session.ended", json!({"outcome": outcome})).agent(agent);
    server
        .ingest(&[
            start("alpha_1", "researcher", "Find papers on RLHF"),
            end("alpha_1", "researcher", "completed"),
            start("alpha_2", "researcher", "Summarize findings"),
            start("beta_1", "writer", "Write the report"),
            end("beta_1", "writer", "failed"),
            start("beta-child", "helper", "Check 100% of the references").parent("beta_1"),
            start("gamma", "writer", "Proofread").parent("beta_1"),
            end("gamma", "writer", "failed").parent("beta_1"),
        ])
        .await;

    let cases: &[(&str, &[&str])] = &[
        ("status=running", &["alpha_2", "beta-child"]),
        ("status=failed", &["beta_1", "gamma"]),
        ("status=completed", &["alpha_1"]),
        ("status=nonsense", &[]),
        ("agent_id=writer", &["beta_1", "gamma"]),
        ("agent_id=writ", &[]),
        ("parent_session_id=beta_1", &["beta-child", "gamma"]),
        ("q=papers", &["alpha_1"]),
        ("q=beta", &["beta-child", "beta_1"]),
        ("q=help", &["beta-child"]),
        ("q=100%25", &["beta-child"]),
        ("q=%25", &["beta-child"]),
        ("q=_", &["alpha_1", "alpha_2", "beta_1"]),
        ("status=failed&agent_id=writer&parent_session_id=beta_1", &["gamma"]),
    ];
    for (query, want) in cases {
        let got: BTreeSet<String> = server.session_ids(query).await.into_iter().collect();
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "?{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_pages_its_events_with_after_limit_and_next_after() {
    let server = TestServer::start().await;
    // Sequences 0, 2, …, 26 sent in a scrambled order.
    let mut evs: Vec<Value> = (0..14).map(|i| event("paged", i * 2, "cognition.thought", json!({"i": i}))).collect();
    evs.sort_by_key(|e| (key(e).1 * 7) % 11);
    server.ingest(&evs).await;

    let page = |query: &'static str| {
        let server = &server;
        async move {
            let d = server.get_ok(&format!("/sessions/paged?{query}")).await;
            let seqs: Vec<i64> = d["events"].as_array().unwrap().iter().map(|e| key(e).1).collect();
            (seqs, d["next_after"].clone())
        }
    };
    let all: Vec<i64> = (0..14).map(|i| i * 2).collect();
    assert_eq!(page("").await, (all.clone(), Value::Null));
    assert_eq!(page("limit=7").await, (all[..7].to_vec(), json!(12)));
    assert_eq!(page("limit=7&after=12").await, (all[7..].to_vec(), Value::Null), "a page that ends exactly at the end");
    assert_eq!(page("limit=5&after=8").await, (vec![10, 12, 14, 16, 18], json!(18)));
    assert_eq!(page("after=13&limit=2").await, (vec![14, 16], json!(16)), "after between two sequences");
    assert_eq!(page("after=26").await, (vec![], Value::Null));
    assert_eq!(page("after=-5").await, (all, Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_serves_1000_events_by_default_and_at_most_10000() {
    let server = TestServer::start().await;
    let evs: Vec<Value> = (1..=10_001).map(|i| event("long", i, "cognition.thought", json!({}))).collect();
    server.import(&evs).await;

    let d = server.get_ok("/sessions/long").await;
    assert_eq!(d["events"].as_array().unwrap().len(), 1000);
    assert_eq!(d["next_after"], 1000);
    let d = server.get_ok("/sessions/long?limit=20000").await;
    assert_eq!(d["events"].as_array().unwrap().len(), 10_000);
    assert_eq!(d["next_after"], 10_000);
    let d = server.get_ok("/sessions/long?limit=20000&after=10000").await;
    assert_eq!(d["events"].as_array().unwrap().len(), 1);
    assert_eq!(d["next_after"], Value::Null);
    assert_eq!(d["session"]["event_count"], 10_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_the_direct_child_sessions() {
    let server = TestServer::start().await;
    let spawn = |parent: &str, seq: i64, child: &str| {
        event(parent, seq, "operation.agent_spawn", json!({"child_agent_id": "helper", "child_session_id": child}))
    };
    server
        .ingest(&[
            // A child that arrives before its parent exists.
            event("c2", 1, "session.started", json!({})).agent("helper").parent("root"),
            event("root", 1, "session.started", json!({"goal": "lead"})),
            spawn("root", 2, "c1"),
            spawn("root", 3, "c2"),
            event("c1", 1, "session.started", json!({})).agent("helper").parent("root"),
            event("g1", 1, "session.started", json!({})).agent("helper").parent("c1"),
            event("other", 1, "session.started", json!({})),
        ])
        .await;

    let children = server.get_ok("/sessions/root/children").await["sessions"].as_array().unwrap().clone();
    let ids: BTreeSet<&str> = children.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["c1", "c2"]));
    let listed = server.sessions("").await;
    for child in &children {
        let row = listed.iter().find(|r| r["id"] == child["id"]).unwrap();
        assert_eq!(child, row, "a child is shown like a list row");
    }
    let count = |id: &str| listed.iter().find(|r| r["id"] == id).unwrap()["child_count"].clone();
    assert_eq!([count("root"), count("c1"), count("c2"), count("g1")], [json!(2), json!(1), json!(0), json!(0)]);
    assert_eq!(server.get_ok("/sessions/c2/children").await["sessions"], json!([]));
    assert_eq!(server.get_ok("/sessions/c1/children").await["sessions"][0]["id"], "g1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_ndjson_in_sequence_order_as_an_attachment() {
    let server = TestServer::start().await;
    let id = "sess:x.y@z-1";
    let evs: Vec<Value> = (1..=6)
        .map(|i| event(id, i, "cognition.thought", json!({"content": format!("step {i} ✓ ünïcødé \u{2028} 🚀\n")})))
        .collect();
    let mut shuffled = evs.clone();
    shuffled.rotate_left(4);
    server.ingest(&shuffled).await;

    let resp = server.get(&format!("/sessions/{id}/export")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
    assert!(header("content-type").starts_with("application/x-ndjson"), "{}", header("content-type"));
    assert_eq!(header("content-disposition"), format!("attachment; filename=\"session-{id}.jsonl\""));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, evs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_export_is_streamed_and_complete() {
    let server = TestServer::start().await;
    let evs: Vec<Value> = (1..=5000)
        .map(|i| event("big", i, "cognition.thought", json!({"content": format!("thought {i}: ça marche ✓"), "n": i})))
        .collect();
    for chunk in evs.chunks(2500) {
        server.import(chunk).await;
    }

    let resp = server.get("/sessions/big/export").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), None, "a streamed body has no length announced up front");
    let mut body = resp.bytes_stream();
    let mut pending = Vec::new();
    let mut lines = 0usize;
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.expect("export broke off"));
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let got: Value = serde_json::from_slice(&line).expect("a JSON line");
            assert_eq!(got, evs[lines], "line {lines}");
            lines += 1;
        }
    }
    assert!(pending.is_empty(), "a partial last line");
    assert_eq!(lines, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_is_gone_from_every_endpoint_and_the_stream_says_so() {
    let server = TestServer::start().await;
    let mut everything = server.stream("/stream").await;
    let mut kept_only = server.stream("/stream?session_id=kept").await;
    let doomed: Vec<Value> = (1..=3).map(|i| event("doomed", i, "cognition.thought", json!({"i": i}))).collect();
    let kept = [event("kept", 1, "session.started", json!({"goal": "stay"})).at(5)];
    server.ingest(&doomed).await;
    server.ingest(&[event("doomed_child", 1, "session.started", json!({})).parent("doomed")]).await;
    server.ingest(&kept).await;
    everything.events(5).await;

    assert_eq!(server.delete("/sessions/doomed").await, (StatusCode::OK, json!({"ok": true})));

    for path in ["/sessions/doomed", "/sessions/doomed/export"] {
        let resp = server.get(path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.expect("a JSON error");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // Its child survives (it has events of its own); asking for the children shows nothing else.
    let (status, body) = server.get_json("/sessions/doomed/children").await;
    if status == StatusCode::OK {
        assert_eq!(body["sessions"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(body["sessions"][0]["id"], "doomed_child", "{body}");
    } else {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, body) = server.delete("/sessions/doomed").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(server.session_ids("").await, ["kept", "doomed_child"]);
    assert_eq!(server.session_ids("q=doomed").await, ["doomed_child"]);
    assert_eq!(server.events("kept").await, kept.to_vec());

    // The stream announces it, without an id (ids belong to stored events).
    let deleted = everything.message().await;
    assert_eq!(deleted.event.as_deref(), Some("session.deleted"), "{deleted:?}");
    assert_eq!(deleted.id, None, "{deleted:?}");
    assert_eq!(deleted.json(), json!({"session_id": "doomed"}));
    // A subscriber to another session is not told.
    let next = event("kept", 2, "cognition.thought", json!({}));
    server.ingest_one(&next).await;
    assert_eq!(kept_only.messages(2).await.iter().map(Frame::json).collect::<Vec<_>>(), vec![kept[0].clone(), next]);
    // Resuming from the start no longer replays its events.
    let mut replay = server.stream("/stream?since=0").await;
    let replayed: Vec<(String, i64)> = replay.events(3).await.iter().map(Frame::key).collect();
    assert_eq!(replayed, [("doomed_child".to_owned(), 1), ("kept".to_owned(), 1), ("kept".to_owned(), 2)]);

    // The id can be used again, from scratch.
    assert_eq!(server.post_event(&doomed[0]).await, (StatusCode::OK, json!({"ok": true})));
    assert_eq!(server.session("doomed").await["event_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_are_404_with_a_json_error() {
    let server = TestServer::start().await;
    server.ingest(&[event("known", 1, "session.started", json!({}))]).await;
    let cases = [
        (Method::GET, "/sessions/unknown"),
        (Method::GET, "/sessions/unknown/children"),
        (Method::GET, "/sessions/unknown/export"),
        (Method::DELETE, "/sessions/unknown"),
        (Method::GET, "/sessions/a%2Fb"),
        (Method::GET, "/sessions/%E2%9C%93"),
    ];
    for (method, path) in cases {
        let (status, _, body) = TestServer::send_json(server.request(method.clone(), path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["ok"], false, "{method} {path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {body}");
    }
    assert_eq!(server.session_ids("").await, ["known"]);
}

/// Exports that nobody reads: each holds about one chunk and the server's write buffer, whatever
/// its events' sizes (the chunks are bounded in bytes), and only so many run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_nobody_reads_hold_little_memory_and_are_capped() {
    let server = TestServer::start().await;
    // 600 events of ~60 KiB: 36 MiB, all of which a row-counted chunk would have held at once.
    let filler = "x".repeat(60 * 1024);
    let evs: Vec<Value> =
        (1..=600).map(|i| event("heavy", i, "cognition.thought", json!({"content": filler, "n": i}))).collect();
    for chunk in evs.chunks(100) {
        server.import(chunk).await;
    }
    // One export read to the end first, so the readers' page caches are warm before measuring.
    let whole = server.get("/sessions/heavy/export").await.bytes().await.expect("the export");
    assert_eq!(whole.iter().filter(|b| **b == b'\n').count(), 600);

    let before = server.rss_bytes();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(crate::support::raw::sluggish_get(server.addr(), "/sessions/heavy/export").await);
    }
    // Give the server every chance to buffer what it would; take the highest reading.
    let mut peak = before;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        peak = peak.max(server.rss_bytes());
    }
    let grown = peak.saturating_sub(before);
    println!("8 stalled exports of a 36 MiB session: RSS grew by {} KiB", grown >> 10);
    assert!(grown < 48 << 20, "8 stalled exports of a 36 MiB session grew the collector by {} MiB", grown >> 20);

    // The cap: 32 at once, the next is told to come back, and a slot frees when a client leaves.
    for _ in 8..32 {
        stalled.push(crate::support::raw::sluggish_get(server.addr(), "/sessions/heavy/export").await);
    }
    for conn in &mut stalled {
        // Each holds its slot once answered: wait for every answer before asking once more.
        let mut status = [0u8; 12];
        conn.read_exact(&mut status).await.expect("an answer");
        assert_eq!(&status, b"HTTP/1.1 200", "a stalled export was not served");
    }
    let refused = server.get("/sessions/heavy/export").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("a JSON error");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("exports")), "{body}");
    drop(stalled);
    eventually("an export slot to free up", || async {
        let resp = server.get("/sessions/heavy/export").await;
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// A session deleted while it is exported: the body breaks off (no final chunk), so a client can
/// tell the file is incomplete instead of keeping 22,000 of 60,000 lines as if that were all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_off_by_a_deletion_looks_cut_off() {
    let server = TestServer::start().await;
    let text = "t".repeat(400);
    let evs: Vec<Value> =
        (1..=60_000).map(|i| event("doomed", i, "cognition.thought", json!({"content": text, "n": i}))).collect();
    for chunk in evs.chunks(10_000) {
        server.import(chunk).await;
    }
    let resp = server.get("/sessions/doomed/export").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("a first chunk");
    assert!(!first.is_empty());
    assert_eq!(server.delete("/sessions/doomed").await.0, StatusCode::OK);

    let mut lines = first.iter().filter(|b| **b == b'\n').count();
    let mut broke = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => lines += c.iter().filter(|b| **b == b'\n').count(),
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    assert!(lines < 60_000, "the whole session was exported before the deletion; make it bigger");
    assert!(broke.is_some(), "the export ended like a complete one after {lines} of 60000 lines");
}

/// More alerts than one detail page holds: the page says where the next begins
/// (`next_alerts_after`) and `alerts_after` reads it; no alert is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_pages_alerts_past_ten_thousand() {
    let server = TestServer::start().await;
    // Three low-confidence thoughts, then a confident one: one confidence_drop alert per four events.
    let want = 10_005;
    let evs: Vec<Value> = (1..=want * 4)
        .map(|i| {
            let confidence = if i % 4 == 0 { "high" } else { "low" };
            event("doubtful", i, "cognition.thought", json!({"content": "hmm", "confidence": confidence}))
        })
        .collect();
    for chunk in evs.chunks(10_000) {
        server.import(chunk).await;
    }
    let first = server.get_ok("/sessions/doubtful?limit=1").await;
    assert_eq!(first["session"]["alert_count"], want);
    let page1 = first["alerts"].as_array().expect("alerts").clone();
    assert_eq!(page1.len(), 10_000);
    let last_id = page1.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(first["next_alerts_after"], last_id, "the page does not say that more alerts follow");

    let second = server.get_ok(&format!("/sessions/doubtful?limit=1&alerts_after={last_id}")).await;
    let page2 = second["alerts"].as_array().expect("alerts").clone();
    assert_eq!(page2.len(), 5);
    assert_eq!(second["next_alerts_after"], Value::Null);
    let ids: Vec<i64> = page1.iter().chain(&page2).map(|a| a["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "alerts out of order or repeated across pages");
    assert!(page1.iter().chain(&page2).all(|a| a["type"] == "confidence_drop" && a["session_id"] == "doubtful"));
}
