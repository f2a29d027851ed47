//! From bytes on the wire to the items of an export request, each decoded on its own and within
//! bounds that keep a request's memory a small multiple of its size, whatever its shape.
//!
//! A request is first cut into its items without decoding them (`split`); then each item (a
//! span, a log record) is decoded alone, so one that cannot be used — too large, nested too
//! deep, malformed — is rejected with its reason while the others are kept. Past
//! [`MAX_ITEMS`] items, or once what the request decodes to passes [`budget`], the rest are
//! rejected. Every byte the request holds is first asked of `reserve` (the collector's budget
//! for requests in flight), which may refuse: [`DecodeError::NoRoom`].

use super::reject::Rejections;
use super::split::{self, Names, Split};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span};
use std::io::Read;
use std::mem::size_of;

/// Largest request, before and after decompression (`OTLP.md`, Transport).
pub const MAX_OTLP_BYTES: usize = 16 * 1024 * 1024;
/// Items read from one request; those past it are rejected unread. SDKs send 512 at a time, and
/// the OpenTelemetry Collector's batches default to 8,192.
pub const MAX_ITEMS: usize = 16_384;
/// An item larger than this, encoded, is rejected unread: everything it holds would go into
/// its events, which could not stay under the 64 KiB an event may have.
pub const MAX_ITEM_BYTES: usize = 1024 * 1024;
/// Attributes of an item (and of a resource or scope), of one of a span's events or links.
pub const MAX_ATTRIBUTES: usize = 1024;
/// A span's events, and its links.
pub const MAX_SPAN_EVENTS: usize = 1024;
pub const MAX_LINKS: usize = 1024;
/// How deep maps and arrays may nest inside one attribute value.
pub const MAX_VALUE_DEPTH: usize = 24;

/// What a request of `bytes` bytes (decompressed) may decode to, and what it may derive: a
/// small multiple of its size, plus room for a small request to be made of many small items.
pub fn budget(bytes: usize) -> usize {
    bytes.saturating_mul(8).saturating_add(1 << 20)
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the request is larger than {} MiB{}", MAX_OTLP_BYTES >> 20, if *.0 { " once decompressed" } else { "" })]
    TooLarge(bool),
    #[error("the body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the body is not a valid protobuf {0}")]
    Protobuf(String),
    #[error("the body is not a valid OTLP/JSON {0}")]
    Json(String),
    /// The collector's budget for requests in flight has no room for this one: retry later.
    #[error("the collector is holding as many requests as it can; retry shortly")]
    NoRoom,
}

/// Asked for the bytes the request holds in all, each time that grows; false means no room.
pub type Reserve<'r> = &'r mut dyn FnMut(usize) -> bool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Inflates gzip, refusing to produce more than `limit` bytes (a small bomb is stopped after
/// `limit` bytes of output, never inflated whole), and reserving the output as it grows.
pub fn gunzip(body: &[u8], limit: usize, reserve: Reserve<'_>) -> Result<Vec<u8>, DecodeError> {
    const STEP: usize = 256 * 1024;
    let mut decoder = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            // Grow by doubling, never past one byte beyond the limit (read to tell "too large").
            let want = (out.capacity() * 2).clamp(STEP, limit + 1);
            if want <= out.len() || !reserve(want) {
                return Err(if want <= out.len() { DecodeError::TooLarge(true) } else { DecodeError::NoRoom });
            }
            out.reserve_exact(want - out.len());
        }
        let len = out.len();
        let spare = out.capacity() - len;
        out.resize(len + spare, 0);
        match decoder.read(&mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                break;
            }
            Ok(n) => out.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(len),
            Err(e) => return Err(DecodeError::Gzip(e.to_string())),
        }
        if out.len() > limit {
            return Err(DecodeError::TooLarge(true));
        }
    }
    Ok(out)
}

