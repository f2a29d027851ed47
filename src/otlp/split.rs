//! An export request cut into its parts without decoding them: the items (spans, log records),
//! each with the resource and scope it came under, as slices of the body.
//!
//! Decoding a whole request at once is what lets a small body become a huge one in memory (an
//! empty span is 2 bytes on the wire and a few hundred decoded), and lets one bad item fail all
//! the others. Cut first, and each item can be measured, decoded, refused on its own; past
//! `max` items nothing is kept but a count. The three signals share the envelope's shape:
//! request → resource level (field 1) → resource (1) and scope levels (2) → scope (1) and items
//! (2); OTLP/JSON names the levels (`resourceSpans`, `scopeSpans`, `spans`, …).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The body's parts that hold items, in request order.
#[derive(Debug, Default)]
pub(crate) struct Split<'a> {
    /// Each resource level's resource (encoded), `None` when absent.
    pub(crate) resources: Vec<Option<&'a [u8]>>,
    pub(crate) scopes: Vec<Scope<'a>>,
    pub(crate) items: Vec<Piece<'a>>,
    /// Items in the request, kept or not.
    pub(crate) total: usize,
}

#[derive(Debug)]
pub(crate) struct Scope<'a> {
    pub(crate) resource: usize,
    pub(crate) bytes: Option<&'a [u8]>,
}

#[derive(Debug)]
pub(crate) struct Piece<'a> {
    /// The item's position in the request, counting every item.
    pub(crate) index: usize,
    pub(crate) scope: usize,
    pub(crate) bytes: &'a [u8],
}

/// The names of the levels in OTLP/JSON: the protobuf JSON mapping's lowerCamelCase first, then
/// the field's own name, which parsers accept too.
pub(crate) struct Names {
    pub(crate) resources: [&'static str; 2],
    pub(crate) scopes: [&'static str; 2],
    pub(crate) items: [&'static str; 2],
}

pub(crate) const SPANS: Names = Names {
    resources: ["resourceSpans", "resource_spans"],
    scopes: ["scopeSpans", "scope_spans"],
    items: ["spans", "spans"],
};
pub(crate) const LOGS: Names = Names {
    resources: ["resourceLogs", "resource_logs"],
    scopes: ["scopeLogs", "scope_logs"],
    items: ["logRecords", "log_records"],
};
pub(crate) const METRICS: Names = Names {
    resources: ["resourceMetrics", "resource_metrics"],
    scopes: ["scopeMetrics", "scope_metrics"],
    items: ["metrics", "metrics"],
};

/// Only the first `max` items are kept; a resource or scope is kept only if one of its items is.
struct Builder<'a> {
    split: Split<'a>,
    max: usize,
}

impl<'a> Builder<'a> {
    fn new(max: usize) -> Self {
        Builder { split: Split::default(), max }
    }

    fn full(&self) -> bool {
        self.split.total >= self.max
    }

    /// An item, under the resource and scope levels whose kept indexes are in `resource` and
    /// `scope` (set on the first item kept under them).
    fn item(&mut self, resource: &mut Option<usize>, scope: &mut Option<usize>, bytes: &'a [u8]) {
        let index = self.split.total;
        self.split.total += 1;
        if index >= self.max {
            return;
        }
        let s = &mut self.split;
        let r = *resource.get_or_insert_with(|| {
            s.resources.push(None);
            s.resources.len() - 1
        });
        let sc = *scope.get_or_insert_with(|| {
            s.scopes.push(Scope { resource: r, bytes: None });
            s.scopes.len() - 1
        });
        s.items.push(Piece { index, scope: sc, bytes });
    }
}

// ---- protobuf -------------------------------------------------------------------------------

/// A field of a protobuf message: its number and, if it is length-delimited, its bytes.
type Field<'a> = (u64, Option<&'a [u8]>);

/// The fields of a protobuf message, one at a time.
struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err("truncated varint".into());
            };
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.buf.len()).ok_or("truncated field")?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: `(number, Some(bytes))` if length-delimited, `(number, None)` otherwise.
    fn next(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {number}"));
        }
        let bytes = match wire {
            0 => {
                self.varint()?;
                None
            }
            1 => {
                self.take(8)?;
                None
            }
            2 => {
                let n = self.varint()?;
                Some(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                None
            }
            // Groups (3, 4) are not in OTLP's proto3 messages; 6 and 7 do not exist.
            w => return Err(format!("invalid wire type {w} (field {number})")),
        };
        Ok(Some((number, bytes)))
    }

    /// The last length-delimited field `number` of a message, checking the whole message's
    /// framing on the way.
    fn last(buf: &'a [u8], number: u64) -> Result<Option<&'a [u8]>, String> {
        let mut w = Wire { buf };
        let mut found = None;
        while let Some((n, bytes)) = w.next()? {
            if n == number {
                found = Some(length_delimited(n, bytes)?);
            }
        }
        Ok(found)
    }
}

