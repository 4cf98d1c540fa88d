//! The collector's policy test cases (same inputs, same decisions), its decision rule, and the
//! processor's timing, bounds, late spans and output.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue as PbAnyValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::config::{PolicyConfig, TailSamplingConfig};
use super::policy::{Clock, Decision, Policies, Policy, TraceView, hash_trace_id};
use super::view::SpanFacts;
use super::*;
use crate::config::node;
use crate::otlp::{Batch, Signal};
use crate::telemetry::Registry;

use Decision::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(PbAnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn boolean(v: bool) -> any_value::Value {
    any_value::Value::BoolValue(v)
}

fn tid(n: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id[0] = 1;
    id
}

fn span(trace: TraceId, n: u8) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![n.max(1); 8],
        parent_span_id: if n == 0 { Vec::new() } else { vec![1; 8] },
        name: format!("span-{n}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_001_000_000,
        ..Default::default()
    }
}

fn with_status(mut s: Span, code: i32) -> Span {
    s.status = Some(Status {
        code,
        message: String::new(),
    });
    s
}

fn with_attrs(mut s: Span, attrs: Vec<KeyValue>) -> Span {
    s.attributes = attrs;
    s
}

fn timed(mut s: Span, start_ms: u64, end_ms: u64) -> Span {
    s.start_time_unix_nano = 1_000_000_000_000 + start_ms * 1_000_000;
    s.end_time_unix_nano = 1_000_000_000_000 + end_ms * 1_000_000;
    s
}

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, String> {
    let root = node::parse("test.yaml", yaml).map_err(|e| e.to_string())?;
    node::from_node::<T>(&root, "p").map_err(|e| e.to_string())
}

fn policy(yaml: &str) -> Policy {
    Policy::new(&parse::<PolicyConfig>(yaml).unwrap())
}

fn clock() -> Clock {
    Clock {
        now: Instant::now(),
        second: 0,
    }
}

/// Evaluates `p` over spans with the given resource attributes; `span_count` as given.
fn eval_counted(
    p: &mut Policy,
    resource: Vec<KeyValue>,
    spans: &[Span],
    span_count: u64,
    at: Clock,
) -> Decision {
    let raws: Vec<Vec<u8>> = spans.iter().map(Message::encode_to_vec).collect();
    let facts: Vec<SpanFacts<'_>> = raws.iter().map(|r| SpanFacts::parse(r).unwrap()).collect();
    let res = Resource {
        attributes: resource,
        ..Default::default()
    }
    .encode_to_vec();
    let resources = [res.as_slice()];
    let id = tid(1);
    let view = TraceView {
        trace_id: &id,
        spans: &facts,
        resources: &resources,
        span_count,
        size_bytes: raws.iter().map(Vec::len).sum::<usize>() as u64,
    };
    p.evaluate(&view, at).unwrap()
}

fn eval(p: &mut Policy, resource: Vec<KeyValue>, spans: &[Span]) -> Decision {
    eval_counted(p, resource, spans, spans.len() as u64, clock())
}

fn one_span_with(attrs: Vec<KeyValue>) -> Vec<Span> {
    vec![with_attrs(span(tid(1), 0), attrs)]
}

// ---------------------------------------------------------------------------------------------
// Policies: the collector's test cases
// ---------------------------------------------------------------------------------------------

#[test]
fn latency_unbounded_is_an_exclusive_lower_bound() {
    // latency_test.go TestEvaluate_Latency, with threshold_ms exclusive since collector PR #49595.
    let mut p = policy("{name: l, type: latency, latency: {threshold_ms: 5000}}");
    let t = tid(1);
    assert_eq!(
        eval(&mut p, vec![], &[timed(span(t, 0), 0, 4500)]),
        NotSampled
    );
    assert_eq!(
        eval(&mut p, vec![], &[timed(span(t, 0), 0, 5000)]),
        NotSampled
    );
    assert_eq!(eval(&mut p, vec![], &[timed(span(t, 0), 0, 5001)]), Sampled);
    let two = [timed(span(t, 0), 0, 3000), timed(span(t, 1), 2500, 5500)];
    assert_eq!(eval(&mut p, vec![], &two), Sampled);
}

#[test]
fn latency_bounded() {
    // TestEvaluate_Bounded_Latency (5000, 10000).
    let mut p = policy(
        "{name: l, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}",
    );
    let t = tid(1);
    for (ms, want) in [
        (4500, NotSampled),
        (5000, NotSampled),
        (5001, Sampled),
        (10001, NotSampled),
        (10000, Sampled),
    ] {
        assert_eq!(
            eval(&mut p, vec![], &[timed(span(t, 0), 0, ms)]),
            want,
            "{ms}"
        );
    }
    let two = [timed(span(t, 0), 0, 3000), timed(span(t, 1), 2500, 5500)];
    assert_eq!(eval(&mut p, vec![], &two), Sampled);
    // As the collector, the running duration is tested after each span: a first span within
    // the bounds samples a trace whose whole duration is above the upper bound.
    let long = [timed(span(t, 0), 0, 6000), timed(span(t, 1), 0, 20000)];
    assert_eq!(eval(&mut p, vec![], &long), Sampled);
}

