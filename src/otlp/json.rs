//! OTLP/JSON: the protobuf JSON mapping with hex trace and span ids, translated to and
//! from the encoded protobuf the rest of the agent carries.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::Value;

use super::Signal;

/// Converts an OTLP/JSON request body into the encoded protobuf request. Field names are
/// accepted in lowerCamelCase (the spec) and snake_case (what many hand-written payloads use).
pub fn json_to_proto(signal: Signal, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    camel_case_keys(&mut value);
    let encoded = match signal {
        Signal::Traces => decode_json::<ExportTraceServiceRequest>(value)?.encode_to_vec(),
        Signal::Metrics => decode_json::<ExportMetricsServiceRequest>(value)?.encode_to_vec(),
        Signal::Logs => decode_json::<ExportLogsServiceRequest>(value)?.encode_to_vec(),
    };
    Ok(encoded)
}

/// Renders an encoded request as one line of OTLP/JSON.
pub fn proto_to_json(signal: Signal, encoded: &[u8]) -> Result<String, String> {
    fn render<M: Message + Default + serde::Serialize>(encoded: &[u8]) -> Result<String, String> {
        let message = M::decode(encoded).map_err(|e| format!("malformed protobuf: {e}"))?;
        serde_json::to_string(&message).map_err(|e| e.to_string())
    }
    match signal {
        Signal::Traces => render::<ExportTraceServiceRequest>(encoded),
        Signal::Metrics => render::<ExportMetricsServiceRequest>(encoded),
        Signal::Logs => render::<ExportLogsServiceRequest>(encoded),
    }
}

/// Decodes an OTLP/JSON export response body into its protobuf encoding.
pub fn response_json_to_proto(signal: Signal, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    camel_case_keys(&mut value);
    Ok(match signal {
        Signal::Traces => decode_json::<ExportTraceServiceResponse>(value)?.encode_to_vec(),
        Signal::Metrics => decode_json::<ExportMetricsServiceResponse>(value)?.encode_to_vec(),
        Signal::Logs => decode_json::<ExportLogsServiceResponse>(value)?.encode_to_vec(),
    })
}

/// Renders an encoded export response as OTLP/JSON.
pub fn response_proto_to_json(signal: Signal, encoded: &[u8]) -> String {
    fn render<M: Message + Default + serde::Serialize>(encoded: &[u8]) -> String {
        M::decode(encoded)
            .ok()
            .and_then(|m| serde_json::to_string(&m).ok())
            .unwrap_or_else(|| "{}".to_string())
    }
    match signal {
        Signal::Traces => render::<ExportTraceServiceResponse>(encoded),
        Signal::Metrics => render::<ExportMetricsServiceResponse>(encoded),
        Signal::Logs => render::<ExportLogsServiceResponse>(encoded),
    }
}

fn decode_json<M: serde::de::DeserializeOwned>(value: Value) -> Result<M, String> {
    serde_json::from_value(value).map_err(|e| format!("invalid OTLP/JSON: {e}"))
}

/// Object keys in OTLP/JSON are always field names (attribute keys are values), so every
/// key can be normalised without touching user data.
fn camel_case_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('_')) {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    camel_case_keys(&mut v);
                    map.insert(to_camel(&key), v);
                }
            } else {
                map.values_mut().for_each(camel_case_keys);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(camel_case_keys),
        _ => {}
    }
}

fn to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_TRACES: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","kind":2,"attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}]}]}]}]}"#;

    #[test]
    fn spec_trace_example_round_trips() {
        let encoded = json_to_proto(Signal::Traces, SPEC_TRACES.as_bytes()).unwrap();
        let req = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert_eq!(span.kind, 2);
        let json = proto_to_json(Signal::Traces, &encoded).unwrap();
        assert!(json.contains("5b8efff798038103d269b633813fc60c"), "{json}");
    }

    #[test]
    fn snake_case_fields_are_accepted() {
        let body = r#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","name":"x","start_time_unix_nano":1}]}]}]}"#;
        let encoded = json_to_proto(Signal::Traces, body.as_bytes()).unwrap();
        let req = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans[0].name, "x");
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(json_to_proto(Signal::Logs, b"{not json").is_err());
        assert!(
            json_to_proto(
                Signal::Traces,
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#
            )
            .is_err()
        );
    }
}
