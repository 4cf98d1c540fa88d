//! The OTLP messages reachable from the export requests and responses, as a static table that
//! drives both directions of the JSON transcoder.
//!
//! Field numbers and types follow the `.proto` files of opentelemetry-proto 1.x (common,
//! resource, trace, metrics, logs and the collector services). Within a message, fields are
//! listed in the order prost encodes them: by field number, except that the members of a
//! `oneof` sit together at the position of the lowest number among them. Rendering JSON in this
//! order and encoding JSON in the order it arrives makes protobuf → JSON → protobuf reproduce
//! prost's bytes exactly.

use crate::otlp::Signal;

/// What a field holds, which fixes its wire type and its JSON form.
#[derive(Clone, Copy)]
pub enum Kind {
    Message(&'static Message),
    String,
    /// Base64 in JSON.
    Bytes,
    /// 16 bytes, hex in JSON.
    TraceId,
    /// 8 bytes, hex in JSON.
    SpanId,
    Bool,
    Int32,
    Int64,
    Uint32,
    Sint32,
    Uint64,
    Fixed32,
    Fixed64,
    Sfixed64,
    Double,
    Enum(&'static [(&'static str, i32)]),
}

pub const WIRE_VARINT: u8 = 0;
pub const WIRE_I64: u8 = 1;
pub const WIRE_LEN: u8 = 2;
pub const WIRE_I32: u8 = 5;

impl Kind {
    pub fn wire_type(self) -> u8 {
        match self {
            Kind::Message(_) | Kind::String | Kind::Bytes | Kind::TraceId | Kind::SpanId => {
                WIRE_LEN
            }
            Kind::Bool
            | Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Sint32
            | Kind::Uint64
            | Kind::Enum(_) => WIRE_VARINT,
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => WIRE_I64,
            Kind::Fixed32 => WIRE_I32,
        }
    }

    /// Numeric kinds; repeated ones are packed.
    pub fn packable(self) -> bool {
        self.wire_type() != WIRE_LEN
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Card {
    /// proto3 implicit presence: the default value is not encoded and not rendered.
    Singular,
    /// Explicit presence (`optional`, a message field, a `oneof` member): encoded and
    /// rendered whenever set, also when it holds the default value.
    Present,
    Repeated,
}

pub struct Field {
    pub number: u32,
    /// lowerCamelCase, as the protobuf JSON mapping names it.
    pub json: &'static str,
    /// snake_case, as in the `.proto` file.
    pub proto: &'static str,
    pub kind: Kind,
    pub card: Card,
    /// Member of the message's (only) `oneof`.
    pub oneof: bool,
}

impl Field {
    pub fn repeated(&self) -> bool {
        self.card == Card::Repeated
    }

    pub fn packed(&self) -> bool {
        self.card == Card::Repeated && self.kind.packable()
    }
}

pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

impl Message {
    /// The field a JSON key names, in either spelling.
    #[inline]
    pub fn by_name(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.json == key || f.proto == key)
    }

    #[inline]
    pub fn by_number(&self, number: u64) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| u64::from(f.number) == number)
    }
}

const fn field(number: u32, json: &'static str, proto: &'static str, kind: Kind) -> Field {
    let card = match kind {
        Kind::Message(_) => Card::Present,
        _ => Card::Singular,
    };
    Field {
        number,
        json,
        proto,
        kind,
        card,
        oneof: false,
    }
}

const fn optional(number: u32, json: &'static str, proto: &'static str, kind: Kind) -> Field {
    Field {
        card: Card::Present,
        ..field(number, json, proto, kind)
    }
}

const fn repeated(number: u32, json: &'static str, proto: &'static str, kind: Kind) -> Field {
    Field {
        card: Card::Repeated,
        ..field(number, json, proto, kind)
    }
}

const fn oneof(number: u32, json: &'static str, proto: &'static str, kind: Kind) -> Field {
    Field {
        card: Card::Present,
        oneof: true,
        ..field(number, json, proto, kind)
    }
}

use Kind::*;

// ---- opentelemetry.proto.common.v1 -------------------------------------------------------

pub static ANY_VALUE: Message = Message {
    name: "AnyValue",
    fields: &[
        oneof(1, "stringValue", "string_value", String),
        oneof(2, "boolValue", "bool_value", Bool),
        oneof(3, "intValue", "int_value", Int64),
        oneof(4, "doubleValue", "double_value", Double),
        oneof(5, "arrayValue", "array_value", Message(&ARRAY_VALUE)),
        oneof(6, "kvlistValue", "kvlist_value", Message(&KEY_VALUE_LIST)),
        oneof(7, "bytesValue", "bytes_value", Bytes),
        oneof(8, "stringValueStrindex", "string_value_strindex", Int32),
    ],
};

