//! HTTP/2 cleartext by hand, for what a client library will not do: keep a connection open
//! without a stream, leave PINGs unanswered, watch for the server's GOAWAY.
//!
//! Requests are written with HPACK literals (no table, no Huffman); answers' header blocks are
//! not decoded: tests look at frame types, and at DATA.

use super::PATIENCE;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;

const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    pub(crate) payload: Vec<u8>,
}

/// What a connection saw until it ended (or a deadline passed).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) frames: Vec<Frame>,
    /// The server closed (or reset) the connection.
    pub(crate) closed: bool,
    pub(crate) after: Duration,
}

impl Seen {
    pub(crate) fn goaway(&self) -> bool {
        self.frames.iter().any(|f| f.kind == GOAWAY)
    }

    /// The DATA of `stream`, as text.
    pub(crate) fn data(&self, stream: u32) -> String {
        let bytes: Vec<u8> = self
            .frames
            .iter()
            .filter(|f| f.kind == DATA && f.stream == stream)
            .flat_map(|f| f.payload.clone())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

pub(crate) struct H2c {
    conn: TcpStream,
    buf: Vec<u8>,
    /// Whether PINGs get their ACK, as every real client sends.
    pub(crate) answer_pings: bool,
    opened: Instant,
}

impl H2c {
    /// Connects with prior knowledge: the preface and empty SETTINGS.
    pub(crate) async fn connect(addr: SocketAddr) -> H2c {
        let conn = TcpStream::connect(addr).await.expect("connect");
        let mut h2 = H2c { conn, buf: Vec::new(), answer_pings: true, opened: Instant::now() };
        h2.conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        h2.send(SETTINGS, 0, 0, &[]).await;
        h2
    }

    pub(crate) async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        // The server may already have closed: what it answered is what the test reads.
        let _ = self.conn.write_all(&frame).await;
    }

    /// Opens `stream` with these header fields (pseudo-fields first), ending it if `end`.
    pub(crate) async fn request(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) {
        let mut block = Vec::new();
        for (name, value) in fields {
            // A literal without indexing, new name; both strings short enough for a 7-bit length.
            block.push(0x00);
            for s in [name, value] {
                assert!(s.len() < 127, "{s:?} is too long for this encoder");
                block.push(s.len() as u8);
                block.extend_from_slice(s.as_bytes());
            }
        }
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &block).await;
    }

    /// Cancels `stream` (RST_STREAM with CANCEL), as a client that stops reading an answer does.
    pub(crate) async fn cancel(&mut self, stream: u32) {
        self.send(RST_STREAM, 0, stream, &8u32.to_be_bytes()).await;
    }

    /// The next frame, or `None` when the connection ends.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some(Frame { kind: head[3], flags: head[4], stream, payload });
                }
            }
            let mut chunk = [0u8; 16 << 10];
            match self.conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads for `limit`, acknowledging SETTINGS (and PINGs, if it answers them), until the
    /// connection ends or `stop` holds for a frame.
    pub(crate) async fn read_for(&mut self, limit: Duration, mut stop: impl FnMut(&Frame) -> bool) -> Seen {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.next()).await else { break };
            let Some(frame) = next else {
                seen.closed = true;
                break;
            };
            if frame.flags & ACK == 0 {
                if frame.kind == SETTINGS {
                    self.send(SETTINGS, ACK, 0, &[]).await;
                }
                if frame.kind == PING && self.answer_pings {
                    let payload = frame.payload.clone();
                    self.send(PING, ACK, 0, &payload).await;
                }
            }
            let done = stop(&frame);
            seen.frames.push(frame);
            if done {
                break;
            }
        }
        seen.after = self.opened.elapsed();
        seen
    }

    /// Reads until the server closes the connection, for at most `limit` plus [`PATIENCE`].
    pub(crate) async fn until_closed(&mut self, limit: Duration) -> Seen {
        self.read_for(limit + PATIENCE, |_| false).await
    }
}