/// A request's usable items, with the resources and scopes they came under.
#[derive(Debug, Default)]
pub struct Batch<T> {
    pub resources: Vec<Resource>,
    pub scopes: Vec<Scoped>,
    /// In request order.
    pub items: Vec<Entry<T>>,
    /// Items in the request, usable or not.
    pub total: usize,
    pub rejected: Rejections,
    /// The request's size, decompressed: what [`budget`]s are measured against.
    pub size: usize,
}

#[derive(Debug, Default)]
pub struct Scoped {
    pub resource: usize,
    pub scope: InstrumentationScope,
}

#[derive(Debug)]
pub struct Entry<T> {
    /// The item's position in the request.
    pub index: usize,
    pub scope: usize,
    pub item: T,
}

impl<T> Batch<T> {
    /// The resource and scope of `entry`.
    pub fn context(&self, entry: &Entry<T>) -> (&Resource, &InstrumentationScope) {
        let s = &self.scopes[entry.scope];
        (&self.resources[s.resource], &s.scope)
    }
}

/// What the decoder needs to know of an item type.
pub(crate) trait Item: prost::Message + Default + serde::de::DeserializeOwned {
    /// `span`, `log record`: in reasons.
    const NOUN: &'static str;
    /// The request's message, in errors.
    const REQUEST: &'static str;
    const NAMES: &'static Names;
    /// OTLP/JSON allows enum names where the generated types read numbers: make them numbers.
    fn numbers_for_names(doc: &mut serde_json::Value) -> Result<(), String>;
    /// The item's own limits (attributes, events, nesting): why it cannot be used.
    fn check(&self) -> Result<(), String>;
    /// Bytes it holds in memory, its heap included.
    fn size(&self) -> usize;
}

/// The spans of an `ExportTraceServiceRequest`.
pub fn spans(body: &[u8], encoding: Encoding, reserve: Reserve<'_>) -> Result<Batch<Span>, DecodeError> {
    decode(body, encoding, reserve)
}

/// The log records of an `ExportLogsServiceRequest`.
pub fn records(body: &[u8], encoding: Encoding, reserve: Reserve<'_>) -> Result<Batch<LogRecord>, DecodeError> {
    decode(body, encoding, reserve)
}

pub(crate) fn decode<T: Item>(body: &[u8], encoding: Encoding, reserve: Reserve<'_>) -> Result<Batch<T>, DecodeError> {
    let split = match encoding {
        Encoding::Protobuf => {
            split::protobuf(body, MAX_ITEMS).map_err(|e| DecodeError::Protobuf(format!("{}: {e}", T::REQUEST)))?
        }
        Encoding::Json => {
            let text =
                std::str::from_utf8(body).map_err(|e| DecodeError::Json(format!("{}: not UTF-8: {e}", T::REQUEST)))?;
            split::json(text, T::NAMES, MAX_ITEMS).map_err(|e| DecodeError::Json(format!("{}: {e}", T::REQUEST)))?
        }
    };
    Decoder { encoding, budget: budget(body.len()), held: body.len(), reserve }.run(split, body.len())
}

struct Decoder<'r> {
    encoding: Encoding,
    budget: usize,
    /// Bytes held by the request so far, its body included.
    held: usize,
    reserve: Reserve<'r>,
}

