//! OTLP/JSON: the protobuf JSON mapping with hex trace and span ids, transcoded to and from
//! the encoded protobuf the rest of the agent carries.
//!
//! Both directions are driven by a static table of the OTLP messages ([`schema`]) and work on
//! the wire format directly: JSON is streamed through serde_json into protobuf bytes, and
//! protobuf bytes are walked to write JSON text. Nothing is decoded into message structs, so
//! no value can be dropped or rounded on the way.
//!
//! Reading JSON follows the collector (protojson with `DiscardUnknown`): field names in
//! lowerCamelCase or snake_case; unknown fields ignored; `null` is an absent field; integers
//! as numbers or decimal strings; doubles as numbers, numeric strings, or "NaN", "Infinity"
//! and "-Infinity"; enums as numbers or value names; trace and span ids as 32 and 16 hex
//! digits (either case; "" is an absent id); other bytes as base64 (standard or URL-safe,
//! padding optional). Any other value is an error naming its JSON path.

mod from_json;
mod schema;
mod to_json;

#[cfg(test)]
mod tests;

use super::Signal;

/// Converts an OTLP/JSON export request body into the encoded protobuf request.
pub fn json_to_proto(signal: Signal, body: &[u8]) -> Result<Vec<u8>, String> {
    from_json::encode(schema::request(signal), body)
}

/// Renders an encoded export request as one line of OTLP/JSON.
pub fn proto_to_json(signal: Signal, encoded: &[u8]) -> Result<String, String> {
    to_json::render(schema::request(signal), encoded)
}

/// Converts an OTLP/JSON export response body into its protobuf encoding.
pub fn response_json_to_proto(signal: Signal, body: &[u8]) -> Result<Vec<u8>, String> {
    from_json::encode(schema::response(signal), body)
}

/// Renders an encoded export response as OTLP/JSON; a full success (no partial success
/// reported) is `{}`. Malformed input also renders as `{}`.
pub fn response_proto_to_json(signal: Signal, encoded: &[u8]) -> String {
    to_json::render(schema::response(signal), encoded).unwrap_or_else(|_| "{}".to_string())
}
