//! The collector's test vectors and cases for this processor, reproduced: same inputs, same
//! decisions, same tracestate and attributes out.

use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::ProbabilisticSampler;
use super::config::{ProbabilisticSamplerConfig, SamplerMode};
use super::logs::{LogPriority, sample_record};
use super::sampler::{Decision, Sampler, Source, compute_hash, randomness_from_bytes};
use super::threshold::{Randomness, Threshold};
use super::traces::{Priority, sample_span, span_priority};
use super::tracestate::TraceState;
use crate::otlp::{Batch, Signal};
use crate::telemetry::Registry;

const HASHING_VECTORS: [(u32, &str, bool); 100] = [
    (653, "474a03c76d75951a4b4c537ced8f1122", true),
    (563, "53a518291e91307e43cd8467bb06f986", true),
    (142, "a56a02f843b9bc6ee0b13889249e90e6", true),
    (904, "4e40762d3ee97a1c0932e4fa584f89a8", false),
    (445, "5224507db93db513f0ea2a4b4e0578c8", true),
    (38, "0c8717ced36216037af657e9d7f8b35b", true),
    (561, "2a8aa76c18d08e1e8be935541f9318c7", false),
    (757, "9e3d0f9481dc422cb613ea550897ae71", false),
    (22, "66a66c516ac22054673e5da5e6492545", false),
    (172, "84a1ce7bcea3e66194e72b4aa2694e31", true),
    (552, "a811a7def34ca4b98d8e320afd115fad", false),
    (546, "e3a345cc8dbb6f014bfa1edad3981820", true),
    (315, "a71effb50e28d27cbdc9892f3765b8c2", false),
    (510, "55ee665a3fa22f8ea1b744ce15a7339d", false),
    (230, "7a5006be4d0ce7b542d59f83cd6f1c41", false),
    (544, "825b8fb9cfd45867794f4cd8a5a699bd", false),
    (790, "7629ecbea89398bfd9752a2f51c2c137", true),
    (555, "de6cdfb44d69e211f886c57120d7bda0", true),
    (147, "a8a5c3bb9205883fae17ead6675b2450", false),
    (238, "937e6cb3332dbe87062fa3997f48f425", false),
    (122, "5a357e150995e005847816c431ba502d", false),
    (963, "20cb3dcebe2cf8abe6102f4a2e548245", false),
    (141, "1b0afbd09abaaf7996cd26f8f6533795", false),
    (666, "3ee60b013303bcfda06be89071b90bd1", true),
    (305, "c90c7cf3471bbc3a804a8a831633705b", true),
    (270, "18dda74dfca45a7b0261510f385fb4de", true),
    (381, "600cf70c7bb4918e54aefd78c84f3996", true),
    (35, "855f493c5b5b1e2fcbc9993f8061eac8", false),
    (839, "89bc498feb21d969cf0eabf916aa621a", false),
    (561, "0a0af00f63e098a39883705a423b0aa8", true),
    (667, "0c38553d71f54dfc37155c22cc8bf243", false),
    (603, "49493809d1a49ea879e6aba37afde958", true),
    (92, "eb60d98b8f8fe22d8970f44f0e2b6bad", true),
    (70, "19c386ee7a9f2d56ff9ab2e6374540af", false),
    (567, "2a033c15405f1c7a311f653719ed47b7", false),
    (936, "62dda24e4be24f5198e4d8dd4010c811", true),
    (210, "bb134e26ee92e282e29cabdb1d00d333", true),
    (835, "6c77db08bbded7bdd5c99c6e2fea41d2", false),
    (864, "99f6a7e7b50845b4fb64b7c2ee49f53c", true),
    (775, "e908cb91224bee8fd4b5f3632f65717f", true),
    (687, "45a5ace7234d92d9983b4f3858bc0b8e", false),
    (761, "8c8a25d232fd4d3a37a5f70ccb82d752", false),
    (400, "54156d7434a894ef07f2a80dbf0f1138", true),
    (741, "67e3bfb02b0526dbb79420468d7b83dd", false),
    (871, "f6ea221283dcb42f89bfb15fa33398d2", false),
    (244, "b663ca45004decf8123a19fb5d7f7115", true),
    (885, "d0e299d54d6dc6469276fd4e48301d73", true),
    (607, "03240c2748aa67a185909a9345d84aba", false),
    (434, "b00de72ba67e6fe0ed661decac911f7e", true),
    (889, "20fff68a7cc715b30e4e6d69d53e0f60", false),
    (810, "6bf2bb105e594f6220803da5253551af", false),
    (494, "54fbb1d3ebe3883b0a01bbf2c9a2bf3e", true),
    (413, "a8a2ecba129d8537e360cf54de9d7460", false),
    (215, "2df034262b775136f2a313fdcc09738a", true),
    (557, "e3c1b943d9c1199d1108a69aa32a4587", false),
    (662, "1975d5f5640bac1064d53c2c21e02aae", false),
    (482, "6e4f16727dec3c09539b5f50d35d2c13", false),
    (223, "63a088446ef0ed60a9cace4698ede026", false),
    (261, "9b662cd6f67a4e3d1f904b4c5d4275b1", true),
    (112, "a2db788dbadc402b8c466b93b8749a6c", true),
    (6, "d6a68b47c66d1f94eed46b8ddc72faf4", false),
    (575, "e8a83c42f4515568d0942ec4472c9d2c", true),
    (568, "030e14c2954e3f08134b355f33414ba9", false),
    (965, "022315846d42a38322d6fd26250444b3", true),
    (512, "b3ba1ed226288dede87ac1f2ba88de2b", true),
    (108, "c57d0dcf43d5b154ef04c7953c94cd12", true),
    (248, "a835fe521d9cbfcfb724b603f87c7403", false),
    (46, "eda867e6df95e74abefac336c7f4cd1a", false),
    (879, "09e9e67a261ea3e00d817105b57ffd4e", false),
    (853, "6a780cf250cb3d2b699394042e6723a8", false),
    (639, "4c99d7f14c66b3123caf57980f8e2a31", false),
    (111, "79dc8d7a54bc3e8ef513b9cd8d830564", true),
    (135, "9c2e5d9d713e5219b0f9e5b884835e69", false),
    (209, "3ccb300bf7b983229979e0c46db267b0", true),
    (629, "0bb7b9da64da250c3934bb39130dc990", true),
    (910, "b25713ca4cea377871eaa334bc2dd382", true),
    (667, "69afc041003851cec60f41db97e005a9", true),
    (449, "c844b5428abe0cf82eaf02566781870a", true),
    (16, "2533c732bed8c1ba4721c25a1205f06c", false),
    (936, "ecc770b4be885dfc8d6fa135bc2c93bb", true),
    (595, "63b67cbb42de52e9916241ad94fcd5e8", true),
    (83, "fc4998bc53ccd42a5b8e7c86a93d4c88", false),
    (878, "59f0677dffe1a0a8c5895cb263e3a019", false),
    (206, "eb897eff9e7c7363e063b340a0c6b315", true),
    (710, "89e4c7e6af305be6cd139abcae953db5", true),
    (650, "97563d45ee254231e1ace05fb746bcce", false),
    (233, "3f580864f295ff13f179c3c907032ea9", true),
    (836, "e9b78e03706265a6936bff2a41530104", false),
    (568, "c458603ee921fa8711085c15b871b245", false),
    (816, "4bbfffab5b5975c1b007ebc518bf416d", false),
    (397, "61a1a65746287d78a431c6848ed1ffb3", false),
    (847, "53eee02f4672a72e93369b2c2ecf36eb", false),
    (354, "6ea23c3068a2c304488c8e67a072db97", false),
    (961, "eed247645e510ded87bd9afcf1d3e237", false),
    (799, "092af4ff2fdea5bb1c708b2169bdfd95", false),
    (99, "497f02db51c898ac441aae18a8b7ced9", false),
    (773, "988481445600bb91bbe23e3103034bcd", true),
    (928, "f1813835ac0f456721ef3aac39c0269a", true),
    (235, "1999920085682c007eb3a6984d2a7f05", true),
    (460, "60c3b9a2dde734d71ba5cca7eb164bce", true),
];

