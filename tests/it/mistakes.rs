//! The mistakes operators really make, each caught with a message that says
//! what to do (SPEC §7, §9): a second writer on one SQLite state, Ctrl-C in
//! `apply`, a wrong endpoint, a copied live database.

use crate::support::{Project, daemon_config};
use paystar_sync::sandbox::RunningSandbox;
use std::time::Duration;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";

fn customers(n: usize) -> String {
    let mut text = HEADER.to_owned();
    for i in 0..n {
        text.push_str(&format!(
            "{:06},Ann,Lee,ann{i}@example.com,true\n",
            100_000 + i
        ));
    }
    text
}

/// A sandbox and a daemon project with `n` customers; `None` on PostgreSQL
/// for what only SQLite has (`sqlite_only`).
async fn daemon_project(n: usize, sqlite_only: bool) -> Option<(Project, RunningSandbox)> {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    if sqlite_only && p.state().is_postgres() {
        return None;
    }
    p.file("a.csv", customers(n));
    Some((p, sandbox))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_and_an_apply_beside_a_daemon_are_refused_on_sqlite_and_reads_still_work() {
    // PostgreSQL has none of this (its lease plays the owner's part, tests/it/ha.rs).
    let Some((p, _sandbox)) = daemon_project(3, true).await else {
        return;
    };
    let daemon = p.start_daemon().await;
    let second = p.run_async(&["run"]).await;
    assert_eq!(second.code, 1, "{second:?}");
    assert!(
        second
            .stderr
            .contains("is in use by `paystar-sync run` (pid ")
            && second.stderr.contains("would send the same changes"),
        "{}",
        second.stderr
    );
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(
        apply.stderr.contains("`paystar-sync run`"),
        "{}",
        apply.stderr
    );
    for writer in [&["approve"][..], &["retry", "--all"][..]] {
        let run = p.run_async(writer).await;
        assert_eq!(run.code, 1, "{writer:?}: {run:?}");
    }
    // Read-only commands take no lock.
    for reader in [&["status"][..], &["validate"][..], &["plan"][..]] {
        let run = p.run_async(reader).await;
        assert_eq!(run.code, 0, "{reader:?}: {run:?}");
    }
    daemon.stop().await;
    // The lock goes with its holder: apply runs now.
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 0, "{apply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_killed_daemon_never_blocks() {
    // PostgreSQL has none of this (its lease plays the owner's part, tests/it/ha.rs).
    let Some((p, _sandbox)) = daemon_project(2, true).await else {
        return;
    };
    let mut daemon = p.start_daemon().await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10)).await;
    let lock = paystar_sync::store::lock_path(&p.db_path());
    assert!(lock.exists(), "the lock file stays behind");
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 0, "{apply:?}");
}

