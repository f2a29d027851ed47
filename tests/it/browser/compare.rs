//! The compare view: a failed run against the completed run of the same agent and goal, reached
//! from the failed run's view through "compare with…"; its figures, its aligned steps and the
//! first divergence, both events of a step in full; then a running session compared while it
//! goes on, and a comparison with a session that does not exist.

use super::driver::Browser;
use super::{assert_not_reloaded, browser_and_server, mark_page, open, timeline_event, Clock};
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

const AGENT: &str = "research-agent";
const GOAL: &str = "Find the population of Lisbon";
const OK: &str = "cmp-completed";
const FAILED: &str = "cmp-failed";
const LIVE: &str = "cmp-running";

/// An event of `session`, of the research agent, `ms` after the clock's start.
fn step(clock: &Clock, session: &str, sequence: i64, ms: i64, kind: &str, payload: Value) -> Value {
    clock.event(session, sequence, ms, kind, payload).agent(AGENT)
}

/// What every run of the agent does first (sequences 1 to 6, from `t0`): start, think, search,
/// think, open a page.
fn opening(clock: &Clock, session: &str, t0: i64) -> Vec<Value> {
    vec![
        step(clock, session, 1, t0, "session.started", json!({"goal": GOAL, "llm": "gpt-4o-mini"})),
        step(
            clock,
            session,
            2,
            t0 + 1_000,
            "cognition.thought",
            json!({"content": "Search for the figure first", "confidence": "high"}),
        ),
        step(
            clock,
            session,
            3,
            t0 + 2_000,
            "operation.tool_start",
            json!({"tool": "search", "input": {"q": "Lisbon population"}}),
        ),
        step(
            clock,
            session,
            4,
            t0 + 3_000,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "output_summary": "3 results"}),
        ),
        step(
            clock,
            session,
            5,
            t0 + 4_000,
            "cognition.thought",
            json!({"content": "The city's page should have it", "confidence": "medium"}),
        ),
        step(
            clock,
            session,
            6,
            t0 + 5_000,
            "operation.tool_start",
            json!({"tool": "fetch_page", "input": {"url": "https://example.org/lisbon"}}),
        ),
    ]
}

/// The page fails to load (sequence 7, at `ms`).
fn page_times_out(clock: &Clock, session: &str, ms: i64) -> Value {
    step(
        clock,
        session,
        7,
        ms,
        "operation.tool_end",
        json!({"tool": "fetch_page", "success": false, "error": "timeout after 6s"}),
    )
}

/// The good run: the page answers, the agent says so and ends, 20 s after it started.
fn completed_run(clock: &Clock) -> Vec<Value> {
    let mut events = opening(clock, OK, 0);
    events.extend([
        step(
            clock,
            OK,
            7,
            7_000,
            "operation.tool_end",
            json!({"tool": "fetch_page", "success": true, "output_summary": "Lisbon: 545,796 inhabitants (2023)"}),
        ),
        step(
            clock,
            OK,
            8,
            8_000,
            "cognition.thought",
            json!({"content": "About 545,000 people live in Lisbon", "confidence": "high"}),
        ),
        step(
            clock,
            OK,
            9,
            20_000,
            "session.ended",
            json!({"outcome": "completed", "outcome_summary": "About 545,000 people"}),
        ),
    ]);
    events
}

/// The bad run: the page times out at sequence 7, then the agent searches the same thing four
/// more times (a `loop` alert), reports a heartbeat, and gives up, 40 s after it started.
fn failed_run(clock: &Clock) -> Vec<Value> {
    const T0: i64 = 60_000;
    let mut events = opening(clock, FAILED, T0);
    events.push(page_times_out(clock, FAILED, T0 + 11_000));
    for k in 0..4 {
        let ms = T0 + 12_000 + k * 4_000;
        events.push(step(
            clock,
            FAILED,
            8 + 2 * k,
            ms,
            "operation.tool_start",
            json!({"tool": "search", "input": {"q": "Lisbon population"}}),
        ));
        events.push(step(
            clock,
            FAILED,
            9 + 2 * k,
            ms + 1_000,
            "operation.tool_end",
            json!({"tool": "search", "success": true, "output_summary": "3 results"}),
        ));
    }
    events.push(step(clock, FAILED, 16, T0 + 30_000, "session.heartbeat", json!({"status": "running"})));
    events.push(step(
        clock,
        FAILED,
        17,
        T0 + 40_000,
        "session.ended",
        json!({"outcome": "failed", "error_message": "gave up: no page had the figure"}),
    ));
    events
}