const DEFAULT_HASH_SEED: u32 = 4312;
/// Randomness 0x80000000000000: sampled at 50%, not at 49%.
const DEFAULT_TID: &str = "fefefefefefefefefe80000000000000";
/// Sampled at every supported probability.
const IMPROBABLE_TID: &str = "111111111111111111ffffffffffffff";
const EMPTY_TID: &str = "00000000000000000000000000000000";

/// A config as the collector's tests write one (`&Config{...}`): Go zero values rather than
/// the factory defaults, so precision 0 (all 14 digits), fail open, no attribute source.
fn go_config(pct: f32) -> ProbabilisticSamplerConfig {
    ProbabilisticSamplerConfig {
        sampling_percentage: pct,
        hash_seed: 0,
        mode: SamplerMode::Unset,
        sampling_precision: 0,
        fail_closed: false,
        attribute_source: String::new(),
        from_attribute: String::new(),
        sampling_priority: String::new(),
    }
}

fn tid(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span(trace_id: Vec<u8>, tracestate: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id,
        span_id: vec![0, 0, 0, 0, 0xfe, 0xfe, 0xfe, 0xfe],
        trace_state: tracestate.into(),
        name: "spanName".into(),
        attributes,
        ..Default::default()
    }
}

/// Decides one span; returns the decision and the span's tracestate afterwards.
fn decide_span(config: &ProbabilisticSamplerConfig, mut s: Span) -> (Decision, String) {
    let sampler = Sampler::new(config, false);
    let decision = sample_span(&sampler, config.fail_closed, &mut s);
    (decision, s.trace_state)
}

/// Decides one log record; returns the decision and the record's attributes afterwards.
fn decide_record(
    config: &ProbabilisticSamplerConfig,
    trace_id: &str,
    attributes: Vec<KeyValue>,
) -> (Decision, Vec<KeyValue>) {
    let sampler = Sampler::new(config, true);
    let priority = LogPriority {
        attribute: &config.sampling_priority,
        precision: config.sampling_precision,
    };
    let mut record = LogRecord {
        trace_id: tid(trace_id),
        attributes,
        ..Default::default()
    };
    let decision = sample_record(&sampler, config.fail_closed, &priority, &mut record);
    (decision, record.attributes)
}

fn problems(decision: &Decision) -> Vec<String> {
    decision.problems.iter().map(ToString::to_string).collect()
}

fn assert_one_problem(decision: &Decision, expected: &str, case: &str) {
    let found = problems(decision);
    assert_eq!(found.len(), 1, "{case}: {found:?}");
    assert!(found[0].contains(expected), "{case}: {found:?}");
}

#[test]
fn hashing_function_matches_all_100_collector_vectors() {
    for (seed, trace_id, expected) in HASHING_VECTORS {
        let config = ProbabilisticSamplerConfig {
            hash_seed: seed,
            ..go_config(50.0)
        };
        let (decision, _) = decide_span(&config, span(tid(trace_id), "", vec![]));
        assert_eq!(
            decision.sampled, expected,
            "seed {seed}, trace id {trace_id}"
        );
        assert_eq!(decision.source, Source::TraceIdHash);
    }
}

#[test]
fn empty_hash_function() {
    let bucket = |key: &[u8]| compute_hash(key, 0) & 0x3fff;
    assert_eq!(bucket(&[]), 0x3515);
    assert_eq!(bucket(&[0; 16]), 0x2455);
    assert!((f64::from(bucket(&[])) / 16384.0 - 0.829).abs() < 0.001);
    assert!((f64::from(bucket(&[0; 16])) / 16384.0 - 0.568).abs() < 0.001);
}

#[test]
fn hash_seed_writes_rv_and_the_14_bit_threshold() {
    let mut rng = StdRng::seed_from_u64(4312);
    let cases = [
        (100.0, "0"),
        (75.0, "4"),
        (50.0, "8"),
        (25.0, "c"),
        (10.0, "e668"),
        (100.0 / 3.0, "aaac"),
    ];
    for (pct, expected) in cases {
        let config = ProbabilisticSamplerConfig {
            mode: SamplerMode::HashSeed,
            hash_seed: DEFAULT_HASH_SEED,
            sampling_precision: 4,
            ..go_config(pct)
        };
        let mut found = 0;
        while found < 10 {
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            let (decision, tracestate) = decide_span(&config, span(id.to_vec(), "", vec![]));
            if !decision.sampled {
                continue;
            }
            found += 1;
            let state = TraceState::parse(&tracestate).unwrap();
            let th = state.ot.th.expect("th is written");
            let rv = state.ot.rv.expect("rv is written");
            assert_eq!(th.text, expected, "{pct}%");
            assert!(th.value.should_sample(rv.value));
            assert_eq!(rv.value, randomness_from_bytes(&id, DEFAULT_HASH_SEED));
        }
    }
}

