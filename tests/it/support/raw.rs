//! HTTP/1.1 by hand, for what a well-behaved client library will not send (a lying
//! `Content-Length`, no `Host`) or will not do (stop reading a response without closing it).

use super::PATIENCE;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Sends `head` (request line and headers, without the final blank line) and `body` on a fresh
/// connection with `Connection: close`, and returns the whole answer as text.
pub(crate) async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut req = head.trim_end().replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    req.extend_from_slice(body);
    // The server may answer and close before reading everything (a 413, say).
    let _ = conn.write_all(&req).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within {PATIENCE:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer.
pub(crate) fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A connection with a tiny receive window that sends `GET path` and then reads only when told:
/// a subscriber that cannot keep up.
pub(crate) async fn sluggish_get(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut conn = socket.connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    conn
}

/// Reads until the peer closes the connection (or [`PATIENCE`] passes): all bytes received.
pub(crate) async fn read_to_close(conn: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) => Err(format!("read failed after {} bytes: {e}", out.len())),
        Err(_) => Err(format!("still open after {PATIENCE:?} and {} bytes", out.len())),
    }
}

/// Splits a raw HTTP/1.1 answer into its head and its body, decoding a chunked body.
pub(crate) fn split_answer(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {} bytes", raw.len()));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut body = &raw[at + 4..];
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (head, body.to_vec());
    }
    let mut out = Vec::new();
    // A truncated chunk header ends the loop: what was complete is kept.
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        body = &body[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(body.len());
        out.extend_from_slice(&body[..take]);
        if take < size || body.len() < size + 2 {
            break;
        }
        body = &body[size + 2..];
    }
    (head, out)
}

/// Reads exactly one answer (head and a `Content-Length` body) from a kept-alive connection;
/// `None` if the connection ends (or nothing comes within [`PATIENCE`]) first.
pub(crate) async fn one_answer(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= at + 4 + len {
                    return Some((head, buf[at + 4..at + 4 + len].to_vec()));
                }
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok().flatten()
}

/// A plain connection, for several requests in a row.
pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Writes a request (`head` with `\n` line ends, without the blank line) and `body`.
pub(crate) async fn send(conn: &mut TcpStream, head: &str, body: &[u8]) {
    let mut req = head.trim_end().replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    let _ = conn.write_all(&req).await;
}

/// Like [`one_answer`], from any reader (the read half of a connection that is still being
/// written to, say).
pub(crate) async fn one_answer_from<R: tokio::io::AsyncRead + Unpin>(conn: &mut R) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).into_owned();
                let len = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                if buf.len() >= at + 4 + len {
                    return Some((head, buf[at + 4..at + 4 + len].to_vec()));
                }
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok().flatten()
}

/// The value of header `name` (case-insensitive) in a raw answer's head.
pub(crate) fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Sends raw bytes (a request written by hand, invalid ones included) on a fresh connection and
/// returns everything answered until the server closes it (or [`PATIENCE`] passes).
pub(crate) async fn exchange_bytes(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let _ = conn.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out)).await;
    out
}
