//! Delivery against a Paystar that pushes back (see BENCHMARKS.md).
//!
//!     cargo bench --bench adaptive -- [--customers 4000] [--latency-ms 150]
//!
//! A first import of N customers into the in-process simulator answering after
//! `--latency-ms`, which takes only so many requests at a time (beyond, 429 at
//! once, no Retry-After), with the retry schedule [1s, 5s, 30s, 2m]:
//! - capacity 40 throughout;
//! - capacity 40 that drops to 10 halfway;
//! - no capacity at 5 ms (the unlimited simulator).
//!
//! Each at a fixed concurrency of 8, of 64, and adaptive (max 256): wall time,
//! the bound (N × latency ÷ capacity), the share of requests answered 429,
//! customers parked, and where an adaptive limit ended.

// Wall-clock measurement in a benchmark: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Backend, Layout, now_ms, write_corpus};
use paystar_sync::config::{Config, Secret};
use paystar_sync::deliver::{PaystarClient, Until, Worker, WorkerSettings};
use paystar_sync::reconcile::Policy;
use paystar_sync::sandbox::Sandbox;
use paystar_sync::scan::{ScanSettings, scan};
use paystar_sync::store::{SharedStore, Store};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How many requests Paystar takes at a time, and what it drops to halfway.
type Capacity = Option<(usize, Option<usize>)>;

/// A name, Paystar's latency, its capacity, and the rate the bound divides by.
type Scenario = (&'static str, Duration, Capacity, f64);

#[derive(Clone, Copy)]
enum Limit {
    Fixed(usize),
    Adaptive,
}

impl Limit {
    fn name(self) -> String {
        match self {
            Limit::Fixed(n) => format!("fixed {n}"),
            Limit::Adaptive => "adaptive".to_owned(),
        }
    }
}

/// A fresh SQLite state with `customers` committed, unsent.
fn committed(root: &Path, customers: usize) -> Config {
    let _ = fs::remove_dir_all(root);
    let state = Backend::Sqlite.fresh_state(root, "adaptive");
    write_corpus(
        &root.join("manifests"),
        Layout::OneCsv,
        customers,
        &|_| false,
        None,
    );
    fs::write(
        root.join("config.yaml"),
        format!(
            "{state}manifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\nsafety: {{ max_unenrolls: 100000000, max_unenroll_percent: 100 }}\n"
        ),
    )
    .unwrap();
    let config = Config::load(&root.join("config.yaml")).unwrap();
    let mut store = Store::open(&config.state).unwrap();
    let parse = config.parse_options();
    let settings = ScanSettings::new(&config, &parse, now_ms());
    scan(&store, &settings).unwrap().commit(&mut store).unwrap();
    config
}

struct Outcome {
    wall: Duration,
    requests: u64,
    refused: u64,
    parked: u64,
    limit: i64,
}

async fn import(
    root: &Path,
    customers: usize,
    latency: Duration,
    capacity: Capacity,
    limit: Limit,
) -> Outcome {
    let config = committed(root, customers);
    let sandbox = Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let paystar = sandbox.sandbox.paystar.clone();
    paystar.set_latency(latency);
    paystar.set_capacity(capacity.map(|(first, _)| first));
    // The capacity that drops halfway.
    let drop = capacity.and_then(|(_, then)| then).map(|then| {
        let paystar = paystar.clone();
        tokio::spawn(async move {
            paystar
                .wait_for(customers / 2, Duration::from_secs(3600))
                .await;
            paystar.set_capacity(Some(then));
        })
    });
    let client = PaystarClient::new(
        &sandbox.paystar_endpoint(),
        Secret::new("bench"),
        Duration::from_secs(30),
    )
    .unwrap();
    let store = SharedStore::open(&config.state).await.unwrap();
    let (concurrency, adaptive) = match limit {
        Limit::Fixed(n) => (n, None),
        Limit::Adaptive => (8, Some(256)),
    };
    let worker = Worker::new(
        store.clone(),
        client,
        WorkerSettings {
            concurrency,
            schedule: [1, 5, 30, 120].map(Duration::from_secs).to_vec(),
            policy: Policy::DEFAULT,
            pause: None,
            grace: Duration::from_secs(10),
            gate: paystar_sync::ha::LeaseGate::always_open(),
            rate_limit: None,
            adaptive,
        },
    );
    let counters = worker.counters();
    let started = Instant::now();
    worker
        .run(Until::Idle, CancellationToken::new())
        .await
        .unwrap();
    let wall = started.elapsed();
    if let Some(drop) = drop {
        drop.abort();
    }
    let parked = store.call(|s| s.counts().unwrap().parked).await;
    let outcome = Outcome {
        wall,
        requests: paystar.requests(),
        refused: paystar.over_capacity(),
        parked,
        limit: counters.limit.get(),
    };
    sandbox.stop().await;
    outcome
}

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let customers = flag(&args, "--customers", 4000);
    let latency = Duration::from_millis(flag(&args, "--latency-ms", 150) as u64);
    let root = std::env::temp_dir().join(format!("paystar-adaptive-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = [Limit::Fixed(8), Limit::Fixed(64), Limit::Adaptive];
    let scenarios: [Scenario; 3] = [
        ("capacity 40", latency, Some((40, None)), 40.0),
        (
            "capacity 40, then 10 halfway",
            latency,
            Some((40, Some(10))),
            0.0,
        ),
        ("no capacity, 5 ms", Duration::from_millis(5), None, 0.0),
    ];
    println!(
        "{customers} customers; retry schedule [1s, 5s, 30s, 2m]\n\n| scenario | concurrency | wall | bound | 429 share | parked | limit at the end |\n|---|---|---|---|---|---|---|"
    );
    for (name, latency, capacity, rate) in scenarios {
        // The bound: N × latency ÷ capacity (for the drop, half at 40 and half at 10).
        let bound = match capacity {
            Some((first, Some(then))) => {
                let half = customers as f64 / 2.0 * latency.as_secs_f64();
                Some(half / first as f64 + half / then as f64)
            }
            Some(_) => Some(customers as f64 * latency.as_secs_f64() / rate),
            None => None,
        };
        for limit in limits {
            let o = runtime.block_on(import(&root, customers, latency, capacity, limit));
            println!(
                "| {name} | {} | {:.1} s | {} | {:.2} % | {} | {} |",
                limit.name(),
                o.wall.as_secs_f64(),
                bound.map_or("–".to_owned(), |b| format!(
                    "{b:.1} s ({:.2}×)",
                    o.wall.as_secs_f64() / b
                )),
                o.refused as f64 * 100.0 / o.requests.max(1) as f64,
                o.parked,
                o.limit
            );
        }
    }
    let _ = fs::remove_dir_all(&root);
}
