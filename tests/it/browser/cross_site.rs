//! The browser as an attacker's tool: pages of another origin (a site of the test's own, see
//! [`super::site`]) trying to change the collector, and a crafted `?api=` link trying to get the
//! dashboard's token sent to another collector.

use super::driver::Browser;
use super::site::{Answer, Site};
use super::{open, CONNECTION};
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// Everything a page can send to another origin without the collector's consent: a `no-cors`
/// fetch with no content type and with `text/plain`, a beacon, an HTML form, and a JSON fetch
/// (whose preflight fails). None of them may store, pin or delete anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_write_to_the_collector() {
    let (Some(browser), server) = tokio::join!(Browser::launch("cross-site"), TestServer::start()) else {
        return;
    };
    server.ingest_one(&event("victim", 1, "session.started", json!({"goal": "private"}))).await;
    let site =
        Site::serve(|_| Answer::html("<!doctype html><title>cute cats</title><iframe name=sink></iframe>")).await;
    browser.goto(&format!("http://evil.test:{}/", site.addr.port())).await;

    let planted = |n: i64| event(&format!("planted-{n}"), 1, "session.started", json!({"goal": "planted"})).to_string();
    let outcome = browser
        .js_async(
            "const [aop, evs, done] = arguments;
             const out = {};
             const attempt = async (name, f) => { try { await f(); out[name] = 'sent'; } catch (e) { out[name] = 'failed: ' + e; } };
             (async () => {
               await attempt('blob', () => fetch(aop + '/events', { method: 'POST', mode: 'no-cors', body: new Blob([evs[0]]) }));
               await attempt('text', () => fetch(aop + '/events', { method: 'POST', mode: 'no-cors', body: evs[1] }));
               out.beacon = navigator.sendBeacon(aop + '/events', evs[2]);
               await attempt('json', () => fetch(aop + '/events', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: evs[3] }));
               await attempt('delete', () => fetch(aop + '/sessions/victim', { method: 'DELETE' }));
               const form = document.createElement('form');
               form.method = 'POST'; form.action = aop + '/sessions/victim/pin'; form.target = 'sink';
               document.body.appendChild(form); form.submit();
               await new Promise((r) => setTimeout(r, 1500));
               return out;
             })().then(done);",
            json!([server.base(), [planted(1), planted(2), planted(3), planted(4)]]),
        )
        .await;
    println!("cross-site attempts: {outcome}");
    // The simple requests were sent (the browser does not stop them; the collector must).
    assert_eq!(outcome["blob"], "sent", "{outcome}");
    assert_eq!(outcome["beacon"], true, "{outcome}");
    assert!(outcome["json"].as_str().is_some_and(|s| s.starts_with("failed")), "{outcome}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = server.session_ids("").await;
    assert_eq!(ids, vec!["victim".to_owned()], "a page of another origin stored or deleted sessions");
    assert_eq!(server.session("victim").await["pinned"], false, "a form on another origin pinned a session");
    assert_eq!(server.metrics().await.get("aop_events_ingested_total"), 1.0);
}

/// A token is sent only to the collector it was entered for: a link to the dashboard with
/// `?api=` naming another collector (here a recording site on another loopback port) makes the
/// dashboard talk to that one without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_never_sends_its_token_to_another_collector() {
    const TOKEN: &str = "dash-T0ken-never-elsewhere";
    let (Some(browser), server) = tokio::join!(Browser::launch("token-origin"), Launch::new().token(TOKEN).start())
    else {
        return;
    };
    // The other collector: answers everything, as permissively as CORS allows.
    let other = Site::serve(|req| {
        let origin = req.header("origin").unwrap_or("*").to_owned();
        let cors = vec![
            ("Access-Control-Allow-Origin".to_owned(), origin),
            ("Access-Control-Allow-Headers".to_owned(), "authorization, content-type, last-event-id".to_owned()),
            ("Access-Control-Allow-Methods".to_owned(), "GET, POST, DELETE".to_owned()),
        ];
        let (content_type, body) = match req.path() {
            p if p.starts_with("/stream") => ("text/event-stream", ": hello\n\n".to_owned()),
            "/health" => ("application/json", json!({"ok": true, "version": "0"}).to_string()),
            _ => ("application/json", json!({"sessions": [], "next_cursor": null, "alerts": []}).to_string()),
        };
        let status = if req.method() == "OPTIONS" { 204 } else { 200 };
        Answer { status, content_type, body: if status == 204 { String::new() } else { body }, headers: cors }
    })
    .await;

    // The user enters the token for this collector…
    browser.goto(&server.url("/dashboard/")).await;
    browser.send_keys("[data-testid=token-input]", TOKEN).await;
    browser.click("[data-testid=token-submit]").await;
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    // …then follows a link that points the dashboard elsewhere.
    browser.goto(&server.url(&format!("/dashboard/?api=http://127.0.0.1:{}", other.addr.port()))).await;
    let seen = eventually("the dashboard to call the other collector's list and stream", || async {
        let got = other.received();
        let list = got.iter().any(|r| r.method() == "GET" && r.path().starts_with("/sessions"));
        let stream = got.iter().any(|r| r.path().starts_with("/stream"));
        (list && stream).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = [seen, other.received()].concat();
    for req in &seen {
        let everything = format!("{}\n{}", req.head, String::from_utf8_lossy(&req.body));
        assert!(!everything.contains(TOKEN), "the token went to another collector:\n{everything}");
        assert!(req.header("authorization").is_none(), "credentials went to another collector:\n{}", req.head);
    }
    // The token still serves the collector it was entered for, without asking again.
    open(&browser, &server, "").await;
}