#[test]
fn status_code_cases() {
    let t = tid(1);
    let spans = |codes: &[i32]| -> Vec<Span> {
        codes
            .iter()
            .enumerate()
            .map(|(i, c)| with_status(span(t, i as u8), *c))
            .collect()
    };
    let (unset, ok, error) = (0, 1, 2);
    let mut p = policy("{name: s, type: status_code, status_code: {status_codes: [ERROR]}}");
    assert_eq!(eval(&mut p, vec![], &spans(&[ok, unset, ok])), NotSampled);
    let mut p = policy("{name: s, type: status_code, status_code: {status_codes: [OK, ERROR]}}");
    assert_eq!(eval(&mut p, vec![], &spans(&[unset, unset])), NotSampled);
    let mut p = policy("{name: s, type: status_code, status_code: {status_codes: [UNSET]}}");
    assert_eq!(eval(&mut p, vec![], &spans(&[unset])), Sampled);
    let mut p = policy("{name: s, type: status_code, status_code: {status_codes: [OK, UNSET]}}");
    assert_eq!(eval(&mut p, vec![], &spans(&[error, ok])), Sampled);

    let err =
        parse::<PolicyConfig>("{name: s, type: status_code, status_code: {status_codes: []}}")
            .unwrap_err();
    assert!(
        err.contains("expected at least one status code to filter on"),
        "{err}"
    );
    let err = parse::<PolicyConfig>(
        "{name: s, type: status_code, status_code: {status_codes: [OK, ERR]}}",
    )
    .unwrap_err();
    assert!(
        err.contains(r#"unknown status code "ERR", supported: OK, ERROR, UNSET"#),
        "{err}"
    );
}

#[test]
fn numeric_attribute_cases() {
    // numeric_tag_filter_test.go: min MinInt32, max MaxInt32, both bounds inclusive.
    let (min, max) = (i64::from(i32::MIN), i64::from(i32::MAX));
    let yaml = |invert: bool| {
        format!(
            "{{name: n, type: numeric_attribute, numeric_attribute: {{key: example, min_value: {min}, max_value: {max}, invert_match: {invert}}}}}"
        )
    };
    let cases = [
        (
            vec![kv("non_matching", int(min))],
            NotSampled,
            InvertSampled,
        ),
        (vec![kv("example", int(min))], Sampled, InvertNotSampled),
        (vec![kv("example", int(max))], Sampled, InvertNotSampled),
        (vec![kv("example", int(min - 1))], NotSampled, InvertSampled),
        (vec![kv("example", int(max + 1))], NotSampled, InvertSampled),
    ];
    for (attrs, plain, inverted) in cases {
        let spans = one_span_with(attrs.clone());
        assert_eq!(
            eval(&mut policy(&yaml(false)), vec![], &spans),
            plain,
            "{attrs:?}"
        );
        assert_eq!(
            eval(&mut policy(&yaml(true)), vec![], &spans),
            inverted,
            "{attrs:?}"
        );
        // Resource attributes count the same.
        assert_eq!(
            eval(
                &mut policy(&yaml(false)),
                attrs.clone(),
                &one_span_with(vec![])
            ),
            plain
        );
    }
    // A single bound: the other is open.
    let mut p =
        policy("{name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 400}}");
    assert_eq!(
        eval(&mut p, vec![], &one_span_with(vec![kv("k", int(i64::MAX))])),
        Sampled
    );
    assert_eq!(
        eval(&mut p, vec![], &one_span_with(vec![kv("k", int(399))])),
        NotSampled
    );
    let err =
        parse::<PolicyConfig>("{name: n, type: numeric_attribute, numeric_attribute: {key: k}}")
            .unwrap_err();
    assert!(err.contains("needs `min_value` or `max_value`"), "{err}");
}

#[test]
fn string_attribute_cases() {
    // string_tag_filter_test.go.
    let exact = |invert: bool, values: &str| {
        policy(&format!(
            "{{name: s, type: string_attribute, string_attribute: {{key: example, values: {values}, invert_match: {invert}}}}}"
        ))
    };
    let regex = |invert: bool, values: &str| {
        policy(&format!(
            "{{name: s, type: string_attribute, string_attribute: {{key: example, values: {values}, enabled_regex_matching: true, invert_match: {invert}}}}}"
        ))
    };
    let res = |k: &str, v: &str| vec![kv(k, s(v))];
    let none = one_span_with(vec![]);
    // Non-inverted.
    assert_eq!(
        eval(
            &mut exact(false, "[value]"),
            res("non_matching", "value"),
            &none
        ),
        NotSampled
    );
    assert_eq!(
        eval(
            &mut exact(false, "[value]"),
            res("example", "non_matching"),
            &none
        ),
        NotSampled
    );
    assert_eq!(
        eval(&mut exact(false, "[value]"), res("example", "value"), &none),
        Sampled
    );
    assert_eq!(
        eval(
            &mut exact(false, "[value]"),
            vec![],
            &one_span_with(res("example", "non"))
        ),
        NotSampled
    );
    assert_eq!(
        eval(
            &mut exact(false, "[value]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        Sampled
    );
    let health = one_span_with(res("example", "grpc.health.v1.HealthCheck"));
    assert_eq!(
        eval(
            &mut regex(false, r"['v[0-9]+.HealthCheck$']"),
            vec![],
            &health
        ),
        Sampled
    );
    assert_eq!(
        eval(
            &mut regex(false, r"['v[a-z]+.HealthCheck$']"),
            vec![],
            &health
        ),
        NotSampled
    );
    assert_eq!(
        eval(
            &mut regex(false, "[value]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        Sampled
    );
    assert_eq!(
        eval(
            &mut regex(false, "[]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        NotSampled
    );
    // Inverted.
    assert_eq!(
        eval(
            &mut exact(true, "[value]"),
            res("non_matching", "value"),
            &none
        ),
        InvertSampled
    );
    assert_eq!(
        eval(
            &mut exact(true, "[value]"),
            res("example", "non_matching"),
            &none
        ),
        InvertSampled
    );
    assert_eq!(
        eval(&mut exact(true, "[value]"), res("example", "value"), &none),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut exact(true, "[value1, value]"),
            res("example", "value"),
            &none
        ),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut exact(true, "[value]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut regex(true, r"['v[0-9]+.HealthCheck$']"),
            vec![],
            &health
        ),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut regex(true, r"['^http', 'v[0-9]+.HealthCheck$', 'metrics$']"),
            vec![],
            &health
        ),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut regex(true, r"['v[a-z]+.HealthCheck$']"),
            vec![],
            &health
        ),
        InvertSampled
    );
    assert_eq!(
        eval(
            &mut regex(true, "[value]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        InvertNotSampled
    );
    assert_eq!(
        eval(
            &mut regex(true, "[]"),
            vec![],
            &one_span_with(res("example", "value"))
        ),
        InvertSampled
    );
    // Span values that are not strings read as "" and are skipped, as in the collector.
    assert_eq!(
        eval(
            &mut regex(false, "['.*']"),
            vec![],
            &one_span_with(vec![kv("example", int(1))])
        ),
        NotSampled
    );
    let err = parse::<PolicyConfig>(
        "{name: s, type: string_attribute, string_attribute: {key: k, values: ['(' ], enabled_regex_matching: true}}",
    )
    .unwrap_err();
    assert!(err.contains("is not a valid regex"), "{err}");
}

#[test]
fn boolean_attribute_cases() {
    // boolean_tag_filter_test.go (key "example", value true).
    let p = |invert: bool| {
        policy(&format!(
            "{{name: b, type: boolean_attribute, boolean_attribute: {{key: example, value: true, invert_match: {invert}}}}}"
        ))
    };
    let cases = [
        (
            vec![kv("non_matching", boolean(true))],
            NotSampled,
            InvertSampled,
        ),
        (
            vec![kv("example", boolean(false))],
            NotSampled,
            InvertSampled,
        ),
        (
            vec![kv("example", boolean(true))],
            Sampled,
            InvertNotSampled,
        ),
    ];
    for (attrs, plain, inverted) in cases {
        assert_eq!(
            eval(&mut p(false), vec![], &one_span_with(attrs.clone())),
            plain
        );
        assert_eq!(
            eval(&mut p(true), vec![], &one_span_with(attrs.clone())),
            inverted
        );
        assert_eq!(eval(&mut p(false), attrs, &one_span_with(vec![])), plain);
    }
}

#[test]
fn probabilistic_hash_is_the_collectors() {
    // Computed with the collector's algorithm (FNV-1a 64 over salt then trace id).
    let id: Vec<u8> = (1..=16).collect();
    assert_eq!(hash_trace_id("default-hash-seed", &id), 0xdbcf64d5420f4cad);
}

#[test]
fn probabilistic_rates_are_within_tolerance() {
    // probabilistic_test.go: 100k random trace ids, within ±0.2 percentage points.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let ids: Vec<TraceId> = (0..100_000).map(|_| rng.random()).collect();
    for (pct, salt, want) in [
        ("100", "", 100.0),
        ("0", "", 0.0),
        ("25", "", 25.0),
        ("33", "", 33.0),
        ("33", "test-salt", 33.0),
        ("-50", "", 0.0),
        ("150", "", 100.0),
    ] {
        let mut p = policy(&format!(
            "{{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {pct}, hash_salt: '{salt}'}}}}"
        ));
        let mut kept = 0;
        for id in &ids {
            let view = TraceView {
                trace_id: id,
                spans: &[],
                resources: &[],
                span_count: 1,
                size_bytes: 0,
            };
            if p.evaluate(&view, clock()).unwrap() == Sampled {
                kept += 1;
            }
        }
        let rate = kept as f64 / ids.len() as f64 * 100.0;
        assert!((rate - want).abs() <= 0.2, "{pct}% salt {salt:?}: {rate}");
    }
}

#[test]
fn rate_limiting_is_a_token_bucket() {
    // The collector's current limiter: x/time/rate with burst 2 × spans_per_second.
    let mut p = policy("{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 3}}");
    let t0 = Instant::now();
    let at = |ms: u64| Clock {
        now: t0 + Duration::from_millis(ms),
        second: 0,
    };
    let spans = one_span_with(vec![]);
    assert_eq!(eval_counted(&mut p, vec![], &spans, 10, at(0)), NotSampled); // above the burst
    assert_eq!(eval_counted(&mut p, vec![], &spans, 3, at(0)), Sampled); // 6 -> 3
    assert_eq!(eval_counted(&mut p, vec![], &spans, 2, at(0)), Sampled); // 3 -> 1
    assert_eq!(eval_counted(&mut p, vec![], &spans, 2, at(0)), NotSampled);
    assert_eq!(eval_counted(&mut p, vec![], &spans, 0, at(0)), Sampled);
    // One second refills three tokens.
    assert_eq!(eval_counted(&mut p, vec![], &spans, 4, at(1000)), Sampled);
    let mut b = policy(
        "{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 10}}",
    );
    assert_eq!(eval_counted(&mut b, vec![], &spans, 10, at(0)), Sampled);
}

#[test]
fn bytes_limiting_is_a_token_bucket_over_trace_size() {
    let mut p = policy("{name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 100}}");
    let t0 = Instant::now();
    let spans = one_span_with(vec![]);
    let size = spans[0].encoded_len() as u64;
    let mut kept = 0;
    for _ in 0..10 {
        if eval_counted(&mut p, vec![], &spans, 1, Clock { now: t0, second: 0 }) == Sampled {
            kept += 1;
        }
    }
    assert_eq!(kept, 200 / size);
}

#[test]
fn span_count_cases() {
    // span_count_sampler_test.go; the count is what the trace accumulated.
    let spans = one_span_with(vec![]);
    let check = |min: i32, max: i32, cases: &[(u64, Decision)]| {
        let mut p = policy(&format!(
            "{{name: c, type: span_count, span_count: {{min_spans: {min}, max_spans: {max}}}}}"
        ));
        for (n, want) in cases {
            assert_eq!(
                eval_counted(&mut p, vec![], &spans, *n, clock()),
                *want,
                "{min}..{max}: {n}"
            );
        }
    };
    check(
        3,
        0,
        &[
            (1, NotSampled),
            (3, Sampled),
            (4, Sampled),
            (2, NotSampled),
            (6, Sampled),
        ],
    );
    check(
        0,
        20,
        &[
            (21, NotSampled),
            (20, Sampled),
            (19, Sampled),
            (15, Sampled),
        ],
    );
    check(
        3,
        20,
        &[
            (1, NotSampled),
            (21, NotSampled),
            (4, Sampled),
            (2, NotSampled),
            (3, Sampled),
            (20, Sampled),
        ],
    );
}

#[test]
fn trace_state_cases() {
    // trace_state_filter_test.go (key "example").
    let p = |values: &str| {
        policy(&format!(
            "{{name: t, type: trace_state, trace_state: {{key: example, values: {values}}}}}"
        ))
    };
    let with = |ts: &str| {
        let mut sp = span(tid(1), 0);
        sp.trace_state = ts.into();
        vec![sp]
    };
    assert_eq!(
        eval(&mut p("[value]"), vec![], &with("non_matching=value")),
        NotSampled
    );
    assert_eq!(
        eval(&mut p("[value]"), vec![], &with("example=non_matching")),
        NotSampled
    );
    assert_eq!(
        eval(&mut p("[value]"), vec![], &with("example=value")),
        Sampled
    );
    assert_eq!(
        eval(&mut p("[]"), vec![], &with("example=value")),
        NotSampled
    );
    assert_eq!(
        eval(
            &mut p("[value]"),
            vec![],
            &with("example=non_matching,non_matching=value")
        ),
        NotSampled
    );
    assert_eq!(
        eval(
            &mut p("[value]"),
            vec![],
            &with("example=value,non_matching=value")
        ),
        Sampled
    );
    assert_eq!(
        eval(
            &mut p("[value1, value2]"),
            vec![],
            &with("example=non_matching")
        ),
        NotSampled
    );
    assert_eq!(
        eval(&mut p("[value1, value2]"), vec![], &with("example=value1")),
        Sampled
    );
}

#[test]
fn trace_flags_cases() {
    let mut p = policy("{name: f, type: trace_flags}");
    let mut sp = span(tid(1), 0);
    sp.flags = 0x101;
    assert_eq!(eval(&mut p, vec![], &[sp.clone()]), Sampled);
    sp.flags = 0x100;
    assert_eq!(eval(&mut p, vec![], &[sp]), NotSampled);
}

/// The four traces of and_test.go / drop_test.go: (attribute matches?, inverted string policy).
fn and_drop_cases(kind: &str) -> Vec<Decision> {
    let sub = |invert: bool, value: &str| {
        format!(
            "{{name: s, type: string_attribute, string_attribute: {{key: attribute_name, values: [{value}], invert_match: {invert}}}}}"
        )
    };
    let status = "{name: e, type: status_code, status_code: {status_codes: [ERROR]}}";
    let traces = [
        (sub(false, "attribute_value"), vec![]),
        (
            sub(false, "attribute_value"),
            vec![kv("attribute_name", s("attribute_value"))],
        ),
        (
            sub(true, "no_match"),
            vec![kv("attribute_name", s("attribute_value"))],
        ),
        (
            sub(true, "attribute_value"),
            vec![kv("attribute_name", s("attribute_value"))],
        ),
    ];
    traces
        .into_iter()
        .map(|(sub, attrs)| {
            let mut p = policy(&format!(
                "{{name: x, type: {kind}, {kind}: {{{kind}_sub_policy: [{sub}, {status}]}}}}"
            ));
            eval(
                &mut p,
                vec![],
                &[with_status(with_attrs(span(tid(1), 0), attrs), 2)],
            )
        })
        .collect()
}

#[test]
fn and_cases() {
    assert_eq!(
        and_drop_cases("and"),
        vec![NotSampled, Sampled, Sampled, NotSampled]
    );
}

#[test]
fn drop_cases() {
    assert_eq!(
        and_drop_cases("drop"),
        vec![NotSampled, Dropped, Dropped, NotSampled]
    );
}

#[test]
fn not_cases() {
    let mut p =
        policy("{name: n, type: not, not: {not_sub_policy: {name: a, type: always_sample}}}");
    assert_eq!(eval(&mut p, vec![], &one_span_with(vec![])), NotSampled);
    let mut p = policy(
        "{name: n, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}",
    );
    assert_eq!(eval(&mut p, vec![], &one_span_with(vec![])), Sampled);
    // Inverted votes pass through unchanged.
    let mut p = policy(
        "{name: n, type: not, not: {not_sub_policy: {name: s, type: string_attribute, string_attribute: {key: k, values: [v], invert_match: true}}}}",
    );
    assert_eq!(eval(&mut p, vec![], &one_span_with(vec![])), InvertSampled);
}

#[test]
fn composite_cases() {
    // composite_test.go.
    let at = |second: u64| Clock {
        now: Instant::now(),
        second,
    };
    let spans = |tag: i64| one_span_with(vec![kv("tag", int(tag))]);
    let numeric = "{name: num, type: numeric_attribute, numeric_attribute: {key: tag, min_value: 10, max_value: 20}}";
    let always = "{name: all, type: always_sample}";
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 1000, composite_sub_policy: [{numeric}, {{name: st, type: status_code, status_code: {{status_codes: [ERROR]}}}}]}}}}"
    ));
    assert_eq!(
        eval_counted(&mut p, vec![], &spans(1), 1, at(0)),
        NotSampled
    );
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 1000, composite_sub_policy: [{numeric}, {always}]}}}}"
    ));
    assert_eq!(eval_counted(&mut p, vec![], &spans(1), 1, at(0)), Sampled);
    // Overflow: total 3, one span a second for each sub-policy; a matched sub-policy whose
    // budget is used does not fall through to the next.
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 3, composite_sub_policy: [{numeric}, {always}], rate_allocation: [{{policy: num, percent: 34}}, {{policy: all, percent: 34}}]}}}}"
    ));
    assert_eq!(eval_counted(&mut p, vec![], &spans(10), 1, at(0)), Sampled);
    assert_eq!(
        eval_counted(&mut p, vec![], &spans(11), 1, at(0)),
        NotSampled
    );
    assert_eq!(
        eval_counted(&mut p, vec![], &spans(1001), 1, at(0)),
        Sampled
    );
    // Throttling: 10 a second, then a new second.
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 10, composite_sub_policy: [{always}], rate_allocation: [{{policy: all, percent: 100}}]}}}}"
    ));
    let run = |p: &mut Policy, n: usize, second: u64| {
        (0..n)
            .filter(|_| eval_counted(p, vec![], &spans(1), 1, at(second)) == Sampled)
            .count()
    };
    assert_eq!(run(&mut p, 10, 0), 10);
    assert_eq!(run(&mut p, 10, 0), 0);
    assert_eq!(run(&mut p, 10, 1), 10);
    // Two sub-policies at 5/5 of 10.
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 10, composite_sub_policy: [{always}, {{name: b, type: always_sample}}], rate_allocation: [{{policy: all, percent: 50}}, {{policy: b, percent: 50}}]}}}}"
    ));
    assert_eq!(run(&mut p, 10, 0), 5);
    assert_eq!(run(&mut p, 5, 1), 5);
    assert_eq!(run(&mut p, 20, 1), 0);
    assert_eq!(run(&mut p, 10, 2), 5);
    // A sub-policy left out of rate_allocation gets an equal share (collector PR #49857).
    let mut p = policy(&format!(
        "{{name: c, type: composite, composite: {{max_total_spans_per_second: 10, composite_sub_policy: [{always}, {numeric}]}}}}"
    ));
    assert_eq!(run(&mut p, 10, 0), 5);
}