type Row = (String, Option<i64>, Option<i64>);

fn row(kind: &str, a: Option<i64>, b: Option<i64>) -> Row {
    (kind.to_owned(), a, b)
}

/// Every step the compare view lists, in order, as (kind, a's sequence, b's sequence): scrolls
/// the virtualised list from top to bottom, collecting the rows that exist at each position.
async fn all_compare_rows(browser: &Browser) -> Vec<Row> {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const list = document.querySelector('[data-testid=compare-view] .cmp-list');
        const seen = new Map();
        const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        const seq = (v) => (v === '' ? null : Number(v));
        (async () => {
          list.scrollTop = 0;
          await frames();
          for (let i = 0; i < 100000; i++) {
            for (const el of list.querySelectorAll('[data-testid=compare-step]')) {
              seen.set(Number(el.dataset.index), [el.dataset.kind, seq(el.dataset.aSequence), seq(el.dataset.bSequence)]);
            }
            if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) break;
            list.scrollTop += Math.max(30, list.clientHeight - 60);
            await frames();
          }
          done([...seen.keys()].sort((x, y) => x - y).map((k) => seen.get(k)));
        })();
    "#;
    serde_json::from_value(browser.js_async(script, json!([])).await).expect("a list of rows")
}

/// The kind filters' labels: how many steps of each kind.
async fn kind_counts(browser: &Browser) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["same", "changed", "only_a", "only_b"] {
        let label = browser.text(&format!("[data-testid=compare-view] [data-testid=kind-filter-{kind}]")).await;
        out.push(label.unwrap_or_default());
    }
    out
}

/// A figure of the comparison as its card carries it: a's value, b's, b − a, and the worse side.
async fn figures(browser: &Browser, metric: &str) -> Vec<String> {
    let css = format!("[data-testid=compare-view] [data-testid=delta][data-metric=\"{metric}\"]");
    let mut out = Vec::new();
    for attr in ["data-a", "data-b", "data-delta", "data-worse"] {
        out.push(browser.attr(&css, attr).await.unwrap_or_else(|| format!("no {css}")));
    }
    out
}

