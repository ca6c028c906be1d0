//! The test harness: a temporary project (config, manifests folder, state
//! database) driven through the real binary or through the library.

use paystar_sync::config::Config;
use paystar_sync::customer::{CustomerKey, FieldsBuf};
use paystar_sync::sandbox::{RunningSandbox, Sandbox};
use paystar_sync::scan::{Scan, ScanSettings, scan};
use paystar_sync::store::{Outcome, OutcomeResult, Store};
use std::path::{Path, PathBuf};
use std::process::Command;

mod backend;
pub use backend::{DECLARE, TestState, off_runtime};

pub struct Project {
    // Dropped before the folder, so a PostgreSQL schema goes with its project.
    state: TestState,
    dir: tempfile::TempDir,
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub const BASE_CONFIG: &str = "\
state:
  path: state/paystar-sync.db
manifests:
  dir: manifests
paystar:
  endpoint: sandbox
  default_business_unit: water-bill-pay
safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }
";

impl Project {
    pub fn new() -> Self {
        Self::with_config(BASE_CONFIG)
    }

    pub fn with_config(config: &str) -> Self {
        Self::on(TestState::new(), config)
    }

    /// A project whose state lives on the given backend.
    pub fn on(state: TestState, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("manifests dir");
        let project = Self { state, dir };
        project.config(config);
        project
    }

    /// Runs SQL against the state database directly.
    pub fn execute_sql(&self, sql: &str) {
        self.state.execute(self.root(), sql);
    }

    /// The backend this project's state lives on.
    pub fn state(&self) -> &TestState {
        &self.state
    }

    /// Whether any state exists yet.
    pub fn state_exists(&self) -> bool {
        self.state.exists(self.root())
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("config.yaml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.root().join("state/paystar-sync.db")
    }

    /// Writes the config; the default SQLite state block becomes this
    /// project's backend.
    pub fn config(&self, text: &str) -> &Self {
        let text = text.replace(backend::SQLITE_STATE, &self.state.block(self.root()));
        std::fs::write(self.config_path(), text).expect("write config");
        self
    }

    /// Writes a manifest (path relative to the manifests folder).
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.root().join("manifests").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).expect("write manifest");
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.root().join("manifests").join(rel)).expect("remove manifest");
        self
    }

    /// Runs the binary with `--config` appended.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env_remove("PAYSTAR_SYNC_CONFIG")
            .output()
            .expect("run paystar-sync");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs the binary with `--config` appended, without blocking the runtime
    /// (the sandbox it talks to runs in this process).
    pub async fn run_async(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env_remove("PAYSTAR_SYNC_CONFIG")
            .env("PAYSTAR_API_KEY", TEST_API_KEY)
            .env("LOTUSPAY_SECRET_KEY", TEST_LOTUSPAY_SECRET)
            .output()
            .await
            .expect("run paystar-sync");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `plan --format json`, parsed.
    pub fn plan_json(&self) -> serde_json::Value {
        let run = self.run(&["plan", "--format", "json"]);
        assert!(matches!(run.code, 0 | 65), "plan failed: {run:?}");
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", run.stdout))
    }

    /// The plan as compact lines: `slug/account[/sub] Event detail`.
    pub fn plan_lines(&self) -> Vec<String> {
        let plan = self.plan_json();
        let mut lines = Vec::new();
        for change in plan["changes"].as_array().unwrap() {
            let mut key = format!(
                "{}/{}",
                change["businessUnitSlug"].as_str().unwrap(),
                change["accountNumber"].as_str().unwrap()
            );
            let sub = change["subAccountNumber"].as_str().unwrap();
            if !sub.is_empty() {
                key = format!("{key}/{sub}");
            }
            for event in change["events"].as_array().unwrap() {
                let detail = match event["eventType"].as_str().unwrap() {
                    "Accounts.ManageCustomer" => {
                        let fields: Vec<&str> = event["changedFields"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|f| f.as_str().unwrap())
                            .collect();
                        let original = event["originalEmailAddress"]
                            .as_str()
                            .map(|o| format!(" original={o}"))
                            .unwrap_or_default();
                        format!(
                            "ManageCustomer {} {}{original}",
                            event["change"].as_str().unwrap(),
                            fields.join(",")
                        )
                    }
                    other => format!("{other} {}", event["cause"].as_str().unwrap()),
                };
                lines.push(format!("{key} {}", detail.trim_start_matches("Accounts.")));
            }
        }
        lines
    }

    pub fn load_config(&self) -> Config {
        Config::load(&self.config_path()).expect("config")
    }

    /// Scans and commits through the library, as `apply` and the daemon do.
    pub fn commit(&self) -> Scan {
        off_runtime(|| self.commit_here())
    }

    fn commit_here(&self) -> Scan {
        let config = self.load_config();
        let mut store = Store::open(&config.state).expect("open store");
        let scan = self.scan_with(&config, &store);
        scan.commit(&mut store).expect("commit");
        // Every commit keeps each file's stored rows exactly `desired`'s.
        let check = store.check_held_rows().expect("check held rows");
        assert_eq!(check.differ, Vec::<String>::new(), "stored rows differ");
        scan
    }

    /// Scans without committing, as `plan` does.
    pub fn dry_scan(&self) -> Scan {
        off_runtime(|| self.dry_scan_here())
    }

    fn dry_scan_here(&self) -> Scan {
        let config = self.load_config();
        let store = Store::open_read_only(&config.state).expect("open store");
        self.scan_with(&config, &store)
    }

    fn scan_with(&self, config: &Config, store: &Store) -> Scan {
        let parse = config.parse_options();
        // Far enough ahead that files written by the test count as settled.
        let settings = ScanSettings::new(config, &parse, now_ms() + 10_000);
        scan(store, &settings).expect("scan")
    }

    /// Commits a scan, then records every planned event as acknowledged by
    /// Paystar, as a successful delivery would.
    pub fn commit_and_acknowledge(&self) {
        off_runtime(|| self.commit_and_acknowledge_here())
    }

    fn commit_and_acknowledge_here(&self) {
        self.commit_here();
        let config = self.load_config();
        let mut store = Store::open(&config.state).unwrap();
        let scan = self.scan_with(&config, &store);
        let mut acks: Vec<(CustomerKey, Option<FieldsBuf>, bool)> = Vec::new();
        scan.for_each_change(&store, |change| {
            acks.push((
                change.key.to_owned(),
                change.plan.manage.map(|m| m.fields.to_owned()),
                change.plan.unenroll.is_some(),
            ));
        })
        .unwrap();
        let outcomes: Vec<Outcome> = acks
            .into_iter()
            .map(|(key, fields, unenrolled)| Outcome {
                key,
                acked_fields: fields,
                acked_unenroll: unenrolled,
                result: OutcomeResult::Done,
                history: Vec::new(),
                claimed: None,
            })
            .collect();
        store
            .record_outcomes(&outcomes, |_| false, now_ms())
            .unwrap();
    }

    /// The project's state, opened for writing (in a synchronous test; an
    /// async one uses [`Project::with_store`]).
    pub fn store(&self) -> Store {
        Store::open(&self.load_config().state).expect("open store")
    }

    /// Runs `f` on the project's state, opened for writing.
    pub fn with_store<T: Send>(&self, f: impl FnOnce(&mut Store) -> T + Send) -> T {
        let config = self.load_config();
        off_runtime(move || f(&mut Store::open(&config.state).expect("open store")))
    }
}

