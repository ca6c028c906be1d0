//! Delivery against a Paystar that pushes back (see BENCHMARKS.md).
//!
//!     cargo bench --bench adaptive -- [--customers 50000] [--latency-ms 150]
//!         [--jitter-ms 30] [--scenario capacity|bucket|drop|unlimited]
//!         [--limits fixed8,fixed64,adaptive] [--cap 2.0] [--series DIR]
//!     cargo bench --bench adaptive -- --plot OUT.png [--series DIR]
//!
//! A first import of N customers into the in-process simulator answering after
//! `--latency-ms` (± `--jitter-ms`, uniform), with the retry schedule
//! [1s, 5s, 30s, 2m]:
//! - capacity: 40 requests at a time; beyond, 429 with `Retry-After: 1`;
//! - bucket: a token bucket of 300 requests a second (a burst of 30); beyond,
//!   429 with `Retry-After: 1`;
//! - drop: 40 at a time, 10 once half the customers are in; beyond, 503
//!   without `Retry-After`;
//! - unlimited: no capacity, 5 ms, no jitter.
//!
//! Each at a fixed concurrency of 8, of 64, and adaptive (as configured by
//! default): wall time against the bound (the requests ÷ the rate Paystar
//! takes; one customer in 20 has an unenroll too), the
//! share of requests refused, the most refusals one customer met, customers
//! parked, and where an adaptive limit ended. A run still going at `--cap`
//! times the bound is stopped and reported with how many customers it
//! delivered. Adaptive runs write their limit over time to `--series`
//! (default `target/adaptive`); `--plot` draws those series into a PNG.

// Wall-clock measurement in a benchmark: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

mod common;
mod plot;

use common::{Backend, committed_corpus, flag};
use paystar_sync::config::{Config, Secret};
use paystar_sync::deliver::{PaystarClient, Until, Worker, WorkerSettings};
use paystar_sync::reconcile::Policy;
use paystar_sync::sandbox::Sandbox;
use paystar_sync::sandbox::pushback::{Capacity, Latency};
use paystar_sync::store::SharedStore;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Scenario {
    slug: &'static str,
    name: String,
    latency: Latency,
    capacity: Capacity,
    /// What the capacity becomes once half the customers are in.
    then: Option<Capacity>,
    /// Requests a second Paystar takes, before and after the drop.
    rates: Option<(f64, f64)>,
}

impl Scenario {
    /// The requests ÷ the rate Paystar takes (half at each rate where it drops).
    fn bound(&self, requests: usize) -> Option<f64> {
        let (first, then) = self.rates?;
        let half = requests as f64 / 2.0;
        Some(half / first + half / then)
    }
}

#[derive(Clone, Copy, PartialEq)]
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

    fn parse(text: &str) -> Option<Self> {
        match text {
            "adaptive" => Some(Limit::Adaptive),
            _ => text
                .strip_prefix("fixed")
                .and_then(|n| n.parse().ok())
                .map(Limit::Fixed),
        }
    }
}

/// A fresh SQLite state with `customers` committed, unsent.
fn committed(root: &Path, customers: usize) -> Config {
    committed_corpus(Backend::Sqlite, root, customers, |state| {
        format!(
            "{state}manifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\nsafety: {{ max_unenrolls: 100000000, max_unenroll_percent: 100 }}\n"
        )
    })
}

struct Outcome {
    wall: Duration,
    /// Stopped at the cap before every customer was in.
    stopped: bool,
    delivered: usize,
    requests: u64,
    refused: u64,
    most_refused: u32,
    parked: u64,
    limit: i64,
    /// (seconds, limit) every 100 ms, and when the capacity dropped.
    series: Vec<(f64, i64)>,
    dropped_at: Option<f64>,
}

async fn import(
    root: &Path,
    customers: usize,
    scenario: &Scenario,
    limit: Limit,
    cap: Option<Duration>,
) -> Outcome {
    let config = committed(root, customers);
    let sandbox = Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let paystar = sandbox.sandbox.paystar.clone();
    paystar.set_latency_model(scenario.latency);
    paystar.set_pushback(scenario.capacity.clone());
    let started = Instant::now();
    // The capacity that drops halfway.
    let drop = scenario.then.clone().map(|then| {
        let paystar = paystar.clone();
        tokio::spawn(async move {
            paystar
                .wait_for(customers / 2, Duration::from_secs(3600))
                .await;
            paystar.set_pushback(then);
            started.elapsed().as_secs_f64()
        })
    });
    let client = PaystarClient::new(
        &sandbox.paystar_endpoint(),
        Secret::new("bench"),
        config.paystar.timeout,
    )
    .unwrap();
    let store = SharedStore::open(&config.state).await.unwrap();
    let (concurrency, adaptive) = match limit {
        Limit::Fixed(n) => (n, None),
        Limit::Adaptive => (config.paystar.concurrency, config.paystar.adaptive),
    };
    assert!(
        limit == Limit::Fixed(concurrency) || adaptive.is_some(),
        "adaptive is the default"
    );
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
    let cancel = CancellationToken::new();
    let series = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (counters, series) = (counters.clone(), series.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let point = (started.elapsed().as_secs_f64(), counters.limit.get());
                series.lock().unwrap().push(point);
            }
        })
    };
    let stopper = cap.map(|cap| {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(cap).await;
            cancel.cancel();
        })
    });
    worker.run(Until::Idle, cancel.clone()).await.unwrap();
    let wall = started.elapsed();
    sampler.abort();
    if let Some(stopper) = stopper {
        stopper.abort();
    }
    let dropped_at = match drop {
        Some(drop) if drop.is_finished() => drop.await.ok(),
        Some(drop) => {
            drop.abort();
            None
        }
        None => None,
    };
    let parked = store.call(|s| s.counts().unwrap().parked).await;
    let outcome = Outcome {
        wall,
        stopped: cancel.is_cancelled(),
        delivered: paystar.accepted_total(),
        requests: paystar.requests(),
        refused: paystar.over_capacity(),
        most_refused: paystar.most_refusals_of_one_customer(),
        parked,
        limit: counters.limit.get(),
        series: std::mem::take(&mut *series.lock().unwrap()),
        dropped_at,
    };
    sandbox.stop().await;
    outcome
}