impl Decoder<'_> {
    fn run<T: Item>(mut self, split: Split<'_>, size: usize) -> Result<Batch<T>, DecodeError> {
        let mut batch = Batch { total: split.total, size, ..Batch::default() };
        if split.total > MAX_ITEMS {
            batch.rejected.reject_unread(MAX_ITEMS, split.total - MAX_ITEMS, || {
                format!(
                    "{} {}s past the first {MAX_ITEMS} of a request are not read: send smaller batches",
                    split.total - MAX_ITEMS,
                    T::NOUN
                )
            });
        }
        // A resource or scope that cannot be used takes its items with it.
        let mut resources = Vec::with_capacity(split.resources.len());
        for r in &split.resources {
            let decoded =
                self.part::<Resource>(*r, |r| check_attributes(&r.attributes), |r| attributes_size(&r.attributes))?;
            resources.push(decoded);
        }
        let mut scopes = Vec::with_capacity(split.scopes.len());
        for s in &split.scopes {
            let decoded = self.part::<InstrumentationScope>(
                s.bytes,
                |s| check_attributes(&s.attributes),
                |s| s.name.capacity() + s.version.capacity() + attributes_size(&s.attributes),
            )?;
            scopes.push(decoded);
        }
        // Kept resources and scopes are renumbered: only those with a usable item are kept.
        let mut resource_at: Vec<Option<usize>> = vec![None; resources.len()];
        let mut scope_at: Vec<Option<usize>> = vec![None; scopes.len()];
        let mut resources: Vec<Option<Result<Resource, String>>> = resources.into_iter().map(Some).collect();
        let mut scopes: Vec<Option<Result<InstrumentationScope, String>>> = scopes.into_iter().map(Some).collect();
        for piece in split.items {
            let index = piece.index;
            let s = piece.scope;
            let r = split.scopes[s].resource;
            let unusable = match (&resources[r], &scopes[s]) {
                (Some(Err(why)), _) => Some(format!("its resource {why}")),
                (_, Some(Err(why))) => Some(format!("its scope {why}")),
                _ => None,
            };
            if let Some(why) = unusable {
                batch.rejected.reject(index, || format!("{} {index}: {why}", T::NOUN));
                continue;
            }
            let item = match self.item::<T>(piece.bytes) {
                Ok(Some(item)) => item,
                Ok(None) => {
                    let budget = self.budget;
                    batch.rejected.reject(index, || {
                        format!(
                            "{} {index}: the request decodes to more than {} KiB (8 times its size and 1 MiB): send smaller batches",
                            T::NOUN,
                            budget >> 10
                        )
                    });
                    continue;
                }
                Err(Rejected(why)) => {
                    batch.rejected.reject(index, || format!("{} {index}: {why}", T::NOUN));
                    continue;
                }
                Err(NoRoom) => return Err(DecodeError::NoRoom),
            };
            let kept_r = *resource_at[r].get_or_insert_with(|| {
                batch.resources.push(resources[r].take().and_then(Result::ok).unwrap_or_default());
                batch.resources.len() - 1
            });
            let kept_s = *scope_at[s].get_or_insert_with(|| {
                let scope = scopes[s].take().and_then(Result::ok).unwrap_or_default();
                batch.scopes.push(Scoped { resource: kept_r, scope });
                batch.scopes.len() - 1
            });
            batch.items.push(Entry { index, scope: kept_s, item });
        }
        Ok(batch)
    }

    /// Room for `more` bytes: `Ok(false)` past the request's own budget, `Err` when the
    /// collector has none.
    fn hold(&mut self, more: usize) -> Result<bool, Failure> {
        if self.held + more > self.budget {
            return Ok(false);
        }
        self.held += more;
        if !(self.reserve)(self.held) {
            return Err(NoRoom);
        }
        Ok(true)
    }

    /// A resource or scope: absent is empty; unusable is `Ok(Err(why))`.
    fn part<P: prost::Message + Default + serde::de::DeserializeOwned>(
        &mut self,
        bytes: Option<&[u8]>,
        check: impl Fn(&P) -> Result<(), String>,
        heap: impl Fn(&P) -> usize,
    ) -> Result<Result<P, String>, DecodeError> {
        let Some(bytes) = bytes else { return Ok(Ok(P::default())) };
        if bytes.len() > MAX_ITEM_BYTES {
            return Ok(Err(format!("is larger than {} KiB", MAX_ITEM_BYTES >> 10)));
        }
        let part = match self.encoding {
            Encoding::Protobuf => P::decode(bytes).map_err(|e| format!("is not valid protobuf: {e}")),
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| format!("is not valid OTLP/JSON: {e}")),
        }
        .and_then(|p| check(&p).map(|()| p));
        let part = match part {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        match self.hold(size_of::<P>() + heap(&part)) {
            Ok(true) => Ok(Ok(part)),
            Ok(false) => Ok(Err("makes the request decode to more than its budget".into())),
            Err(_) => Err(DecodeError::NoRoom),
        }
    }

    /// One item: `Ok(None)` when it does not fit the request's budget.
    fn item<T: Item>(&mut self, bytes: &[u8]) -> Result<Option<T>, Failure> {
        if bytes.len() > MAX_ITEM_BYTES {
            return Err(Rejected(format!(
                "larger than {} KiB encoded: its events could not fit in 64 KiB",
                MAX_ITEM_BYTES >> 10
            )));
        }
        let item = match self.encoding {
            // prost refuses messages nested more than 100 deep, so a deep item fails alone.
            Encoding::Protobuf => T::decode(bytes).map_err(|e| Rejected(format!("not valid protobuf: {e}")))?,
            Encoding::Json => {
                // serde_json refuses more than 128 levels; the JSON tree of one item (at most
                // MAX_ITEM_BYTES) lives only until its typed form is made.
                let mut doc: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| Rejected(format!("not valid OTLP/JSON: {e}")))?;
                if !doc.is_object() {
                    return Err(Rejected("not a JSON object".into()));
                }
                T::numbers_for_names(&mut doc).map_err(Rejected)?;
                serde_json::from_value(doc).map_err(|e| Rejected(format!("not valid OTLP/JSON: {e}")))?
            }
        };
        item.check().map_err(Rejected)?;
        Ok(self.hold(item.size())?.then_some(item))
    }
}