/// The rv digits between the top and bottom 14 bits come from `hashed32 >> (32 - 14)`, as
/// upstream's `randomnessFromBytes` is written (its variable is named `unused18`, but the shift
/// leaves 14 bits). No collector test pins those digits; they never affect a decision.
#[test]
fn hash_seed_worked_examples() {
    let config = ProbabilisticSamplerConfig {
        hash_seed: 653,
        ..go_config(50.0)
    };
    let (decision, tracestate) = decide_span(
        &config,
        span(tid("474a03c76d75951a4b4c537ced8f1122"), "", vec![]),
    );
    assert!(decision.sampled);
    assert_eq!(tracestate, "ot=rv:fa402373dec16f;th:8");

    let config = ProbabilisticSamplerConfig {
        hash_seed: 904,
        ..go_config(50.0)
    };
    let (decision, _) = decide_span(
        &config,
        span(tid("4e40762d3ee97a1c0932e4fa584f89a8"), "", vec![]),
    );
    assert!(!decision.sampled);
    assert_eq!(
        randomness_from_bytes(&tid("4e40762d3ee97a1c0932e4fa584f89a8"), 904).rvalue(),
        "2e681e7e9e7465"
    );
}

#[test]
fn hash_seed_keeps_other_vendors_entries() {
    let config = go_config(100.0);
    let (decision, tracestate) = decide_span(
        &config,
        span(
            tid(DEFAULT_TID),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
            vec![],
        ),
    );
    assert!(decision.sampled);
    let rv = randomness_from_bytes(&tid(DEFAULT_TID), 0).rvalue();
    assert_eq!(
        tracestate,
        format!("ot=rv:{rv};th:0,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
}

#[test]
fn hash_seed_rounds_percentages_below_one_bucket_down_to_never() {
    // 75% of one 14-bit bucket: rounding would give one bucket, truncation gives none.
    let pct = (3.0 * 2f64.powi(-16) * 100.0) as f32;
    let config = ProbabilisticSamplerConfig {
        mode: SamplerMode::HashSeed,
        ..go_config(pct)
    };
    assert_eq!(Sampler::new(&config, false), Sampler::Never);
    assert_eq!(Sampler::new(&config, true), Sampler::Never);
}

#[test]
fn hash_seed_leaves_spans_with_otel_sampling_state_to_fail_closed() {
    let cases = [
        ("ot=rv:f2341234123412", "item has sampling randomness"),
        ("ot=th:8", "item has sampling threshold"),
        ("ot=rv:zz", "r-value must have 14 hex digits"),
    ];
    for (tracestate, message) in cases {
        let closed = ProbabilisticSamplerConfig {
            fail_closed: true,
            ..go_config(100.0)
        };
        let (decision, _) = decide_span(&closed, span(tid(DEFAULT_TID), tracestate, vec![]));
        assert!(!decision.sampled, "{tracestate}");
        assert_one_problem(&decision, message, tracestate);

        let open = go_config(100.0);
        let (decision, out) = decide_span(&open, span(tid(DEFAULT_TID), tracestate, vec![]));
        assert!(decision.sampled, "{tracestate}");
        assert_eq!(out, tracestate, "passes through unchanged");
        assert_one_problem(&decision, message, tracestate);
    }
}

/// The collector's `Test_tracesamplerprocessor_SamplingPercentageRange`, with our own random
/// trace ids (a fixed seed, so the test is repeatable).
#[test]
fn sampling_rate_is_within_tolerance() {
    let cases: [(f32, usize, f64); 5] = [
        (0.03, 200_000, 0.02),
        (5.0, 400_000, 0.1),
        (50.0, 400_000, 0.2),
        (90.0, 100_000, 0.2),
        (100.0, 100_000, 0.0),
    ];
    for mode in [
        SamplerMode::Unset,
        SamplerMode::Proportional,
        SamplerMode::Equalizing,
    ] {
        for (pct, items, max_delta) in cases {
            if mode != SamplerMode::Unset && pct != 5.0 && pct != 50.0 {
                continue;
            }
            let config = ProbabilisticSamplerConfig {
                mode,
                ..go_config(pct)
            };
            let sampler = Sampler::new(&config, false);
            let mut rng = StdRng::seed_from_u64(123_456);
            let mut s = span(vec![0; 16], "", vec![]);
            let mut kept = 0;
            for _ in 0..items {
                rng.fill_bytes(&mut s.trace_id);
                s.trace_state.clear();
                if sample_span(&sampler, false, &mut s).sampled {
                    kept += 1;
                }
            }
            let rate = kept as f64 / items as f64 * 100.0;
            let delta = (rate - f64::from(pct)).abs();
            assert!(
                delta <= max_delta,
                "{mode:?} at {pct}%: kept {rate}% (allowed delta {max_delta})"
            );
        }
    }
}

#[test]
fn missing_randomness_is_decided_by_fail_closed() {
    let cases = [
        (0.0, true, false),
        (62.0, true, false),
        (100.0, true, false),
        (0.0, false, false),
        (62.0, false, true),
        (100.0, false, true),
    ];
    for (pct, fail_closed, sampled) in cases {
        let config = ProbabilisticSamplerConfig {
            hash_seed: DEFAULT_HASH_SEED,
            fail_closed,
            ..go_config(pct)
        };
        let (decision, tracestate) = decide_span(&config, span(tid(EMPTY_TID), "", vec![]));
        let case = format!("{pct}% fail_closed={fail_closed}");
        assert_eq!(decision.sampled, sampled, "{case}");
        if pct == 0.0 {
            assert!(decision.problems.is_empty(), "{case}");
        } else {
            assert_one_problem(&decision, "missing randomness", &case);
        }
        if sampled {
            // We do not invent `rv:ffffffffffffff` for a missing trace id.
            assert_eq!(tracestate, "ot=th:0");
        }
    }
}

#[test]
fn span_sampling_priority_overrides_every_mode() {
    let cases = [
        (
            "must_sample",
            0.0,
            "sampling.priority",
            Value::IntValue(2),
            true,
        ),
        (
            "must_sample_double",
            0.0,
            "sampling.priority",
            Value::DoubleValue(1.0),
            true,
        ),
        (
            "must_sample_string",
            0.0,
            "sampling.priority",
            Value::StringValue("1".into()),
            true,
        ),
        (
            "must_not_sample",
            100.0,
            "sampling.priority",
            Value::IntValue(0),
            false,
        ),
        (
            "must_not_sample_double",
            100.0,
            "sampling.priority",
            Value::DoubleValue(0.0),
            false,
        ),
        (
            "must_not_sample_string",
            100.0,
            "sampling.priority",
            Value::StringValue("0".into()),
            false,
        ),
        (
            "defer_sample_expect_not_sampled",
            0.0,
            "no.sampling.priority",
            Value::IntValue(2),
            false,
        ),
        (
            "defer_sample_expect_sampled",
            100.0,
            "no.sampling.priority",
            Value::IntValue(2),
            true,
        ),
    ];
    // R = 0 under W3C randomness: sampled only at 100%.
    let trace_id = "01000000000000000000000000000000";
    for mode in [
        SamplerMode::HashSeed,
        SamplerMode::Equalizing,
        SamplerMode::Proportional,
    ] {
        for (name, pct, key, value, sampled) in cases.clone() {
            let config = ProbabilisticSamplerConfig {
                mode,
                hash_seed: DEFAULT_HASH_SEED,
                ..go_config(pct)
            };
            let (decision, _) = decide_span(&config, span(tid(trace_id), "", vec![kv(key, value)]));
            assert_eq!(decision.sampled, sampled, "{mode:?} {name}");
            if key == "sampling.priority" {
                assert_eq!(decision.source, Source::SamplingPriority, "{mode:?} {name}");
            }
        }
    }
}

#[test]
fn sampling_priority_parsing() {
    let p = |key: &str, value: Value| span_priority(&[kv(key, value)]);
    assert_eq!(span_priority(&[]), Priority::Defer);
    assert_eq!(p("key", Value::BoolValue(true)), Priority::Defer);
    assert_eq!(
        p("sampling.priority", Value::IntValue(0)),
        Priority::DoNotSample
    );
    assert_eq!(
        p("sampling.priority", Value::IntValue(1)),
        Priority::MustSample
    );
    assert_eq!(p("sampling.priority", Value::IntValue(-1)), Priority::Defer);
    assert_eq!(
        p("sampling.priority", Value::DoubleValue(0.0)),
        Priority::DoNotSample
    );
    assert_eq!(
        p("sampling.priority", Value::DoubleValue(1.0)),
        Priority::MustSample
    );
    assert_eq!(
        p("sampling.priority", Value::DoubleValue(-1.0)),
        Priority::Defer
    );
    let s = |text: &str| p("sampling.priority", Value::StringValue(text.into()));
    assert_eq!(s("0.0"), Priority::DoNotSample);
    assert_eq!(s("0.5"), Priority::MustSample);
    assert_eq!(s("-0.5"), Priority::Defer);
    assert_eq!(s("NaN"), Priority::Defer);
    assert_eq!(s("1e400"), Priority::Defer);
    assert_eq!(s("lots"), Priority::Defer);
}

/// One row of the collector's `Test_tracesamplerprocessor_TraceState`: the expected
/// (adjusted count, tracestate) per mode, `None` meaning not sampled.
struct TraceStateCase {
    name: &'static str,
    pct: f32,
    precision: i32,
    fail_closed: bool,
    trace_id: &'static str,
    tracestate: &'static str,
    attribute: Option<(&'static str, Value)>,
    log: Option<&'static str>,
    equalizing: Option<(f64, &'static str)>,
    proportional: Option<(f64, &'static str)>,
}

impl TraceStateCase {
    fn new(name: &'static str, pct: f32) -> TraceStateCase {
        TraceStateCase {
            name,
            pct,
            precision: 0,
            fail_closed: false,
            trace_id: DEFAULT_TID,
            tracestate: "",
            attribute: None,
            log: None,
            equalizing: None,
            proportional: None,
        }
    }
    fn precision(mut self, p: i32) -> Self {
        self.precision = p;
        self
    }
    fn fail_closed(mut self) -> Self {
        self.fail_closed = true;
        self
    }
    fn trace_id(mut self, t: &'static str) -> Self {
        self.trace_id = t;
        self
    }
    fn tracestate(mut self, t: &'static str) -> Self {
        self.tracestate = t;
        self
    }
    fn attribute(mut self, key: &'static str, value: Value) -> Self {
        self.attribute = Some((key, value));
        self
    }
    fn log(mut self, l: &'static str) -> Self {
        self.log = Some(l);
        self
    }
    fn both(self, adjusted: f64, out: &'static str) -> Self {
        self.equalizing(adjusted, out).proportional(adjusted, out)
    }
    fn equalizing(mut self, adjusted: f64, out: &'static str) -> Self {
        self.equalizing = Some((adjusted, out));
        self
    }
    fn proportional(mut self, adjusted: f64, out: &'static str) -> Self {
        self.proportional = Some((adjusted, out));
        self
    }
}

#[test]
fn tracestate_vectors_in_equalizing_and_proportional_modes() {
    use TraceStateCase as C;
    let cases = [
        C::new("100 percent", 100.0).both(1.0, "ot=th:0"),
        C::new("50 percent sampled", 50.0).both(2.0, "ot=th:8"),
        C::new("25 percent sampled", 25.0)
            .trace_id("ddddddddddddddddddc0000000000000")
            .both(4.0, "ot=th:c"),
        C::new("25 percent unsampled", 25.0).trace_id("ddddddddddddddddddb0000000000000"),
        C::new("1 percent sampled", 1.0)
            .tracestate("ot=rv:FD70A3D70A3D71")
            .both(100.0, "ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
        C::new("1 percent sampled with rvalue and precision 4", 1.0)
            .precision(4)
            .tracestate("ot=rv:FD70A3D70A3D71")
            .both(100.0, "ot=rv:FD70A3D70A3D71;th:fd70a"),
        C::new("1 percent sampled with rvalue and precision 3", 1.0)
            .precision(3)
            .tracestate("ot=rv:FD70A3D70A3D71"),
        C::new("1 percent not sampled with rvalue", 1.0).tracestate("ot=rv:FD70A3D70A3D70"),
        C::new("49 percent not sampled with default tid", 49.0),
        C::new("1 percent sampled with rvalue", 1.0)
            .tracestate("ot=rv:fd70B000000000")
            .both(100.0, "ot=rv:fd70B000000000;th:fd70a3d70a3d71"),
        C::new("1 percent sampled with tid", 1.0)
            .precision(4)
            .trace_id("a0a0a0a0a0a0a0a0a0fe000000000000")
            .both(100.0, "ot=th:fd70a"),
        C::new("sampled by priority", 1.0)
            .attribute("sampling.priority", Value::IntValue(2))
            .both(1.0, "ot=th:0"),
        C::new("not sampled by priority", 99.0).attribute("sampling.priority", Value::IntValue(0)),
        C::new("incoming 50 percent with rvalue", 50.0)
            .tracestate("ot=rv:90000000000000;th:80000000000000")
            .equalizing(2.0, "ot=rv:90000000000000;th:8"),
        C::new("incoming 50 percent at 25 percent not sampled", 25.0).tracestate("ot=th:8"),
        C::new("incoming 50 percent at 25 percent sampled", 25.0)
            .trace_id("ffffffffffffffffffffffffffffffff")
            .tracestate("ot=th:8")
            .equalizing(4.0, "ot=th:c")
            .proportional(8.0, "ot=th:e"),
        C::new("equalizing vs proportional", 50.0)
            .tracestate("ot=rv:c0000000000000;th:8")
            .equalizing(2.0, "ot=rv:c0000000000000;th:8")
            .proportional(4.0, "ot=rv:c0000000000000;th:c"),
        C::new("inconsistent arriving threshold", 100.0)
            .tracestate("ot=rv:40000000000000;th:8")
            .log("inconsistent arriving threshold")
            .both(1.0, "ot=rv:40000000000000;th:0"),
        C::new("inconsistent arriving threshold not sampled", 1.0)
            .fail_closed()
            .tracestate("ot=rv:40000000000000;th:8")
            .log("inconsistent arriving threshold"),
        C::new("40 percent precision 3 with rvalue", 40.0)
            .precision(3)
            .tracestate("ot=rv:a0000000000000")
            .both(1.0 / 0.4, "ot=rv:a0000000000000;th:99a"),
        C::new(
            "arriving 50 percent sampled at 40 percent precision 6 with tid",
            40.0,
        )
        .precision(6)
        .trace_id("a0a0a0a0a0a0a0a0a0d0000000000000")
        .tracestate("ot=th:8")
        .equalizing(2.5, "ot=th:99999a")
        .proportional(5.0, "ot=th:cccccd"),
        C::new(
            "arriving 50 percent sampled at 40 percent partly sampled",
            40.0,
        )
        .precision(3)
        .trace_id("a0a0a0a0a0a0a0a0a0b0000000000000")
        .tracestate("ot=th:8")
        .equalizing(2.5, "ot=th:99a"),
        C::new(
            "arriving 50 percent sampled at 40 percent not sampled",
            40.0,
        )
        .precision(3)
        .trace_id("a0a0a0a0a0a0a0a0a080000000000000")
        .tracestate("ot=th:8"),
        C::new("200 percent equals 100 percent", 200.0).both(1.0, "ot=th:0"),
        C::new("tiny probability rounding", 100.0 * 2f32.powi(-14))
            .trace_id(IMPROBABLE_TID)
            .tracestate("ot=th:fffc")
            .equalizing(16384.0, "ot=th:fffc")
            .proportional(f64::from(1u32 << 28), "ot=th:fffffff"),
        // As close to 100% as a float32 percentage gets; 10 significant digits cannot be had.
        C::new("almost 100pct sampling", 99.99992)
            .precision(10)
            .trace_id(IMPROBABLE_TID)
            .both(1.0 / (1.0 - 8e-7), "ot=th:00000cccccccd"),
        C::new("probability underflow", 0.0625)
            .trace_id(IMPROBABLE_TID)
            .tracestate("ot=th:fffffffffffff8")
            .equalizing(2f64.powi(53), "ot=th:fffffffffffff8"),
    ];
    for case in &cases {
        for mode in [SamplerMode::Equalizing, SamplerMode::Proportional] {
            let name = format!("{mode:?} {}", case.name);
            let config = ProbabilisticSamplerConfig {
                mode,
                hash_seed: DEFAULT_HASH_SEED,
                sampling_precision: case.precision,
                fail_closed: case.fail_closed,
                ..go_config(case.pct)
            };
            let attributes = case
                .attribute
                .iter()
                .map(|(k, v)| kv(k, v.clone()))
                .collect();
            let (decision, tracestate) = decide_span(
                &config,
                span(tid(case.trace_id), case.tracestate, attributes),
            );
            let expected = match mode {
                SamplerMode::Equalizing => case.equalizing,
                _ => case.proportional,
            };
            match expected {
                Some((adjusted, out)) => {
                    assert!(decision.sampled, "{name}: should be sampled");
                    assert_eq!(tracestate, out, "{name}");
                    let th = TraceState::parse(&tracestate).unwrap().ot.th.unwrap().value;
                    let epsilon = if case.precision == 0 { 1e-9 } else { 1e-3 };
                    let relative = (th.adjusted_count() - adjusted).abs() / adjusted;
                    assert!(
                        relative <= epsilon,
                        "{name}: adjusted count {}",
                        th.adjusted_count()
                    );
                }
                None => assert!(!decision.sampled, "{name}: should not be sampled"),
            }
            match case.log {
                Some(message) => assert_one_problem(&decision, message, &name),
                None => assert!(
                    decision.problems.is_empty(),
                    "{name}: {:?}",
                    problems(&decision)
                ),
            }
        }
    }
}

#[test]
fn tracestate_errors_fail_closed() {
    let cases = [
        ("missing randomness", EMPTY_TID, "", "missing randomness"),
        (
            "invalid r-value",
            DEFAULT_TID,
            "ot=rv:abababababababab",
            "r-value must have 14 hex digits",
        ),
        (
            "invalid t-value",
            DEFAULT_TID,
            "ot=th:abababababababab",
            "t-value exceeds 14 hex digits",
        ),
        ("t-value syntax", DEFAULT_TID, "ot=th:-1", "invalid syntax"),
        (
            "inconsistent t-value trace ID",
            "ffffffffffffffffff70000000000000",
            "ot=th:8",
            "inconsistent arriving threshold",
        ),
        (
            "inconsistent t-value r-value",
            DEFAULT_TID,
            "ot=th:8;rv:70000000000000",
            "inconsistent arriving threshold",
        ),
    ];
    for (name, trace_id, tracestate, message) in cases {
        for mode in [SamplerMode::Equalizing, SamplerMode::Proportional] {
            let config = ProbabilisticSamplerConfig {
                mode,
                fail_closed: true,
                ..go_config(100.0)
            };
            let (decision, _) = decide_span(&config, span(tid(trace_id), tracestate, vec![]));
            let name = format!("{mode:?} {name}");
            assert!(!decision.sampled, "{name}");
            assert_one_problem(&decision, message, &name);
        }
    }
}

/// The collector's `TestLogsSampling` fixture: 100 records, record i with trace id
/// `[0 x 8, i x 8]` (empty for i = 0), `rando` on every record, `foo` (bytes) and `bar`
/// (hex string) on even ones, `priority` = 100.0 on every fourth.
fn logs_fixture() -> Batch {
    let records = (0..100u8)
        .map(|i| {
            let id = [[0u8; 8], [i; 8]].concat();
            let mut attributes = vec![kv(
                "rando",
                Value::IntValue(i64::from(compute_hash(&id, 123))),
            )];
            if i % 2 == 0 {
                attributes.push(kv("foo", Value::BytesValue(id.clone())));
                // pcommon's TraceID.String() is empty for the empty trace id.
                let bar = if i == 0 { String::new() } else { hex(&id) };
                attributes.push(kv("bar", Value::StringValue(bar)));
            }
            if i % 4 == 0 {
                attributes.push(kv("priority", Value::DoubleValue(100.0)));
            }
            LogRecord {
                time_unix_nano: 1_649_400_860,
                severity_number: 5,
                trace_id: id,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Logs, request.encode_to_vec().into()).unwrap()
}

fn run(config: ProbabilisticSamplerConfig, batch: Batch) -> (Vec<Batch>, Registry) {
    let registry = Registry::default();
    let mut processor = ProbabilisticSampler::new(config, "probabilistic_sampler", &registry);
    let mut out = Vec::new();
    processor.process(batch, Instant::now(), &mut out);
    (out, registry)
}

#[test]
fn logs_counts_match_the_collectors_fixture() {
    let record = |pct: f32, attribute: &str, fail_closed: bool| ProbabilisticSamplerConfig {
        attribute_source: "record".into(),
        from_attribute: attribute.into(),
        fail_closed,
        ..go_config(pct)
    };
    let priority = |mut c: ProbabilisticSamplerConfig| {
        c.sampling_priority = "priority".into();
        c
    };
    let trace_id_source = |pct: f32| ProbabilisticSamplerConfig {
        attribute_source: "traceID".into(),
        ..go_config(pct)
    };
    let cases = [
        ("happy_path", go_config(100.0), 100),
        (
            "nothing",
            ProbabilisticSamplerConfig {
                fail_closed: true,
                ..go_config(0.0)
            },
            0,
        ),
        (
            "roughly half",
            ProbabilisticSamplerConfig {
                attribute_source: "traceID".into(),
                mode: SamplerMode::HashSeed,
                fail_closed: true,
                ..go_config(50.0)
            },
            45,
        ),
        ("sampling_source no sampling", record(0.0, "foo", false), 0),
        (
            "sampling_source all sampling",
            record(100.0, "foo", false),
            100,
        ),
        ("sampling_source sampling", record(50.0, "foo", true), 23),
        (
            "sampling_source sampling as string",
            record(50.0, "bar", true),
            29,
        ),
        (
            "sampling_priority_0_record",
            priority(record(0.0, "rando", false)),
            25,
        ),
        (
            "sampling_priority_50_record",
            priority(record(50.0, "rando", false)),
            64,
        ),
        (
            "sampling_priority_100_record",
            priority(record(100.0, "rando", false)),
            100,
        ),
        (
            "sampling_priority_0_traceid",
            priority(trace_id_source(0.0)),
            25,
        ),
        (
            "sampling_priority_50_traceid",
            priority(trace_id_source(50.0)),
            57,
        ),
        (
            "sampling_priority_100_traceid",
            priority(trace_id_source(100.0)),
            100,
        ),
        (
            "sampling_priority with sampling field",
            priority(record(0.0, "foo", false)),
            25,
        ),
    ];
    for (name, config, expected) in cases {
        let (out, _) = run(config, logs_fixture());
        let received: usize = out.iter().map(|b| b.items).sum();
        assert_eq!(received, expected, "{name}");
        for batch in &out {
            let counted = crate::otlp::wire::count_items(Signal::Logs, &batch.to_bytes()).unwrap();
            assert_eq!(counted, batch.items, "{name}: item count matches the bytes");
        }
        if expected == 0 {
            assert!(out.is_empty(), "{name}: nothing is emitted");
        }
    }
}

fn attribute_map(attributes: &[KeyValue]) -> std::collections::BTreeMap<String, Option<Value>> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().and_then(|v| v.value.clone()),
            )
        })
        .collect()
}

fn str_value(s: &str) -> Value {
    Value::StringValue(s.into())
}

#[test]
fn logs_sampling_state() {
    struct Case {
        name: &'static str,
        config: ProbabilisticSamplerConfig,
        trace_id: &'static str,
        attributes: Vec<KeyValue>,
        log: Option<&'static str>,
        expect: Option<(f64, Vec<KeyValue>)>,
    }
    let trace_id_source = |pct: f32, mode: SamplerMode| ProbabilisticSamplerConfig {
        attribute_source: "traceID".into(),
        mode,
        ..go_config(pct)
    };
    let cases = vec![
        Case {
            name: "100 percent traceID",
            config: trace_id_source(100.0, SamplerMode::Proportional),
            trace_id: DEFAULT_TID,
            attributes: vec![kv("ignored", str_value("value"))],
            log: None,
            expect: Some((
                1.0,
                vec![
                    kv("sampling.threshold", str_value("0")),
                    kv("ignored", str_value("value")),
                ],
            )),
        },
        Case {
            name: "100 percent traceID hash_seed",
            config: ProbabilisticSamplerConfig {
                hash_seed: 22,
                ..trace_id_source(100.0, SamplerMode::HashSeed)
            },
            trace_id: DEFAULT_TID,
            attributes: vec![kv("K", str_value("V"))],
            log: None,
            expect: Some((
                1.0,
                vec![
                    kv("K", str_value("V")),
                    kv("sampling.threshold", str_value("0")),
                    kv(
                        "sampling.randomness",
                        Value::StringValue(randomness_from_bytes(&tid(DEFAULT_TID), 22).rvalue()),
                    ),
                ],
            )),
        },
        Case {
            name: "100 percent attribute",
            config: ProbabilisticSamplerConfig {
                attribute_source: "record".into(),
                from_attribute: "veryrandom".into(),
                hash_seed: 49,
                ..go_config(100.0)
            },
            trace_id: DEFAULT_TID,
            attributes: vec![kv("veryrandom", str_value("1234"))],
            log: None,
            expect: Some((
                1.0,
                vec![
                    kv("sampling.threshold", str_value("0")),
                    kv(
                        "sampling.randomness",
                        Value::StringValue(randomness_from_bytes(b"1234", 49).rvalue()),
                    ),
                    kv("veryrandom", str_value("1234")),
                ],
            )),
        },
        Case {
            name: "0 percent traceID",
            config: trace_id_source(0.0, SamplerMode::Unset),
            trace_id: DEFAULT_TID,
            attributes: vec![],
            log: None,
            expect: None,
        },
        Case {
            name: "10 percent priority sampled incoming randomness",
            config: ProbabilisticSamplerConfig {
                sampling_priority: "veryrandom".into(),
                sampling_precision: 6,
                ..trace_id_source(0.0, SamplerMode::Unset)
            },
            trace_id: DEFAULT_TID,
            attributes: vec![
                kv("sampling.randomness", str_value("e6147c00000000")),
                kv("veryrandom", Value::DoubleValue(10.125)),
            ],
            log: None,
            expect: Some((
                9.876654321,
                vec![
                    kv("sampling.randomness", str_value("e6147c00000000")),
                    kv("sampling.threshold", str_value("e6147b")),
                    kv("veryrandom", Value::DoubleValue(10.125)),
                ],
            )),
        },
        Case {
            name: "25 percent incoming",
            config: trace_id_source(50.0, SamplerMode::Proportional),
            trace_id: "fefefefefefefefefef0000000000000",
            attributes: vec![kv("sampling.threshold", str_value("c"))],
            log: None,
            expect: Some((8.0, vec![kv("sampling.threshold", str_value("e"))])),
        },
        Case {
            name: "25 percent arriving inconsistent",
            config: ProbabilisticSamplerConfig {
                fail_closed: true,
                ..trace_id_source(50.0, SamplerMode::Equalizing)
            },
            trace_id: "fefefefefefefefefeb0000000000000",
            attributes: vec![kv("sampling.threshold", str_value("c"))],
            log: Some("inconsistent arriving threshold"),
            expect: None,
        },
        Case {
            name: "25 percent arriving equalizing",
            config: ProbabilisticSamplerConfig {
                sampling_priority: "prio".into(),
                ..trace_id_source(50.0, SamplerMode::Equalizing)
            },
            trace_id: "fefefefefefefefefefefefefefefefe",
            attributes: vec![
                kv("sampling.threshold", str_value("c")),
                kv("prio", Value::IntValue(37)),
            ],
            log: Some("cannot raise existing sampling probability"),
            expect: Some((
                4.0,
                vec![
                    kv("sampling.threshold", str_value("c")),
                    kv("prio", Value::IntValue(37)),
                ],
            )),
        },
        Case {
            name: "hash_seed with spec randomness",
            config: trace_id_source(100.0, SamplerMode::HashSeed),
            trace_id: DEFAULT_TID,
            attributes: vec![kv("sampling.randomness", str_value("f2341234123412"))],
            log: Some("item has sampling randomness"),
            expect: Some((
                0.0,
                vec![kv("sampling.randomness", str_value("f2341234123412"))],
            )),
        },
    ];
    for case in cases {
        let (decision, attributes) = decide_record(&case.config, case.trace_id, case.attributes);
        let name = case.name;
        match case.log {
            Some(message) => assert_one_problem(&decision, message, name),
            None => assert!(
                decision.problems.is_empty(),
                "{name}: {:?}",
                problems(&decision)
            ),
        }
        match case.expect {
            None => assert!(!decision.sampled, "{name}"),
            Some((adjusted, expected)) => {
                assert!(decision.sampled, "{name}");
                assert_eq!(
                    attribute_map(&attributes),
                    attribute_map(&expected),
                    "{name}"
                );
                let th = attributes.iter().find(|kv| kv.key == "sampling.threshold");
                match th
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| v.value.as_ref())
                {
                    Some(Value::StringValue(t)) => {
                        let count = Threshold::parse_tvalue(t).unwrap().adjusted_count();
                        let epsilon = if case.config.sampling_precision == 0 {
                            1e-9
                        } else {
                            1e-3
                        };
                        assert!(
                            (count - adjusted).abs() / adjusted <= epsilon,
                            "{name}: {count}"
                        );
                    }
                    _ => assert_eq!(adjusted, 0.0, "{name}: no threshold expected"),
                }
            }
        }
    }
}

#[test]
fn logs_missing_randomness() {
    let cases = [
        (0.0, "record", true, false),
        (50.0, "record", true, false),
        (100.0, "record", true, false),
        (0.0, "record", false, false),
        (50.0, "record", false, true),
        (100.0, "record", false, true),
        (0.0, "traceID", true, false),
        (50.0, "traceID", true, false),
        (100.0, "traceID", true, false),
        (0.0, "traceID", false, false),
        (50.0, "traceID", false, true),
        (100.0, "traceID", false, true),
    ];
    for mode in [
        SamplerMode::HashSeed,
        SamplerMode::Equalizing,
        SamplerMode::Proportional,
    ] {
        for (pct, source, fail_closed, sampled) in cases {
            let config = ProbabilisticSamplerConfig {
                mode,
                hash_seed: DEFAULT_HASH_SEED,
                fail_closed,
                attribute_source: source.into(),
                from_attribute: "unused".into(),
                ..go_config(pct)
            };
            let (decision, _) =
                decide_record(&config, EMPTY_TID, vec![kv("unused", str_value(""))]);
            let name = format!("{mode:?} {pct}% {source} fail_closed={fail_closed}");
            assert_eq!(decision.sampled, sampled, "{name}");
            if pct == 0.0 {
                assert!(decision.problems.is_empty(), "{name}");
            } else {
                assert_one_problem(&decision, "missing randomness", &name);
            }
        }
    }
}

fn traces_batch(resources: Vec<Vec<Vec<&str>>>) -> Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|scopes| ResourceSpans {
                scope_spans: scopes
                    .into_iter()
                    .map(|ids| ScopeSpans {
                        spans: ids
                            .into_iter()
                            .map(|id| span(tid(id), "", vec![]))
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    };
    Batch::from_encoded(Signal::Traces, request.encode_to_vec().into()).unwrap()
}

const KEEP_AT_HALF: &str = "000000000000000000c0000000000000";
const DROP_AT_HALF: &str = "000000000000000000300000000000ff";

#[test]
fn batches_lose_empty_scopes_and_resources_and_keep_counts_right() {
    let config = ProbabilisticSamplerConfig {
        mode: SamplerMode::Proportional,
        ..ProbabilisticSamplerConfig {
            sampling_percentage: 50.0,
            ..Default::default()
        }
    };
    let batch = traces_batch(vec![
        vec![vec![DROP_AT_HALF, KEEP_AT_HALF], vec![DROP_AT_HALF]],
        vec![vec![DROP_AT_HALF, DROP_AT_HALF]],
        vec![vec![KEEP_AT_HALF], vec![KEEP_AT_HALF, DROP_AT_HALF]],
    ]);
    assert_eq!(batch.items, 8);
    let (out, registry) = run(config.clone(), batch);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 3);
    let request = ExportTraceServiceRequest::decode(out[0].to_bytes()).unwrap();
    let shape: Vec<Vec<usize>> = request
        .resource_spans
        .iter()
        .map(|r| r.scope_spans.iter().map(|s| s.spans.len()).collect())
        .collect();
    assert_eq!(shape, vec![vec![1], vec![1, 1]]);
    for s in request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        assert_eq!(s.trace_state, "ot=th:8");
    }

    let metric = "otelcol_processor_probabilistic_sampler_count_traces_sampled_total";
    assert_eq!(
        registry.value(metric, "policy=\"trace_id_w3c\",sampled=\"true\""),
        3
    );
    assert_eq!(
        registry.value(metric, "policy=\"trace_id_w3c\",sampled=\"false\""),
        5
    );
    let text = registry.render();
    assert!(text.contains(&format!(
        "{metric}{{processor=\"probabilistic_sampler\",policy=\"trace_id_w3c\",sampled=\"true\"}} 3"
    )), "{text}");
    assert!(
        !text.contains("missing_randomness"),
        "only seen label sets: {text}"
    );

    let (out, _) = run(config, traces_batch(vec![vec![vec![DROP_AT_HALF]]]));
    assert!(out.is_empty(), "nothing left, nothing emitted");
}

#[test]
fn logs_metrics_name_the_attribute_policy() {
    let config = ProbabilisticSamplerConfig {
        attribute_source: "record".into(),
        from_attribute: "foo".into(),
        fail_closed: true,
        ..go_config(50.0)
    };
    let (_, registry) = run(config, logs_fixture());
    let metric = "otelcol_processor_probabilistic_sampler_count_logs_sampled_total";
    assert_eq!(
        registry.value(metric, "policy=\"foo\",sampled=\"true\""),
        23
    );
    assert_eq!(
        registry.value(metric, "policy=\"foo\",sampled=\"false\""),
        27
    );
    assert_eq!(
        registry.value(metric, "policy=\"missing_randomness\",sampled=\"false\""),
        50
    );
}

#[test]
fn undecodable_batches_follow_fail_closed() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "QQQQ".into(),
                    trace_id: tid(KEEP_AT_HALF),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut bytes = request.encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"QQQQ").unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
    let batch = Batch::from_encoded(Signal::Traces, bytes.into()).unwrap();

    let (out, registry) = run(go_config(100.0), batch.clone());
    assert_eq!(out.len(), 1, "fail open passes it on untouched");
    assert_eq!(out[0].to_bytes(), batch.to_bytes());

    let closed = ProbabilisticSamplerConfig {
        fail_closed: true,
        ..go_config(100.0)
    };
    let (out2, registry2) = run(closed, batch);
    assert!(out2.is_empty());
    let metric = "otelcol_processor_probabilistic_sampler_count_traces_sampled_total";
    assert_eq!(
        registry.value(metric, "policy=\"missing_randomness\",sampled=\"true\""),
        1
    );
    assert_eq!(
        registry2.value(metric, "policy=\"missing_randomness\",sampled=\"false\""),
        1
    );
}