// ---------------------------------------------------------------------------------------------
// Decision combination (makeDecision) and sample_on_first_match
// ---------------------------------------------------------------------------------------------

/// Policies that vote as named, whatever the trace.
fn voter(name: &str, vote: Decision) -> String {
    match vote {
        Sampled => format!("{{name: {name}, type: always_sample}}"),
        NotSampled => format!(
            "{{name: {name}, type: not, not: {{not_sub_policy: {{name: x, type: always_sample}}}}}}"
        ),
        InvertSampled => format!(
            "{{name: {name}, type: string_attribute, string_attribute: {{key: absent, values: [v], invert_match: true}}}}"
        ),
        InvertNotSampled => format!(
            "{{name: {name}, type: string_attribute, string_attribute: {{key: present, values: [v], invert_match: true}}}}"
        ),
        Dropped => format!(
            "{{name: {name}, type: drop, drop: {{drop_sub_policy: [{{name: x, type: always_sample}}]}}}}"
        ),
        Unspecified => unreachable!(),
    }
}

fn combine(votes: &[Decision], first_match: bool) -> (Decision, Option<String>, Vec<u64>) {
    let list: Vec<String> = votes
        .iter()
        .enumerate()
        .map(|(i, v)| voter(&format!("p{i}"), *v))
        .collect();
    let configs: Vec<PolicyConfig> = parse(&format!("[{}]", list.join(", "))).unwrap();
    let mut policies = Policies::new(&configs, first_match);
    let raw = with_attrs(span(tid(1), 0), vec![kv("present", s("v"))]).encode_to_vec();
    let facts = [SpanFacts::parse(&raw).unwrap()];
    let id = tid(1);
    let view = TraceView {
        trace_id: &id,
        spans: &facts,
        resources: &[],
        span_count: 1,
        size_bytes: 1,
    };
    let mut evaluated = vec![0; votes.len()];
    let names: Vec<String> = policies.list.iter().map(|p| p.name.clone()).collect();
    let outcome = policies.decide(&view, clock(), |i, _| {
        let original: usize = names[i][1..].parse().unwrap();
        evaluated[original] += 1;
    });
    (
        outcome.decision,
        outcome.policy.map(|i| names[i].clone()),
        evaluated,
    )
}

