//! The mistakes operators really make, each caught with a message that says
//! what to do (SPEC §7, §9): a second writer on one SQLite state, Ctrl-C in
//! `apply`, a wrong endpoint, a copied live database.

use crate::support::{Project, daemon_config};
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

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_and_an_apply_beside_a_daemon_are_refused_on_sqlite_and_reads_still_work() {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    if p.state().is_postgres() {
        // PostgreSQL's lease refuses them (tests/it/ha.rs).
        return;
    }
    p.file("a.csv", customers(3));
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
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    if p.state().is_postgres() {
        return;
    }
    p.file("a.csv", customers(2));
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
    let p = Project::with_config(&daemon_config(&typo, ""));
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
    let log = daemon.log_text();
    assert_eq!(
        log.matches("delivery paused: a fault of the endpoint")
            .count(),
        1,
        "said once, not once per customer:\n{log}"
    );
    // The fix, by a reload: everyone is delivered, nobody needed `retry`.
    p.config(&daemon_config(&good, ""));
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
    let accounts: Vec<String> = paystar
        .accepted()
        .iter()
        .map(|a| {
            a.payload_json()["accountNumber"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
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
