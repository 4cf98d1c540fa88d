//! Targets and their scrape loops: static targets through `relabel_configs`, one task per
//! target on its interval (offset by a hash of the target so targets spread out), HTTP GET
//! with `Accept` negotiation, gzip, timeout and a body size limit.

use std::hash::{Hash, Hasher};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::config::Job;
use super::convert::{Built, Target, TargetState};
use super::parser::Format;
use super::relabel::{self, Labels};
use crate::otlp::{Batch, Signal};
use crate::pipeline::consumer::Consumer;
use crate::telemetry::metrics::ReceiverMetrics;
use crate::telemetry::server::{ShutdownRx, stopped};

/// Bodies are never read past this, even when `body_size_limit` is 0 (Prometheus' "no limit").
pub const MAX_BODY_BYTES: u64 = 256 << 20;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A target after relabeling: where to scrape and the labels its series carry.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub url: http::Uri,
    pub target: Target,
}

/// Builds the job's targets from `static_configs`, as Prometheus does: the `__address__`,
/// `__scheme__`, `__metrics_path__`, `__param_*` and `job` labels plus the static labels go
/// through `relabel_configs`; `instance` defaults to the address; `__`-labels are removed.
pub fn targets(job: &Job) -> Result<Vec<ScrapeTarget>, String> {
    let mut out = Vec::new();
    for st in &job.static_configs {
        for address in &st.targets {
            if let Some(t) = target(job, address, &st.labels, &[])? {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// One target from an address, its group's labels and discovery labels (`__meta_*`);
/// `None` when relabeling drops it.
pub fn target(
    job: &Job,
    address: &str,
    group_labels: &std::collections::BTreeMap<String, String>,
    meta: &[(String, String)],
) -> Result<Option<ScrapeTarget>, String> {
    let mut labels: Labels = vec![
        ("__address__".into(), address.to_string()),
        ("__metrics_path__".into(), job.metrics_path.clone()),
        ("__scheme__".into(), job.scheme.clone()),
        (
            "__scrape_interval__".into(),
            format!("{}s", job.interval.as_secs_f64()),
        ),
        (
            "__scrape_timeout__".into(),
            format!("{}s", job.timeout.as_secs_f64()),
        ),
        ("job".into(), job.name.clone()),
    ];
    for (name, values) in &job.params {
        if let Some(first) = values.first() {
            labels.push((format!("__param_{name}"), first.clone()));
        }
    }
    labels.extend(meta.iter().cloned());
    for (k, v) in group_labels {
        labels.retain(|(n, _)| n != k);
        labels.push((k.clone(), v.clone()));
    }
    labels.sort();
    if !relabel::apply(&job.relabel, &mut labels) {
        return Ok(None);
    }
    let get = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let addr = get("__address__");
    if addr.is_empty() || addr.contains('/') {
        return Err(format!(
            "job `{}`: invalid target address `{addr}` (host:port expected)",
            job.name
        ));
    }
    let scheme = get("__scheme__");
    if scheme != "http" {
        return Err(format!(
            "job `{}`: target scheme `{scheme}` is not supported yet (only http)",
            job.name
        ));
    }
    let mut query: Vec<(String, String)> = Vec::new();
    for (name, values) in &job.params {
        for v in values {
            query.push((name.clone(), v.clone()));
        }
    }
    for (k, v) in &labels {
        if let Some(name) = k.strip_prefix("__param_") {
            query.retain(|(n, _)| n != name);
            query.push((name.to_string(), v.clone()));
        }
    }
    let mut url = format!("{scheme}://{addr}{}", get("__metrics_path__"));
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&percent_encode(k));
        url.push('=');
        url.push_str(&percent_encode(v));
    }
    let url: http::Uri = url
        .parse()
        .map_err(|e| format!("job `{}`: invalid target URL `{url}`: {e}", job.name))?;
    if get("instance").is_empty() {
        relabel::set(&mut labels, "instance", addr.clone());
    }
    labels.retain(|(k, _)| !k.starts_with("__"));
    Ok(Some(ScrapeTarget {
        url,
        target: Target { labels, scheme },
    }))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Everything one target's loop needs.
pub struct TargetLoop {
    pub receiver: String,
    pub job: Arc<Job>,
    pub target: ScrapeTarget,
    pub client: HttpClient,
    pub consumer: Option<Consumer>,
    pub metrics: ReceiverMetrics,
    /// Set by service discovery before stopping a target that disappeared: its series then
    /// get stale markers, as Prometheus writes them.
    pub removed: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl TargetLoop {
    pub async fn run(self, mut shutdown: ShutdownRx) {
        let interval = self.job.interval;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.job.name.hash(&mut h);
        self.target.url.to_string().hash(&mut h);
        let offset = Duration::from_nanos(h.finish() % (interval.as_nanos().max(1) as u64));
        tokio::select! {
            _ = tokio::time::sleep(offset) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut state = TargetState::default();
        let mut was_up = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped(&mut shutdown) => break,
            }
            let scrape_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let started = Instant::now();
            let fetched = tokio::select! {
                r = fetch(&self.client, &self.job, &self.target.url) => r,
                _ = stopped(&mut shutdown) => break,
            };
            let built = self.convert(&mut state, fetched, scrape_ms, started);
            let built = match built {
                Ok(b) => {
                    if !was_up {
                        tracing::info!(receiver = %self.receiver, target = %self.target.url, "Scrape succeeded again.");
                    }
                    was_up = true;
                    b
                }
                Err((reason, b)) => {
                    if was_up {
                        tracing::warn!(receiver = %self.receiver, job = %self.job.name, target = %self.target.url, reason = %reason, "Scrape failed.");
                    } else {
                        tracing::debug!(receiver = %self.receiver, target = %self.target.url, reason = %reason, "Scrape failed.");
                    }
                    was_up = false;
                    b
                }
            };
            self.deliver(built).await;
        }
        let removed = self
            .removed
            .as_ref()
            .is_some_and(|r| r.load(std::sync::atomic::Ordering::Acquire));
        if removed && state.tracked_series() > 0 {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            self.deliver(state.vanished(&self.target.target, now_ms))
                .await;
        }
    }

    fn convert(
        &self,
        state: &mut TargetState,
        fetched: Result<(Vec<u8>, Format), String>,
        scrape_ms: i64,
        started: Instant,
    ) -> Result<Built, (String, Built)> {
        let target = &self.target.target;
        let fail = |state: &mut TargetState, reason: String| {
            let d = started.elapsed().as_secs_f64();
            (reason, state.failed(target, scrape_ms, d))
        };
        let (body, format) = fetched.map_err(|e| fail(state, e))?;
        let text = std::str::from_utf8(&body)
            .map_err(|e| fail(state, format!("the body is not UTF-8: {e}")))?;
        let duration = || started.elapsed().as_secs_f64();
        let converted = state
            .scraped(&self.job, target, text, format, scrape_ms, &duration)
            .map_err(|e| fail(state, e.0))?;
        drop(body);
        Ok(converted.finish())
    }

    async fn deliver(&self, built: Built) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        if built.points == 0 {
            return;
        }
        let points = built.points as u64;
        let batch = Batch::new(Signal::Metrics, Bytes::from(built.encoded), built.points);
        match consumer.consume(batch).await {
            Ok(()) => self.metrics.accepted.add(points),
            Err(refusal) => {
                self.metrics.refused.add(points);
                tracing::warn!(receiver = %self.receiver, target = %self.target.url, reason = %refusal, points, "Scraped data refused by the pipeline.");
            }
        }
    }
}

/// One HTTP scrape: the body (decompressed) and its format.
pub async fn fetch(
    client: &HttpClient,
    job: &Job,
    url: &http::Uri,
) -> Result<(Vec<u8>, Format), String> {
    let limit = match job.body_size_limit {
        0 => MAX_BODY_BYTES,
        n => n.min(MAX_BODY_BYTES),
    };
    let request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, job.accept.as_str())
        .header(
            http::header::ACCEPT_ENCODING,
            if job.enable_compression {
                "gzip"
            } else {
                "identity"
            },
        )
        .header(
            http::header::USER_AGENT,
            concat!("sluice/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", job.timeout.as_secs_f64()),
        )
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(format!("server returned HTTP status {status}"));
        }
        let headers = response.headers();
        let format = match headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        };
        let gzip = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        // Sized from Content-Length when there is one: a growing buffer would hold the old
        // and the new copy at once, half again a large body.
        let announced = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let mut body = response.into_body();
        let mut raw = Vec::with_capacity(announced.min(limit) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if (raw.len() + data.len()) as u64 > limit {
                    return Err(format!("body_size_limit of {limit} bytes exceeded"));
                }
                raw.extend_from_slice(&data);
            }
        }
        if !gzip {
            return Ok((raw, format));
        }
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip decoding failed: {e}"))?;
        if out.len() as u64 > limit {
            return Err(format!(
                "body_size_limit of {limit} bytes exceeded (decompressed)"
            ));
        }
        Ok((out, format))
    };
    tokio::time::timeout(job.timeout, exchange)
        .await
        .map_err(|_| {
            format!(
                "no complete response within scrape_timeout {:?}",
                job.timeout
            )
        })?
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