#[test]
fn decisions_combine_as_the_collectors_make_decision() {
    // processor_decisions_test.go and the README's rule.
    assert_eq!(combine(&[Sampled], false).0, Sampled);
    assert_eq!(combine(&[InvertSampled], false).0, Sampled);
    assert_eq!(combine(&[Sampled, Sampled], false).0, Sampled);
    assert_eq!(combine(&[Sampled, Sampled], false).1.as_deref(), Some("p0"));
    assert_eq!(combine(&[NotSampled], false).0, NotSampled);
    assert_eq!(combine(&[InvertNotSampled, Sampled], false).0, NotSampled);
    assert_eq!(combine(&[InvertSampled, NotSampled], false).0, NotSampled);
    assert_eq!(
        combine(&[NotSampled, InvertSampled, Sampled], false).0,
        Sampled
    );
    // A drop vetoes everything, wherever it is listed.
    let (d, by, _) = combine(&[Sampled, Sampled, Dropped], false);
    assert_eq!((d, by.as_deref()), (Dropped, Some("p2")));
}

#[test]
fn sample_on_first_match_stops_at_the_first_sampled_vote() {
    // TestSampleOnFirstMatch: [NotSampled, Sampled, unevaluated].
    let (d, by, evaluated) = combine(&[NotSampled, Sampled, Sampled], true);
    assert_eq!((d, by.as_deref()), (Sampled, Some("p1")));
    assert_eq!(evaluated, vec![1, 1, 0]);
    // Drop policies are evaluated first, so they still win.
    let (d, _, _) = combine(&[Sampled, Dropped], true);
    assert_eq!(d, Dropped);
    // Without it, every policy is evaluated.
    assert_eq!(
        combine(&[NotSampled, Sampled, Sampled], false).2,
        vec![1, 1, 1]
    );
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

#[test]
fn config_shapes_as_the_collector_writes_them() {
    let c: TailSamplingConfig = parse(
        r"
decision_wait: 10s
num_traces: 100
decision_cache: {sampled_cache_size: 1000, non_sampled_cache_size: 2000}
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 5000}
  - name: not-health
    type: not
    not:
      not_sub_policy:
        name: health
        type: string_attribute
        string_attribute: {key: http.route, values: [/health]}
  - name: svc-and
    type: and
    and:
      and_sub_policy:
        - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [a]}}
        - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 1}}
  - name: drop-bots
    type: drop
    drop:
      drop_sub_policy:
        - {name: bot, type: boolean_attribute, boolean_attribute: {key: is_bot, value: true}}
  - name: budget
    type: composite
    composite:
      max_total_spans_per_second: 100
      policy_order: [c1, c2]
      composite_sub_policy:
        - {name: c1, type: status_code, status_code: {status_codes: [ERROR]}}
        - {name: c2, type: always_sample}
      rate_allocation:
        - {policy: c1, percent: 50}