#[test]
fn metrics_batches_pass_through() {
    let batch = Batch::new(Signal::Metrics, bytes::Bytes::from_static(b""), 0);
    let (out, _) = run(go_config(0.0), batch);
    assert_eq!(out.len(), 1);
}

proptest! {
    /// Consistency: whatever a 10% sampler keeps, a 50% sampler with the same settings keeps,
    /// in every mode, with or without arriving `rv`/`th`.
    #[test]
    fn kept_at_10_percent_is_kept_at_50_percent(
        id in proptest::array::uniform16(any::<u8>()),
        rv in proptest::option::of(0u64..(1u64 << 56)),
        arriving in proptest::option::of(prop::sample::select(vec!["0", "8", "c", "e668", "f", "fffc"])),
        seed in any::<u32>(),
        mode in prop::sample::select(vec![
            SamplerMode::Unset,
            SamplerMode::HashSeed,
            SamplerMode::Equalizing,
            SamplerMode::Proportional,
        ]),
        precision in 1i32..=14,
    ) {
        let mut ot = Vec::new();
        if let Some(rv) = rv {
            ot.push(format!("rv:{}", Randomness::from_unsigned(rv).rvalue()));
        }
        if let Some(th) = arriving {
            ot.push(format!("th:{th}"));
        }
        let tracestate = if ot.is_empty() { String::new() } else { format!("ot={}", ot.join(";")) };
        let kept = |pct: f32| {
            let config = ProbabilisticSamplerConfig {
                sampling_percentage: pct,
                hash_seed: seed,
                mode,
                sampling_precision: precision,
                ..Default::default()
            };
            decide_span(&config, span(id.to_vec(), &tracestate, vec![])).0.sampled
        };
        if kept(10.0) {
            prop_assert!(kept(50.0));
        }
    }

    /// A span kept at 10% and passed to a second, equalizing 50% stage is kept there too:
    /// the first stage's `th` is stricter, so the second passes it on one-for-one.
    #[test]
    fn an_equalizing_second_stage_keeps_what_the_first_kept(
        id in proptest::array::uniform16(any::<u8>()),
        first in prop::sample::select(vec![SamplerMode::Equalizing, SamplerMode::Proportional]),
    ) {
        let config = |pct: f32, mode| ProbabilisticSamplerConfig {
            sampling_percentage: pct,
            mode,
            ..Default::default()
        };
        let (d1, tracestate) = decide_span(&config(10.0, first), span(id.to_vec(), "", vec![]));
        if d1.sampled {
            let (d2, out) =
                decide_span(&config(50.0, SamplerMode::Equalizing), span(id.to_vec(), &tracestate, vec![]));
            prop_assert!(d2.sampled);
            prop_assert_eq!(out, tracestate);
        }
    }
}
