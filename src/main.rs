//! The `sluice` command: run the agent, validate a config, or generate OTLP load.

use std::process::ExitCode;
use std::time::Duration;

use sluice::config::{Config, ReceiverConfig};
use sluice::pipeline::Service;
use sluice::telemetry::{Registry, logging};

const USAGE: &str = "\
sluice — a telemetry agent that runs OpenTelemetry Collector configs

USAGE:
    sluice [--config FILE]...            run the agent (embedded default config without --config)
    sluice validate [--config FILE]...   load and validate the config, print the pipeline graph
    sluice loadgen [OPTIONS]             send generated OTLP data (sluice loadgen --help)
    sluice --version | --help

Several --config files are merged in order; later files win, as in the collector.
Exit codes: 0 ok, 64 bad configuration or usage, 1 failure at run time.";

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    tune_malloc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V" | "version") => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("loadgen") => sluice::loadgen::main(&args[1..]),
        Some("validate") => match config_files(&args[1..]).and_then(|files| load(&files)) {
            Ok(config) => {
                print!("{}", config.describe());
                println!("config is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Some("run") => run(&args[1..]),
        _ => run(&args),
    }
}

fn config_files(args: &[String]) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(v) = arg.strip_prefix("--config=") {
            files.push(v.to_string());
        } else if arg == "--config" || arg == "-c" {
            files.push(it.next().ok_or("--config needs a file name")?.clone());
        } else {
            return Err(format!("unexpected argument `{arg}`\n\n{USAGE}"));
        }
    }
    Ok(files)
}

fn load(files: &[String]) -> Result<Config, String> {
    let loaded = if files.is_empty() {
        Config::load_default()
    } else {
        Config::load_files(files)
    };
    loaded.map_err(|e| e.to_string())
}

fn run(args: &[String]) -> ExitCode {
    let config = match config_files(args).and_then(|files| load(&files)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tune_malloc_for(&config);
    logging::init(
        &config.service.telemetry.log_level,
        config.service.telemetry.log_json,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let registry = Registry::default();
        let service = match Service::start(&config, registry.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Cannot start.");
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            pipelines = config.service.pipelines.len(),
            "Everything is ready. Begin running and processing data."
        );
        let summary = tokio::spawn(log_summaries(registry.clone()));
        wait_for_signal().await;
        tracing::info!("Shutdown requested; draining.");
        service.shutdown().await;
        summary.abort();
        log_summary(&registry);
        tracing::info!("Shutdown complete.");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn log_summaries(registry: Registry) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        log_summary(&registry);
    }
}

fn log_summary(registry: &Registry) {
    let total = |name: &str| -> u64 {
        ["spans", "metric_points", "log_records"]
            .iter()
            .map(|item| registry.value(&name.replace("{}", item), ""))
            .sum()
    };
    tracing::info!(
        accepted = total("otelcol_receiver_accepted_{}_total"),
        refused = total("otelcol_receiver_refused_{}_total"),
        sent = total("otelcol_exporter_sent_{}_total"),
        failed = total("otelcol_exporter_send_failed_{}_total")
            + total("otelcol_exporter_enqueue_failed_{}_total"),
        spans = registry.value("otelcol_receiver_accepted_spans_total", ""),
        metric_points = registry.value("otelcol_receiver_accepted_metric_points_total", ""),
        log_records = registry.value("otelcol_receiver_accepted_log_records_total", ""),
        "Summary (items since start)."
    );
}

/// glibc gives each thread that allocates under contention its own arena (up to 8 per core),
/// and memory freed in one is not reused by another: with the runtime's workers and the
/// blocking pool that costs a quarter to a third of the resident memory under load, for no
/// measurable CPU here (BENCHMARKS.md). One arena, unless `MALLOC_ARENA_MAX` says otherwise.
/// It runs first thing in `main`: called after the configuration was loaded it left secondary
/// arenas in use (strace of the routing agent: 735 `madvise` trims of arena heaps per million
/// spans, 129 when called first, 19 with the variable set), and plain OTLP passthrough cost
/// 0.517 instead of 0.455 CPU-s per million spans.
///
/// glibc also raises its mmap threshold (from 128 KiB up to 32 MiB) each time a mapped block
/// is freed, after which large buffers come from the heap: a growing table is then copied
/// rather than remapped, and a freed request-sized buffer stays resident as a hole that the
/// next, slightly larger one does not fit. A fixed 256 KiB threshold keeps such blocks mapped
/// (grown in place, returned when freed): on the 51k-series scrape with `cardinality`, 61 ->
/// 57 MiB peak RSS at 4 MiB, 56.7 -> 51.3-51.6 MiB at 256 KiB once the scrape and `cardinality`
/// wrote each request once (BENCHMARKS.md). Unless `MALLOC_MMAP_THRESHOLD_` says otherwise.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime
        // starts its threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
    }
}

/// A fixed mmap threshold also fixes glibc's trim threshold at 128 KiB (glibc otherwise raises
/// it with the other): with OTLP receivers every freed batch then shrinks the heap and the next
/// one faults its pages in again, 20,000-60,000 page faults per million spans. 8 MiB (two
/// 8192-span batches) keeps them mapped: about 2,000 faults, plain passthrough 0.46 -> 0.40
/// CPU-s per million spans, routing 0.60 -> 0.51. A scrape every few seconds is better served
/// by returning memory between phases: 8 MiB there cost 1-1.5 MiB of peak RSS on the 51k-series
/// scrape (BENCHMARKS.md). So the threshold is raised only when an `otlp` receiver is
/// configured, unless `MALLOC_TRIM_THRESHOLD_` says otherwise. The trim threshold is read at
/// each `free`, so setting it after the configuration is loaded takes effect.
fn tune_malloc_for(config: &Config) {
    let streams = config
        .receivers
        .iter()
        .any(|r| matches!(r.config, ReceiverConfig::Otlp(_)));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if streams && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = streams;
}