",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.decision_wait, Duration::from_secs(10));
    assert_eq!(c.num_traces, 100);
    assert_eq!(c.decision_cache.non_sampled_cache_size, 2000);
    assert_eq!(c.policies.len(), 6);
    let defaults: TailSamplingConfig = parse("policies: [{name: a, type: always_sample}]").unwrap();
    assert_eq!(defaults.decision_wait, Duration::from_secs(30));
    assert_eq!(defaults.num_traces, 50_000);
    assert_eq!(defaults.max_pending_bytes, 64 * 1024 * 1024);
}

#[test]
fn config_errors_name_the_problem() {
    let err = |yaml: &str| -> String {
        match parse::<TailSamplingConfig>(yaml) {
            Err(e) => e,
            Ok(c) => c.validate().unwrap_err(),
        }
    };
    let e = err("policies: [{name: o, type: ottl_condition, ottl_condition: {span: ['true']}}]");
    assert!(
        e.contains("`ottl_condition` policies are not supported"),
        "{e}"
    );
    assert!(e.contains("policies[0]"), "{e}");
    let e = err("policies: [{name: o, type: lateny}]");
    assert!(
        e.contains("unknown value `lateny`; did you mean `latency`?"),
        "{e}"
    );
    let e = err("policies: [{name: b, type: boolean_attribute, string_attribute: {key: k}}]");
    assert!(
        e.contains("has type `boolean_attribute` but `string_attribute` settings"),
        "{e}"
    );
    let e = err("policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]");
    assert!(e.contains(r#"duplicate policy name "a""#), "{e}");
    let e = err("policies: []");
    assert!(e.contains("needs at least one policy"), "{e}");
    let e = err("block_on_overflow: true\npolicies: [{name: a, type: always_sample}]");
    assert!(
        e.contains("`block_on_overflow` is not supported yet"),
        "{e}"
    );
    let e = err("policies: [{name: a, type: and, and: {and_sub_policy: [{name: d, type: drop}]}}]");
    assert!(e.contains("only allowed in the top-level"), "{e}");
    let e = err(
        "policies: [{name: c, type: composite, composite: {composite_sub_policy: [{name: a, type: always_sample}], rate_allocation: [{policy: b, percent: 5}]}}]",
    );
    assert!(e.contains("not in composite_sub_policy"), "{e}");
    let e = err("policies: [{name: '', type: always_sample}]");
    assert!(e.contains("policy name cannot be empty"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The processor
// ---------------------------------------------------------------------------------------------

fn sampler(yaml: &str) -> (TailSampler, Registry) {
    let config: TailSamplingConfig = parse(yaml).unwrap();
    config.validate().unwrap();
    let registry = Registry::default();
    (
        TailSampler::new(config, "tail_sampling", &registry),
        registry,
    )
}

fn resource_spans(service: &str, scope: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                version: "1.0".into(),
                ..Default::default()
            }),
            spans,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
    }
}

fn batch(rs: Vec<ResourceSpans>) -> Batch {
    let req = ExportTraceServiceRequest { resource_spans: rs };
    Batch::from_encoded(Signal::Traces, req.encode_to_vec().into()).unwrap()
}

fn one(spans: Vec<Span>) -> Batch {
    batch(vec![resource_spans("svc", "lib", spans)])
}

fn decode(out: &[Batch]) -> Vec<ExportTraceServiceRequest> {
    out.iter()
        .map(|b| {
            let req = ExportTraceServiceRequest::decode(b.to_bytes()).unwrap();
            let n: usize = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(n, b.items, "item count of an emitted batch");
            req
        })
        .collect()
}

fn spans_of(out: &[Batch]) -> Vec<Span> {
    decode(out)
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

const KEEP_ERRORS: &str = "decision_wait: 10s\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]";

#[test]
fn traces_are_decided_decision_wait_after_their_first_span() {
    let (mut ts, reg) = sampler(KEEP_ERRORS);
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(one(vec![span(tid(1), 0)]), t0, &mut out);
    ts.process(
        one(vec![with_status(span(tid(1), 1), 2), span(tid(2), 0)]),
        t0 + Duration::from_secs(4),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(ts.next_deadline(), Some(t0 + Duration::from_secs(10)));
    ts.tick(t0 + Duration::from_millis(9_999), &mut out);
    assert!(out.is_empty());
    assert_eq!(ts.pending_traces(), 2);
    ts.tick(t0 + Duration::from_secs(10), &mut out);
    let kept = spans_of(&out);
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|s| s.trace_id == tid(1)));
    assert_eq!(ts.pending_traces(), 1);
    out.clear();
    ts.tick(t0 + Duration::from_secs(14), &mut out);
    assert!(out.is_empty(), "trace 2 has no error");
    assert_eq!(ts.pending_traces(), 0);
    assert_eq!(ts.next_deadline(), None);
    let global = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
    assert_eq!(reg.value(global, "decision=\"sampled\""), 1);
    assert_eq!(reg.value(global, "decision=\"not_sampled\""), 1);
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            "policy=\"errors\",sampled=\"true\""
        ),
        1
    );
}

