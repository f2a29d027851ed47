//! aop's own HTTP/1.1 client, for the subcommands that talk to a collector (`aop demo`,
//! `aop bench`, and the "is an aop on that port?" probe): keep-alive connections over
//! `tokio::net::TcpStream`, and an SSE frame parser.
//!
//! Why not a client crate: no new dependency, and above all the load generator shares the
//! machine's two cores with the collector it measures, so every microsecond it spends is taken
//! from the server and shows up as a lower figure. This client does only what those commands
//! need: one request at a time per connection (no pipelining), `Content-Length` request
//! bodies, responses framed by `Content-Length`, chunked transfer-encoding or connection close,
//! and a reusable read buffer so a request costs one `write` and usually one `read` syscall.
//! TCP_NODELAY is set because every request is written in one piece and waits for its answer:
//! Nagle's algorithm would only add delay to the latencies being measured.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response heads larger than this are refused: a sign of talking to something that is not aop.
const MAX_HEAD: usize = 64 * 1024;
/// Bodies smaller than this are copied behind the head so the request leaves in one `write`.
const COALESCE_BODY: usize = 64 * 1024;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Where requests go, and what every request carries.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// `host:port` as given in the URL; the collector refuses non-loopback Host headers.
    pub(crate) host: String,
    /// `Bearer <token>`, when the collector requires one.
    pub(crate) auth: Option<String>,
    /// The URL as given, for messages.
    pub(crate) url: String,
}

impl Target {
    /// Parses `http://host:port[/]`. Refuses hosts that are not loopback unless `allow_remote`:
    /// a benchmark aimed at the wrong machine by a typo would be a denial of service.
    pub(crate) fn parse(url: &str, token: Option<&str>, allow_remote: bool) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("--url must start with http:// (got {url:?})"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("--url must be http://host:port without a path (got {url:?})"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addrs: Vec<SocketAddr> =
            with_port.to_socket_addrs().map_err(|e| format!("cannot resolve {authority:?}: {e}"))?.collect();
        let addr = *addrs.first().ok_or_else(|| format!("{authority:?} resolves to no address"))?;
        if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!(
                "{authority} is not a loopback address; aop bench only drives a collector on this machine unless --allow-remote is given"
            ));
        }
        Ok(Target {
            addr,
            host: authority.to_owned(),
            auth: token.filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}")),
            url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of a response head the benchmark looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) body: BodyKind,
    /// The server will close the connection after this response.
    pub(crate) close: bool,
    pub(crate) content_type: Option<String>,
}

/// Parses a response head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// On success, also returns the number of bytes the head took.
pub(crate) fn parse_head(buf: &[u8]) -> io::Result<Option<(Head, usize)>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head larger than 64 KiB"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1.x response: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line: {status_line:?}")))?;
    let mut close = version == "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    let mut content_type = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line: {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| invalid(format!("bad Content-Length: {value:?}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let body = if status < 200 || status == 204 || status == 304 {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        close = true;
        BodyKind::UntilClose
    };
    Ok(Some((Head { status, body, close, content_type }, end + 4)))
}

/// Where the first blank line of `pending` + `input` ends, as an offset into `input`.
fn boundary(pending: &[u8], input: &[u8]) -> Option<usize> {
    if pending.ends_with(b"\n") {
        if input.starts_with(b"\n") {
            return Some(1);
        }
        if input.starts_with(b"\r\n") {
            return Some(2);
        }
    }
    if pending.ends_with(b"\n\r") && input.starts_with(b"\n") {
        return Some(1);
    }
    let mut i = 0;
    while let Some(p) = find_newline(&input[i..]) {
        let j = i + p + 1;
        if input[j..].starts_with(b"\n") {
            return Some(j + 1);
        }
        if input[j..].starts_with(b"\r\n") {
            return Some(j + 2);
        }
        i = j;
    }
    None
}