/// How many fields `inner` the message's length-delimited fields `outer` hold in all; malformed
/// parts count nothing.
pub(crate) fn count_nested(message: &[u8], outer: &[u64], inner: u64) -> usize {
    let mut count = 0;
    let mut fields = Wire { buf: message };
    while let Ok(Some((n, Some(nested)))) = fields.next() {
        if outer.contains(&n) {
            let mut w = Wire { buf: nested };
            while let Ok(Some((m, _))) = w.next() {
                count += usize::from(m == inner);
            }
        }
    }
    count
}

fn length_delimited(number: u64, bytes: Option<&[u8]>) -> Result<&[u8], String> {
    bytes.ok_or_else(|| format!("field {number} must be length-delimited"))
}

pub(crate) fn protobuf(body: &[u8], max: usize) -> Result<Split<'_>, String> {
    let mut b = Builder::new(max);
    let mut request = Wire { buf: body };
    while let Some((n, level)) = request.next()? {
        if n != 1 {
            continue;
        }
        let level = length_delimited(n, level)?;
        let resource = Wire::last(level, 1)?;
        let mut r = None;
        let mut fields = Wire { buf: level };
        while let Some((n, scope_level)) = fields.next()? {
            if n != 2 {
                continue;
            }
            let scope_level = length_delimited(n, scope_level)?;
            let scope = Wire::last(scope_level, 1)?;
            let mut s = None;
            let mut items = Wire { buf: scope_level };
            while let Some((n, item)) = items.next()? {
                if n == 2 {
                    b.item(&mut r, &mut s, length_delimited(n, item)?);
                }
            }
            if let Some(s) = s {
                b.split.scopes[s].bytes = scope;
            }
        }
        if let Some(r) = r {
            b.split.resources[r] = resource;
        }
    }
    Ok(b.split)
}

// ---- OTLP/JSON ------------------------------------------------------------------------------

/// Cuts an OTLP/JSON request. serde_json skips what it does not keep without recursion, so an
/// item nested deeper than a recursive parser allows is still cut out, to be refused alone.
pub(crate) fn json<'a>(body: &'a str, names: &Names, max: usize) -> Result<Split<'a>, String> {
    let mut b = Builder::new(max);
    let mut de = serde_json::Deserializer::from_str(body);
    Root { b: &mut b, names }.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(b.split)
}

/// A map whose members are looked up by name; `null` stands for an empty one.
fn members<'de, A: MapAccess<'de>>(
    mut m: A,
    keys: &[&[&str]],
    mut f: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    loop {
        // One seed per key set would need a key type of its own; trying each set is cheap.
        let mut which = None;
        let found = m.next_key_seed(Which(keys, &mut which))?;
        match (found, which) {
            (None, _) => return Ok(()),
            (Some(()), Some(i)) => f(i, &mut m)?,
            (Some(()), None) => {
                m.next_value::<IgnoredAny>()?;
            }
        }
    }
}

struct Which<'k, 'n>(&'k [&'k [&'n str]], &'k mut Option<usize>);

impl<'de> DeserializeSeed<'de> for Which<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Which<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<(), E> {
        *self.1 = self.0.iter().position(|names| names.contains(&k));
        Ok(())
    }
}

/// A member's value that may be `null`: `None`, else its text.
fn raw_or_null(raw: &RawValue) -> Option<&[u8]> {
    (raw.get() != "null").then(|| raw.get().as_bytes())
}

struct Root<'b, 'a> {
    b: &'b mut Builder<'a>,
    names: &'b Names,
}