#[test]
fn decisions_are_coalesced_into_ticks() {
    let (mut ts, _) = sampler(KEEP_ERRORS);
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(one(vec![span(tid(1), 0)]), t0, &mut out);
    ts.tick(t0 + Duration::from_secs(9), &mut out);
    ts.process(
        one(vec![span(tid(2), 0)]),
        t0 + Duration::from_millis(9_001),
        &mut out,
    );
    ts.tick(t0 + Duration::from_secs(10), &mut out);
    // Trace 2 is due 9.001 s later, but no sooner than a decision tick after the last one.
    assert_eq!(ts.next_deadline(), Some(t0 + Duration::from_millis(19_001)));
    ts.process(
        one(vec![span(tid(3), 0)]),
        t0 + Duration::from_millis(19_000),
        &mut out,
    );
    ts.tick(t0 + Duration::from_millis(19_001), &mut out);
    assert_eq!(ts.next_deadline(), Some(t0 + Duration::from_millis(29_000)));
}

#[test]
fn a_root_span_brings_the_decision_forward() {
    let (mut ts, _) = sampler(
        "decision_wait: 10s\ndecision_wait_after_root_received: 2s\npolicies: [{name: a, type: always_sample}]",
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(one(vec![span(tid(1), 1)]), t0, &mut out);
    ts.process(
        one(vec![span(tid(1), 0)]),
        t0 + Duration::from_secs(3),
        &mut out,
    );
    ts.tick(t0 + Duration::from_millis(4_999), &mut out);
    assert!(out.is_empty());
    ts.tick(t0 + Duration::from_secs(5), &mut out);
    assert_eq!(spans_of(&out).len(), 2);
    // Never later than decision_wait.
    let (mut ts, _) = sampler(
        "decision_wait: 10s\ndecision_wait_after_root_received: 5s\npolicies: [{name: a, type: always_sample}]",
    );
    out.clear();
    ts.process(one(vec![span(tid(1), 1)]), t0, &mut out);
    ts.process(
        one(vec![span(tid(1), 0)]),
        t0 + Duration::from_secs(8),
        &mut out,
    );
    ts.tick(t0 + Duration::from_secs(10), &mut out);
    assert_eq!(spans_of(&out).len(), 2);
}

#[test]
fn a_trace_spread_over_batches_and_out_of_order_leaves_complete_in_one_batch() {
    let (mut ts, _) = sampler(
        "decision_wait: 5s\npolicies: [{name: slow, type: latency, latency: {threshold_ms: 1000}}]",
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let t = tid(7);
    // Children first, the root last, each in its own request, mixed with another trace.
    for (i, n) in [3u8, 1, 2, 0].into_iter().enumerate() {
        let sp = timed(span(t, n), 0, if n == 0 { 2000 } else { 100 });
        ts.process(
            one(vec![sp, span(tid(100 + i as u64), 0)]),
            t0 + Duration::from_millis(i as u64 * 100),
            &mut out,
        );
    }
    assert!(out.is_empty());
    ts.tick(t0 + Duration::from_secs(6), &mut out);
    assert_eq!(out.len(), 1);
    let kept = spans_of(&out);
    assert_eq!(kept.len(), 4);
    assert!(kept.iter().all(|s| s.trace_id == t));
    let mut names: Vec<String> = kept.iter().map(|s| s.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["span-0", "span-1", "span-2", "span-3"]);
}

#[test]
fn output_keeps_resource_scope_and_span_bytes_exactly() {
    let (mut ts, _) = sampler("decision_wait: 1s\npolicies: [{name: a, type: always_sample}]");
    let t0 = Instant::now();
    let mut out = Vec::new();
    let a = with_attrs(
        with_status(span(tid(1), 0), 2),
        vec![kv("http.route", s("/x")), kv("n", int(3))],
    );
    let b = span(tid(1), 1);
    let c = span(tid(2), 0);
    let input = vec![
        resource_spans("svc-a", "lib-1", vec![a.clone()]),
        resource_spans("svc-b", "lib-2", vec![b.clone(), c.clone()]),
    ];
    ts.process(batch(input.clone()), t0, &mut out);
    ts.process(one(vec![span(tid(1), 2)]), t0, &mut out);
    ts.tick(t0 + Duration::from_secs(1), &mut out);
    let reqs = decode(&out);
    let got: Vec<ResourceSpans> = reqs.into_iter().flat_map(|r| r.resource_spans).collect();
    // Every span sits under the resource and scope it arrived with, byte for byte.
    let find = |sp: &Span| {
        got.iter()
            .find_map(|r| {
                r.scope_spans
                    .iter()
                    .find(|s| s.spans.contains(sp))
                    .map(|s| (r.clone(), s.clone()))
            })
            .unwrap()
    };
    for (want_rs, sp) in [(&input[0], &a), (&input[1], &b), (&input[1], &c)] {
        let (rs, ss) = find(sp);
        assert_eq!(
            rs.resource.as_ref().map(Message::encode_to_vec),
            want_rs.resource.as_ref().map(Message::encode_to_vec)
        );
        assert_eq!(rs.schema_url, want_rs.schema_url);
        assert_eq!(ss.scope, want_rs.scope_spans[0].scope);
        assert_eq!(ss.schema_url, want_rs.scope_spans[0].schema_url);
        let kept = ss.spans.iter().find(|x| *x == sp).unwrap();
        assert_eq!(kept.encode_to_vec(), sp.encode_to_vec());
    }
    assert_eq!(got.iter().map(|r| r.scope_spans.len()).sum::<usize>(), 3);
    // The raw output contains each span's bytes unchanged.
    let raw = out[0].to_bytes();
    for sp in [&a, &b, &c] {
        let bytes = sp.encode_to_vec();
        assert!(raw.windows(bytes.len()).any(|w| w == bytes.as_slice()));
    }
}

#[test]
fn late_spans_follow_their_traces_decision() {
    let (mut ts, reg) = sampler(KEEP_ERRORS);
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(
        one(vec![with_status(span(tid(1), 0), 2), span(tid(2), 0)]),
        t0,
        &mut out,
    );
    ts.tick(t0 + Duration::from_secs(10), &mut out);
    assert_eq!(spans_of(&out).len(), 1);
    out.clear();
    // A late span of the kept trace passes at once; one of the dropped trace is dropped,
    // even though it is an error (policies are not evaluated again).
    ts.process(
        one(vec![span(tid(1), 5), with_status(span(tid(2), 5), 2)]),
        t0 + Duration::from_secs(13),
        &mut out,
    );
    let kept = spans_of(&out);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].trace_id, tid(1));
    assert_eq!(ts.pending_traces(), 0);
    assert_eq!(
        reg.value("otelcol_processor_tail_sampling_sampling_late_span_age", ""),
        2
    );
    let released = "otelcol_processor_tail_sampling_early_releases_from_cache_decision_total";
    assert_eq!(reg.value(released, "sampled=\"true\""), 1);
    assert_eq!(reg.value(released, "sampled=\"false\""), 1);
}