/// Percent-encodes a path segment or a query value: everything but unreserved characters and
/// `:`/`@` (which session ids may hold, and RFC 3986 allows in both places).
pub(crate) fn encode_component(v: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The first `\n` in `b`, eight bytes at a time: SSE parsing is mostly this search, once per
/// line of every frame of every subscriber.
pub(crate) fn find_newline(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ (ONES * u64::from(b'\n'));
        // A zero byte of `x` (a newline) sets its high bit here; bytes above one may too, but
        // the lowest set bit is always the first newline.
        let hit = x.wrapping_sub(ONES) & !x & HIGHS;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'\n').map(|p| i + p)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `ext` once past a `;` (extensions are ignored).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines until an empty one. `empty`: nothing on this line yet.
    Trailer {
        empty: bool,
    },
    Done,
}

/// Decodes a chunked body incrementally: feed it whatever arrived, it hands out the data.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: ChunkState::Size { size: 0, digits: 0, ext: false } }
    }
}

impl ChunkedDecoder {
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes a prefix of `input`, passing body data to `sink`. Returns the bytes consumed:
    /// all of `input` unless the body ended, in which case the rest belongs to the next response.
    pub(crate) fn feed(&mut self, input: &[u8], sink: &mut impl FnMut(&[u8])) -> io::Result<usize> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                ChunkState::Size { size, digits, ext } => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            if *digits == 0 {
                                return Err(invalid("chunk size line without a size"));
                            }
                            self.state =
                                if *size == 0 { ChunkState::Trailer { empty: true } } else { ChunkState::Data(*size) };
                        }
                        b'\r' => {}
                        _ if *ext => {}
                        b';' | b' ' | b'\t' => *ext = true,
                        _ => {
                            let d = (b as char).to_digit(16).ok_or_else(|| invalid("bad chunk size"))?;
                            if *digits >= 15 {
                                return Err(invalid("chunk size too large"));
                            }
                            *size = *size * 16 + u64::from(d);
                            *digits += 1;
                        }
                    }
                }
                ChunkState::Data(left) => {
                    let take = (*left).min((input.len() - i) as u64) as usize;
                    sink(&input[i..i + take]);
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size { size: 0, digits: 0, ext: false },
                        _ => return Err(invalid("chunk data not followed by CRLF")),
                    }
                }
                ChunkState::Trailer { empty } => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\n' if *empty => {
                            self.state = ChunkState::Done;
                            return Ok(i);
                        }
                        b'\n' => *empty = true,
                        b'\r' => {}
                        _ => *empty = false,
                    }
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

/// What an answer says went wrong: the `error` of an API error body, or the start of whatever
/// else came (a proxy's page, say).
pub(crate) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// One keep-alive connection. Not `Clone`: one request at a time.
pub(crate) struct Conn {
    stream: TcpStream,
    target: Arc<Target>,
    /// Read buffer: `buf[start..end]` is received and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Scratch for the request head (and small bodies), reused across requests.
    out: Vec<u8>,
    /// Scratch for a response body, reused across requests.
    body: Vec<u8>,
    /// The server said it will close: the next request needs a new connection.
    pub(crate) closed: bool,
}

/// A response whose body is borrowed from the connection until the next request.
pub(crate) struct Response<'a> {
    pub(crate) head: Head,
    pub(crate) body: &'a [u8],
}

impl Conn {
    pub(crate) async fn connect(target: &Arc<Target>) -> io::Result<Conn> {
        Self::connect_with_buffer(target, 16 * 1024).await
    }