pub const TEST_API_KEY: &str = "test-key-9f3a1c";
pub const TEST_LOTUSPAY_SECRET: &str = "sk_test_lotus_51c0";

/// The simulators, served on a free loopback port in the test process.
pub async fn start_sandbox() -> RunningSandbox {
    Sandbox::new()
        .start(([127, 0, 0, 1], 0).into())
        .await
        .expect("start sandbox")
}

/// A project whose config points at a sandbox running in the test process, with
/// fast retries.
pub async fn with_sandbox(extra_paystar: &str) -> (Project, RunningSandbox) {
    let sandbox = start_sandbox().await;
    let config = format!(
        "state:\n  path: state/paystar-sync.db\nmanifests:\n  dir: manifests\npaystar:\n  endpoint: {}\n  api_key_env: PAYSTAR_API_KEY\n  default_business_unit: water-bill-pay\n  retry: {{ schedule: [50ms, 50ms, 50ms] }}\n  timeout: 2s\n{extra_paystar}safety: {{ max_unenrolls: 100000, max_unenroll_percent: 100 }}\n",
        sandbox.paystar_endpoint()
    );
    (Project::with_config(&config), sandbox)
}

pub use paystar_sync::clock::now_ms;

/// The accounts the sandbox accepted an UnenrollAutopay for, in order.
pub fn unenrolled_accounts(sandbox: &RunningSandbox) -> Vec<String> {
    accepted_accounts(sandbox, "Accounts.UnenrollAutopay")
}