enum Failure {
    Rejected(String),
    NoRoom,
}
use Failure::{NoRoom, Rejected};

pub(crate) fn check_attributes(kvs: &[KeyValue]) -> Result<(), String> {
    if kvs.len() > MAX_ATTRIBUTES {
        return Err(format!("has {} attributes, more than {MAX_ATTRIBUTES}", kvs.len()));
    }
    for kv in kvs {
        let depth = kv.value.as_ref().map_or(0, depth);
        if depth > MAX_VALUE_DEPTH {
            return Err(format!(
                "attribute {:?} nests values {depth} levels deep, more than {MAX_VALUE_DEPTH}",
                kv.key
            ));
        }
    }
    Ok(())
}

/// How deep arrays and maps nest in a value: 0 for a scalar.
pub(crate) fn depth(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::ArrayValue(a)) => 1 + a.values.iter().map(depth).max().unwrap_or(0),
        Some(Value::KvlistValue(l)) => {
            1 + l.values.iter().filter_map(|kv| kv.value.as_ref()).map(depth).max().unwrap_or(0)
        }
        _ => 0,
    }
}

/// The heap a list of attributes holds (the list itself included).
pub(crate) fn attributes_size(kvs: &Vec<KeyValue>) -> usize {
    kvs.capacity() * size_of::<KeyValue>()
        + kvs.iter().map(|kv| kv.key.capacity() + kv.value.as_ref().map_or(0, value_heap)).sum::<usize>()
}

fn value_heap(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::StringValue(s)) => s.capacity(),
        Some(Value::BytesValue(b)) => b.capacity(),
        Some(Value::ArrayValue(a)) => {
            a.values.capacity() * size_of::<AnyValue>() + a.values.iter().map(value_heap).sum::<usize>()
        }
        Some(Value::KvlistValue(l)) => attributes_size(&l.values),
        _ => 0,
    }
}

impl Item for Span {
    const NOUN: &'static str = "span";
    const REQUEST: &'static str = "ExportTraceServiceRequest";
    const NAMES: &'static Names = &split::SPANS;