    /// `buffer`: initial read buffer; large for bulk reads, small for a thousand idle streams.
    pub(crate) async fn connect_with_buffer(target: &Arc<Target>, buffer: usize) -> io::Result<Conn> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            target: Arc::clone(target),
            buf: vec![0; buffer.max(1024)],
            start: 0,
            end: 0,
            out: Vec::with_capacity(1024),
            body: Vec::new(),
            closed: false,
        })
    }

    /// Writes one request. `body` with a content type gets a Content-Length; without, none.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        use std::io::Write;
        self.out.clear();
        write!(self.out, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target.host)?;
        if let Some(auth) = &self.target.auth {
            write!(self.out, "Authorization: {auth}\r\n")?;
        }
        for (name, value) in extra {
            write!(self.out, "{name}: {value}\r\n")?;
        }
        if let Some(ct) = content_type {
            write!(self.out, "Content-Type: {ct}\r\nContent-Length: {}\r\n", body.len())?;
        }
        self.out.extend_from_slice(b"\r\n");
        if body.len() <= COALESCE_BODY {
            self.out.extend_from_slice(body);
            self.stream.write_all(&self.out).await
        } else {
            self.stream.write_all(&self.out).await?;
            self.stream.write_all(body).await
        }
    }

    /// Reads more bytes into the buffer. Cancel-safe: state changes only after the read returns.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            self.closed = true;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the collector closed the connection"));
        }
        self.end += n;
        Ok(n)
    }

    /// The bytes received and not consumed yet; marks them consumed.
    pub(crate) fn take_buffered(&mut self) -> &[u8] {
        let (s, e) = (self.start, self.end);
        self.start = e;
        &self.buf[s..e]
    }

    pub(crate) async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            if let Some((head, used)) = parse_head(&self.buf[self.start..self.end])? {
                self.start += used;
                if head.close {
                    self.closed = true;
                }
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    /// Streams the body of `head` to `sink` without holding it whole (exports are large).
    pub(crate) async fn read_body_with(&mut self, head: &Head, sink: &mut impl FnMut(&[u8])) -> io::Result<()> {
        match head.body {
            BodyKind::None => Ok(()),
            BodyKind::Length(n) => {
                let mut left = n;
                while left > 0 {
                    if self.start == self.end {
                        self.fill().await?;
                    }
                    let take = (left as usize).min(self.end - self.start);
                    sink(&self.buf[self.start..self.start + take]);
                    self.start += take;
                    left -= take as u64;
                }
                Ok(())
            }
            BodyKind::Chunked => {
                let mut dec = ChunkedDecoder::default();
                loop {
                    if self.start < self.end {
                        let used = dec.feed(&self.buf[self.start..self.end], sink)?;
                        self.start += used;
                    }
                    if dec.is_done() {
                        return Ok(());
                    }
                    self.fill().await?;
                }
            }
            BodyKind::UntilClose => {
                loop {
                    sink(self.take_buffered());
                    match self.fill().await {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e),
                    }
                }
                self.closed = true;
                Ok(())
            }
        }
    }

    /// One request and its whole response.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response<'_>> {
        self.request_with(method, path, content_type, body, &[]).await
    }

    /// [`Conn::request`] with extra headers.
    pub(crate) async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> io::Result<Response<'_>> {
        self.send(method, path, content_type, body, extra).await?;
        let head = self.read_head().await?;
        let mut collected = std::mem::take(&mut self.body);
        collected.clear();
        let read = self.read_body_with(&head, &mut |b| collected.extend_from_slice(b)).await;
        self.body = collected;
        read?;
        Ok(Response { head, body: &self.body })
    }

    pub(crate) async fn get(&mut self, path: &str) -> io::Result<Response<'_>> {
        self.request("GET", path, None, &[]).await
    }
}

/// One SSE message. `data` lines are joined with `\n`, as EventSource does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub(crate) id: Option<&'a [u8]>,
    pub(crate) event: Option<&'a [u8]>,
    pub(crate) data: &'a [u8],
}

/// Splits an SSE byte stream into messages. Lines end in `\n` or `\r\n` (aop sends `\n`; a lone
/// `\r` as line end is not supported). Comments and messages without data are skipped, as
/// EventSource skips them. Cheap on purpose: a message that arrives whole in one read is parsed
/// in place, and only a partial tail is copied.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    pending: Vec<u8>,
    /// Joined data of a message with several `data:` lines.
    joined: Vec<u8>,
    /// Comments seen (keep-alives), for the curious.
    pub(crate) comments: u64,
}

