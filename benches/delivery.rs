//! Delivery benchmarks (see BENCHMARKS.md).
//!
//!     cargo bench --bench delivery -- [throughput] [retry] [latency] [--customers 1000000] [--edits 100] [--backend sqlite|postgres]
//!
//! - throughput: the delivery worker draining a committed queue into the Paystar
//!   simulator answering after 5 ms, at concurrency 8 and 64 and adaptive (in-process,
//!   one runtime).
//! - retry: how soon a due retry goes out behind a backlog of 10,000 fresh keys.
//! - latency: the `paystar-sync run` daemon holding 1M customers in 100 CSV files,
//!   debounce 200 ms, the default (adaptive) concurrency; each of 100 edits rewrites
//!   one file (temp file + rename) with one customer's email changed, and the time
//!   from the rename to the request reaching the simulator is measured. Also reports
//!   the daemon's peak RSS (VmHWM) during its first
//!   import and while holding the committed state.

// Wall-clock measurement in a benchmark: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Backend, Layout, commit_and_acknowledge, committed_corpus, write_corpus};
use paystar_sync::config::{Config, Secret};
use paystar_sync::deliver::{PaystarClient, Until, Worker, WorkerSettings};
use paystar_sync::reconcile::Policy;
use paystar_sync::sandbox::Sandbox;
use paystar_sync::store::SharedStore;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn config_text(state: &str, endpoint: &str) -> String {
    format!(
        "{state}manifests:\n  dir: manifests\n  debounce: 200ms\n  rescan_interval: 1h\npaystar:\n  endpoint: {endpoint}\n  api_key_env: PAYSTAR_API_KEY\n  default_business_unit: water-bill-pay\nsafety: {{ max_unenrolls: 100000000, max_unenroll_percent: 100 }}\nserver: {{ listen: \"127.0.0.1:0\" }}\n"
    )
}

/// Commits `customers` rows (one ManageCustomer each) into a fresh state.
/// Runs `f` on a thread of its own: the PostgreSQL driver may not block a runtime's thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn committed_store(backend: Backend, root: &Path, customers: usize) -> Config {
    off_runtime(|| {
        committed_corpus(backend, root, customers, |state| {
            config_text(state, "sandbox")
        })
    })
}

/// The simulator answering after 5 ms, and a worker draining `config`'s queue into it.
async fn worker_on_sandbox(
    config: &Config,
    concurrency: usize,
    adaptive: Option<usize>,
    schedule: Vec<Duration>,
) -> (Worker, SharedStore, paystar_sync::sandbox::RunningSandbox) {
    let sandbox = Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    sandbox
        .sandbox
        .paystar
        .set_latency(Duration::from_millis(5));
    let client = PaystarClient::new(
        &sandbox.paystar_endpoint(),
        Secret::new("bench"),
        Duration::from_secs(30),
    )
    .unwrap();
    let store = SharedStore::open(&config.state).await.unwrap();
    let worker = Worker::new(
        store.clone(),
        client,
        WorkerSettings {
            concurrency,
            schedule,
            policy: Policy::DEFAULT,
            pause: None,
            grace: Duration::from_secs(10),
            gate: paystar_sync::ha::LeaseGate::always_open(),
            rate_limit: None,
            adaptive,
        },
    );
    (worker, store, sandbox)
}

async fn throughput(backend: Backend, data: &Path) {
    println!("| concurrency | events | wall | events/s | ceiling |\n|---|---|---|---|---|");
    // Fixed 8, fixed 64, and adaptive (the default: from 8, up to 256).
    for (concurrency, adaptive, customers) in [
        (8usize, None, 10_000usize),
        (64, None, 40_000),
        (8, Some(256), 40_000),
    ] {
        // One ManageCustomer per customer; one in 20 also has autopay: no (an unenroll).
        let name = match adaptive {
            Some(max) => format!("adaptive (up to {max})"),
            None => concurrency.to_string(),
        };
        let config = committed_store(
            backend,
            &data.join(format!("throughput-{}", name.replace(' ', "-"))),
            customers,
        );
        let (worker, _store, sandbox) = worker_on_sandbox(
            &config,
            concurrency,
            adaptive,
            vec![Duration::from_millis(10); 5],
        )
        .await;
        let limit = worker.counters();
        let start = Instant::now();
        let totals = worker
            .run(Until::Idle, CancellationToken::new())
            .await
            .unwrap();
        let wall = start.elapsed();
        assert_eq!(totals.parked, 0);
        let events = totals.delivered_events;
        assert_eq!(events as usize, sandbox.sandbox.paystar.accepted().len());
        println!(
            "| {name} | {events} | {:.2} s | {:.0} | {} |",
            wall.as_secs_f64(),
            events as f64 / wall.as_secs_f64(),
            match adaptive {
                Some(_) => format!("ended at {}", limit.limit.get()),
                None => (concurrency * 200).to_string(),
            }
        );
        sandbox.stop().await;
    }
}