pub static ARRAY_VALUE: Message = Message {
    name: "ArrayValue",
    fields: &[repeated(1, "values", "values", Message(&ANY_VALUE))],
};

pub static KEY_VALUE_LIST: Message = Message {
    name: "KeyValueList",
    fields: &[repeated(1, "values", "values", Message(&KEY_VALUE))],
};

pub static KEY_VALUE: Message = Message {
    name: "KeyValue",
    fields: &[
        field(1, "key", "key", String),
        field(2, "value", "value", Message(&ANY_VALUE)),
        field(3, "keyStrindex", "key_strindex", Int32),
    ],
};

const ATTRIBUTES: Kind = Message(&KEY_VALUE);

pub static INSTRUMENTATION_SCOPE: Message = Message {
    name: "InstrumentationScope",
    fields: &[
        field(1, "name", "name", String),
        field(2, "version", "version", String),
        repeated(3, "attributes", "attributes", ATTRIBUTES),
        field(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
    ],
};

pub static ENTITY_REF: Message = Message {
    name: "EntityRef",
    fields: &[
        field(1, "schemaUrl", "schema_url", String),
        field(2, "type", "type", String),
        repeated(3, "idKeys", "id_keys", String),
        repeated(4, "descriptionKeys", "description_keys", String),
    ],
};

// ---- opentelemetry.proto.resource.v1 -----------------------------------------------------

pub static RESOURCE: Message = Message {
    name: "Resource",
    fields: &[
        repeated(1, "attributes", "attributes", ATTRIBUTES),
        field(
            2,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
        repeated(3, "entityRefs", "entity_refs", Message(&ENTITY_REF)),
    ],
};

// ---- opentelemetry.proto.trace.v1 --------------------------------------------------------

pub static SPAN_KIND: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];

pub static STATUS_CODE: &[(&str, i32)] = &[
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];

pub static RESOURCE_SPANS: Message = Message {
    name: "ResourceSpans",
    fields: &[
        field(1, "resource", "resource", Message(&RESOURCE)),
        repeated(2, "scopeSpans", "scope_spans", Message(&SCOPE_SPANS)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static SCOPE_SPANS: Message = Message {
    name: "ScopeSpans",
    fields: &[
        field(1, "scope", "scope", Message(&INSTRUMENTATION_SCOPE)),
        repeated(2, "spans", "spans", Message(&SPAN)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static SPAN: Message = Message {
    name: "Span",
    fields: &[
        field(1, "traceId", "trace_id", TraceId),
        field(2, "spanId", "span_id", SpanId),
        field(3, "traceState", "trace_state", String),
        field(4, "parentSpanId", "parent_span_id", SpanId),
        field(5, "name", "name", String),
        field(6, "kind", "kind", Enum(SPAN_KIND)),
        field(7, "startTimeUnixNano", "start_time_unix_nano", Fixed64),
        field(8, "endTimeUnixNano", "end_time_unix_nano", Fixed64),
        repeated(9, "attributes", "attributes", ATTRIBUTES),
        field(
            10,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
        repeated(11, "events", "events", Message(&SPAN_EVENT)),
        field(12, "droppedEventsCount", "dropped_events_count", Uint32),
        repeated(13, "links", "links", Message(&SPAN_LINK)),
        field(14, "droppedLinksCount", "dropped_links_count", Uint32),
        field(15, "status", "status", Message(&STATUS)),
        field(16, "flags", "flags", Fixed32),
    ],
};

pub static SPAN_EVENT: Message = Message {
    name: "Span.Event",
    fields: &[
        field(1, "timeUnixNano", "time_unix_nano", Fixed64),
        field(2, "name", "name", String),
        repeated(3, "attributes", "attributes", ATTRIBUTES),
        field(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
    ],
};

pub static SPAN_LINK: Message = Message {
    name: "Span.Link",
    fields: &[
        field(1, "traceId", "trace_id", TraceId),
        field(2, "spanId", "span_id", SpanId),
        field(3, "traceState", "trace_state", String),
        repeated(4, "attributes", "attributes", ATTRIBUTES),
        field(
            5,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
        field(6, "flags", "flags", Fixed32),
    ],
};

pub static STATUS: Message = Message {
    name: "Status",
    fields: &[
        // 1 is reserved.
        field(2, "message", "message", String),
        field(3, "code", "code", Enum(STATUS_CODE)),
    ],
};

pub static EXPORT_TRACE_SERVICE_REQUEST: Message = Message {
    name: "ExportTraceServiceRequest",
    fields: &[repeated(
        1,
        "resourceSpans",
        "resource_spans",
        Message(&RESOURCE_SPANS),
    )],
};

pub static EXPORT_TRACE_SERVICE_RESPONSE: Message = Message {
    name: "ExportTraceServiceResponse",
    fields: &[field(
        1,
        "partialSuccess",
        "partial_success",
        Message(&EXPORT_TRACE_PARTIAL_SUCCESS),
    )],
};

pub static EXPORT_TRACE_PARTIAL_SUCCESS: Message = Message {
    name: "ExportTracePartialSuccess",
    fields: &[
        field(1, "rejectedSpans", "rejected_spans", Int64),
        field(2, "errorMessage", "error_message", String),
    ],
};

// ---- opentelemetry.proto.metrics.v1 ------------------------------------------------------

pub static AGGREGATION_TEMPORALITY: &[(&str, i32)] = &[
    ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
    ("AGGREGATION_TEMPORALITY_DELTA", 1),
    ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
];

pub static RESOURCE_METRICS: Message = Message {
    name: "ResourceMetrics",
    fields: &[
        field(1, "resource", "resource", Message(&RESOURCE)),
        repeated(2, "scopeMetrics", "scope_metrics", Message(&SCOPE_METRICS)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static SCOPE_METRICS: Message = Message {
    name: "ScopeMetrics",
    fields: &[
        field(1, "scope", "scope", Message(&INSTRUMENTATION_SCOPE)),
        repeated(2, "metrics", "metrics", Message(&METRIC)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static METRIC: Message = Message {
    name: "Metric",
    fields: &[
        field(1, "name", "name", String),
        field(2, "description", "description", String),
        field(3, "unit", "unit", String),
        // 4, 6 and 8 are reserved.
        oneof(5, "gauge", "gauge", Message(&GAUGE)),
        oneof(7, "sum", "sum", Message(&SUM)),
        oneof(9, "histogram", "histogram", Message(&HISTOGRAM)),
        oneof(
            10,
            "exponentialHistogram",
            "exponential_histogram",
            Message(&EXPONENTIAL_HISTOGRAM),
        ),
        oneof(11, "summary", "summary", Message(&SUMMARY)),
        repeated(12, "metadata", "metadata", ATTRIBUTES),
    ],
};

pub static GAUGE: Message = Message {
    name: "Gauge",
    fields: &[repeated(
        1,
        "dataPoints",
        "data_points",
        Message(&NUMBER_DATA_POINT),
    )],
};

pub static SUM: Message = Message {
    name: "Sum",
    fields: &[
        repeated(1, "dataPoints", "data_points", Message(&NUMBER_DATA_POINT)),
        field(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Enum(AGGREGATION_TEMPORALITY),
        ),
        field(3, "isMonotonic", "is_monotonic", Bool),
    ],
};

pub static HISTOGRAM: Message = Message {
    name: "Histogram",
    fields: &[
        repeated(
            1,
            "dataPoints",
            "data_points",
            Message(&HISTOGRAM_DATA_POINT),
        ),
        field(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Enum(AGGREGATION_TEMPORALITY),
        ),
    ],
};

pub static EXPONENTIAL_HISTOGRAM: Message = Message {
    name: "ExponentialHistogram",
    fields: &[
        repeated(
            1,
            "dataPoints",
            "data_points",
            Message(&EXPONENTIAL_HISTOGRAM_DATA_POINT),
        ),
        field(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Enum(AGGREGATION_TEMPORALITY),
        ),
    ],
};

pub static SUMMARY: Message = Message {
    name: "Summary",
    fields: &[repeated(
        1,
        "dataPoints",
        "data_points",
        Message(&SUMMARY_DATA_POINT),
    )],
};

pub static NUMBER_DATA_POINT: Message = Message {
    name: "NumberDataPoint",
    fields: &[
        // 1 is reserved.
        field(2, "startTimeUnixNano", "start_time_unix_nano", Fixed64),
        field(3, "timeUnixNano", "time_unix_nano", Fixed64),
        oneof(4, "asDouble", "as_double", Double),
        oneof(6, "asInt", "as_int", Sfixed64),
        repeated(5, "exemplars", "exemplars", Message(&EXEMPLAR)),
        repeated(7, "attributes", "attributes", ATTRIBUTES),
        field(8, "flags", "flags", Uint32),
    ],
};

pub static HISTOGRAM_DATA_POINT: Message = Message {
    name: "HistogramDataPoint",
    fields: &[
        // 1 is reserved.
        field(2, "startTimeUnixNano", "start_time_unix_nano", Fixed64),
        field(3, "timeUnixNano", "time_unix_nano", Fixed64),
        field(4, "count", "count", Fixed64),
        optional(5, "sum", "sum", Double),
        repeated(6, "bucketCounts", "bucket_counts", Fixed64),
        repeated(7, "explicitBounds", "explicit_bounds", Double),
        repeated(8, "exemplars", "exemplars", Message(&EXEMPLAR)),
        repeated(9, "attributes", "attributes", ATTRIBUTES),
        field(10, "flags", "flags", Uint32),
        optional(11, "min", "min", Double),
        optional(12, "max", "max", Double),
    ],
};

pub static EXPONENTIAL_HISTOGRAM_DATA_POINT: Message = Message {
    name: "ExponentialHistogramDataPoint",
    fields: &[
        repeated(1, "attributes", "attributes", ATTRIBUTES),
        field(2, "startTimeUnixNano", "start_time_unix_nano", Fixed64),
        field(3, "timeUnixNano", "time_unix_nano", Fixed64),
        field(4, "count", "count", Fixed64),
        optional(5, "sum", "sum", Double),
        field(6, "scale", "scale", Sint32),
        field(7, "zeroCount", "zero_count", Fixed64),
        field(8, "positive", "positive", Message(&BUCKETS)),
        field(9, "negative", "negative", Message(&BUCKETS)),
        field(10, "flags", "flags", Uint32),
        repeated(11, "exemplars", "exemplars", Message(&EXEMPLAR)),
        optional(12, "min", "min", Double),
        optional(13, "max", "max", Double),
        field(14, "zeroThreshold", "zero_threshold", Double),
    ],
};

pub static BUCKETS: Message = Message {
    name: "ExponentialHistogramDataPoint.Buckets",
    fields: &[
        field(1, "offset", "offset", Sint32),
        repeated(2, "bucketCounts", "bucket_counts", Uint64),
    ],
};

pub static SUMMARY_DATA_POINT: Message = Message {
    name: "SummaryDataPoint",
    fields: &[
        // 1 is reserved.
        field(2, "startTimeUnixNano", "start_time_unix_nano", Fixed64),
        field(3, "timeUnixNano", "time_unix_nano", Fixed64),
        field(4, "count", "count", Fixed64),
        field(5, "sum", "sum", Double),
        repeated(
            6,
            "quantileValues",
            "quantile_values",
            Message(&VALUE_AT_QUANTILE),
        ),
        repeated(7, "attributes", "attributes", ATTRIBUTES),
        field(8, "flags", "flags", Uint32),
    ],
};

pub static VALUE_AT_QUANTILE: Message = Message {
    name: "SummaryDataPoint.ValueAtQuantile",
    fields: &[
        field(1, "quantile", "quantile", Double),
        field(2, "value", "value", Double),
    ],
};

pub static EXEMPLAR: Message = Message {
    name: "Exemplar",
    fields: &[
        // 1 is reserved.
        field(2, "timeUnixNano", "time_unix_nano", Fixed64),
        oneof(3, "asDouble", "as_double", Double),
        oneof(6, "asInt", "as_int", Sfixed64),
        field(4, "spanId", "span_id", SpanId),
        field(5, "traceId", "trace_id", TraceId),
        repeated(7, "filteredAttributes", "filtered_attributes", ATTRIBUTES),
    ],
};

pub static EXPORT_METRICS_SERVICE_REQUEST: Message = Message {
    name: "ExportMetricsServiceRequest",
    fields: &[repeated(
        1,
        "resourceMetrics",
        "resource_metrics",
        Message(&RESOURCE_METRICS),
    )],
};

pub static EXPORT_METRICS_SERVICE_RESPONSE: Message = Message {
    name: "ExportMetricsServiceResponse",
    fields: &[field(
        1,
        "partialSuccess",
        "partial_success",
        Message(&EXPORT_METRICS_PARTIAL_SUCCESS),
    )],
};

pub static EXPORT_METRICS_PARTIAL_SUCCESS: Message = Message {
    name: "ExportMetricsPartialSuccess",
    fields: &[
        field(1, "rejectedDataPoints", "rejected_data_points", Int64),
        field(2, "errorMessage", "error_message", String),
    ],
};

// ---- opentelemetry.proto.logs.v1 ---------------------------------------------------------

pub static SEVERITY_NUMBER: &[(&str, i32)] = &[
    ("SEVERITY_NUMBER_UNSPECIFIED", 0),
    ("SEVERITY_NUMBER_TRACE", 1),
    ("SEVERITY_NUMBER_TRACE2", 2),
    ("SEVERITY_NUMBER_TRACE3", 3),
    ("SEVERITY_NUMBER_TRACE4", 4),
    ("SEVERITY_NUMBER_DEBUG", 5),
    ("SEVERITY_NUMBER_DEBUG2", 6),
    ("SEVERITY_NUMBER_DEBUG3", 7),
    ("SEVERITY_NUMBER_DEBUG4", 8),
    ("SEVERITY_NUMBER_INFO", 9),
    ("SEVERITY_NUMBER_INFO2", 10),
    ("SEVERITY_NUMBER_INFO3", 11),
    ("SEVERITY_NUMBER_INFO4", 12),
    ("SEVERITY_NUMBER_WARN", 13),
    ("SEVERITY_NUMBER_WARN2", 14),
    ("SEVERITY_NUMBER_WARN3", 15),
    ("SEVERITY_NUMBER_WARN4", 16),
    ("SEVERITY_NUMBER_ERROR", 17),
    ("SEVERITY_NUMBER_ERROR2", 18),
    ("SEVERITY_NUMBER_ERROR3", 19),
    ("SEVERITY_NUMBER_ERROR4", 20),
    ("SEVERITY_NUMBER_FATAL", 21),
    ("SEVERITY_NUMBER_FATAL2", 22),
    ("SEVERITY_NUMBER_FATAL3", 23),
    ("SEVERITY_NUMBER_FATAL4", 24),
];

pub static RESOURCE_LOGS: Message = Message {
    name: "ResourceLogs",
    fields: &[
        field(1, "resource", "resource", Message(&RESOURCE)),
        repeated(2, "scopeLogs", "scope_logs", Message(&SCOPE_LOGS)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static SCOPE_LOGS: Message = Message {
    name: "ScopeLogs",
    fields: &[
        field(1, "scope", "scope", Message(&INSTRUMENTATION_SCOPE)),
        repeated(2, "logRecords", "log_records", Message(&LOG_RECORD)),
        field(3, "schemaUrl", "schema_url", String),
    ],
};

pub static LOG_RECORD: Message = Message {
    name: "LogRecord",
    fields: &[
        field(1, "timeUnixNano", "time_unix_nano", Fixed64),
        field(
            2,
            "severityNumber",
            "severity_number",
            Enum(SEVERITY_NUMBER),
        ),
        field(3, "severityText", "severity_text", String),
        // 4 is reserved.
        field(5, "body", "body", Message(&ANY_VALUE)),
        repeated(6, "attributes", "attributes", ATTRIBUTES),
        field(
            7,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Uint32,
        ),
        field(8, "flags", "flags", Fixed32),
        field(9, "traceId", "trace_id", TraceId),
        field(10, "spanId", "span_id", SpanId),
        field(
            11,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            Fixed64,
        ),
        field(12, "eventName", "event_name", String),
    ],
};

pub static EXPORT_LOGS_SERVICE_REQUEST: Message = Message {
    name: "ExportLogsServiceRequest",
    fields: &[repeated(
        1,
        "resourceLogs",
        "resource_logs",
        Message(&RESOURCE_LOGS),
    )],
};

pub static EXPORT_LOGS_SERVICE_RESPONSE: Message = Message {
    name: "ExportLogsServiceResponse",
    fields: &[field(
        1,
        "partialSuccess",
        "partial_success",
        Message(&EXPORT_LOGS_PARTIAL_SUCCESS),
    )],
};

pub static EXPORT_LOGS_PARTIAL_SUCCESS: Message = Message {
    name: "ExportLogsPartialSuccess",
    fields: &[
        field(1, "rejectedLogRecords", "rejected_log_records", Int64),
        field(2, "errorMessage", "error_message", String),
    ],
};

pub fn request(signal: Signal) -> &'static Message {
    match signal {
        Signal::Traces => &EXPORT_TRACE_SERVICE_REQUEST,
        Signal::Metrics => &EXPORT_METRICS_SERVICE_REQUEST,
        Signal::Logs => &EXPORT_LOGS_SERVICE_REQUEST,
    }
}

pub fn response(signal: Signal) -> &'static Message {
    match signal {
        Signal::Traces => &EXPORT_TRACE_SERVICE_RESPONSE,
        Signal::Metrics => &EXPORT_METRICS_SERVICE_RESPONSE,
        Signal::Logs => &EXPORT_LOGS_SERVICE_RESPONSE,
    }
}