/// The account numbers of the events of `event_type` the sandbox accepted
/// (every type: `""`), in order.
pub fn accepted_accounts(sandbox: &RunningSandbox, event_type: &str) -> Vec<String> {
    sandbox
        .sandbox
        .paystar
        .accepted()
        .iter()
        .filter(|a| event_type.is_empty() || a.event_type == event_type)
        .map(|a| {
            a.payload_json()["accountNumber"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Error lines (`file:line: field: reason`) of a plan or validate run.
pub fn error_lines(plan: &serde_json::Value) -> Vec<String> {
    plan["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let line = e["line"]
                .as_u64()
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            let field = e["field"]
                .as_str()
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            format!(
                "{}{line}{field} [{}]",
                e["file"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            )
        })
        .collect()
}

/// The daemon running as a real process, with a notify socket standing in for systemd.
pub struct Daemon {
    child: tokio::process::Child,
    notify: tokio::net::UnixDatagram,
    pub log: PathBuf,
}

impl Project {
    /// Starts `paystar-sync run` and waits for it to say READY=1.
    pub async fn start_daemon(&self) -> Daemon {
        self.start_daemon_with_env(&[]).await
    }

    pub async fn start_daemon_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_daemon_named("daemon", env).await
    }

    /// Starts one of several daemons on this project, logging to `NAME.log`.
    pub async fn start_daemon_named(&self, name: &str, env: &[(&str, &str)]) -> Daemon {
        self.start_daemon_in(name, env, false).await
    }

    /// Starts the daemon in the project's folder with `--config` relative to it,
    /// as an operator in that folder would.
    pub async fn start_daemon_with_a_relative_config(&self) -> Daemon {
        self.start_daemon_in("daemon", &[], true).await
    }

    async fn start_daemon_in(&self, name: &str, env: &[(&str, &str)], relative: bool) -> Daemon {
        let socket = self.root().join(format!("notify-{name}-{}.sock", now_ms()));
        let notify = tokio::net::UnixDatagram::bind(&socket).expect("bind notify socket");
        let log = self.root().join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"));
        command.args(["run", "--log-level", "debug", "--config"]);
        if relative {
            let config = self.config_path();
            command
                .arg(config.file_name().expect("a config file"))
                .current_dir(config.parent().expect("a project folder"));
        } else {
            command.arg(self.config_path());
        }
        let child = command
            .env("NOTIFY_SOCKET", &socket)
            .env("PAYSTAR_API_KEY", TEST_API_KEY)
            .env("LOTUSPAY_SECRET_KEY", TEST_LOTUSPAY_SECRET)
            .env_remove("PAYSTAR_SYNC_CONFIG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("start daemon");
        let daemon = Daemon { child, notify, log };
        let ready = daemon.next_notify(std::time::Duration::from_secs(30)).await;
        assert!(
            ready.as_deref().is_some_and(|m| m.contains("READY=1")),
            "daemon never became ready: {ready:?}\n{}",
            daemon.log_text()
        );
        daemon
    }
}

impl Daemon {
    pub async fn next_notify(&self, timeout: std::time::Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(timeout, self.notify.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends a real signal (`TERM`, `INT`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("daemon running").to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The exit code, or `None` if it did not exit within `timeout`.
    pub async fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()?;
        Some(status.code())
    }

    /// SIGTERM, then expects a prompt exit 0.
    pub async fn stop(mut self) {
        self.signal("TERM");
        let code = self.wait_exit(std::time::Duration::from_secs(20)).await;
        assert_eq!(code, Some(Some(0)), "{}", self.log_text());
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http_addr()))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("read /metrics")
    }

    /// Reads `/metrics` until it contains `line`, for at most 20 s; returns the last text.
    pub async fn metrics_until(&self, line: &str) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = self.metrics().await;
            if text.contains(line) || tokio::time::Instant::now() >= deadline {
                return text;
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The console's base URL (`http://127.0.0.1:PORT`), from its log.
    pub fn console_url(&self) -> String {
        let log = self.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("console listening"))
            .unwrap_or_else(|| panic!("no console in the log:\n{log}"));
        line.split("url=")
            .nth(1)
            .expect("url field")
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The address the daemon's HTTP server listens on, from its log (the
    /// latest, when daemons ran one after another on the same log).
    pub fn http_addr(&self) -> String {
        let log = self.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("http server listening"))
            .unwrap_or_else(|| panic!("no http server in the log:\n{log}"));
        line.split("addr=")
            .nth(1)
            .expect("addr field")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

/// The daemon config used by daemon tests: fast debounce, no periodic rescans.
pub fn daemon_config(endpoint: &str, extra_manifests: &str) -> String {
    format!(
        "state:\n  path: state/paystar-sync.db\nmanifests:\n  dir: manifests\n  debounce: 100ms\n  rescan_interval: 1h\n{extra_manifests}paystar:\n  endpoint: {endpoint}\n  api_key_env: PAYSTAR_API_KEY\n  default_business_unit: water-bill-pay\n  retry: {{ schedule: [50ms, 50ms, 50ms] }}\n  timeout: 2s\nsafety: {{ max_unenrolls: 100000, max_unenroll_percent: 100 }}\nserver: {{ listen: \"127.0.0.1:0\" }}\n"
    )
}

/// Runs the binary as `nobody` (uid 65534) when the tests run as root, as the
/// service's own user would (file permissions then apply); as this user otherwise.
pub fn run_as_another_user(p: &Project, args: &[&str]) -> std::process::Output {
    let root = running_as_root();
    let binary = env!("CARGO_BIN_EXE_paystar-sync");
    let mut command = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
        c
    } else {
        std::process::Command::new(binary)
    };
    command
        .args(args)
        .arg("--config")
        .arg(p.config_path())
        .env_remove("PAYSTAR_SYNC_CONFIG")
        .output()
        .expect("run paystar-sync as another user (setpriv from util-linux)")
}

/// Whether the tests run as root (who reads any file whatever its mode).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}