/// A backlog of 10,000 fresh keys at concurrency 8 (about 6 s of work at 5 ms a
/// request); the first 8 requests get a 503 and are retried after 100 ms (±20 %).
/// Measured: from each failed attempt to its retry's acknowledgement.
async fn retry(backend: Backend, data: &Path) {
    use paystar_sync::customer::KeyRef;
    use paystar_sync::sandbox::paystar::Fault;
    let config = committed_store(backend, &data.join("retry"), 10_000);
    let (worker, store, sandbox) =
        worker_on_sandbox(&config, 8, None, vec![Duration::from_millis(100); 3]).await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 503,
        count: 8,
        ..Fault::default()
    });
    let start = Instant::now();
    let totals = worker
        .run(Until::Idle, CancellationToken::new())
        .await
        .unwrap();
    let wall = start.elapsed();
    assert_eq!(totals.retries, 8);
    let mut waits: Vec<i64> = store
        .call(|s| {
            let mut waits = Vec::new();
            for i in 0..10_000 {
                let account = common::account(i);
                let key = KeyRef {
                    business_unit: "water-bill-pay",
                    account: &account,
                    sub_account: "",
                };
                let lines = s.history(key).unwrap();
                let failed = lines.iter().find(|l| l.kind == "retry").map(|l| l.at_ms);
                let done = lines
                    .iter()
                    .find(|l| l.kind == "delivered")
                    .map(|l| l.at_ms);
                if let (Some(failed), Some(done)) = (failed, done) {
                    waits.push(done - failed);
                }
            }
            waits
        })
        .await;
    waits.sort_unstable();
    println!(
        "| backlog | retried | drain wall | failure → retry acknowledged: min | median | max |\n|---|---|---|---|---|---|\n| 10,000 | {} | {:.2} s | {} ms | {} ms | {} ms |",
        waits.len(),
        wall.as_secs_f64(),
        waits[0],
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    sandbox.stop().await;
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Daemon {
    child: std::process::Child,
    notify: UnixDatagram,
}

fn start_daemon(root: &Path) -> Daemon {
    let socket = root.join("notify.sock");
    let _ = fs::remove_file(&socket);
    let notify = UnixDatagram::bind(&socket).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["run", "-q", "--config"])
        .arg(root.join("config.yaml"))
        .env("NOTIFY_SOCKET", &socket)
        .env("PAYSTAR_API_KEY", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    common::wait_ready(&notify);
    Daemon { child, notify }
}

impl Daemon {
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        drop(self.notify);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn latency(backend: Backend, data: &Path, customers: usize, edits: usize) {
    let root: PathBuf = data.join("latency");
    let _ = fs::remove_dir_all(&root);
    let manifests = root.join("manifests");
    write_corpus(&manifests, Layout::ManyCsv, customers, &|_| false, None);
    let sandbox = Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let state = off_runtime(|| backend.fresh_state(&root, "latency"));
    fs::write(
        root.join("config.yaml"),
        config_text(&state, &sandbox.paystar_endpoint()),
    )
    .unwrap();

    // First import: the daemon reads and commits every customer before READY=1.
    let import_start = Instant::now();
    let daemon = start_daemon(&root);
    let import = import_start.elapsed();
    let import_hwm = vm_hwm_kib(daemon.child.id());
    daemon.stop();
    // Acknowledge everything (as if delivered), so the edits are the only traffic.
    let config = Config::load(&root.join("config.yaml")).unwrap();
    off_runtime(|| commit_and_acknowledge(&config));

    let restart = Instant::now();
    let daemon = start_daemon(&root);
    let restart = restart.elapsed();
    let per_file = customers / 100;
    let mut samples = Vec::with_capacity(edits);
    for edit in 0..edits {
        let file = edit % 100;
        let row = file * per_file + (edit * 37) % per_file;
        let mut text = common::csv_rows(file * per_file..(file + 1) * per_file, |_| false);
        let old = format!(".{row}@example.com");
        let new = format!(".{row}@edit{edit}.example.com");
        text = text.replacen(&old, &new, 1);
        let tmp = manifests.join(format!(".part-{file:03}.csv.tmp"));
        fs::write(&tmp, text).unwrap();
        let expected = sandbox.sandbox.paystar.accepted_total() + 1;
        let start = Instant::now();
        fs::rename(&tmp, manifests.join(format!("part-{file:03}.csv"))).unwrap();
        sandbox
            .sandbox
            .paystar
            .wait_for(expected, Duration::from_secs(30))
            .await;
        // The simulator keeps only the latest events; its total counts them all.
        let got = sandbox.sandbox.paystar.accepted_total();
        assert_eq!(got, expected, "edit {edit} never arrived");
        samples.push(start.elapsed());
    }
    let steady_hwm = vm_hwm_kib(daemon.child.id());
    daemon.stop();
    samples.sort();
    println!("| measure | value |\n|---|---|");
    println!("| customers | {customers} in 100 CSV files |");
    println!(
        "| first import: start to READY=1 | {:.2} s |",
        import.as_secs_f64()
    );
    println!("| first import: peak RSS | {} MB |", import_hwm / 1024);
    println!(
        "| restart on committed state: start to READY=1 | {:.2} s |",
        restart.as_secs_f64()
    );
    println!(
        "| edit → request at Paystar, p50 ({edits} edits) | {} ms |",
        percentile(&samples, 0.5).as_millis()
    );
    println!(
        "| edit → request at Paystar, p99 | {} ms |",
        percentile(&samples, 0.99).as_millis()
    );
    println!(
        "| edit → request at Paystar, max | {} ms |",
        samples.last().unwrap().as_millis()
    );
    println!(
        "| holding the committed state through {edits} edits: peak RSS | {} MB |",
        steady_hwm / 1024
    );
    sandbox.stop().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| common::flag(&args, name);
    let customers: usize = arg("--customers").map_or(1_000_000, |v| v.parse().unwrap());
    let edits: usize = arg("--edits").map_or(100, |v| v.parse().unwrap());
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "bench-data".into()));
    let backend = Backend::from_args(&args);
    let all = !args
        .iter()
        .any(|a| a == "throughput" || a == "latency" || a == "retry");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if all || args.iter().any(|a| a == "throughput") {
            throughput(backend, &data).await;
        }
        if all || args.iter().any(|a| a == "retry") {
            retry(backend, &data).await;
        }
        if all || args.iter().any(|a| a == "latency") {
            latency(backend, &data, customers, edits).await;
        }
    });
}
