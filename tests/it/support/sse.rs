//! A Server-Sent Events reader over reqwest's byte stream: frames with their fields and raw text.

use super::PATIENCE;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;

/// One block of an event stream (the lines up to a blank line).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Frame {
    /// `event:`; `None` for a plain message (what `EventSource.onmessage` sees).
    pub(crate) event: Option<String>,
    pub(crate) id: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when there were none.
    pub(crate) data: Option<String>,
    /// How many `data:` lines there were.
    pub(crate) data_lines: usize,
    /// Comment lines (`: text`), without the colon and the space.
    pub(crate) comments: Vec<String>,
    /// The block as sent, blank line excluded.
    pub(crate) raw: String,
}

impl Frame {
    pub(crate) fn parse(raw: &str) -> Frame {
        let mut f = Frame { raw: raw.to_owned(), ..Frame::default() };
        for line in raw.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(comment) = line.strip_prefix(':') {
                f.comments.push(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match name {
                "data" => {
                    f.data_lines += 1;
                    f.data = Some(match f.data.take() {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    });
                }
                "event" => f.event = Some(value),
                "id" => f.id = Some(value),
                _ => {}
            }
        }
        f
    }

    /// A comment-only block (`: connected`, keep-alives).
    pub(crate) fn is_comment(&self) -> bool {
        self.data.is_none() && self.event.is_none() && self.id.is_none()
    }

    /// A plain message carrying an AOP event.
    pub(crate) fn is_event(&self) -> bool {
        self.event.is_none() && self.data.is_some()
    }

    pub(crate) fn json(&self) -> Value {
        let data = self.data.as_deref().expect("a frame with data");
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data:?}"))
    }

    /// The `id:` as a number.
    pub(crate) fn id(&self) -> i64 {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("a frame without id: {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("a non-numeric id: {self:?}"))
    }

    /// `(session_id, sequence)` of the event it carries.
    pub(crate) fn key(&self) -> (String, i64) {
        super::events::key(&self.json())
    }
}

/// What reading the next frame gave.
#[derive(Debug)]
pub(crate) enum Read {
    Frame(Frame),
    /// The server ended the response cleanly.
    End,
    /// The connection broke.
    Error(String),
    TimedOut,
}

pub(crate) struct SseStream {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    ended: bool,
}

impl SseStream {
    pub(crate) fn new(resp: reqwest::Response) -> SseStream {
        SseStream {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next frame of any kind, waiting at most `limit`.
    pub(crate) async fn read(&mut self, limit: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..at + 2).collect();
                let text = String::from_utf8(block[..at].to_vec()).expect("UTF-8 frame");
                return Read::Frame(Frame::parse(&text));
            }
            if self.ended {
                return Read::End;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Read::TimedOut,
                Ok(None) => self.ended = true,
                Ok(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Read::Error(e.to_string());
                }
            }
        }
    }

    /// The next frame (a comment included); panics on the end of the stream or a timeout.
    pub(crate) async fn frame(&mut self) -> Frame {
        match self.read(PATIENCE).await {
            Read::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame with data (comments skipped).
    pub(crate) async fn message(&mut self) -> Frame {
        loop {
            let f = self.frame().await;
            if !f.is_comment() {
                return f;
            }
        }
    }

    /// The next `n` frames with data.
    pub(crate) async fn messages(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.message().await);
        }
        out
    }

    /// The next `n` messages, which must all be AOP events (no named frame among them).
    pub(crate) async fn events(&mut self, n: usize) -> Vec<Frame> {
        let got = self.messages(n).await;
        for f in &got {
            assert!(f.is_event(), "expected an AOP event message, got {f:?}");
        }
        got
    }

    /// Reads until the server ends the stream, within `limit`; the frames read on the way.
    pub(crate) async fn until_end(&mut self, limit: Duration) -> Result<Vec<Frame>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Frame(f) => frames.push(f),
                Read::End => return Ok(frames),
                Read::Error(e) => return Err(format!("the stream broke: {e}")),
                Read::TimedOut => return Err(format!("still open after {limit:?}")),
            }
        }
    }
}
