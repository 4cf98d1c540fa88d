use super::*;
use proptest::prelude::*;

fn ops(yaml: &str) -> Result<Operators, String> {
    let text = format!("include: [x]\noperators:\n{yaml}");
    let node = node::parse("test.yaml", &text).map_err(|e| e.to_string())?;
    let configs = parse_operators(&node, "receivers.filelog").map_err(|e| e.to_string())?;
    Ok(Operators::new(&configs))
}

fn record(body: &str) -> LogRecord {
    LogRecord {
        body: Some(field::string_value(body.into())),
        attributes: vec![KeyValue {
            key: "log.iostream".into(),
            value: Some(field::string_value("stdout".into())),
            ..Default::default()
        }],
        time_unix_nano: 5,
        ..Default::default()
    }
}

fn attr<'a>(r: &'a LogRecord, k: &str) -> Option<&'a Value> {
    field::map_get(&r.attributes, k).and_then(|v| v.value.as_ref())
}

const CHAIN: &str = r#"
  - type: json_parser
    timestamp:
      parse_from: attributes.time
      layout: '%Y-%m-%dT%H:%M:%S.%fZ'
    severity:
      parse_from: attributes.level
  - type: trace_parser
    trace_id:
      parse_from: attributes.trace_id
    span_id:
      parse_from: attributes.span_id
"#;

#[test]
fn json_line_becomes_severity_time_trace_and_attributes() {
    let chain = ops(CHAIN).unwrap();
    let body = r#"{"level":"error","time":"2024-05-01T10:00:00.250Z","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","model_version":"v23","latency_ms":142}"#;
    let mut r = record(body);
    let mut stats = OpStats::default();
    assert!(chain.apply(&mut r, &mut Vec::new(), 0, &mut stats));
    assert_eq!(stats, OpStats::default());
    assert_eq!(r.severity_number, 17);
    assert_eq!(r.severity_text, "error");
    assert_eq!(r.time_unix_nano, 1_714_557_600_250_000_000);
    assert_eq!(r.trace_id.len(), 16);
    assert_eq!(r.trace_id[0], 0x0a);
    assert_eq!(
        r.span_id,
        vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
    );
    // The body stays; the parsed fields stay as attributes, as in the collector.
    assert_eq!(r.body, Some(field::string_value(body.into())));
    assert_eq!(
        attr(&r, "model_version"),
        Some(&Value::StringValue("v23".into()))
    );
    assert_eq!(attr(&r, "latency_ms"), Some(&Value::DoubleValue(142.0)));
    assert!(attr(&r, "trace_id").is_some());
    assert!(attr(&r, "log.iostream").is_some());
}

#[test]
fn a_line_that_is_not_json_passes_unchanged_and_is_counted() {
    let chain = ops(CHAIN).unwrap();
    let mut r = record("plain text");
    let before = r.clone();
    let mut stats = OpStats::default();
    assert!(chain.apply(&mut r, &mut Vec::new(), 0, &mut stats));
    assert_eq!(stats.errors, 1);
    assert_eq!(r, before);
    let drop = ops("  - type: json_parser\n    on_error: drop_quiet\n").unwrap();
    let mut stats = OpStats::default();
    let mut records = vec![record("x"), record("{}")];
    assert!(drop.apply_all(&mut records, &[], 0, &mut stats).is_none());
    assert_eq!((records.len(), stats.errors, stats.dropped), (1, 1, 1));
}