#[test]
fn num_traces_overflow_decides_the_oldest_early() {
    let (mut ts, reg) =
        sampler("decision_wait: 10s\nnum_traces: 2\npolicies: [{name: a, type: always_sample}]");
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(one(vec![span(tid(1), 0)]), t0, &mut out);
    ts.process(one(vec![span(tid(2), 0)]), t0, &mut out);
    assert!(out.is_empty());
    ts.process(one(vec![span(tid(3), 0)]), t0, &mut out);
    let kept = spans_of(&out);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].trace_id, tid(1));
    assert_eq!(ts.pending_traces(), 2);
    assert_eq!(
        reg.value(
            "sluice_processor_tail_sampling_early_decisions_total",
            "reason=\"num_traces\""
        ),
        1
    );
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
            ""
        ),
        0
    );
}

#[test]
fn max_pending_bytes_overflow_decides_the_oldest_early() {
    let (mut ts, reg) = sampler(
        "decision_wait: 10s\nmax_pending_bytes: 2000\npolicies: [{name: a, type: always_sample}]",
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let big = |t: u64| with_attrs(span(tid(t), 0), vec![kv("payload", s(&"x".repeat(300)))]);
    for t in 1..=20 {
        ts.process(one(vec![big(t)]), t0, &mut out);
        assert!(ts.pending_bytes() <= 2000, "{}", ts.pending_bytes());
    }
    let kept = spans_of(&out);
    assert!(!kept.is_empty());
    // The oldest went first.
    assert_eq!(kept[0].trace_id, tid(1));
    assert_eq!(kept.len() + ts.pending_spans(), 20);
    assert_eq!(
        reg.value(
            "sluice_processor_tail_sampling_early_decisions_total",
            "reason=\"max_pending_bytes\""
        ),
        kept.len() as u64
    );
}

#[test]
fn oversized_traces_are_dropped_with_their_late_spans() {
    let (mut ts, reg) = sampler(
        "decision_wait: 10s\nmaximum_trace_size_bytes: 500\npolicies: [{name: a, type: always_sample}]",
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let big = with_attrs(span(tid(1), 0), vec![kv("payload", s(&"x".repeat(600)))]);
    ts.process(one(vec![span(tid(2), 0), big]), t0, &mut out);
    ts.process(one(vec![span(tid(1), 1)]), t0, &mut out);
    ts.tick(t0 + Duration::from_secs(10), &mut out);
    let kept = spans_of(&out);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].trace_id, tid(2));
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_traces_dropped_too_large_total",
            ""
        ),
        1
    );
}

#[test]
fn shutdown_decides_pending_traces_or_drops_them() {
    let (mut ts, _) = sampler(KEEP_ERRORS);
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(
        one(vec![with_status(span(tid(1), 0), 2), span(tid(2), 0)]),
        t0,
        &mut out,
    );
    ts.flush(t0 + Duration::from_secs(1), &mut out);
    assert_eq!(spans_of(&out).len(), 1);
    assert_eq!(ts.pending_traces(), 0);

    let (mut ts, reg) = sampler(&format!(
        "drop_pending_traces_on_shutdown: true\n{KEEP_ERRORS}"
    ));
    out.clear();
    ts.process(one(vec![with_status(span(tid(1), 0), 2)]), t0, &mut out);
    ts.flush(t0, &mut out);
    assert!(out.is_empty());
    assert_eq!(ts.pending_traces(), 0);
    assert_eq!(
        reg.value(
            "sluice_processor_tail_sampling_dropped_on_shutdown_total",
            ""
        ),
        1
    );
}

#[test]
fn spans_without_a_trace_id_are_passed_on() {
    let (mut ts, _) = sampler(KEEP_ERRORS);
    let mut out = Vec::new();
    let mut sp = span(tid(1), 0);
    sp.trace_id = vec![1, 2, 3];
    ts.process(one(vec![sp.clone()]), Instant::now(), &mut out);
    assert_eq!(spans_of(&out), vec![sp]);
}

