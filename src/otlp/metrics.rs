//! OTLP metrics: aop keeps none (`OTLP.md`, Logs: "aop keeps no metrics"), and says so in a
//! partial success that counts the request's data points, so that an exporter configured for
//! metrics neither retries nor logs an error for ever. Counting reads the request as cut by
//! `split` (at most [`MAX_ITEMS`](super::MAX_ITEMS) metrics, each at most
//! [`MAX_ITEM_BYTES`](super::MAX_ITEM_BYTES)), never decoding a data point.

use super::decode::{DecodeError, Encoding, MAX_ITEMS, MAX_ITEM_BYTES};
use super::split;
use serde::Deserialize;

/// What a metrics request held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Points {
    pub points: usize,
    pub metrics: usize,
    /// Metrics past the ones read, whose points are not counted.
    pub unread: usize,
}

impl Points {
    /// The partial success's message.
    pub fn message(&self) -> String {
        let mut m = format!("aop keeps no metrics: {} data points of {} metrics not stored", self.points, self.metrics);
        if self.unread > 0 {
            m.push_str(&format!(" ({} metrics past the first {MAX_ITEMS} not counted)", self.unread));
        }
        m
    }
}

/// Metric's data fields (gauge, sum, histogram, exponential histogram, summary), each holding its
/// points in field 1.
const DATA: [u64; 5] = [5, 7, 9, 10, 11];

pub fn data_points(body: &[u8], encoding: Encoding) -> Result<Points, DecodeError> {
    const REQUEST: &str = "ExportMetricsServiceRequest";
    let cut = match encoding {
        Encoding::Protobuf => {
            split::protobuf(body, MAX_ITEMS).map_err(|e| DecodeError::Protobuf(format!("{REQUEST}: {e}")))?
        }
        Encoding::Json => {
            let text =
                std::str::from_utf8(body).map_err(|e| DecodeError::Json(format!("{REQUEST}: not UTF-8: {e}")))?;
            split::json(text, &split::METRICS, MAX_ITEMS).map_err(|e| DecodeError::Json(format!("{REQUEST}: {e}")))?
        }
    };
    let points = cut
        .items
        .iter()
        .filter(|p| p.bytes.len() <= MAX_ITEM_BYTES)
        .map(|p| match encoding {
            Encoding::Protobuf => split::count_nested(p.bytes, &DATA, 1),
            Encoding::Json => json_points(p.bytes),
        })
        .sum();
    Ok(Points { points, metrics: cut.total, unread: cut.total - cut.items.len() })
}

/// The points of one OTLP/JSON metric, counted without being kept: a `Vec` of `IgnoredAny`
/// holds nothing.
fn json_points(text: &[u8]) -> usize {
    #[derive(Deserialize, Default)]
    struct Data {
        #[serde(default, rename = "dataPoints", alias = "data_points")]
        points: Vec<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Metric {
        #[serde(default)]
        gauge: Option<Data>,
        #[serde(default)]
        sum: Option<Data>,
        #[serde(default)]
        histogram: Option<Data>,
        #[serde(default, rename = "exponentialHistogram", alias = "exponential_histogram")]
        exponential: Option<Data>,
        #[serde(default)]
        summary: Option<Data>,
    }
    serde_json::from_slice::<Metric>(text).map_or(0, |m| {
        [m.gauge, m.sum, m.histogram, m.exponential, m.summary].into_iter().flatten().map(|d| d.points.len()).sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    #[test]
    fn points_are_counted_in_both_encodings() {
        let metric = |name: &str, data| Metric { name: name.into(), data: Some(data), ..Default::default() };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric("a", Data::Gauge(Gauge { data_points: vec![NumberDataPoint::default(); 3] })),
                        metric(
                            "b",
                            Data::Sum(Sum { data_points: vec![NumberDataPoint::default(); 2], ..Default::default() }),
                        ),
                        metric(
                            "c",
                            Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint::default()],
                                ..Default::default()
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let proto = data_points(&prost::Message::encode_to_vec(&req), Encoding::Protobuf).unwrap();
        assert_eq!(proto, Points { points: 6, metrics: 3, unread: 0 });
        let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"a","gauge":{"dataPoints":[{},{},{}]}},
            {"name":"b","sum":{"dataPoints":[{},{}],"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE"}},
            {"name":"c","histogram":{"dataPoints":[{"count":"1"}]}}]}]}]}"#;
        assert_eq!(data_points(json, Encoding::Json).unwrap(), proto);
        assert!(proto.message().contains("6 data points of 3 metrics"));
        assert!(data_points(b"{\"resourceMetrics\":", Encoding::Json).is_err());
    }
}