fn scenarios(latency: Duration, jitter: Duration) -> Vec<Scenario> {
    let seconds = latency.as_secs_f64();
    let varied = Latency {
        base: latency,
        jitter,
        per_open: Duration::ZERO,
    };
    let refuse = |requests: Option<usize>, rate: Option<f64>, status: u16, after: bool| Capacity {
        requests,
        rate,
        burst: rate.map(|r| r / 10.0),
        status,
        retry_after: after.then(|| "1".to_owned()),
    };
    let ms = latency.as_millis();
    vec![
        Scenario {
            slug: "capacity",
            name: format!("(a) capacity 40 at {ms} ms, 429 + Retry-After: 1"),
            latency: varied,
            capacity: refuse(Some(40), None, 429, true),
            then: None,
            rates: Some((40.0 / seconds, 40.0 / seconds)),
        },
        Scenario {
            slug: "bucket",
            name: format!("(b) token bucket 300/s at {ms} ms, 429 + Retry-After: 1"),
            latency: varied,
            capacity: refuse(None, Some(300.0), 429, true),
            then: None,
            rates: Some((300.0, 300.0)),
        },
        Scenario {
            slug: "drop",
            name: format!("(c) capacity 40, then 10 halfway, at {ms} ms, 503"),
            latency: varied,
            capacity: refuse(Some(40), None, 503, false),
            then: Some(refuse(Some(10), None, 503, false)),
            rates: Some((40.0 / seconds, 10.0 / seconds)),
        },
        Scenario {
            slug: "unlimited",
            name: "(d) no capacity, 5 ms".to_owned(),
            latency: Latency::fixed(Duration::from_millis(5)),
            capacity: Capacity::default(),
            then: None,
            rates: None,
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |name: &str, default: u64| {
        flag(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let series_dir = PathBuf::from(flag(&args, "--series").unwrap_or("target/adaptive".into()));
    if let Some(out) = flag(&args, "--plot") {
        plot::draw(&series_dir, Path::new(&out));
        return;
    }
    let customers = number("--customers", 50_000) as usize;
    let latency = Duration::from_millis(number("--latency-ms", 150));
    let jitter = Duration::from_millis(number("--jitter-ms", 30));
    let cap: f64 = flag(&args, "--cap")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let only = flag(&args, "--scenario");
    let limits: Vec<Limit> = flag(&args, "--limits")
        .unwrap_or("fixed8,fixed64,adaptive".into())
        .split(',')
        .map(|l| Limit::parse(l).unwrap_or_else(|| panic!("--limits: {l:?}")))
        .collect();
    let root = std::env::temp_dir().join(format!("paystar-adaptive-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    fs::create_dir_all(&series_dir).unwrap();
    println!(
        "{customers} customers; retry schedule [1s, 5s, 30s, 2m]; runs stopped at {cap}× the bound\n\n| scenario | concurrency | wall | bound | delivered | refused | most refusals of one customer | parked | limit at the end |\n|---|---|---|---|---|---|---|---|---|"
    );
    for scenario in scenarios(latency, jitter) {
        if only.as_deref().is_some_and(|o| o != scenario.slug) {
            continue;
        }
        // One ManageCustomer each, and an UnenrollAutopay for one customer in 20.
        let bound = scenario.bound(customers + customers.div_ceil(20));
        for &limit in &limits {
            let stop_at = bound.map(|b| Duration::from_secs_f64(b * cap));
            let o = runtime.block_on(import(&root, customers, &scenario, limit, stop_at));
            let wall = o.wall.as_secs_f64();
            println!(
                "| {} | {} | {}{wall:.1} s | {} | {} | {:.2} % | {} | {} | {} |",
                scenario.name,
                limit.name(),
                if o.stopped { "stopped at " } else { "" },
                bound.map_or("–".to_owned(), |b| format!("{b:.1} s ({:.2}×)", wall / b)),
                o.delivered,
                o.refused as f64 * 100.0 / o.requests.max(1) as f64,
                o.most_refused,
                o.parked,
                o.limit
            );
            if limit == Limit::Adaptive {
                plot::save(&series_dir, &scenario, &o.series, o.dropped_at);
            }
        }
    }
    let _ = fs::remove_dir_all(&root);
}