/// Waits until the details pane shows step `index` with a's event `a` and b's event `b`, and
/// returns the text of both payloads.
async fn wait_detail(browser: &Browser, index: usize, a: i64, b: i64) -> (String, String) {
    let script = "const d = document.querySelector('[data-testid=compare-detail]');
                  const pa = d && d.querySelector('[data-testid=detail-a][data-sequence=\"' + arguments[1] + '\"] [data-testid=payload-a]');
                  const pb = d && d.querySelector('[data-testid=detail-b][data-sequence=\"' + arguments[2] + '\"] [data-testid=payload-b]');
                  return d && d.dataset.index === arguments[0] && pa && pb ? [pa.textContent, pb.textContent] : null;";
    let v = browser
        .wait_js(&format!("step {index}'s two events in the details"), script, json!([index.to_string(), a, b]))
        .await;
    (v[0].as_str().unwrap_or_default().to_owned(), v[1].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_shows_where_a_failed_run_left_a_good_one_and_follows_a_running_one() {
    let Some((browser, server)) = browser_and_server("compare").await else { return };
    let clock = Clock::started(Duration::from_secs(300));
    server.ingest(&completed_run(&clock)).await;
    server.ingest(&failed_run(&clock)).await;

    // From the failed run's view: "compare with…" suggests the completed run.
    open(&browser, &server, &format!("#/sessions/{FAILED}")).await;
    browser.wait_for(&timeline_event(17)).await;
    browser.click("[data-testid=session-view] [data-testid=compare-button]").await;
    let prefilled =
        "const i = document.querySelector('dialog[open] [data-testid=compare-with-input]'); return i ? i.value : null;";
    browser.poll("the picker, prefilled with the best counterpart", PATIENCE, prefilled, json!([]), |v| v == OK).await;
    let similar = browser.attrs("dialog[open] [data-testid=similar-session]", "data-session-id").await;
    assert_eq!(similar.first().map(String::as_str), Some(OK), "the completed run is listed first: {similar:?}");
    assert!(!similar.iter().any(|s| s == FAILED), "a session is not its own counterpart: {similar:?}");
    browser.click("dialog[open] [data-testid=compare-submit]").await;
    let view = format!("[data-testid=compare-view][data-a=\"{FAILED}\"][data-b=\"{OK}\"][data-loaded=true]");
    browser.wait_for(&view).await;
    let url = browser.url().await;
    assert!(url.ends_with(&format!("#/compare/{FAILED}/{OK}")), "the comparison's route, got {url}");
    browser.wait_text("[data-testid=compare-run-a] [data-testid=status-a]", "failed").await;
    browser.wait_text("[data-testid=compare-run-b] [data-testid=status-b]", "completed").await;

    // The figures: the failed run took 40 s, the good one 20 s (B − A = −20 s, A is the worse);
    // six tool calls against two, one failed against none, one loop alert against none.
    let duration = "[data-testid=compare-view] [data-testid=delta][data-metric=duration_ms]";
    assert_eq!(figures(&browser, "duration_ms").await, ["40000", "20000", "-20000", "a"]);
    browser.wait_text(&format!("{duration} [data-testid=delta-value]"), "−20s (−50%)").await;
    assert_eq!(figures(&browser, "tool_calls").await, ["6", "2", "-4", "a"]);
    assert_eq!(figures(&browser, "failed_tool_calls").await, ["1", "0", "-1", "a"]);
    assert_eq!(figures(&browser, "alerts.loop").await, ["1", "0", "-1", "a"]);
    assert_eq!(
        browser.attr(&format!("{duration} .cd-a"), "class").await.as_deref(),
        Some("cd-side cd-a is-worse"),
        "the worse side is marked"
    );

    // The first divergence is in view as the view opens, marked, and selected: the page that
    // timed out (A's #7) where the good run's loaded (B's #7), the seventh step.
    let in_view = "const list = document.querySelector('[data-testid=compare-view] .cmp-list');
                   const mark = list && list.querySelector('[data-testid=first-divergence]');
                   const row = list && list.querySelector('[data-testid=compare-step][data-first-divergence=true]');
                   if (!mark || !row) return null;
                   const l = list.getBoundingClientRect();
                   const inside = (e) => { const r = e.getBoundingClientRect(); return r.top >= l.top - 1 && r.bottom <= l.bottom + 1; };
                   return inside(mark) && inside(row)
                     ? [row.dataset.index, row.dataset.kind, row.dataset.aSequence, row.dataset.bSequence, mark.textContent]
                     : null;";
    let first: Vec<String> =
        serde_json::from_value(browser.wait_js("the first divergence, marked and in view", in_view, json!([])).await)
            .expect("strings");
    assert_eq!(first[..4], ["6", "changed", "7", "7"], "{first:?}");
    assert!(first[4].contains("first divergence"), "{first:?}");
    let banner = browser.text("[data-testid=compare-summary]").await.unwrap_or_default();
    assert!(banner.contains("They part ways at step 7"), "the summary says {banner:?}");
    let (a, b) = wait_detail(&browser, 6, 7, 7).await;
    assert!(a.contains("timeout after 6s") && b.contains("Lisbon: 545,796 inhabitants (2023)"), "A: {a:?}\nB: {b:?}");
    // The fields that differ are marked: A's error, B's output.
    browser.wait_for("[data-testid=payload-a] dd[data-key=error][data-differs=true]").await;
    browser.wait_for("[data-testid=payload-b] dd[data-key=output_summary][data-differs=true]").await;
    browser.wait_for("[data-testid=payload-a] dd[data-key=tool]:not([data-differs])").await;
    browser.screenshot("view").await;
    // "Next difference" goes on from the divergence to the loop only A ran (A's #8).
    browser.click("[data-testid=compare-view] [data-testid=next-difference]").await;
    browser.wait_attr("[data-testid=compare-detail]", "data-kind", "only_a").await;
    browser.wait_for("[data-testid=detail-a][data-sequence=\"8\"]").await;

    // Every step, aligned: the shared opening, the page (changed), the loop only A ran, the
    // conclusion only B reached, and the ends (changed). The heartbeat is not a step.
    let mut want = (1..=6).map(|k| row("same", Some(k), Some(k))).collect::<Vec<_>>();
    want.push(row("changed", Some(7), Some(7)));
    want.extend((8..=15).map(|k| row("only_a", Some(k), None)));
    want.push(row("only_b", None, Some(8)));
    want.push(row("changed", Some(17), Some(9)));
    assert_eq!(all_compare_rows(&browser).await, want);
    assert_eq!(kind_counts(&browser).await, ["same 6", "changed 2", "only A 8", "only B 1"]);

    // Another changed step, the ends: both events, with links to each session at that event.
    browser
        .js("const l = document.querySelector('[data-testid=compare-view] .cmp-list'); l.scrollTop = l.scrollHeight; return null;", json!([]))
        .await;
    browser.click("[data-testid=compare-view] [data-testid=compare-step][data-index=\"16\"]").await;
    let (a, b) = wait_detail(&browser, 16, 17, 9).await;
    assert!(a.contains("gave up: no page had the figure") && b.contains("About 545,000 people"), "A: {a:?}\nB: {b:?}");
    let link_a = browser.attr("[data-testid=open-a]", "href").await.unwrap_or_default();
    let link_b = browser.attr("[data-testid=open-b]", "href").await.unwrap_or_default();
    assert_eq!(
        (link_a.as_str(), link_b.as_str()),
        (format!("#/sessions/{FAILED}/17").as_str(), format!("#/sessions/{OK}/9").as_str())
    );
    // A step one run took alone: the other side says so.
    browser.click("[data-testid=compare-view] [data-testid=compare-step][data-index=\"15\"]").await;
    browser.wait_attr("[data-testid=compare-detail]", "data-kind", "only_b").await;
    browser.wait_for("[data-testid=detail-a][data-sequence=\"\"]").await;
    browser.wait_for("[data-testid=detail-b][data-sequence=\"8\"] [data-testid=payload-b]").await;
    browser.assert_no_script_errors().await;

    // A run still going, compared with the good one: it has done the opening's first four steps.
    server.ingest(&opening(&clock, LIVE, 280_000)[..4]).await;
    open(&browser, &server, &format!("#/compare/{LIVE}/{OK}")).await;
    browser.wait_for(&format!("[data-testid=compare-view][data-a=\"{LIVE}\"][data-loaded=true]")).await;
    browser.wait_text("[data-testid=compare-run-a] [data-testid=status-a]", "running").await;
    assert_eq!(kind_counts(&browser).await, ["same 4", "changed 0", "only A 0", "only B 5"]);
    let live_row = "[data-testid=compare-view] [data-testid=compare-step][data-a-sequence=\"7\"]";
    assert_eq!(browser.attr(live_row, "data-kind").await, None, "no step 7 in A yet");
    mark_page(&browser).await;

    // It goes on, and its page times out too: the rows follow without a reload.
    let mut more = opening(&clock, LIVE, 280_000).split_off(4);
    more.push(page_times_out(&clock, LIVE, 291_000));
    server.ingest(&more).await;
    browser.wait_attr(live_row, "data-kind", "changed").await;
    browser.wait_attr(live_row, "data-b-sequence", "7").await;
    browser.wait_text("[data-testid=compare-view] [data-testid=kind-filter-same]", "same 6").await;
    let banner = browser.text("[data-testid=compare-summary]").await.unwrap_or_default();
    assert!(banner.contains("They part ways at step 7"), "the summary says {banner:?}");
    assert_eq!(
        all_compare_rows(&browser).await,
        [
            (1..=6).map(|k| row("same", Some(k), Some(k))).collect::<Vec<_>>(),
            vec![row("changed", Some(7), Some(7)), row("only_b", None, Some(8)), row("only_b", None, Some(9))],
        ]
        .concat()
    );
    assert_not_reloaded(&browser).await;
    browser.screenshot("live").await;

    // A session that is not there: the view says which, instead of staying blank.
    open(&browser, &server, &format!("#/compare/{FAILED}/no-such-run")).await;
    browser.wait_for("[data-testid=compare-view] [data-testid=missing-b]").await;
    let notice = browser.text("[data-testid=compare-notice]").await.unwrap_or_default();
    assert!(notice.contains("no-such-run") && notice.contains("does not exist"), "the notice says {notice:?}");
    assert_eq!(browser.attr("[data-testid=compare-view] [data-testid=missing-a]", "class").await, None);
    browser.assert_no_script_errors().await;
}