impl<'de> DeserializeSeed<'de> for Root<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Root<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object with `{}`", self.names.resources[0])
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
        let (b, names) = (self.b, self.names);
        members(m, &[&names.resources], |_, m| m.next_value_seed(List(ResourceLevel { b: &mut *b, names })))
    }
}

/// A JSON array (or `null`) of elements read by `E`'s seed.
struct List<E>(E);

trait Element<'de> {
    fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error>;
}

impl<'de, E: Element<'de>> DeserializeSeed<'de> for List<E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: Element<'de>> Visitor<'de> for List<E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_unit<Er>(self) -> Result<(), Er> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while self.0.element(&mut seq)? {}
        Ok(())
    }
}

struct ResourceLevel<'b, 'a> {
    b: &'b mut Builder<'a>,
    names: &'b Names,
}

impl<'de> Element<'de> for ResourceLevel<'_, 'de> {
    fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
        let level = Level { b: &mut *self.b, names: self.names, kept: None };
        Ok(seq.next_element_seed(level)?.is_some())
    }
}

/// A resource level: its resource, and its scope levels.
struct Level<'b, 'a> {
    b: &'b mut Builder<'a>,
    names: &'b Names,
    kept: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Level<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a `{}` object", self.names.resources[0])
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
        let Level { b, names, mut kept } = self;
        let mut resource = None;
        members(m, &[&["resource"], &names.scopes], |which, m| {
            if which == 0 {
                resource = raw_or_null(m.next_value::<&'de RawValue>()?);
                Ok(())
            } else {
                m.next_value_seed(List(ScopeLevels { b: &mut *b, names, resource: &mut kept }))
            }
        })?;
        if let Some(r) = kept {
            b.split.resources[r] = resource;
        }
        Ok(())
    }
}

struct ScopeLevels<'b, 'a> {
    b: &'b mut Builder<'a>,
    names: &'b Names,
    resource: &'b mut Option<usize>,
}

impl<'de> Element<'de> for ScopeLevels<'_, 'de> {
    fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
        let level = ScopeLevel { b: &mut *self.b, names: self.names, resource: &mut *self.resource };
        Ok(seq.next_element_seed(level)?.is_some())
    }
}

struct ScopeLevel<'b, 'a> {
    b: &'b mut Builder<'a>,
    names: &'b Names,
    resource: &'b mut Option<usize>,
}

impl<'de> DeserializeSeed<'de> for ScopeLevel<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScopeLevel<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a `{}` object", self.names.scopes[0])
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<(), A::Error> {
        let ScopeLevel { b, names, resource } = self;
        let mut kept = None;
        let mut scope = None;
        members(m, &[&["scope"], &names.items], |which, m| {
            if which == 0 {
                scope = raw_or_null(m.next_value::<&'de RawValue>()?);
                Ok(())
            } else {
                m.next_value_seed(List(Items { b: &mut *b, resource: &mut *resource, scope: &mut kept }))
            }
        })?;
        if let Some(s) = kept {
            b.split.scopes[s].bytes = scope;
        }
        Ok(())
    }
}

struct Items<'b, 'a> {
    b: &'b mut Builder<'a>,
    resource: &'b mut Option<usize>,
    scope: &'b mut Option<usize>,
}

