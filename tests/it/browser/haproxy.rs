//! The dashboard of a fleet, opened through HAProxy by the balancer's name: the instance holding
//! its live feed is killed, and the page goes on showing every event from another one.

use super::*;
use crate::haproxy::{fleet_behind_haproxy, instance_serving_the_stream, LB_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_haproxy_the_dashboard_keeps_updating_after_its_instance_is_killed() {
    let (browser, (mut nodes, lb)) = tokio::join!(Browser::launch("haproxy-failover"), fleet_behind_haproxy());
    let Some(browser) = browser else { return };
    let clock = Clock::started(Duration::from_secs(60));
    let id = "lb-1";
    let thought =
        |seq: i64| clock.event(id, seq, seq * 500, "cognition.thought", json!({"content": format!("thought {seq}")}));
    let mut before = vec![clock.event(id, 1, 0, "session.started", json!({"goal": "Outlive an instance"}))];
    before.extend((2..=5).map(thought));
    for ev in &before {
        lb.post_until_acked(ev).await;
    }

    // The instances run with a token, as the README has them behind a balancer: the page asks.
    browser.goto(&lb.url(&format!("/dashboard/#/sessions/{id}"))).await;
    browser.send_keys("[data-testid=token-input]", LB_TOKEN).await;
    browser.click("[data-testid=token-submit]").await;
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    browser.wait_for(&timeline_event(5)).await;
    mark_page(&browser).await;

    let serving = instance_serving_the_stream(&nodes).await;
    nodes[serving].sigkill().await;
    // Written after the kill, through the balancer, while the page finds another instance.
    for seq in 6..=20 {
        lb.post_until_acked(&thought(seq)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.wait_for(&timeline_event(20)).await;
    browser.wait_text("[data-testid=timeline-status]", "20 events").await;
    browser.wait_text("[data-testid=metric-events]", "20").await;
    browser.wait_attr(CONNECTION, "data-state", "live").await;
    assert_eq!(all_timeline_sequences(&browser).await, (1..=20).collect(), "every event, once");
    assert_not_reloaded(&browser).await;
    let mut survivors = 0;
    for (_, n) in nodes.iter().enumerate().filter(|(i, _)| *i != serving) {
        survivors += n.health().await["subscribers"].as_u64().unwrap();
    }
    assert_eq!(survivors, 1, "the page's stream is on a surviving instance");
    browser.screenshot("after-kill").await;
    browser.assert_no_script_errors().await;
}