impl SseParser {
    pub(crate) fn feed(&mut self, input: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        let mut input = input;
        if !self.pending.is_empty() {
            // Complete the pending message with as little of `input` as it needs, so the rest
            // can still be parsed in place.
            let cut = boundary(&self.pending, input).unwrap_or(input.len());
            self.pending.extend_from_slice(&input[..cut]);
            input = &input[cut..];
            self.parse_pending(on_frame);
            if !self.pending.is_empty() {
                if input.is_empty() {
                    return;
                }
                // Unusual line ends fooled `boundary`: take the slow path.
                self.pending.extend_from_slice(input);
                self.parse_pending(on_frame);
                return;
            }
        }
        let used = Self::frames(input, &mut self.joined, &mut self.comments, on_frame);
        self.pending.extend_from_slice(&input[used..]);
    }

    fn parse_pending(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        let mut pending = std::mem::take(&mut self.pending);
        let used = Self::frames(&pending, &mut self.joined, &mut self.comments, on_frame);
        pending.drain(..used);
        self.pending = pending;
    }

    /// Parses every complete message in `buf`; returns the bytes they took.
    fn frames(buf: &[u8], joined: &mut Vec<u8>, comments: &mut u64, on_frame: &mut impl FnMut(Frame<'_>)) -> usize {
        let mut at = 0;
        let mut msg_start = 0;
        let mut id = None;
        let mut event = None;
        let mut data: Option<&[u8]> = None;
        let mut multi = false;
        // Counted when their message ends: a partial message is scanned again on the next feed.
        let mut msg_comments = 0;
        while let Some(nl) = find_newline(&buf[at..]) {
            let mut line = &buf[at..at + nl];
            at += nl + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.is_empty() {
                if let Some(d) = data {
                    let data = if multi { &joined[..] } else { d };
                    on_frame(Frame { id, event, data });
                }
                (id, event, data, multi) = (None, None, None, false);
                *comments += msg_comments;
                msg_comments = 0;
                msg_start = at;
                continue;
            }
            if line[0] == b':' {
                msg_comments += 1;
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(c) => {
                    let v = &line[c + 1..];
                    (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            match name {
                b"data" => match data {
                    None => data = Some(value),
                    Some(first) => {
                        if !multi {
                            joined.clear();
                            joined.extend_from_slice(first);
                            multi = true;
                        }
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                    }
                },
                b"id" => id = Some(value),
                b"event" => event = Some(value),
                _ => {}
            }
        }
        msg_start
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn components_are_percent_encoded_but_for_what_ids_hold() {
        assert_eq!(encode_component("s_1.x:y@z-w~"), "s_1.x:y@z-w~");
        assert_eq!(encode_component("a b/c+d|é"), "a%20b%2Fc%2Bd%7C%C3%A9");
    }

    use super::*;

    fn head(text: &str) -> (Head, usize) {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn head_with_content_length() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        let (h, used) = head(raw);
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(11));
        assert!(!h.close);
        assert_eq!(h.content_type.as_deref(), Some("application/json"));
        assert_eq!(&raw[used..], "{\"ok\":true}");
    }

    #[test]
    fn head_variants() {
        let cases: &[(&str, u16, BodyKind, bool)] = &[
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", 200, BodyKind::Chunked, false),
            (
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                503,
                BodyKind::Length(5),
                true,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", 204, BodyKind::None, false),
            ("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", 200, BodyKind::Length(0), true),
            ("HTTP/1.1 200 OK\r\n\r\n", 200, BodyKind::UntilClose, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 200, BodyKind::Chunked, false),
        ];
        for (raw, status, body, close) in cases {
            let (h, used) = head(raw);
            assert_eq!((h.status, h.body, h.close), (*status, *body, *close), "{raw:?}");
            assert_eq!(used, raw.len());
        }
    }

    #[test]
    fn head_incomplete_and_malformed() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-len").unwrap().is_none());
        assert!(parse_head(b"").unwrap().is_none());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
    }

    /// Feeds `input` in pieces of `step` bytes; returns the body and the bytes left over.
    fn dechunk(input: &[u8], step: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut dec = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut at = 0;
        while !dec.is_done() {
            assert!(at < input.len(), "body not finished");
            let end = (at + step).min(input.len());
            at += dec.feed(&input[at..end], &mut |b| out.extend_from_slice(b))?;
        }
        Ok((out, input[at..].to_vec()))
    }

    #[test]
    fn chunked_bodies_in_any_split() {
        let raw = b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld-wide!\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 next";
        for step in [1, 2, 3, 7, 64, raw.len()] {
            let (body, rest) = dechunk(raw, step).unwrap();
            assert_eq!(body, b"hello world-wide!", "step {step}");
            assert_eq!(rest, b"HTTP/1.1 next", "step {step}");
        }
        let (body, rest) = dechunk(b"0\r\n\r\n", 1).unwrap();
        assert!(body.is_empty() && rest.is_empty());
    }

    #[test]
    fn chunked_errors() {
        let mut dec = ChunkedDecoder::default();
        assert!(dec.feed(b"zz\r\n", &mut |_| {}).is_err());
        let mut dec = ChunkedDecoder::default();
        assert!(dec.feed(b"2\r\nabX", &mut |_| {}).is_err());
        let mut dec = ChunkedDecoder::default();
        assert!(dec.feed(b"\r\n", &mut |_| {}).is_err());
    }

    type Parsed = (Option<String>, Option<String>, String);

    fn sse(input: &[u8], step: usize) -> (Vec<Parsed>, u64) {
        let mut p = SseParser::default();
        let mut frames = Vec::new();
        let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        for piece in input.chunks(step) {
            p.feed(piece, &mut |f| {
                frames.push((s(f.id), s(f.event), String::from_utf8_lossy(f.data).into_owned()));
            });
        }
        (frames, p.comments)
    }

    #[test]
    fn sse_frames_in_any_split() {
        let raw = b": connected\n\nid: 1\ndata: {\"a\":1}\n\nevent: overflow\ndata: {\"reason\":\"x\"}\n\n: keep-alive\n\nid:2\r\ndata: line1\r\ndata: line2\r\n\r\nevent: empty\n\nid: 3\ndata: {\"b\":2}\n\nid: 4\ndata: partial";
        for step in [1, 2, 5, 13, raw.len()] {
            let (frames, comments) = sse(raw, step);
            assert_eq!(comments, 2);
            assert_eq!(
                frames,
                vec![
                    (Some("1".into()), None, "{\"a\":1}".into()),
                    (None, Some("overflow".into()), "{\"reason\":\"x\"}".into()),
                    (Some("2".into()), None, "line1\nline2".into()),
                    (Some("3".into()), None, "{\"b\":2}".into()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn newline_search() {
        for len in 0..40 {
            for at in 0..len {
                let mut b = vec![b'a'; len];
                b[at] = b'\n';
                if at + 3 < len {
                    b[at + 3] = b'\n';
                }
                assert_eq!(find_newline(&b), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_newline(&vec![0x8a; len]), None);
        }
        assert_eq!(find_newline(b"\x0b\x0a"), Some(1));
        assert_eq!(find_newline(b"\x09\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0a"), Some(8));
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:4317/", Some("s3cret"), false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:4317".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:4317");
        assert_eq!(t.auth.as_deref(), Some("Bearer s3cret"));
        assert_eq!(t.url, "http://127.0.0.1:4317");
        assert!(Target::parse("http://[::1]:9", None, false).is_ok());
        assert!(Target::parse("https://127.0.0.1:4317", None, false).is_err());
        assert!(Target::parse("http://127.0.0.1:4317/events", None, false).is_err());
        assert!(Target::parse("http://192.0.2.1:4317", None, false).is_err());
        assert!(Target::parse("http://192.0.2.1:4317", None, true).is_ok());
    }
}