impl<'de> Element<'de> for Items<'_, 'de> {
    fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
        if self.b.full() {
            // Past the cap an item is only counted: skipped without being held.
            let more = seq.next_element::<IgnoredAny>()?.is_some();
            if more {
                self.b.split.total += 1;
            }
            return Ok(more);
        }
        match seq.next_element::<&'de RawValue>()? {
            Some(raw) => {
                self.b.item(self.resource, self.scope, raw.get().as_bytes());
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint((number << 3) | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn texts<'a>(s: &Split<'a>) -> Vec<(usize, usize, usize, &'a [u8])> {
        s.items.iter().map(|p| (p.index, p.scope, s.scopes[p.scope].resource, p.bytes)).collect()
    }

    #[test]
    fn protobuf_items_keep_their_resource_and_scope_in_order() {
        // Two resource levels; the first has two scope levels, the resource written after them.
        let scope_a = [field(1, b"scopeA"), field(2, b"s1"), field(2, b"s2")].concat();
        let scope_b = [field(2, b"s3"), field(3, b"schema")].concat();
        let level1 = [field(2, &scope_a), field(2, &scope_b), field(1, b"res1")].concat();
        let level2 = [field(1, b"res2"), field(2, &field(2, b"s4"))].concat();
        // A varint field beside them is skipped.
        let body = [field(1, &level1), vec![0x10, 0x05], field(1, &level2)].concat();
        let s = protobuf(&body, 100).unwrap();
        assert_eq!(s.total, 4);
        assert_eq!(s.resources, [Some(&b"res1"[..]), Some(&b"res2"[..])]);
        assert_eq!(s.scopes.iter().map(|sc| sc.bytes).collect::<Vec<_>>(), [Some(&b"scopeA"[..]), None, None]);
        assert_eq!(
            texts(&s),
            [(0, 0, 0, &b"s1"[..]), (1, 0, 0, &b"s2"[..]), (2, 1, 0, &b"s3"[..]), (3, 2, 1, &b"s4"[..])]
        );
    }

    #[test]
    fn past_the_cap_items_are_counted_not_kept() {
        let spans: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], 1000).flatten().collect();
        let body = field(1, &field(2, &spans));
        let s = protobuf(&body, 10).unwrap();
        assert_eq!((s.total, s.items.len(), s.scopes.len(), s.resources.len()), (1000, 10, 1, 1));
        // Levels with no kept item are not kept either.
        let body = [body.clone(), field(1, &field(2, &field(2, b"")))].concat();
        let s = protobuf(&body, 10).unwrap();
        assert_eq!((s.total, s.scopes.len(), s.resources.len()), (1001, 1, 1));
    }

    #[test]
    fn bad_framing_is_an_error_not_a_panic() {
        for body in [
            &[0x0a, 0x05, 0x01][..],       // truncated
            &[0x0a, 0xff, 0xff, 0xff][..], // truncated varint
            &[0x0b][..],                   // a group
            &[0x08][..],                   // a varint with no value
            &[0x00, 0x00][..],             // field 0
            &[0x0a, 0x02, 0x12, 0x05][..], // an inner field longer than its message
            &[0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..],
        ] {
            assert!(protobuf(body, 10).is_err(), "{body:?}");
        }
        // A resource level whose field 1 is a varint: the resource must be a message.
        assert!(protobuf(&field(1, &[0x08, 0x01]), 10).is_err());
    }

    #[test]
    fn json_items_are_their_text_whatever_their_depth() {
        let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"a":1}}, {{"b":{deep}}}],"scope":{{"name":"x"}}}}],
               "resource":{{"attributes":[]}}}}, null, {{"resource_spans_not":1,"scope_spans":[{{"spans":[ {{"c" : 2}} ]}}]}}],
               "other":{{"ignored":[1,2,{{}}]}}}}"#
        );
        let s = json(&body, &SPANS, 100).unwrap();
        let items: Vec<&str> = s.items.iter().map(|p| std::str::from_utf8(p.bytes).unwrap()).collect();
        assert_eq!(items, [r#"{"a":1}"#, &format!(r#"{{"b":{deep}}}"#), r#"{"c" : 2}"#]);
        assert_eq!(s.resources, [Some(&br#"{"attributes":[]}"#[..]), None]);
        assert_eq!(s.scopes.iter().map(|sc| sc.bytes).collect::<Vec<_>>(), [Some(&br#"{"name":"x"}"#[..]), None]);
        assert_eq!(s.total, 3);
    }

    #[test]
    fn json_past_the_cap_and_bad_documents() {
        let spans = vec!["{}"; 1000].join(",");
        let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
        let s = json(&body, &SPANS, 10).unwrap();
        assert_eq!((s.total, s.items.len()), (1000, 10));
        for bad in [
            "[]",
            r#"{"resourceSpans":{}}"#,
            r#"{"resourceSpans":[1]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{]}]}]}"#,
            r#"{"resourceSpans":[]} x"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[}]}]}"#,
        ] {
            assert!(json(bad, &SPANS, 10).is_err(), "{bad}");
        }
        assert_eq!(json("{}", &SPANS, 10).unwrap().total, 0);
        assert_eq!(json(r#"{"resourceSpans":null}"#, &SPANS, 10).unwrap().total, 0);
    }
}