/// `/health`'s status and body.
async fn health(daemon: &crate::support::Daemon) -> (u16, String) {
    let response = reqwest::get(format!("http://{}/health", daemon.http_addr()))
        .await
        .expect("/health answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn status_json(p: &Project) -> serde_json::Value {
    let run = p.run_async(&["status", "--format", "json"]).await;
    serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_endpoint_pauses_delivery_parks_no_one_and_a_reload_that_fixes_it_delivers_everyone()
{
    let sandbox = crate::support::start_sandbox().await;
    let good = sandbox.paystar_endpoint();
    // One letter short, as typed.
    let typo = good.strip_suffix('s').expect("…/events").to_owned();
    let with_console = |endpoint: &str| {
        format!(
            "{}console: {{ listen: \"127.0.0.1:0\" }}\n",
            daemon_config(endpoint, "")
        )
    };
    let p = Project::with_config(&with_console(&typo));
    p.file("a.csv", customers(5));
    // A customer an earlier build parked for this fault: released by this one.
    p.commit();
    p.with_store(|s| {
        use paystar_sync::store::{Outcome, OutcomeResult};
        let key = paystar_sync::customer::CustomerKey {
            business_unit: "water-bill-pay".into(),
            account: "100000".into(),
            sub_account: String::new(),
        };
        let parked = Outcome {
            key,
            acked_fields: None,
            acked_unenroll: false,
            result: OutcomeResult::Park {
                attempts: 1,
                error: "HTTP 404: Not Found".into(),
                request: "{}".into(),
                response: "HTTP 404".into(),
            },
            history: Vec::new(),
            claimed: None,
        };
        s.record_outcomes(&[parked], |_| false, crate::support::now_ms())
            .unwrap();
    });
    assert_eq!(status_json(&p).await["counts"]["parked"], 1);
    // The harness commits as if 10 s ahead (so that files count as settled):
    // the queued customers are due now.
    p.execute_sql("UPDATE queue SET next_attempt_at = 0 WHERE state = 'pending'");
    let daemon = p.start_daemon().await;
    let metrics = daemon.metrics_until("paystar_sync_endpoint_paused 1").await;
    assert!(
        metrics.contains("paystar_sync_endpoint_pauses_total 1"),
        "{metrics}"
    );
    let (code, body) = health(&daemon).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("Paystar answers 404 to every request: check paystar.endpoint"),
        "{body}"
    );
    let status = status_json(&p).await;
    assert_eq!(status["counts"]["parked"], 0, "{status}");
    assert_eq!(sandbox.sandbox.paystar.accepted_total(), 0);
    // The console's overview says so, in red, and so does its API.
    let overview = reqwest::get(format!("{}/", daemon.console_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        overview
            .contains("class=\"bad\" id=\"delivery\">paused: Paystar answers 404 to every request"),
        "{overview}"
    );
    let api = reqwest::get(format!("{}/api/v1/status", daemon.console_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["delivery"]["health"], "paused", "{api}");
    let log = daemon.log_text();
    assert_eq!(
        log.matches("delivery paused: a fault of the endpoint")
            .count(),
        1,
        "said once, not once per customer:\n{log}"
    );
    // The fix, by a reload: everyone is delivered, nobody needed `retry`.
    p.config(&with_console(&good));
    daemon.signal("HUP");
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(5, Duration::from_secs(20))
        .await;
    assert_eq!(accepted.len(), 5, "{}", daemon.log_text());
    let metrics = daemon.metrics_until("paystar_sync_endpoint_paused 0").await;
    assert!(
        metrics.contains("paystar_sync_endpoint_paused 0"),
        "{metrics}"
    );
    let (code, body) = health(&daemon).await;
    assert_eq!(code, 200, "{body}");
    let status = status_json(&p).await;
    assert_eq!(status["counts"]["parked"], 0, "{status}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_against_a_wrong_endpoint_stops_promptly_parks_no_one_and_names_the_fix() {
    let sandbox = crate::support::start_sandbox().await;
    let good = sandbox.paystar_endpoint();
    let typo = good.replace("/integrations/events", "/integration/events");
    let p = Project::with_config(&daemon_config(&typo, ""));
    p.file("a.csv", customers(20));
    let run = p.run_async(&["apply"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "delivery paused: Paystar answers 404 to every request: check paystar.endpoint"
        ) && run.stdout.contains("0 parked, 20 still waiting"),
        "{run:?}"
    );
    p.config(&daemon_config(&good, ""));
    let run = p.run_async(&["apply"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sandbox.sandbox.paystar.accepted_total(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_apply_finishes_what_is_in_flight_exits_130_and_nothing_is_sent_twice() {
    let sandbox = crate::support::start_sandbox().await;
    let paystar = &sandbox.sandbox.paystar;
    paystar.set_latency(Duration::from_millis(150));
    let p = Project::with_config(&format!(
        "{}shutdown_grace: 5s\n",
        daemon_config(&sandbox.paystar_endpoint(), "")
            .replace("  timeout: 2s\n", "  timeout: 2s\n  concurrency: 2\n")
    ));
    p.file("a.csv", customers(40));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["apply", "--config"])
        .arg(p.config_path())
        .env("PAYSTAR_API_KEY", crate::support::TEST_API_KEY)
        .env_remove("PAYSTAR_SYNC_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    paystar.wait_for(4, Duration::from_secs(20)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-s", "INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("apply exits within shutdown_grace")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupted: apply starts nothing new"),
        "{stderr}"
    );
    let sent = paystar.accepted_total();
    assert!(
        sent < 40,
        "the interrupt came too late to test anything: {sent}"
    );
    assert!(
        stdout.contains(&format!(
            "interrupted: {sent} event(s) acknowledged, {} customer(s) still queued; run apply again",
            40 - sent
        )),
        "{stdout}"
    );
    paystar.set_latency(Duration::ZERO);
    let run = p.run_async(&["apply"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let accounts = crate::support::accepted_accounts(&sandbox, "");
    let distinct: std::collections::HashSet<&String> = accounts.iter().collect();
    assert_eq!(accounts.len(), 40, "each customer sent once");
    assert_eq!(distinct.len(), 40);
}

#[test]
fn a_missing_manifests_folder_is_a_configuration_error_for_validate_plan_and_apply() {
    let p = Project::with_config(
        &daemon_config("sandbox", "").replace("dir: manifests", "dir: manifets"),
    );
    for command in ["validate", "plan", "apply"] {
        let run = p.run(&[command]);
        assert_eq!(run.code, 78, "{command}: {run:?}");
        assert!(
            run.stderr.contains("manifests.dir: ")
                && run.stderr.contains(
                    "manifets does not exist; create it, or point manifests.dir at the folder"
                ),
            "{command}: {}",
            run.stderr
        );
    }
}

#[test]
fn the_unit_does_not_restart_on_a_configuration_error() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/paystar-sync.service"),
    )
    .unwrap();
    assert!(
        unit.lines().any(|l| l == "RestartPreventExitStatus=78"),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "Restart=on-failure"), "{unit}");
}

/// Runs the binary with another config of the project's.
fn run_with(p: &Project, config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(p.root())
        .env_remove("PAYSTAR_SYNC_CONFIG")
        .output()
        .unwrap()
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_taken_beside_a_running_daemon_plans_as_the_state_does_and_nothing_appears_beside_it()
 {
    let (p, sandbox) = daemon_project(30, false).await.expect("any backend");
    let daemon = p.start_daemon().await;
    sandbox
        .sandbox
        .paystar
        .wait_for(30, Duration::from_secs(20))
        .await;
    let out = p.root().join("ci/snapshot.db");
    let run = p
        .run_async(&["state", "snapshot", out.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("a consistent copy of"), "{run:?}");
    // A second snapshot never overwrites the first.
    let again = p
        .run_async(&["state", "snapshot", out.to_str().unwrap()])
        .await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("exists; remove it"), "{again:?}");
    daemon.stop().await;
    // The pull request: one customer more, one changed.
    p.file(
        "a.csv",
        customers(31).replace("ann3@example.com", "ann3@example.org"),
    );
    let ci = p.root().join("ci.yaml");
    std::fs::write(
        &ci,
        "state:\n  path: ci/snapshot.db\nmanifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\n",
    )
    .unwrap();
    let before = listing(&p.root().join("ci"));
    assert_eq!(before, ["snapshot.db"]);
    let from_snapshot = run_with(&p, &ci, &["plan"]);
    let from_state = p.run(&["plan"]);
    assert_eq!(from_snapshot.status.code(), Some(0), "{from_snapshot:?}");
    assert_eq!(
        String::from_utf8_lossy(&from_snapshot.stdout),
        from_state.stdout
    );
    assert!(
        from_state.stdout.contains("(1 create, 1 update)"),
        "{}",
        from_state.stdout
    );
    for command in ["validate", "status", "plan"] {
        let run = run_with(&p, &ci, &[command]);
        assert_eq!(run.status.code(), Some(0), "{command}: {run:?}");
    }
    assert_eq!(
        listing(&p.root().join("ci")),
        before,
        "no -wal, -shm or lock beside it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_state_copied_without_its_wal_is_called_an_incomplete_copy_never_sent_to_apply() {
    // PostgreSQL has none of this (its lease plays the owner's part, tests/it/ha.rs).
    let Some((p, sandbox)) = daemon_project(3, true).await else {
        return;
    };
    let daemon = p.start_daemon().await;
    sandbox
        .sandbox
        .paystar
        .wait_for(3, Duration::from_secs(20))
        .await;
    std::fs::create_dir_all(p.root().join("ci")).unwrap();
    std::fs::copy(p.db_path(), p.root().join("ci/copied.db")).unwrap();
    daemon.stop().await;
    let ci = p.root().join("ci.yaml");
    std::fs::write(
        &ci,
        "state:\n  path: ci/copied.db\nmanifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n",
    )
    .unwrap();
    let run = run_with(&p, &ci, &["plan"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("an incomplete copy?") && stderr.contains("paystar-sync state snapshot"),
        "{stderr}"
    );
    assert!(!stderr.contains("apply"), "{stderr}");
    assert_eq!(listing(&p.root().join("ci")), ["copied.db"]);
}

/// Holds the state's write lock (SQLite) or an exclusive lock on the queue
/// (PostgreSQL) on a thread of its own until `release` is dropped or sent.
fn hold_the_state(p: &Project) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let postgres = match p.state() {
        crate::support::TestState::Postgres { url, schema } => Some((url.clone(), schema.clone())),
        crate::support::TestState::Sqlite => None,
    };
    let db = p.db_path();
    let holder = std::thread::spawn(move || match postgres {
        None => {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        }
        Some((url, schema)) => {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            tx.batch_execute(&format!(
                "SET LOCAL search_path TO {schema}; LOCK TABLE queue IN ACCESS EXCLUSIVE MODE;"
            ))
            .unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
            tx.rollback().unwrap();
        }
    });
    is_locked.recv().unwrap();
    (release, holder)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_answer_503_at_once_while_the_state_database_does_not_answer() {
    let (p, sandbox) = daemon_project(2, false).await.expect("any backend");
    let daemon = p.start_daemon().await;
    sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    assert_eq!(health(&daemon).await.0, 200);
    let (release, holder) = hold_the_state(&p);
    // A connection each: none is kept across the 503s (a kept one may be
    // closing just as it is reused).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for path in ["health", "metrics", "health"] {
        let asked = tokio::time::Instant::now();
        let response = client
            .get(format!("http://{}/{path}", daemon.http_addr()))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|err| panic!("/{path} did not answer: {err}"));
        let took = asked.elapsed();
        assert_eq!(response.status(), 503, "/{path}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains("state database not answering for"),
            "/{path}: {body}"
        );
        // Its answer is the 1 s bound, not the database's 5 s busy wait.
        assert!(took < Duration::from_secs(4), "/{path} took {took:?}");
    }
    release.send(()).unwrap();
    holder.join().unwrap();
    // Once the database answers, so does /health.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = health(&daemon).await;
        if code == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {code}: {body}"
        );
    }
    daemon.stop().await;
}

#[test]
fn a_plan_on_an_empty_state_says_a_first_import_holds_its_unenrolls_and_how_to_approve_them() {
    // The default guard: 5 % of known customers.
    let p = Project::with_config(&crate::support::BASE_CONFIG.replace(
        "safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }\n",
        "",
    ));
    let mut rows = customers(9);
    rows.push_str("200000,Bo,Diaz,bo@example.com,false\n");
    p.file("a.csv", rows);
    let run = p.run(&["plan"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("HELD: 1 unenroll of 10 known customers exceeds safety.max_unenroll_percent (5 %). This is a first import"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("then approve"), "{}", run.stdout);
}

#[test]
fn history_of_an_account_known_only_by_its_sub_accounts_names_them() {
    let p = Project::with_config(crate::support::BASE_CONFIG);
    p.file(
        "a.csv",
        "accountNumber,subAccountNumber,firstName,lastName,emailAddress\n12346,01,Ada,Lovelace,ada@example.com\n12346,02,Alan,Turing,alan@example.com\n",
    );
    p.commit();
    let run = p.run(&["history", "12346"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("sub-account(s): 12346/01, 12346/02; run `paystar-sync history 12346/01`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_state_this_user_cannot_write_is_named_with_the_user_and_the_fix_and_reads_still_work() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::with_config(crate::support::BASE_CONFIG);
    if p.state().is_postgres() {
        return;
    }
    p.file("a.csv", customers(3));
    p.commit();
    // Readable by everyone, writable only by its owner (root, or this user).
    for dir in ["", "state", "manifests"] {
        std::fs::set_permissions(p.root().join(dir), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let me = std::fs::metadata(p.root()).unwrap();
    if std::os::unix::fs::MetadataExt::uid(&me) != 0 {
        // Not root: make the state read-only to this user instead.
        std::fs::set_permissions(
            p.root().join("state"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
    }
    for writer in [&["apply"][..], &["approve"][..]] {
        let run = crate::support::run_as_another_user(&p, writer);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{writer:?}: {stderr}");
        assert!(
            stderr.contains("(uid ") && stderr.contains("writable by this user"),
            "{writer:?}: {stderr}"
        );
    }
    // Read-only commands work on a state they cannot write, and create nothing.
    let before = listing(&p.root().join("state"));
    for reader in [&["status"][..], &["plan"][..]] {
        let run = crate::support::run_as_another_user(&p, reader);
        assert_eq!(run.status.code(), Some(0), "{reader:?}: {run:?}");
    }
    assert_eq!(listing(&p.root().join("state")), before);
    std::fs::set_permissions(
        p.root().join("state"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_state_copy_exits_130_and_leaves_the_target_empty() {
    let p = Project::with_config(crate::support::BASE_CONFIG);
    if p.state().is_postgres() {
        return;
    }
    p.file("a.csv", customers(50));
    p.commit();
    let target = p.root().join("target.yaml");
    std::fs::write(
        &target,
        "state:\n  path: moved/state.db\nmanifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n",
    )
    .unwrap();
    // An empty target whose writes wait on another session: the copy blocks.
    let target_db = p.root().join("moved/state.db");
    assert_eq!(run_with(&p, &target, &["status"]).status.code(), Some(0));
    let config = paystar_sync::config::Config::load(&target).unwrap();
    drop(paystar_sync::store::Store::open(&config.state).unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let db = target_db.clone();
        move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        }
    });
    is_locked.recv().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["state", "copy", "--from"])
        .arg(p.config_path())
        .arg("--to")
        .arg(&target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The copy has begun once it holds the target's owner lock.
    let lock = paystar_sync::store::lock_path(&target_db);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("state copy")) {
        tokio::task::yield_now().await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-s", "INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("state copy exits")
        .unwrap();
    release.send(()).unwrap();
    holder.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted: the copy stops"), "{stdout}");
    let status = run_with(&p, &target, &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["desired"], 0, "{status}");
}
