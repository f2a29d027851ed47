//! A web site of the test's own on loopback, to play another origin than the collector's: an
//! attacker's page, or another collector. It answers each request with what the test's function
//! says and records every request it got (head and body), so a test can assert what reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received: the request line and headers as text, then the body.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn method(&self) -> &str {
        self.head.split_whitespace().next().unwrap_or("")
    }

    pub(crate) fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }

    /// A header's value (the name case-insensitively), if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// An answer: status, content type, body, and extra headers.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Answer {
    pub(crate) fn html(body: &str) -> Answer {
        Answer { status: 200, content_type: "text/html; charset=utf-8", body: body.to_owned(), headers: Vec::new() }
    }
}

type Handler = dyn Fn(&Received) -> Answer + Send + Sync;

pub(crate) struct Site {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    /// Serves on a free loopback port until dropped.
    pub(crate) async fn serve(handler: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (received, handler) = (Arc::clone(&received), Arc::clone(&handler));
                    tokio::spawn(async move {
                        let _ = answer_one(conn, &received, &*handler).await;
                    });
                }
            })
        };
        Site { addr, received, task }
    }

    /// Every request received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, and a body of `Content-Length` bytes), records it, answers, closes.
async fn answer_one(mut conn: TcpStream, received: &Mutex<Vec<Received>>, handler: &Handler) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut req = Received { head, body: buf[head_end + 4..].to_vec() };
    let length: usize = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while req.body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        req.body.extend_from_slice(&chunk[..n]);
    }
    let answer = handler(&req);
    received.lock().unwrap().push(req);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&answer.body);
    conn.write_all(out.as_bytes()).await?;
    conn.shutdown().await
}
