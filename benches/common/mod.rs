//! Deterministic corpora shared by the benchmarks.

#![allow(dead_code)] // each benchmark uses part of this module

use paystar_sync::config::Config;
use paystar_sync::config::Policy;
use paystar_sync::scan::{ScanSettings, scan};
use paystar_sync::store::{Outcome, OutcomeResult, Store};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const FIRST: [&str; 8] = [
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

#[derive(Clone, Copy, PartialEq)]
pub enum Layout {
    OneCsv,
    ManyCsv,
    ManyYaml,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::OneCsv => "1 CSV file",
            Layout::ManyCsv => "100 CSV files",
            Layout::ManyYaml => "100 YAML files",
        }
    }
}

pub fn account(i: usize) -> String {
    format!("{:08}", (i as u64 * 7919 + 13) % 100_000_000)
}

pub fn csv_rows(range: std::ops::Range<usize>, edit: impl Fn(usize) -> bool) -> String {
    let mut out = String::with_capacity(range.len() * 80 + 64);
    out.push_str("accountNumber,subAccountNumber,firstName,lastName,emailAddress,autopay\n");
    for i in range {
        let (f, l) = (FIRST[i % 8], LAST[(i / 8) % 8]);
        let domain = if edit(i) {
            "example.org"
        } else {
            "example.com"
        };
        let autopay = if i % 20 == 0 { "no" } else { "" };
        let _ = writeln!(
            out,
            "{},,{f},{l},{}.{}.{i}@{domain},{autopay}",
            account(i),
            f.to_lowercase(),
            l.to_lowercase()
        );
    }
    out
}

pub fn yaml_rows(range: std::ops::Range<usize>, edit: impl Fn(usize) -> bool) -> String {
    let mut out = String::with_capacity(range.len() * 140 + 64);
    out.push_str("businessUnitSlug: water-bill-pay\ncustomers:\n");
    for i in range {
        let (f, l) = (FIRST[i % 8], LAST[(i / 8) % 8]);
        let domain = if edit(i) {
            "example.org"
        } else {
            "example.com"
        };
        let _ = write!(
            out,
            "  - accountNumber: \"{}\"\n    firstName: {f}\n    lastName: {l}\n    emailAddress: {}.{}.{i}@{domain}\n",
            account(i),
            f.to_lowercase(),
            l.to_lowercase()
        );
        if i % 20 == 0 {
            out.push_str("    autopay: false\n");
        }
    }
    out
}

/// Writes the corpus; `edit` marks rows whose email changes. Files get an old mtime
/// so that the scanner may trust their stat, as it would for files at rest.
pub fn write_corpus(
    dir: &Path,
    layout: Layout,
    size: usize,
    edit: &dyn Fn(usize) -> bool,
    only_file: Option<usize>,
) {
    let files = if layout == Layout::OneCsv { 1 } else { 100 };
    let per = size / files;
    fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        if only_file.is_some_and(|o| o != f) {
            continue;
        }
        let range = f * per..(f + 1) * per;
        let (name, text) = match layout {
            Layout::ManyYaml => (format!("part-{f:03}.yaml"), yaml_rows(range, edit)),
            _ => (format!("part-{f:03}.csv"), csv_rows(range, edit)),
        };
        let path = dir.join(name);
        let mut w = BufWriter::new(fs::File::create(&path).unwrap());
        w.write_all(text.as_bytes()).unwrap();
        let file = w.into_inner().unwrap();
        file.set_modified(paystar_sync::clock::now() - Duration::from_secs(3600))
            .unwrap();
    }
}

pub use paystar_sync::clock::now_ms;