#[test]
fn policy_names_carry_the_processor_name() {
    let config: TailSamplingConfig = parse(KEEP_ERRORS).unwrap();
    let registry = Registry::default();
    let mut ts = TailSampler::new(config, "tail_sampling/gw", &registry);
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.process(one(vec![span(tid(1), 0)]), t0, &mut out);
    ts.flush(t0, &mut out);
    assert_eq!(
        registry.value(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            "policy=\"gw.errors\",sampled=\"false\""
        ),
        1
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With always_sample, every span that goes in comes out exactly once, however traces
        /// are split over requests, and whether they are decided on time, early or at shutdown.
        #[test]
        fn no_span_is_lost_when_everything_is_kept(
            traces in prop::collection::vec(1usize..6, 1..40),
            split in prop::collection::vec(1usize..8, 1..20),
            num_traces in 1u64..10,
            max_pending_bytes in prop::sample::select(vec![600u64, 5_000, 1 << 20]),
            ticks in prop::collection::vec(0u64..3_000, 0..5),
        ) {
            let (mut ts, _) = sampler(&format!(
                "decision_wait: 2s\nnum_traces: {num_traces}\nmax_pending_bytes: {max_pending_bytes}\n\
                 decision_cache: {{sampled_cache_size: 1000}}\npolicies: [{{name: a, type: always_sample}}]"
            ));
            let mut all: Vec<Span> = Vec::new();
            for (t, n) in traces.iter().enumerate() {
                for i in 0..*n {
                    all.push(span(tid(t as u64 + 1), i as u8));
                }
            }
            // Interleave: span k of every trace, then k+1, so traces span several requests.
            all.sort_by_key(|s| (s.span_id.clone(), s.trace_id.clone()));
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut at = 0;
            let mut k = 0;
            while at < all.len() {
                let n = split[k % split.len()].min(all.len() - at);
                let now = t0 + Duration::from_millis(ticks.get(k).copied().unwrap_or(0) * k as u64);
                ts.process(one(all[at..at + n].to_vec()), now, &mut out);
                ts.tick(now, &mut out);
                at += n;
                k += 1;
            }
            ts.flush(t0 + Duration::from_secs(3_600), &mut out);
            let mut got: Vec<Vec<u8>> = spans_of(&out).iter().map(Message::encode_to_vec).collect();
            let mut want: Vec<Vec<u8>> = all.iter().map(Message::encode_to_vec).collect();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ts.pending_traces(), 0);
            prop_assert_eq!(ts.pending_spans(), 0);
            // What stays is the compression dictionary.
            prop_assert!(ts.pending_bytes() <= 4096);
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4)) {
            let (mut ts, _) = sampler("decision_wait: 1s\npolicies: [{name: a, type: always_sample}, {name: s, type: string_attribute, string_attribute: {key: k, values: ['.*'], enabled_regex_matching: true}}, {name: l, type: latency}]");
            let t0 = Instant::now();
            let mut out = Vec::new();
            let batch = Batch { signal: Signal::Traces, chunks: chunks.into_iter().map(Into::into).collect(), items: 0, acks: Vec::new() };
            ts.process(batch, t0, &mut out);
            ts.tick(t0 + Duration::from_secs(2), &mut out);
            ts.flush(t0, &mut out);
        }

        /// Spans whose fields are garbage inside a well-formed request are never a panic.
        #[test]
        fn arbitrary_spans_never_panic(spans in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..10)) {
            let (mut ts, _) = sampler("decision_wait: 1s\npolicies: [{name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 1}}, {name: t, type: trace_state, trace_state: {key: k, values: [v]}}, {name: a, type: always_sample}]");
            let mut scope = Vec::new();
            for sp in &spans {
                // A valid trace id first, so the span is grouped, then arbitrary fields.
                let mut body = Vec::new();
                crate::otlp::wire::write_len_field(1, &tid(1), &mut body);
                body.extend_from_slice(sp);
                crate::otlp::wire::write_len_field(2, &body, &mut scope);
            }
            let mut rs = Vec::new();
            crate::otlp::wire::write_len_field(2, &scope, &mut rs);
            let mut req = Vec::new();
            crate::otlp::wire::write_len_field(1, &rs, &mut req);
            let t0 = Instant::now();
            let mut out = Vec::new();
            ts.process(Batch::new(Signal::Traces, req.into(), spans.len()), t0, &mut out);
            ts.flush(t0, &mut out);
        }
    }
}

/// Copies of 200 generated loadgen requests, each with fresh trace ids, as a receiver would
/// hand them over (one buffer per request).
fn loadgen_requests(o: &crate::loadgen::Options) -> impl FnMut(usize) -> Batch {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let templates: Vec<(Vec<u8>, Vec<usize>)> = (0..200)
        .map(|_| {
            let t = crate::loadgen::generate(o, 100, &mut rng);
            let mut offsets = Vec::new();
            crate::otlp::wire::for_each_span(&t, |s| {
                offsets.push(s.trace_id().as_ptr() as usize - t.as_ptr() as usize)
            })
            .unwrap();
            (t, offsets)
        })
        .collect();
    move |k: usize| {
        let (t, offsets) = &templates[k % templates.len()];
        let mut b = t.clone();
        for &o in offsets {
            b[o..o + 8].copy_from_slice(&(k as u64).to_le_bytes());
        }
        Batch::new(Signal::Traces, b.into(), 100)
    }
}

/// Resident memory per pending loadgen span, and the sampler's own accounting of it. Run:
/// `cargo test --release --lib bytes_per_pending_span -- --ignored --nocapture`.
#[test]
#[ignore]
fn bytes_per_pending_span() {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    let (mut ts, _) = sampler(
        "decision_wait: 1h\nnum_traces: 10000000\nmax_pending_bytes: 10000000000\npolicies: [{name: a, type: always_sample}]",
    );
    let o = crate::loadgen::Options::default();
    let mut request = loadgen_requests(&o);
    let raw = request(0).encoded_len() as f64 / 100.0;
    let t0 = Instant::now();
    let mut out = Vec::new();
    // Warm up the allocator and tables, then measure growth over a million spans.
    for k in 0..1_000 {
        ts.process(request(k), t0, &mut out);
    }
    let (rss0, spans0, held0) = (rss(), ts.pending_spans(), ts.pending_bytes());
    let started = Instant::now();
    for k in 1_000..11_000 {
        ts.process(request(k), t0, &mut out);
    }
    let took = started.elapsed();
    let spans = (ts.pending_spans() - spans0) as f64;
    println!(
        "{} pending spans ({raw:.0} B/span as received): RSS +{:.1} B/span, accounted {:.1} B/span, \
         {:.2} us/span to ingest and compress",
        ts.pending_spans(),
        (rss() - rss0) as f64 / spans,
        (ts.pending_bytes() - held0) as f64 / spans,
        took.as_secs_f64() * 1e6 / spans,
    );
    assert!(out.is_empty());
}

/// CPU per span through the sampler with "keep errors, keep slow, 10% of the rest" on loadgen
/// traffic with 1% error and 1% slow traces. Run:
/// `cargo test --release --lib cpu_per_span -- --ignored --nocapture`.
#[test]
#[ignore]
fn cpu_per_span() {
    let (mut ts, _) = sampler(
        "decision_wait: 1s\nnum_traces: 1000000\npolicies: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: s, type: latency, latency: {threshold_ms: 1000}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}]",
    );
    let o = crate::loadgen::Options {
        error_ratio: 0.01,
        slow_ratio: 0.01,
        ..Default::default()
    };
    let mut request = loadgen_requests(&o);
    let batches: Vec<Batch> = (0..2_000).map(&mut request).collect();
    let t0 = Instant::now();
    let mut out = Vec::new();
    let started = Instant::now();
    for b in batches {
        ts.process(b, t0, &mut out);
    }
    let ingest = started.elapsed();
    let started = Instant::now();
    ts.tick(t0 + Duration::from_secs(2), &mut out);
    let decide = started.elapsed();
    let kept: usize = out.iter().map(|b| b.items).sum();
    println!(
        "200000 spans: ingest {:.2} us/span, decide and re-encode {:.2} us/span, kept {:.1}%",
        ingest.as_secs_f64() * 1e6 / 200_000.0,
        decide.as_secs_f64() * 1e6 / 200_000.0,
        kept as f64 / 2_000.0
    );
}
