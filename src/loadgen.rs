//! `sluice loadgen`: a load generator in the spirit of the collector's telemetrygen. It sends
//! generated traces, logs or metrics over OTLP/gRPC or OTLP/HTTP at a given rate and reports
//! what the server answered.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use rand::{Rng, SeedableRng};

use crate::config::node::parse_duration;
use crate::exporters::Compression;
use crate::exporters::otlphttp::compress;
use crate::otlp::Signal;
use crate::otlp::codec::RawCodec;

const HELP: &str = "\
sluice loadgen — send generated OTLP data

OPTIONS:
    --signal traces|logs|metrics   what to send (default traces)
    --protocol grpc|http           transport (default grpc)
    --endpoint HOST:PORT           default 127.0.0.1:4317 (grpc) or 127.0.0.1:4318 (http)
    --rate N                       items per second over all workers; 0 = as fast as possible (default 1000)
    --duration D                   how long to send, e.g. 10s (default 10s unless --count)
    --count N                      stop after N items
    --batch N                      items per request (default 100)
    --spans-per-trace N            spans sharing one trace id (default 5)
    --attributes N                 attributes per item (default 10)
    --error-ratio F                fraction of traces with an error span (default 0)
    --slow-ratio F                 fraction of traces lasting 2 s instead of ~50 ms (default 0)
    --workers N                    concurrent senders (default 1)
    --distinct N                   each worker generates N requests up front and sends them in
                                   turn, so a benchmark's sender costs little; 0 = a new
                                   request each time (default 0)
    --compression none|gzip|zstd   request compression (default none)
    --service NAME                 service.name (default loadgen)";

#[derive(Clone, Debug)]
pub struct Options {
    pub signal: Signal,
    pub http: bool,
    pub endpoint: Option<String>,
    pub rate: f64,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub batch: usize,
    pub spans_per_trace: usize,
    pub attributes: usize,
    pub error_ratio: f64,
    pub slow_ratio: f64,
    pub workers: usize,
    /// Requests each worker generates up front and cycles through (0: a new one each time).
    pub distinct: usize,
    pub compression: Compression,
    pub service: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signal: Signal::Traces,
            http: false,
            endpoint: None,
            rate: 1000.0,
            duration: None,
            count: None,
            batch: 100,
            spans_per_trace: 5,
            attributes: 10,
            error_ratio: 0.0,
            slow_ratio: 0.0,
            workers: 1,
            distinct: 0,
            compression: Compression::None,
            service: "loadgen".into(),
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag.as_str(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        let int = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: `{v}` is not a whole number"))
        };
        match name {
            "--signal" => {
                o.signal = Signal::parse(&value).ok_or(format!("--signal: unknown `{value}`"))?
            }
            "--protocol" => {
                o.http = match value.as_str() {
                    "grpc" => false,
                    "http" => true,
                    _ => return Err(format!("--protocol: unknown `{value}` (grpc, http)")),
                }
            }
            "--endpoint" => o.endpoint = Some(value),
            "--rate" => o.rate = num(&value)?,
            "--duration" => o.duration = Some(parse_duration(&value)?),
            "--count" => o.count = Some(int(&value)?),
            "--batch" => o.batch = int(&value)?.max(1) as usize,
            "--spans-per-trace" => o.spans_per_trace = int(&value)?.max(1) as usize,
            "--attributes" => o.attributes = int(&value)? as usize,
            "--error-ratio" => o.error_ratio = num(&value)?,
            "--slow-ratio" => o.slow_ratio = num(&value)?,
            "--workers" => o.workers = int(&value)?.max(1) as usize,
            "--distinct" => o.distinct = int(&value)? as usize,
            "--compression" => {
                o.compression = match value.as_str() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    _ => {
                        return Err(format!(
                            "--compression: unknown `{value}` (none, gzip, zstd)"
                        ));
                    }
                }
            }
            "--service" => o.service = value,
            _ => return Err(format!("unknown option `{name}`")),
        }
    }
    if o.duration.is_none() && o.count.is_none() {
        o.duration = Some(Duration::from_secs(10));
    }
    Ok(o)
}

pub fn main(args: &[String]) -> ExitCode {
    let options = match parse_args(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(options));
    // A closed stdout (`| head`) must not turn a finished run into a panic.
    let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{report}"));
    if report.accepted_requests > 0 && report.failed_requests == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a load run sent and what came back.
#[derive(Debug, Default)]
pub struct Report {
    pub signal: Option<Signal>,
    pub items_sent: u64,
    pub items_accepted: u64,
    pub accepted_requests: u64,
    pub failed_requests: u64,
    pub elapsed: Duration,
    pub outcomes: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let item = self.signal.map_or("items", |s| s.item_name());
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "sent {} {item} in {} requests over {:.2}s ({:.0} {item}/s)",
            self.items_sent,
            self.accepted_requests + self.failed_requests,
            secs,
            self.items_sent as f64 / secs
        )?;
        writeln!(
            f,
            "accepted {} {item} in {} requests; {} requests failed",
            self.items_accepted, self.accepted_requests, self.failed_requests
        )?;
        for (outcome, n) in &self.outcomes {
            writeln!(f, "  {outcome}: {n}")?;
        }
        Ok(())
    }
}

