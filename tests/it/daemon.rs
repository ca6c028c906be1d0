//! SPEC §9: the daemon, as a real process, watching a real folder, stopped by
//! real signals, and killed with SIGKILL mid-delivery.

use crate::support::{Daemon, Project, daemon_config};
use paystar_sync::sandbox::RunningSandbox;
use std::collections::BTreeMap;
use std::time::Duration;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";
const WAIT: Duration = Duration::from_secs(20);

fn csv(rows: &[&str]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

async fn setup(extra_manifests: &str) -> (Project, RunningSandbox) {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), extra_manifests));
    (p, sandbox)
}

fn accounts(sandbox: &RunningSandbox) -> Vec<String> {
    sandbox
        .sandbox
        .paystar
        .accepted()
        .iter()
        .map(|a| {
            let p = a.payload_json();
            format!(
                "{} {}",
                a.event_type.trim_start_matches("Accounts."),
                p["accountNumber"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_says_ready_after_its_startup_scan_and_delivers_it() {
    let (p, sandbox) = setup("").await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,no"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    assert_eq!(
        accounts(&sandbox),
        ["ManageCustomer 1", "UnenrollAutopay 1"]
    );
    daemon.stop().await;
}

/// One customer delivered, then an exporter's save: a temporary file renamed
/// over the old one. The change reaches Paystar as an email change.
async fn an_atomic_save_reaches_paystar(p: &Project, sandbox: &RunningSandbox, daemon: Daemon) {
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    p.file("a.csv.tmp", csv(&["1,Ada,Lovelace,ada.king@example.com,"]));
    std::fs::rename(
        p.root().join("manifests/a.csv.tmp"),
        p.root().join("manifests/a.csv"),
    )
    .unwrap();
    let accepted = sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    assert_eq!(accepted.len(), 2, "{}", daemon.log_text());
    assert_eq!(
        accepted[1].payload_json()["originalEmailAddress"],
        "ada@example.com"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_atomic_save_by_rename_is_picked_up() {
    let (p, sandbox) = setup("").await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let daemon = p.start_daemon().await;
    an_atomic_save_reaches_paystar(&p, &sandbox, daemon).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_with_a_relative_config_path_sees_every_change() {
    let (p, sandbox) = setup("").await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    // The watch reports absolute paths; a change must still reach a scan.
    let daemon = p.start_daemon_with_a_relative_config().await;
    an_atomic_save_reaches_paystar(&p, &sandbox, daemon).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_files_and_partial_downloads_are_never_read() {
    let (p, sandbox) = setup("").await;
    let daemon = p.start_daemon().await;
    p.file(".a.csv.swp", csv(&["7,Swap,File,swap@example.com,"]));
    p.file(
        "b.csv.crdownload",
        csv(&["8,Partial,Download,partial@example.com,"]),
    );
    p.file("c.csv", csv(&["9,Real,File,real@example.com,"]));
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    // The real file's change was scanned together with the others: only it was sent.
    assert_eq!(
        accounts(&sandbox),
        ["ManageCustomer 9"],
        "{}",
        daemon.log_text()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_still_being_written_is_not_read_half_way() {
    use std::io::Write;
    let (p, sandbox) = setup("").await;
    let daemon = p.start_daemon().await;
    let mut slow = std::fs::File::create(p.root().join("manifests/slow.csv")).unwrap();
    slow.write_all(HEADER.as_bytes()).unwrap();
    slow.write_all(b"1,Ada,Lovelace,ada@exa").unwrap();
    slow.flush().unwrap();
    // Another change makes the daemon scan while the slow writer still has its file open.
    p.file("other.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    assert_eq!(accounts(&sandbox), ["ManageCustomer 2"]);
    slow.write_all(b"mple.com,\n").unwrap();
    drop(slow);
    let accepted = sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    assert_eq!(accepted.len(), 2, "{}", daemon.log_text());
    assert_eq!(
        accepted[1].payload_json()["emailAddress"],
        "ada@example.com"
    );
    assert!(
        !daemon.log_text().contains("slow.csv:2"),
        "the partial row must never be reported as an error"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_file_unenrolls_its_customers_when_on_removal_says_so() {
    let (p, sandbox) = setup("  on_removal: unenroll\n").await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    p.remove("b.csv");
    sandbox.sandbox.paystar.wait_for(3, WAIT).await;
    assert_eq!(accounts(&sandbox)[2], "UnenrollAutopay 2");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_swapped_root_is_followed_like_git_sync_does() {
    let (p, sandbox) = setup("").await;
    let releases = p.root().join("releases");
    std::fs::create_dir_all(releases.join("r1")).unwrap();
    std::fs::write(
        releases.join("r1/c.csv"),
        csv(&["1,Ada,Lovelace,ada@example.com,"]),
    )
    .unwrap();
    std::fs::remove_dir(p.root().join("manifests")).unwrap();
    std::os::unix::fs::symlink(releases.join("r1"), p.root().join("manifests")).unwrap();
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    // git-sync: write the new release, point a new link at it, rename it over the old one.
    std::fs::create_dir_all(releases.join("r2")).unwrap();
    std::fs::write(
        releases.join("r2/c.csv"),
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    )
    .unwrap();
    std::os::unix::fs::symlink(releases.join("r2"), p.root().join("manifests.new")).unwrap();
    std::fs::rename(p.root().join("manifests.new"), p.root().join("manifests")).unwrap();
    std::fs::remove_dir_all(releases.join("r1")).unwrap();
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    assert_eq!(
        accounts(&sandbox),
        ["ManageCustomer 1", "ManageCustomer 2"],
        "{}",
        daemon.log_text()
    );
    // And the watch follows the new target.
    std::fs::write(
        releases.join("r2/d.csv"),
        csv(&["3,Grace,Hopper,grace@example.com,"]),
    )
    .unwrap();
    sandbox.sandbox.paystar.wait_for(3, WAIT).await;
    assert_eq!(accounts(&sandbox).len(), 3, "{}", daemon.log_text());
    // A flip is routine: the watch library's notes on the old target's watches
    // are not the operator's business.
    let log = daemon.log_text();
    assert!(!log.contains("unable to remove watch descriptor"), "{log}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_stop_the_daemon_promptly_with_exit_0() {
    for signal in ["TERM", "INT"] {
        let (p, _sandbox) = setup("").await;
        let mut daemon = p.start_daemon().await;
        daemon.signal(signal);
        let code = daemon.wait_exit(Duration::from_secs(5)).await;
        assert_eq!(code, Some(Some(0)), "SIG{signal}: {}", daemon.log_text());
        assert!(
            daemon
                .next_notify(Duration::from_secs(1))
                .await
                .is_some_and(|m| m.contains("STOPPING=1"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let (p, sandbox) = setup("").await;
    let daemon = p.start_daemon().await;
    let good = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&format!("{good}bogus_section: 1\n"));
    daemon.signal("HUP");
    // Still watching with the old config: a new file goes through.
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let accepted = sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    assert_eq!(accepted.len(), 1, "{}", daemon.log_text());
    assert!(
        daemon.log_text().contains("reload refused"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("bogus_section: unknown key"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_valid_config_applies_it() {
    let (p, sandbox) = setup("").await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&config.replace(
        "  debounce: 100ms\n",
        "  debounce: 100ms\n  on_removal: unenroll\n",
    ));
    daemon.signal("HUP");
    assert!(
        daemon
            .next_notify(WAIT)
            .await
            .is_some_and(|m| m.contains("RELOADING=1"))
    );
    assert!(
        daemon
            .next_notify(WAIT)
            .await
            .is_some_and(|m| m.contains("READY=1"))
    );
    p.remove("a.csv");
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    assert_eq!(
        accounts(&sandbox),
        ["ManageCustomer 1", "UnenrollAutopay 1"],
        "{}",
        daemon.log_text()
    );
    daemon.stop().await;
}

/// Kills the daemon with SIGKILL while requests are in flight, restarts it, and
/// checks that every customer reaches Paystar and that only what was not
/// acknowledged is sent again.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_delivery_loses_nothing_and_resends_only_the_unacknowledged() {
    const CUSTOMERS: usize = 40;
    const CONCURRENCY: usize = 4;
    let sandbox = crate::support::start_sandbox().await;
    let config = daemon_config(&sandbox.paystar_endpoint(), "").replace(
        "  timeout: 2s\n",
        &format!("  timeout: 2s\n  concurrency: {CONCURRENCY}\n"),
    );
    let p = Project::with_config(&config);
    sandbox
        .sandbox
        .paystar
        .set_latency(Duration::from_millis(100));
    let rows: Vec<String> = (0..CUSTOMERS)
        .map(|i| format!("{i},Ada,Lovelace,ada{i}@example.com,"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("c.csv", csv(&rows));

    let mut first = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(CUSTOMERS / 4, WAIT).await;
    first.signal("KILL");
    assert_eq!(
        first.wait_exit(WAIT).await,
        Some(None),
        "killed by a signal"
    );
    let before_restart = sandbox.sandbox.paystar.accepted().len();
    assert!(
        before_restart < CUSTOMERS,
        "the kill must land mid-delivery"
    );

    let second = p.start_daemon().await;
    let mut per_customer: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while per_customer.len() < CUSTOMERS && tokio::time::Instant::now() < deadline {
        let accepted = sandbox
            .sandbox
            .paystar
            .wait_for(per_customer.values().sum::<usize>() + 1, WAIT)
            .await;
        per_customer.clear();
        for a in &accepted {
            *per_customer
                .entry(
                    a.payload_json()["accountNumber"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
                .or_default() += 1;
        }
    }
    assert_eq!(
        per_customer.len(),
        CUSTOMERS,
        "every customer reached Paystar\n{}",
        second.log_text()
    );
    // Only requests that were in flight at the kill (at most `concurrency`) may repeat.
    let repeats: usize = per_customer.values().map(|n| n - 1).sum();
    assert!(
        repeats <= CONCURRENCY,
        "{repeats} customers were sent twice"
    );
    second.stop().await;
    let counts = p.with_store(|s| s.counts().unwrap());
    assert_eq!(
        (
            counts.acknowledged,
            counts.pending,
            counts.retrying,
            counts.parked
        ),
        (CUSTOMERS as u64, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_pings_the_systemd_watchdog_at_half_its_interval() {
    let (p, _sandbox) = setup("").await;
    let daemon = p
        .start_daemon_with_env(&[("WATCHDOG_USEC", "200000")])
        .await;
    let ping = daemon.next_notify(Duration::from_secs(5)).await;
    assert_eq!(ping.as_deref(), Some("WATCHDOG=1"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_answer_over_http() {
    let (p, sandbox) = setup("").await;
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    let addr = daemon.http_addr();
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body = health.text().await.unwrap();
    if p.state().is_postgres() {
        // A shared state elects a leader: the one daemon is it, and says so.
        assert!(body.starts_with("ok\nrole: leader\nleader: "), "{body}");
    } else {
        assert!(body.starts_with("ok\nversion: paystar-sync "), "{body}");
    }
    // The acknowledgements are recorded right after Paystar answers: wait for them.
    let text = daemon.metrics_until("paystar_sync_acknowledged 2").await;
    assert!(text.contains("# TYPE paystar_sync_queue gauge"), "{text}");
    assert!(
        text.contains("paystar_sync_queue{state=\"parked\"} 0"),
        "{text}"
    );
    assert!(text.contains("paystar_sync_customers 2"), "{text}");
    assert!(text.contains("paystar_sync_acknowledged 2"), "{text}");
    assert!(
        text.contains("paystar_sync_events_delivered_total 2"),
        "{text}"
    );
    assert!(
        text.contains("paystar_sync_delivery_failures_total{outcome=\"parked\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE paystar_sync_scan_duration_seconds gauge"),
        "{text}"
    );
    let unknown = client
        .post(format!("http://{addr}/health"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 405);
    daemon.stop().await;
}

/// The README's quickstart: the daemon on `examples/` against the in-process
/// sandbox; a LotusPay mandate cancellation becomes an UnenrollAutopay.
#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_turns_a_lotuspay_cancellation_into_an_unenroll() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("examples/quickstart.yaml"))
        .unwrap()
        .replace(
            "path: ../target/quickstart-state/paystar-sync.db",
            "path: state/paystar-sync.db",
        )
        .replace("schedule: \"*/10 * * * * *\"", "schedule: \"* * * * * *\"")
        .replace("listen: 127.0.0.1:8081", "listen: 127.0.0.1:0")
        .replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:0");
    let p = Project::with_config(&config);
    for entry in ["residential.yaml", "billing-exports/2026-11-export.csv"] {
        p.file(
            entry,
            std::fs::read(root.join("examples/manifests").join(entry)).unwrap(),
        );
    }
    let daemon = p.start_daemon().await;
    // Its console is on, read-only (no console.auth).
    let overview = reqwest::get(format!("{}/", daemon.console_url()))
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert!(
        overview
            .text()
            .await
            .unwrap()
            .contains("read-only (no console.auth)")
    );
    let log = daemon.log_text();
    let lotuspay = log
        .split("lotuspay=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("sandbox URL in the log");
    let sandbox = lotuspay.trim_end_matches("/v1").to_owned();
    let client = reqwest::Client::new();
    let paystar_events = || async {
        let text = client
            .get(format!("{sandbox}/_sandbox/paystar/events"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list["events"].as_array().unwrap().clone()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while paystar_events().await.len() < 7 && tokio::time::Instant::now() < deadline {}
    assert_eq!(
        paystar_events().await.len(),
        7,
        "the startup scan's events\n{}",
        daemon.log_text()
    );
    let cancelled = serde_json::json!({ "type": "mandate.cancelled", "resource_id": "MD1",
        "data": { "object": { "object": "mandate", "metadata": { "paystar_account_number": "12345" } } } });
    let added = client
        .post(format!("{sandbox}/_sandbox/lotuspay/events"))
        .header("content-type", "application/json")
        .body(cancelled.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut events = paystar_events().await;
    while events.len() < 8 && tokio::time::Instant::now() < deadline {
        events = paystar_events().await;
    }
    let last = events.last().unwrap();
    assert_eq!(
        last["eventType"],
        "Accounts.UnenrollAutopay",
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        last["payload"],
        r#"{"accountNumber":"12345","subAccountNumber":""}"#
    );
    daemon.stop().await;
}
