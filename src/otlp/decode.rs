//! From bytes on the wire to an `ExportTraceServiceRequest`: gzip, protobuf, OTLP/JSON.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::io::Read;

/// Largest request, before and after decompression (`OTLP.md`, Transport).
pub const MAX_OTLP_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the request is larger than {} MiB{}", MAX_OTLP_BYTES >> 20, if *.0 { " once decompressed" } else { "" })]
    TooLarge(bool),
    #[error("the body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the body is not a valid protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(String),
    #[error("the body is not a valid OTLP/JSON ExportTraceServiceRequest: {0}")]
    Json(String),
}

/// Inflates gzip, refusing to produce more than `limit` bytes: a small bomb is stopped after
/// `limit` bytes of output, never inflated whole.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(true));
    }
    Ok(out)
}

pub fn protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    prost::Message::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// OTLP/JSON. The generated types read ids as hex and enums as integers; OTLP/JSON also allows
/// an enum's name (`"SPAN_KIND_CLIENT"`), so names are turned into numbers first.
pub fn json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !doc.is_object() {
        return Err(DecodeError::Json("the body must be a JSON object with `resourceSpans`".into()));
    }
    enum_names_to_numbers(&mut doc)?;
    serde_json::from_value(doc).map_err(|e| DecodeError::Json(e.to_string()))
}

fn enum_names_to_numbers(doc: &mut serde_json::Value) -> Result<(), DecodeError> {
    let spans = doc
        .get_mut("resourceSpans")
        .and_then(|r| r.as_array_mut())
        .into_iter()
        .flatten()
        .filter_map(|r| r.get_mut("scopeSpans").and_then(|s| s.as_array_mut()))
        .flatten()
        .filter_map(|s| s.get_mut("spans").and_then(|s| s.as_array_mut()))
        .flatten();
    for span in spans {
        if let Some(kind) = span.get_mut("kind") {
            rename(kind, "kind", &SPAN_KINDS)?;
        }
        if let Some(code) = span.get_mut("status").and_then(|s| s.get_mut("code")) {
            rename(code, "status.code", &STATUS_CODES)?;
        }
    }
    Ok(())
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

fn rename(v: &mut serde_json::Value, field: &str, names: &[&str]) -> Result<(), DecodeError> {
    if let Some(name) = v.as_str() {
        let n = names
            .iter()
            .position(|x| x.eq_ignore_ascii_case(name))
            .ok_or_else(|| DecodeError::Json(format!("`{field}` {name:?} is not one of {}", names.join(", "))))?;
        *v = serde_json::Value::from(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
        assert!(matches!(gunzip(&bomb, 1 << 20), Err(DecodeError::TooLarge(true))));
        assert_eq!(gunzip(&bomb, 4 << 20).unwrap().len(), 4 << 20);
        assert!(matches!(gunzip(b"not gzip", 1 << 20), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn json_accepts_enum_names_and_numbers() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"}},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":2,"status":{"code":1},
             "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let req = json(body).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!((spans[0].kind, spans[0].status.as_ref().unwrap().code), (3, 2));
        assert_eq!((spans[1].kind, spans[1].status.as_ref().unwrap().code), (2, 1));
        assert_eq!(spans[0].trace_id.len(), 16);
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, why) in [
            (&br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SIDEWAYS"}]}]}]}"#[..], "`kind` \"SIDEWAYS\""),
            (br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#, "OTLP/JSON"),
            (br#"{"resourceSpans":"#, "OTLP/JSON"),
            (br#"[1]"#, "JSON object"),
            (br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":true}]}]}]}"#, "OTLP/JSON"),
        ] {
            let e = json(body).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = protobuf(&[0x0a, 0xff, 0xff, 0x03]).unwrap_err().to_string();
        assert!(e.contains("protobuf"), "{e}");
    }
}
