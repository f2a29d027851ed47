//! Asks whatever listens on a port whether it is an aop collector, without signalling it.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The version an aop collector at `host:port` reports on `/health`, or `None` if what answers
/// there (if anything) is not one. Bounded to about a second.
pub async fn aop_version_at(host: &str, port: u16) -> Option<String> {
    let host = if host == "0.0.0.0" || host == "::" { "127.0.0.1" } else { host };
    let ask = async {
        let mut conn = TcpStream::connect((host, port)).await.ok()?;
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        conn.take(64 * 1024).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (_, body) = text.split_once("\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        v.get("subscribers")?;
        v.get("version")?.as_str().map(str::to_owned)
    };
    tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
}
