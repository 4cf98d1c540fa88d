//! How long the `loadbalancing` exporter's split takes per span: 48 batches of 16 loadgen
//! requests (512 spans of 10 attributes, 5 spans per trace), 192 MB in all so each batch is
//! read cold as in the agent, split by trace id over a ring of three members, four times per
//! round. `cargo run --release --example splitbench` (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use sluice::exporters::loadbalancing::ring::{self, Ring};
use sluice::exporters::loadbalancing::split::{BufPool, RoutingKey, split_traces};
use sluice::loadgen::{Options, generate};
use sluice::otlp::{Batch, Signal};

fn main() {
    let o = Options {
        attributes: 10,
        ..Default::default()
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let batches: Vec<Batch> = (0..48)
        .map(|_| {
            let mut b = Batch::new(
                Signal::Traces,
                Bytes::from(generate(&o, 512, &mut rng)),
                512,
            );
            for _ in 1..16 {
                b.append(Batch::new(
                    Signal::Traces,
                    Bytes::from(generate(&o, 512, &mut rng)),
                    512,
                ));
            }
            b
        })
        .collect();
    let ring = Ring::new(&["a:1".to_string(), "b:1".to_string(), "c:1".to_string()]);
    let pool = Arc::new(BufPool::default());
    for round in 0..5 {
        let t = Instant::now();
        let mut spans = 0;
        for _ in 0..4 {
            for b in &batches {
                let parts = split_traces(b, RoutingKey::TraceId, &pool, ring::hash, |h| {
                    ring.owner_of_hash(h, |_| false).unwrap()
                })
                .unwrap();
                spans += parts.iter().map(|p| p.1.items).sum::<usize>();
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / spans as f64;
        println!("round {round}: {ns:.1} ns/span ({spans} spans)");
    }
}