/// `--backend sqlite|postgres`: where a benchmark keeps its state. PostgreSQL is
/// the server at `PAYSTAR_SYNC_BENCH_DATABASE_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`), one schema per corpus.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_args(args: &[String]) -> Self {
        match args
            .iter()
            .position(|a| a == "--backend")
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
        {
            None | Some("sqlite") => Backend::Sqlite,
            Some("postgres") => Backend::Postgres,
            Some(other) => panic!("--backend {other}: use sqlite or postgres"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The config's `state` block for a corpus under `root`, starting from no state.
    pub fn fresh_state(self, root: &Path, name: &str) -> String {
        match self {
            Backend::Sqlite => {
                let _ = fs::remove_dir_all(root.join("state"));
                "state:\n  path: state/db.sqlite\n".to_owned()
            }
            Backend::Postgres => {
                let url = paystar_sync::config::process_env("PAYSTAR_SYNC_BENCH_DATABASE_URL")
                    .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
                let schema = format!(
                    "bench_{}",
                    name.to_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                );
                let mut client = postgres::Client::connect(&url, postgres::NoTls)
                    .unwrap_or_else(|e| panic!("no PostgreSQL at {url}: {e}"));
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .unwrap();
                fs::create_dir_all(root).unwrap();
                fs::write(root.join("database-url"), &url).unwrap();
                format!(
                    "state:\n  backend: postgres\n  postgres: {{ url_file: database-url, schema: {schema} }}\n"
                )
            }
        }
    }
}

/// A fresh state under `root` with `customers` in one CSV committed, unsent;
/// `config` turns the state section into the whole configuration.
pub fn committed_corpus(
    backend: Backend,
    root: &Path,
    customers: usize,
    config: impl Fn(&str) -> String,
) -> Config {
    let _ = fs::remove_dir_all(root);
    let state = backend.fresh_state(root, &root.file_name().unwrap().to_string_lossy());
    write_corpus(
        &root.join("manifests"),
        Layout::OneCsv,
        customers,
        &|_| false,
        None,
    );
    fs::write(root.join("config.yaml"), config(&state)).unwrap();
    let config = Config::load(&root.join("config.yaml")).unwrap();
    let mut store = Store::open(&config.state).unwrap();
    let parse = config.parse_options();
    let settings = ScanSettings::new(&config, &parse, now_ms());
    scan(&store, &settings).unwrap().commit(&mut store).unwrap();
    config
}

/// Commits a scan, then acknowledges every planned event as a successful `apply`
/// would; returns the time of each half.
pub fn commit_and_acknowledge(config: &Config) -> (Duration, Duration) {
    let start = std::time::Instant::now();
    let mut store = Store::open(&config.state).unwrap();
    let parse = config.parse_options();
    let settings = ScanSettings::new(config, &parse, now_ms());
    let s = scan(&store, &settings).unwrap();
    s.commit(&mut store).unwrap();
    let committed = start.elapsed();
    acknowledge_all(&mut store, config.policy());
    (committed, start.elapsed() - committed)
}

/// Acknowledges every queued key as the delivery worker records what Paystar
/// accepted: due keys claimed a batch at a time, each batch's outcomes recorded
/// with what the claim saw of every key (no history lines: no request was sent).
pub fn acknowledge_all(store: &mut Store, policy: Policy) {
    const BATCH: usize = 5_000;
    let (mut claiming, mut recording) = (Duration::ZERO, Duration::ZERO);
    loop {
        let now = now_ms();
        let started = std::time::Instant::now();
        let claim = store.claim(BATCH, &[], now, &[]).unwrap();
        claiming += started.elapsed();
        if claim.claimed.is_empty() {
            eprintln!("acknowledged: claiming {claiming:?}, recording {recording:?}");
            return;
        }
        let outcomes: Vec<Outcome> = claim
            .claimed
            .into_iter()
            .map(|(key, state)| {
                let plan = state.plan(policy);
                let mut outcome = Outcome {
                    key,
                    acked_fields: plan.manage.map(|m| m.fields.to_owned()),
                    acked_unenroll: plan.unenroll.is_some(),
                    result: OutcomeResult::Done,
                    history: Vec::new(),
                    claimed: None,
                };
                outcome.claimed = Some(state.claimed_after(&outcome, policy, now));
                outcome
            })
            .collect();
        let started = std::time::Instant::now();
        store
            .record_outcomes(&outcomes, |s| !s.plan(policy).is_empty(), now)
            .unwrap();
        recording += started.elapsed();
    }
}

pub struct Measure {
    pub wall: Duration,
    pub peak_rss_kib: i64,
    pub code: i32,
}

#[allow(unsafe_code)] // wait4 is the only way to read one child's peak RSS.
fn wait_with_rusage(child: &std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Runs `command` through this benchmark re-executed in `--measure` mode (its
/// `main` calls [`measure`]). A forked child's peak RSS starts from its parent's
/// RSS at fork time, so the fork must come from a process as small as that
/// helper, not from this one.
pub fn measured(command: &[String]) -> Measure {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--measure")
        .args(command)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>().unwrap());
    let (wall_ns, peak_rss_kib, code) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    Measure {
        wall: Duration::from_nanos(wall_ns as u64),
        peak_rss_kib,
        code: code as i32,
    }
}

/// `--measure CMD ARGS…`: runs CMD with its output discarded and prints
/// "wall_ns peak_rss_kib exit_code".
#[allow(clippy::zombie_processes)] // the child is reaped by wait4 in wait_with_rusage
pub fn measure(command: &[String]) {
    let start = std::time::Instant::now();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (code, rss) = wait_with_rusage(&child);
    println!("{} {rss} {code}", start.elapsed().as_nanos());
}

/// The value after `--name` on the command line, if given.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--sizes 100000,1000000` (the default).
pub fn sizes(args: &[String]) -> Vec<usize> {
    flag(args, "--sizes")
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes takes numbers"))
        .collect()
}

/// Waits for a daemon started with `NOTIFY_SOCKET` bound to `notify` to say READY=1.
pub fn wait_ready(notify: &std::os::unix::net::UnixDatagram) {
    let mut buf = [0u8; 256];
    loop {
        let n = notify.recv(&mut buf).expect("daemon never became ready");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
}