#[test]
fn regex_move_remove_add() {
    let bad = ops(r#"
  - type: regex_parser
    regex: '^(?P<method>[A-Z]+) (?P<path>\S+)(?: (?P<code>\d+))?'
    severity:
      parse_from: attributes.code
      mapping:
        error: 5xx
        warn: [404, {min: 400, max: 403}]
  - type: move
    from: attributes.path
    to: attributes["http.route"]
  - type: remove
    field: attributes.log.iostream
  - type: add
    field: resource_less.x
"#);
    assert!(bad.unwrap_err().contains("unrecognized prefix"));
    let ops = ops_ok(
        r#"
  - type: regex_parser
    regex: '^(?P<method>[A-Z]+) (?P<path>\S+)(?: (?P<code>\d+))?'
    severity:
      parse_from: attributes.code
      mapping:
        error: 5xx
        warn: [404, {min: 400, max: 403}]
  - type: move
    from: attributes.path
    to: attributes["http.route"]
  - type: remove
    field: attributes["log.iostream"]
  - type: add
    field: body.tag
    value: {a: 1}
"#,
    );
    let mut r = record("GET /x 503");
    let mut stats = OpStats::default();
    assert!(ops.apply(&mut r, &mut Vec::new(), 0, &mut stats));
    assert_eq!(stats.errors, 0);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "503"));
    assert_eq!(
        attr(&r, "http.route"),
        Some(&Value::StringValue("/x".into()))
    );
    assert!(attr(&r, "path").is_none());
    assert!(attr(&r, "log.iostream").is_none());
    // `add` of a map to body.tag made the body a map.
    let tag = field::get(&r, &[], &Field::parse("body.tag.a", false).unwrap());
    assert_eq!(tag.and_then(|v| v.value.clone()), Some(Value::IntValue(1)));
    let mut r = record("GET /y 401");
    assert!(ops.apply(&mut r, &mut Vec::new(), 0, &mut stats));
    assert_eq!(r.severity_number, 13);
    // No code: the group is empty, the severity is unset but its text is set.
    let mut r = record("GET /z");
    assert!(ops.apply(&mut r, &mut Vec::new(), 0, &mut stats));
    assert_eq!((r.severity_number, r.severity_text.as_str()), (0, ""));
}

fn ops_ok(yaml: &str) -> Operators {
    ops(yaml).unwrap()
}

#[test]
fn config_errors_are_located_and_name_what_is_not_built() {
    let cases = [
        (
            "  - type: json_parser\n    if: 'len(body) > 3'\n",
            "is not supported yet in `if`",
        ),
        (
            "  - type: add\n    field: attributes.x\n    value: EXPR(body)\n",
            "EXPR",
        ),
        (
            "  - type: json_parser\n    output: nowhere\n",
            "is not supported yet",
        ),
        (
            "  - type: recombine\n",
            "`recombine` operator is not supported yet",
        ),
        (
            "  - type: json_parser\n  - type: container\n",
            "must be the first",
        ),
        (
            "  - type: json_parser\n    parse_from: resource\n",
            "without subfield",
        ),
        (
            "  - type: add\n    id: a\n    field: body\n    value: 1\n  - type: add\n    id: a\n    field: body\n    value: 2\n",
            "used twice",
        ),
        (
            "  - type: regex_parser\n    regex: '(?P<a>'\n",
            "invalid regex",
        ),
        (
            "  - type: json_parser\n    on_error: ignore\n",
            "unknown value `ignore`",
        ),
        (
            "  - type: json_parser\n    parse_form: body\n",
            "parse_form",
        ),
        ("  - type: time_parser\n    parse_from: body\n", "layout"),
        ("  - type: severity_parser\n", "parse_from"),
    ];
    for (yaml, want) in cases {
        let e = ops(yaml).err().unwrap_or_default();
        assert!(e.contains(want), "{yaml}: {e}");
        assert!(e.starts_with("test.yaml:"), "located: {e}");
    }
    // `output` naming the next operator is a straight line, so it is fine.
    ops_ok("  - type: json_parser\n    output: tp\n  - type: trace_parser\n    id: tp\n");
    // Operators left with their type as id are numbered, as the collector does.
    ops_ok(
        "  - type: json_parser\n  - type: json_parser\n    output: json_parser2\n  - type: json_parser\n",
    );
}