    fn numbers_for_names(span: &mut serde_json::Value) -> Result<(), String> {
        if let Some(kind) = span.get_mut("kind") {
            rename(kind, "kind", &SPAN_KINDS)?;
        }
        if let Some(code) = span.get_mut("status").and_then(|s| s.get_mut("code")) {
            rename(code, "status.code", &STATUS_CODES)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        check_attributes(&self.attributes)?;
        if self.events.len() > MAX_SPAN_EVENTS {
            return Err(format!("has {} events, more than {MAX_SPAN_EVENTS}", self.events.len()));
        }
        if self.links.len() > MAX_LINKS {
            return Err(format!("has {} links, more than {MAX_LINKS}", self.links.len()));
        }
        for e in &self.events {
            check_attributes(&e.attributes).map_err(|why| format!("its event {:?} {why}", e.name))?;
        }
        for l in &self.links {
            check_attributes(&l.attributes).map_err(|why| format!("a link {why}"))?;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        size_of::<Span>()
            + self.trace_id.capacity()
            + self.span_id.capacity()
            + self.parent_span_id.capacity()
            + self.trace_state.capacity()
            + self.name.capacity()
            + attributes_size(&self.attributes)
            + self.events.capacity() * size_of::<span::Event>()
            + self.events.iter().map(|e| e.name.capacity() + attributes_size(&e.attributes)).sum::<usize>()
            + self.links.capacity() * size_of::<span::Link>()
            + self
                .links
                .iter()
                .map(|l| {
                    l.trace_id.capacity()
                        + l.span_id.capacity()
                        + l.trace_state.capacity()
                        + attributes_size(&l.attributes)
                })
                .sum::<usize>()
            + self.status.as_ref().map_or(0, |s| s.message.capacity())
    }
}

impl Item for LogRecord {
    const NOUN: &'static str = "log record";
    const REQUEST: &'static str = "ExportLogsServiceRequest";
    const NAMES: &'static Names = &split::LOGS;

    fn numbers_for_names(record: &mut serde_json::Value) -> Result<(), String> {
        if let Some(n) = record.get_mut("severityNumber") {
            rename(n, "severityNumber", &SEVERITY_NUMBERS)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        check_attributes(&self.attributes)?;
        let depth = self.body.as_ref().map_or(0, depth);
        if depth > MAX_VALUE_DEPTH {
            return Err(format!("its body nests values {depth} levels deep, more than {MAX_VALUE_DEPTH}"));
        }
        Ok(())
    }

    fn size(&self) -> usize {
        size_of::<LogRecord>()
            + self.severity_text.capacity()
            + self.body.as_ref().map_or(0, value_heap)
            + attributes_size(&self.attributes)
            + self.trace_id.capacity()
            + self.span_id.capacity()
            + self.event_name.capacity()
    }
}

impl Batch<Span> {
    /// A request already decoded (tests, the benchmark's requests): every span kept, no limit.
    pub fn from_request(req: ExportTraceServiceRequest) -> Batch<Span> {
        let mut batch = Batch::default();
        for rs in req.resource_spans {
            batch.resources.push(rs.resource.unwrap_or_default());
            let resource = batch.resources.len() - 1;
            for ss in rs.scope_spans {
                batch.scopes.push(Scoped { resource, scope: ss.scope.unwrap_or_default() });
                let scope = batch.scopes.len() - 1;
                for span in ss.spans {
                    batch.items.push(Entry { index: batch.total, scope, item: span });
                    batch.total += 1;
                }
            }
        }
        batch.size = batch.items.iter().map(|e| prost::Message::encoded_len(&e.item)).sum();
        batch
    }
}

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
const SEVERITY_NUMBERS: [&str; 25] = [
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

fn rename(v: &mut serde_json::Value, field: &str, names: &[&str]) -> Result<(), String> {
    if let Some(name) = v.as_str() {
        let n = names
            .iter()
            .position(|x| x.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("`{field}` {name:?} is not one of {}", names.join(", ")))?;
        *v = serde_json::Value::from(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn room(_: usize) -> bool {
        true
    }

    fn spans(body: &[u8], encoding: Encoding) -> Result<Batch<Span>, DecodeError> {
        decode::<Span>(body, encoding, &mut room)
    }

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
        assert!(matches!(gunzip(&bomb, 1 << 20, &mut room), Err(DecodeError::TooLarge(true))));
        assert_eq!(gunzip(&bomb, 4 << 20, &mut room).unwrap().len(), 4 << 20);
        assert!(matches!(gunzip(b"not gzip", 1 << 20, &mut room), Err(DecodeError::Gzip(_))));
        // What it holds is asked for as it grows, and never more than the limit and a byte.
        let mut asked = Vec::new();
        let out = gunzip(&bomb, 4 << 20, &mut |n| {
            asked.push(n);
            true
        })
        .unwrap();
        assert!(asked.windows(2).all(|w| w[0] < w[1]) && *asked.last().unwrap() <= (4 << 20) + 1, "{asked:?}");
        assert!(out.capacity() <= (4 << 20) + 1);
        let mut first = true;
        let refused = gunzip(&bomb, 4 << 20, &mut |_| std::mem::replace(&mut first, false));
        assert!(matches!(refused, Err(DecodeError::NoRoom)));
    }

    #[test]
    fn json_accepts_enum_names_and_numbers() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"}},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":2,"status":{"code":1},
             "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let b = spans(body, Encoding::Json).unwrap();
        let s: Vec<&Span> = b.items.iter().map(|e| &e.item).collect();
        assert_eq!((s[0].kind, s[0].status.as_ref().unwrap().code), (3, 2));
        assert_eq!((s[1].kind, s[1].status.as_ref().unwrap().code), (2, 1));
        assert_eq!(s[0].trace_id.len(), 16);
    }

    #[test]
    fn a_bad_span_is_rejected_alone_and_a_bad_envelope_fails_the_request() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"kind":"SIDEWAYS"}, {"traceId":"zz"}, {"startTimeUnixNano":true}, 7, {"name":"fine"}]}]}]}"#;
        let b = spans(body, Encoding::Json).unwrap();
        assert_eq!((b.total, b.items.len(), b.rejected.count()), (5, 1, 4));
        let reasons: Vec<&str> = b.rejected.reasons().collect();
        assert!(reasons[0].starts_with("span 0:") && reasons[0].contains("`kind` \"SIDEWAYS\""), "{reasons:?}");
        assert!(reasons[1].contains("OTLP/JSON") && reasons[3].contains("not a JSON object"), "{reasons:?}");
        for (body, why) in [(&br#"{"resourceSpans":"#[..], "OTLP/JSON"), (br#"[1]"#, "JSON object")] {
            let e = spans(body, Encoding::Json).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = spans(&[0x0a, 0xff, 0xff, 0x03], Encoding::Protobuf).unwrap_err().to_string();
        assert!(e.contains("protobuf"), "{e}");
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn nested(levels: usize) -> Value {
        let mut v = Value::IntValue(1);
        for _ in 0..levels {
            v = Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList { values: vec![kv("k", v)] });
        }
        v
    }

    fn encode(spans: Vec<Span>) -> Vec<u8> {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        prost::Message::encode_to_vec(&req)
    }

    #[test]
    fn nesting_past_the_limit_fails_the_span_not_the_request_in_both_encodings() {
        let span = |name: &str, levels| Span {
            name: name.into(),
            attributes: vec![kv("deep", nested(levels))],
            ..Default::default()
        };
        for levels in [MAX_VALUE_DEPTH + 1, 40, 200] {
            let body = encode(vec![span("ok", MAX_VALUE_DEPTH), span("deep", levels), span("after", 1)]);
            let b = spans(&body, Encoding::Protobuf).unwrap();
            let names: Vec<&str> = b.items.iter().map(|e| e.item.name.as_str()).collect();
            assert_eq!(names, ["ok", "after"], "{levels} levels");
            assert!(b.rejected.reasons().next().unwrap().starts_with("span 1:"), "{:?}", b.rejected);
        }
        // The same in OTLP/JSON, written by hand: the generated types cannot write it.
        let json_value = |levels: usize| {
            let mut v = r#"{"intValue":"1"}"#.to_owned();
            for _ in 0..levels {
                v = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}"#);
            }
            v
        };
        for levels in [MAX_VALUE_DEPTH + 1, 40, 200] {
            let span = |name: &str, l: usize| {
                format!(
                    r#"{{"name":"{name}","events":[{{"name":"e","attributes":[{{"key":"d","value":{}}}]}}]}}"#,
                    json_value(l)
                )
            };
            let body = format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{},{},{}]}}]}}]}}"#,
                span("ok", MAX_VALUE_DEPTH),
                span("deep", levels),
                span("after", 0)
            );
            let b = spans(body.as_bytes(), Encoding::Json).unwrap();
            let names: Vec<&str> = b.items.iter().map(|e| e.item.name.as_str()).collect();
            assert_eq!(names, ["ok", "after"], "{levels} levels: {:?}", b.rejected);
        }
    }

    #[test]
    fn empty_spans_by_the_million_cost_a_counter() {
        let body = encode(vec![Span::default(); 1_000_000]);
        let mut most = 0;
        let b = decode::<Span>(&body, Encoding::Protobuf, &mut |n| {
            most = most.max(n);
            true
        })
        .unwrap();
        assert_eq!((b.total, b.items.len(), b.rejected.count()), (1_000_000, MAX_ITEMS, 1_000_000 - MAX_ITEMS));
        assert!(most <= budget(body.len()), "held {most} bytes for a {}-byte request", body.len());
        assert!(b.rejected.reasons().next().unwrap().contains("send smaller batches"));
    }

    #[test]
    fn a_request_decodes_to_at_most_its_budget() {
        // Attributes of empty keys and values: 4 bytes on the wire, ~100 decoded.
        let attrs =
            vec![KeyValue { key: String::new(), value: Some(AnyValue { value: None }), ..Default::default() }; 1000];
        let span = Span { attributes: attrs, ..Default::default() };
        let body = encode(vec![span; 2000]);
        let mut most = 0;
        let b = decode::<Span>(&body, Encoding::Protobuf, &mut |n| {
            most = most.max(n);
            true
        })
        .unwrap();
        assert!(most <= budget(body.len()), "held {most} for {} bytes", body.len());
        assert!(b.rejected.count() > 0 && !b.items.is_empty(), "{:?}", b.rejected);
        assert!(b.rejected.reasons().next().unwrap().contains("decodes to more than"), "{:?}", b.rejected);
        assert_eq!(b.items.len() + b.rejected.count(), 2000);
    }

    #[test]
    fn too_many_attributes_events_or_links_reject_the_span() {
        let many = |n| vec![kv("k", Value::IntValue(1)); n];
        let cases = [
            Span { attributes: many(MAX_ATTRIBUTES + 1), ..Default::default() },
            Span { events: vec![span::Event::default(); MAX_SPAN_EVENTS + 1], ..Default::default() },
            Span { links: vec![span::Link::default(); MAX_LINKS + 1], ..Default::default() },
            Span {
                events: vec![span::Event { attributes: many(MAX_ATTRIBUTES + 1), ..Default::default() }],
                ..Default::default()
            },
        ];
        let n = cases.len();
        let mut all: Vec<Span> = cases.into_iter().collect();
        all.push(Span { attributes: many(MAX_ATTRIBUTES), name: "at the limit".into(), ..Default::default() });
        let b = spans(&encode(all), Encoding::Protobuf).unwrap();
        assert_eq!(b.rejected.count(), n, "{:?}", b.rejected);
        assert_eq!(b.items[0].item.name, "at the limit");
    }

    #[test]
    fn a_bad_resource_takes_its_spans_with_it() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let level = |attrs: usize, name: &str| ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("k", Value::IntValue(1)); attrs], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { name: name.into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let req =
            ExportTraceServiceRequest { resource_spans: vec![level(MAX_ATTRIBUTES + 1, "lost"), level(2, "kept")] };
        let b = spans(&prost::Message::encode_to_vec(&req), Encoding::Protobuf).unwrap();
        assert_eq!(b.items.iter().map(|e| e.item.name.as_str()).collect::<Vec<_>>(), ["kept"]);
        assert_eq!(b.items[0].index, 1);
        assert_eq!(b.context(&b.items[0]).0.attributes.len(), 2);
        let why = b.rejected.reasons().next().unwrap();
        assert!(why.starts_with("span 0: its resource has 1025 attributes"), "{why}");
    }
}