struct Shared {
    options: Options,
    sent: AtomicU64,
    accepted_items: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

pub async fn run(options: Options) -> Report {
    let started = Instant::now();
    let workers = options.workers;
    let shared = Arc::new(Shared {
        options,
        sent: AtomicU64::new(0),
        accepted_items: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        outcomes: Mutex::new(BTreeMap::new()),
    });
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let shared = shared.clone();
            tokio::spawn(async move { worker(w as u64, shared, started).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = shared
        .outcomes
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    Report {
        signal: Some(shared.options.signal),
        items_sent: shared.sent.load(Ordering::Relaxed),
        items_accepted: shared.accepted_items.load(Ordering::Relaxed),
        accepted_requests: shared.ok.load(Ordering::Relaxed),
        failed_requests: shared.failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        outcomes,
    }
}

async fn worker(index: u64, shared: Arc<Shared>, started: Instant) {
    let o = &shared.options;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(
        index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_nanos(),
    );
    let per_worker_rate = o.rate / o.workers as f64;
    let interval = if per_worker_rate > 0.0 {
        Some(Duration::from_secs_f64(o.batch as f64 / per_worker_rate))
    } else {
        None
    };
    let sender = match Sender::new(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    let prepared: Vec<Bytes> = (0..o.distinct)
        .map(|_| Bytes::from(generate(o, o.batch, &mut rng)))
        .collect();
    let mut turn = 0;
    let mut next = Instant::now();
    loop {
        if o.duration.is_some_and(|d| started.elapsed() >= d) {
            return;
        }
        let want = o.batch as u64;
        let reserved = shared.sent.fetch_add(want, Ordering::Relaxed);
        let items = match o.count {
            Some(c) if reserved >= c => {
                shared.sent.fetch_sub(want, Ordering::Relaxed);
                return;
            }
            Some(c) => {
                let n = want.min(c - reserved);
                shared.sent.fetch_sub(want - n, Ordering::Relaxed);
                n as usize
            }
            None => o.batch,
        };
        let payload = if items == o.batch && !prepared.is_empty() {
            turn += 1;
            prepared[turn % prepared.len()].clone()
        } else {
            Bytes::from(generate(o, items, &mut rng))
        };
        let outcome = sender.send(o.signal, payload).await;
        let ok = outcome == "ok";
        if ok {
            shared.ok.fetch_add(1, Ordering::Relaxed);
            shared
                .accepted_items
                .fetch_add(items as u64, Ordering::Relaxed);
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut m) = shared.outcomes.lock() {
            *m.entry(outcome).or_default() += 1;
        }
        if let Some(i) = interval {
            next += i;
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

enum Sender {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http {
        client: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        base: String,
        compression: Compression,
    },
}

impl Sender {
    fn new(o: &Options) -> Result<Sender, String> {
        if o.http {
            let endpoint = o
                .endpoint
                .clone()
                .unwrap_or_else(|| "127.0.0.1:4318".into());
            let base = if endpoint.contains("://") {
                endpoint
            } else {
                format!("http://{endpoint}")
            };
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
            Ok(Sender::Http {
                client,
                base: base.trim_end_matches('/').to_string(),
                compression: o.compression,
            })
        } else {
            let endpoint = o
                .endpoint
                .clone()
                .unwrap_or_else(|| "127.0.0.1:4317".into());
            let uri = if endpoint.contains("://") {
                endpoint
            } else {
                format!("http://{endpoint}")
            };
            let channel = tonic::transport::Endpoint::from_shared(uri)
                .map_err(|e| format!("invalid endpoint: {e}"))?
                .connect_lazy();
            let mut grpc = tonic::client::Grpc::new(channel);
            match o.compression {
                Compression::Gzip => {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip)
                }
                Compression::Zstd => {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Zstd)
                }
                _ => {}
            }
            Ok(Sender::Grpc(grpc))
        }
    }

    /// Sends one request; returns "ok" or a short description of what came back.
    async fn send(&self, signal: Signal, payload: Bytes) -> String {
        match self {
            Sender::Grpc(grpc) => {
                let mut grpc = grpc.clone();
                if let Err(e) = grpc.ready().await {
                    return format!("grpc connect error: {e}");
                }
                let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                match grpc
                    .unary(tonic::Request::new(payload), path, RawCodec)
                    .await
                {
                    Ok(_) => "ok".into(),
                    Err(s) => format!("grpc {:?}: {}", s.code(), s.message()),
                }
            }
            Sender::Http {
                client,
                base,
                compression,
            } => {
                let (body, encoding) = match compress(&payload, *compression) {
                    Ok(c) => c,
                    Err(e) => return format!("compression error: {e}"),
                };
                let mut req = http::Request::post(format!("{base}{}", signal.http_path()))
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                if let Some(enc) = encoding {
                    req = req.header(http::header::CONTENT_ENCODING, enc);
                }
                let Ok(req) = req.body(Full::new(body)) else {
                    return "invalid request".into();
                };
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        if status.is_success() {
                            "ok".into()
                        } else {
                            format!("http {}", status.as_u16())
                        }
                    }
                    Err(e) => format!("http error: {e}"),
                }
            }
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn attributes(n: usize, i: usize, rng: &mut impl Rng) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(n);
    let base = [
        (
            "http.request.method",
            any_value::Value::StringValue("GET".into()),
        ),
        (
            "http.route",
            any_value::Value::StringValue("/api/v1/items/{id}".into()),
        ),
        ("http.response.status_code", any_value::Value::IntValue(200)),
        (
            "server.address",
            any_value::Value::StringValue("items.internal.example".into()),
        ),
        (
            "client.address",
            any_value::Value::StringValue(format!("10.0.{}.{}", i % 250, rng.random_range(1..250))),
        ),
        (
            "user_agent.original",
            any_value::Value::StringValue("loadgen/1.0".into()),
        ),
        (
            "request.size",
            any_value::Value::IntValue(rng.random_range(100..5000)),
        ),
        (
            "cache.hit",
            any_value::Value::BoolValue(rng.random_bool(0.5)),
        ),
        (
            "sample.ratio",
            any_value::Value::DoubleValue(rng.random::<f64>()),
        ),
        (
            "item.id",
            any_value::Value::StringValue(format!("item-{}", rng.random_range(0..1_000_000))),
        ),
    ];
    for k in 0..n {
        let (key, value) = &base[k % base.len()];
        let key = if k < base.len() {
            key.to_string()
        } else {
            format!("{key}.{k}")
        };
        out.push(kv(&key, value.clone()));
    }
    out
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv(
                "service.name",
                any_value::Value::StringValue(service.to_string()),
            ),
            kv(
                "host.name",
                any_value::Value::StringValue("loadgen-host".into()),
            ),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "sluice.loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

/// Generates one encoded request of `items` items.
pub fn generate(o: &Options, items: usize, rng: &mut impl Rng) -> Vec<u8> {
    let now = now_nanos();
    match o.signal {
        Signal::Traces => {
            let mut spans = Vec::with_capacity(items);
            let mut trace_id = [0u8; 16];
            let mut root_id = [0u8; 8];
            let mut error = false;
            let mut slow = false;
            for i in 0..items {
                let pos = i % o.spans_per_trace;
                if pos == 0 {
                    rng.fill(&mut trace_id);
                    rng.fill(&mut root_id);
                    error = rng.random_bool(o.error_ratio.clamp(0.0, 1.0));
                    slow = rng.random_bool(o.slow_ratio.clamp(0.0, 1.0));
                }
                let mut span_id = root_id;
                if pos > 0 {
                    rng.fill(&mut span_id);
                }
                let duration = if slow {
                    2_000_000_000
                } else {
                    rng.random_range(5_000_000..50_000_000)
                };
                let is_error_span = error
                    && pos
                        == o.spans_per_trace
                            .saturating_sub(1)
                            .min(items - 1 - (i - pos));
                spans.push(Span {
                    trace_id: trace_id.to_vec(),
                    span_id: span_id.to_vec(),
                    parent_span_id: if pos == 0 {
                        Vec::new()
                    } else {
                        root_id.to_vec()
                    },
                    name: if pos == 0 {
                        "GET /api/v1/items/{id}".into()
                    } else {
                        format!("db.query {pos}")
                    },
                    kind: if pos == 0 {
                        span::SpanKind::Server as i32
                    } else {
                        span::SpanKind::Client as i32
                    },
                    start_time_unix_nano: now - duration,
                    end_time_unix_nano: now,
                    attributes: attributes(o.attributes, i, rng),
                    status: Some(Status {
                        code: if is_error_span { 2 } else { 0 },
                        message: if is_error_span {
                            "internal error".into()
                        } else {
                            String::new()
                        },
                    }),
                    ..Default::default()
                });
            }
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource(&o.service),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Logs => {
            let log_records = (0..items)
                .map(|i| LogRecord {
                    time_unix_nano: now,
                    observed_time_unix_nano: now,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "request {i} handled in {} ms",
                            rng.random_range(1..100)
                        ))),
                    }),
                    attributes: attributes(o.attributes, i, rng),
                    ..Default::default()
                })
                .collect();
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: resource(&o.service),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Metrics => {
            let metrics = (0..items)
                .map(|i| Metric {
                    name: format!("loadgen.gauge.{}", i % 10),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now,
                            attributes: attributes(o.attributes.min(3), i, rng),
                            value: Some(number_data_point::Value::AsDouble(rng.random::<f64>())),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: resource(&o.service),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn distinct_defaults_to_a_new_request_each_time() {
        let o = parse_args(&args(&["--count", "10"])).unwrap();
        assert_eq!(o.distinct, 0);
        let o = parse_args(&args(&["--count", "10", "--distinct", "16"])).unwrap();
        assert_eq!(o.distinct, 16);
        let e = parse_args(&args(&["--distinct", "many"])).unwrap_err();
        assert!(e.contains("--distinct"), "{e}");
    }
}