/// The collector's default severity mapping (severity_builder.go): names, numbers 1–24,
/// `warning` and `err` aliases, case-insensitive.
#[test]
fn default_severity_mapping_matches_the_collector() {
    let m = builtin_mapping("");
    let names = ["trace", "debug", "info", "warn", "error", "fatal"];
    for (i, name) in names.iter().enumerate() {
        let base = (i * 4 + 1) as i32;
        assert_eq!(m.get(*name), Some(&base));
        for k in 2..=4 {
            assert_eq!(m.get(&format!("{name}{k}")), Some(&(base + k - 1)));
        }
    }
    for n in 1..=24 {
        assert_eq!(m.get(&n.to_string()), Some(&n));
    }
    assert_eq!(m.get("warning"), Some(&13));
    assert_eq!(m.get("warning4"), Some(&16));
    assert_eq!(m.get("err"), Some(&17));
    assert_eq!(m.get("err3"), Some(&19));
    assert_eq!(m.len(), 24 * 2 + 8);
    assert!(builtin_mapping("none").is_empty());
    assert_eq!(builtin_mapping("otel").get("warning"), None);
    let sev = ops_ok("  - type: severity_parser\n    parse_from: body\n");
    for (text, want) in [("ERROR", 17), ("Warning", 13), ("bogus", 0), ("9", 9)] {
        let mut r = record(text);
        sev.apply(&mut r, &mut Vec::new(), 0, &mut OpStats::default());
        assert_eq!((r.severity_number, r.severity_text.as_str()), (want, text));
    }
}

#[test]
fn json_numbers_follow_parse_ints() {
    let v = parse_json(
        &field::string_value(r#"{"a":1,"b":1.5,"c":[1,{"d":null}],"a":2}"#.into()),
        false,
    )
    .unwrap();
    let Some(Value::KvlistValue(l)) = v.value else {
        panic!()
    };
    assert_eq!(l.values.len(), 3);
    assert_eq!(
        l.values[0].value.as_ref().and_then(|v| v.value.clone()),
        Some(Value::DoubleValue(2.0))
    );
    let v = parse_json(&field::string_value(r#"{"a":1}"#.into()), true).unwrap();
    let Some(Value::KvlistValue(l)) = v.value else {
        panic!()
    };
    assert_eq!(
        l.values[0].value.as_ref().and_then(|v| v.value.clone()),
        Some(Value::IntValue(1))
    );
    assert!(parse_json(&field::string_value("[1]".into()), false).is_err());
    assert!(parse_json(&field::string_value("{} x".into()), false).is_err());
}

fn arb_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        "\\PC{0,20}".prop_map(field::string_value),
        any::<i64>().prop_map(|i| AnyValue {
            value: Some(Value::IntValue(i))
        }),
        any::<f64>().prop_map(|f| AnyValue {
            value: Some(Value::DoubleValue(f))
        }),
        Just(AnyValue::default()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        proptest::collection::vec(("[a-z_.]{1,6}", inner), 0..4).prop_map(|kvs| AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: kvs
                    .into_iter()
                    .map(|(k, v)| KeyValue {
                        key: k,
                        value: Some(v),
                        ..Default::default()
                    })
                    .collect(),
            })),
        })
    })
}

proptest! {
    #[test]
    fn operators_never_panic(body in "\\PC{0,80}", json_ish in "\\{(\"[a-z_]{1,8}\":(\"\\PC{0,10}\"|[0-9.e-]{1,6}|null|true|\\{\\}),?){0,5}\\}", v in arb_value()) {
        let all = ops_ok(r#"
  - type: json_parser
    timestamp:
      parse_from: attributes.time
      layout_type: epoch
      layout: s.ms
    severity:
      parse_from: attributes.level
  - type: trace_parser
    trace_id:
      parse_from: attributes.trace_id
    span_id:
      parse_from: attributes.span_id
    trace_flags:
      parse_from: attributes.flags
  - type: regex_parser
    regex: '(?P<w>\w+)'
    parse_from: attributes.msg
  - type: time_parser
    parse_from: attributes.ts
    layout: '%d/%b/%Y:%H:%M:%S %z'
  - type: severity_parser
    parse_from: body.level
  - type: move
    from: attributes.a
    to: body.b
  - type: remove
    field: body.c
  - type: add
    field: attributes.d.e
    value: [1, x]
"#);
        let mut stats = OpStats::default();
        for b in [body.clone(), json_ish.clone()] {
            let mut r = record(&b);
            all.apply(&mut r, &mut Vec::new(), 0, &mut stats);
        }
        let mut r = record("{}");
        r.body = Some(v.clone());
        for k in ["time", "level", "trace_id", "span_id", "flags", "msg", "ts", "a"] {
            r.attributes.push(KeyValue { key: k.into(), value: Some(v.clone()), ..Default::default() });
        }
        all.apply(&mut r, &mut Vec::new(), 0, &mut stats);
    }
}
