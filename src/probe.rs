//! Asks whatever listens on a port whether it is an aop collector, without signalling it.

use crate::client::{Conn, Target};
use std::sync::Arc;
use std::time::Duration;

/// The version an aop collector at `host:port` reports on `/health`, or `None` if what answers
/// there (if anything) is not one. Bounded to about a second.
pub async fn aop_version_at(host: &str, port: u16) -> Option<String> {
    let host = match host {
        "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    };
    let ask = async {
        // Whatever the bind address, the collector accepts its own literal as Host.
        let target = Arc::new(Target::parse(&format!("http://{host}:{port}"), None, true).ok()?);
        let mut conn = Conn::connect(&target).await.ok()?;
        let answer = conn.get("/health").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(answer.body).ok()?;
        v.get("subscribers")?;
        v.get("version")?.as_str().map(str::to_owned)
    };
    tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
}
