//! The failover drill (SPEC §12; see BENCHMARKS.md).
//!
//!     cargo bench --bench failover -- [--rounds 20] [--lease-ttl 2s] [--renew-interval 500ms] [--customers 4000] [--latency-ms 20]
//!
//! Two `paystar-sync run` daemons share one PostgreSQL state (the server at
//! `PAYSTAR_SYNC_BENCH_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and deliver into the Paystar simulator. Each round waits until the leader is
//! mid-delivery, kills it with SIGKILL, starts a fresh standby in its place and
//! waits for the next request. The failover time is from the last request the old
//! leader sent to the first the new leader sent (by their arrival at the
//! simulator: nothing arrives from a killed process, so the kill splits them);
//! resends are the events Paystar accepted beyond one per customer.

// Wall-clock measurement in a benchmark: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Backend, Layout, write_corpus};
use paystar_sync::config::Config;
use paystar_sync::sandbox::{RunningSandbox, Sandbox};
use paystar_sync::store::Store;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Drill {
    root: PathBuf,
    lease_ttl: String,
    renew_interval: String,
    endpoint: String,
    state: String,
    started: usize,
}

struct Daemon {
    id: String,
    child: Child,
    _notify: UnixDatagram,
}

impl Drill {
    /// Starts one more instance (its own config: the same state and
    /// manifests, its own instance id) and waits for READY=1.
    fn start(&mut self) -> Daemon {
        self.started += 1;
        let id = format!("drill-{}", self.started);
        let config = format!(
            "{}ha: {{ lease_ttl: {}, renew_interval: {}, instance_id: {id} }}\nmanifests:\n  dir: manifests\n  rescan_interval: 1h\npaystar:\n  endpoint: {}\n  api_key_env: PAYSTAR_API_KEY\n  default_business_unit: water-bill-pay\n  concurrency: 8\nsafety: {{ max_unenrolls: 100000000, max_unenroll_percent: 100 }}\nserver: {{ listen: \"127.0.0.1:0\" }}\n",
            self.state, self.lease_ttl, self.renew_interval, self.endpoint
        );
        let path = self.root.join(format!("{id}.yaml"));
        fs::write(&path, config).unwrap();
        let socket = self.root.join(format!("{id}.sock"));
        let _ = fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let log = fs::File::create(self.root.join(format!("{id}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
            .args(["run", "--config"])
            .arg(&path)
            .env("NOTIFY_SOCKET", &socket)
            .env("PAYSTAR_API_KEY", "drill")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        common::wait_ready(&notify);
        Daemon {
            id,
            child,
            _notify: notify,
        }
    }
}

/// The lease holder, read from the state the daemons share.
fn holder(config: &Config) -> Option<String> {
    let config = config.clone();
    std::thread::spawn(move || {
        let store = Store::open(&config.state).unwrap();
        store
            .lease()
            .unwrap()
            .filter(|l| l.live())
            .map(|l| l.holder)
    })
    .join()
    .unwrap()
}

async fn wait_accepted(sandbox: &RunningSandbox, count: usize) {
    let got = sandbox
        .sandbox
        .paystar
        .wait_for(count, Duration::from_secs(60))
        .await;
    assert!(got.len() >= count, "only {} of {count} accepted", got.len());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

async fn drill(args: &Args) {
    let root = args.data.join("failover");
    let _ = fs::remove_dir_all(&root);
    write_corpus(
        &root.join("manifests"),
        Layout::OneCsv,
        args.customers,
        &|_| false,
        None,
    );
    let sandbox = Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let paystar = &sandbox.sandbox.paystar;
    paystar.set_latency(Duration::from_millis(args.latency_ms));
    let state = {
        let root = root.clone();
        std::thread::spawn(move || Backend::Postgres.fresh_state(&root, "failover_drill"))
            .join()
            .unwrap()
    };
    let mut drill = Drill {
        root: root.clone(),
        lease_ttl: args.lease_ttl.clone(),
        renew_interval: args.renew_interval.clone(),
        endpoint: sandbox.paystar_endpoint(),
        state,
        started: 0,
    };
    let mut daemons = vec![drill.start(), drill.start()];
    let config = Config::load(&root.join("drill-1.yaml")).unwrap();
    let mut failovers = Vec::new();
    let mut kill_to_first = Vec::new();
    for round in 0..args.rounds {
        // The leader is mid-delivery.
        let seen = paystar.accepted().len();
        wait_accepted(&sandbox, seen + args.per_round).await;
        let leader = holder(&config).expect("a live lease");
        let at = daemons
            .iter()
            .position(|d| d.id == leader)
            .expect("the holder is one of the drill's daemons");
        let mut old = daemons.remove(at);
        let kill = paystar_sync::clock::now_ms();
        let kill_instant = Instant::now();
        old.child.kill().unwrap();
        old.child.wait().unwrap();
        daemons.push(drill.start());
        // What the old leader had on the wire may still be answered after it died.
        let accepted = loop {
            let accepted = paystar.accepted();
            if accepted.iter().any(|a| a.received_ms > kill) {
                break accepted;
            }
            wait_accepted(&sandbox, accepted.len() + 1).await;
        };
        let last_old = accepted
            .iter()
            .map(|a| a.received_ms)
            .filter(|&t| t <= kill)
            .max()
            .unwrap();
        let first_new = accepted
            .iter()
            .map(|a| a.received_ms)
            .filter(|&t| t > kill)
            .min()
            .unwrap();
        let failover = Duration::from_millis((first_new - last_old) as u64);
        let since_kill = Duration::from_millis((first_new - kill) as u64);
        eprintln!(
            "round {:2}: {leader} killed; {} leads; last request → first: {} (kill → first: {}, round {:.1} s)",
            round + 1,
            holder(&config).unwrap_or_default(),
            ms(failover),
            ms(since_kill),
            kill_instant.elapsed().as_secs_f64()
        );
        failovers.push(failover);
        kill_to_first.push(since_kill);
    }
    // The rest is delivered; every customer once, plus what was resent.
    let deadline = Instant::now() + Duration::from_secs(120);
    let distinct = |accepted: &[paystar_sync::sandbox::paystar::Accepted]| {
        accepted
            .iter()
            .map(|a| {
                let account = a.payload_json()["accountNumber"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (a.event_type.clone(), account)
            })
            .collect::<BTreeSet<_>>()
    };
    let customers = |events: &BTreeSet<(String, String)>| {
        events.iter().map(|(_, a)| a).collect::<BTreeSet<_>>().len()
    };
    let events = loop {
        let accepted = paystar.accepted();
        let events = distinct(&accepted);
        if customers(&events) >= args.customers || Instant::now() > deadline {
            break events;
        }
        paystar
            .wait_for(accepted.len() + 1, deadline - Instant::now())
            .await;
    };
    assert_eq!(
        customers(&events),
        args.customers,
        "not every customer was delivered"
    );
    let total = paystar.accepted().len();
    let overlaps = paystar.same_customer_overlaps();
    for mut daemon in daemons {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &daemon.child.id().to_string()])
            .status();
        let _ = daemon.child.wait();
    }
    sandbox.stop().await;
    failovers.sort();
    kill_to_first.sort();
    println!(
        "| measure ({} failovers by SIGKILL, lease_ttl {}, renew_interval {}) | value |\n|---|---|",
        args.rounds, args.lease_ttl, args.renew_interval
    );
    println!(
        "| last request by the old leader → first by the new, p50 | {} |",
        ms(percentile(&failovers, 0.5))
    );
    println!("| … p99 | {} |", ms(percentile(&failovers, 0.99)));
    println!("| … max | {} |", ms(*failovers.last().unwrap()));
    println!(
        "| SIGKILL → first request by the new leader, p50 / max | {} / {} |",
        ms(percentile(&kill_to_first, 0.5)),
        ms(*kill_to_first.last().unwrap())
    );
    println!(
        "| events accepted / distinct events for {} customers / resends | {total} / {} / {} |",
        args.customers,
        events.len(),
        total - events.len()
    );
    println!("| requests for one customer open at once | {overlaps} |");
}

struct Args {
    rounds: usize,
    lease_ttl: String,
    renew_interval: String,
    customers: usize,
    per_round: usize,
    latency_ms: u64,
    data: PathBuf,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| common::flag(&args, name);
    let rounds: usize = arg("--rounds").map_or(20, |v| v.parse().unwrap());
    let per_round = 50;
    let args = Args {
        rounds,
        lease_ttl: arg("--lease-ttl").unwrap_or_else(|| "2s".into()),
        renew_interval: arg("--renew-interval").unwrap_or_else(|| "500ms".into()),
        customers: arg("--customers").map_or(rounds * per_round * 2 + 1000, |v| v.parse().unwrap()),
        per_round,
        latency_ms: arg("--latency-ms").map_or(20, |v| v.parse().unwrap()),
        data: PathBuf::from(arg("--data").unwrap_or_else(|| "bench-data".into())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(drill(&args));
}
