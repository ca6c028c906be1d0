//! What an operator does to a running daemon: reloads that cannot be
//! wired, counters across reloads, writes beside the folder, a stage that fails,
//! history retention. Real daemon processes, real signals, loopback HTTP.

use crate::support::{Project, daemon_config};
use paystar_sync::sandbox::RunningSandbox;
use std::time::Duration;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";
const WAIT: Duration = Duration::from_secs(20);

fn csv(rows: &[&str]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

async fn setup() -> (Project, RunningSandbox) {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    (p, sandbox)
}

/// The value of an unlabelled or labelled sample in a `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded) for the daemon to answer a reload with READY=1.
async fn reloaded(daemon: &crate::support::Daemon) {
    loop {
        let message = daemon.next_notify(WAIT).await;
        match message {
            Some(m) if m.contains("READY=1") => return,
            Some(_) => continue,
            None => panic!("no READY=1 after SIGHUP:\n{}", daemon.log_text()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_cannot_be_wired_is_refused_and_delivery_goes_on() {
    let (p, sandbox) = setup().await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    // Parses, but SP_USER and SP_PASSWORD are not set in the daemon's environment.
    let good = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&format!(
        "{good}providers:\n  smarterpay:\n    auth: {{ basic_user_env: SP_USER, basic_password_env: SP_PASSWORD }}\n"
    ));
    daemon.signal("HUP");
    reloaded(&daemon).await;
    let metrics = daemon
        .metrics_until("paystar_sync_config_reloads_total{outcome=\"failed\"} 1")
        .await;
    assert_eq!(
        sample(
            &metrics,
            "paystar_sync_config_reloads_total{outcome=\"failed\"}"
        ),
        Some(1),
        "{metrics}"
    );
    let log = daemon.log_text();
    for problem in [
        "reload refused",
        "providers.smarterpay.auth.basic_user_env: environment variable SP_USER is not set",
        "providers.smarterpay.auth.basic_password_env: environment variable SP_PASSWORD is not set",
    ] {
        assert!(log.contains(problem), "{problem}:\n{log}");
    }
    // Healthy, and it says why the new configuration is not in force.
    let health = reqwest::get(format!("http://{}/health", daemon.http_addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body = health.text().await.unwrap();
    assert!(
        body.contains("the last reload was refused") && body.contains("SP_USER"),
        "{body}"
    );
    // The old pipeline still delivers.
    p.file("b.csv", csv(&["2,Grace,Hopper,grace@example.com,"]));
    assert_eq!(sandbox.sandbox.paystar.wait_for(2, WAIT).await.len(), 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_reload_keeps_every_counter() {
    let (p, sandbox) = setup().await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,false"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    let before = daemon
        .metrics_until("paystar_sync_events_delivered_total 2")
        .await;
    assert_eq!(
        sample(&before, "paystar_sync_events_delivered_total"),
        Some(2),
        "{before}"
    );
    let addr = daemon.http_addr();
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&config.replace("  debounce: 100ms\n", "  debounce: 150ms\n"));
    daemon.signal("HUP");
    reloaded(&daemon).await;
    let after = daemon
        .metrics_until("paystar_sync_config_reloads_total{outcome=\"ok\"} 1")
        .await;
    assert_eq!(
        sample(&after, "paystar_sync_events_delivered_total"),
        Some(2),
        "{after}"
    );
    assert_eq!(
        sample(&after, "paystar_sync_config_reloads_total{outcome=\"ok\"}"),
        Some(1),
        "{after}"
    );
    // The startup scan and the reloaded pipeline's own.
    assert_eq!(
        sample(&after, "paystar_sync_scans_total"),
        Some(2),
        "{after}"
    );
    // Same listener: the address did not change.
    assert_eq!(daemon.http_addr(), addr);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_beside_the_manifests_folder_never_trigger_scans() {
    // The daemon's own log (daemon.log) lives beside manifests/, at debug level:
    // if writes there triggered scans, every scan would trigger the next, at the
    // debounce rate (100 ms), all through the slow deliveries below.
    let (p, sandbox) = setup().await;
    sandbox
        .sandbox
        .paystar
        .set_latency(Duration::from_millis(700));
    let daemon = p.start_daemon().await;
    for i in 0..20 {
        std::fs::write(p.root().join(format!("beside-{i}.txt")), "x").unwrap();
    }
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    p.file("b.csv", csv(&["2,Grace,Hopper,grace@example.com,"]));
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    let metrics = daemon
        .metrics_until("paystar_sync_events_delivered_total 2")
        .await;
    // Startup, a.csv, b.csv: nothing else in 1.4 s of deliveries.
    assert_eq!(
        sample(&metrics, "paystar_sync_scans_total"),
        Some(3),
        "{metrics}\n{}",
        daemon.log_text()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_fails_ends_the_daemon_with_a_nonzero_exit_naming_it() {
    let (p, sandbox) = setup().await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let mut daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(1, WAIT).await;
    // The state database loses a table under the running daemon.
    p.execute_sql("DROP TABLE queue;");
    p.file("b.csv", csv(&["2,Grace,Hopper,grace@example.com,"]));
    let code = daemon.wait_exit(WAIT).await;
    assert_eq!(code, Some(Some(1)), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(
        log.contains("a stage failed; stopping the daemon so that it is restarted"),
        "{log}"
    );
    assert!(
        log.contains("stage=\"manifest intake\"") || log.contains("stage=\"delivery\""),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_retention_prunes_old_lines_and_nothing_else() {
    let (p, _sandbox) = setup().await;
    let apply = async || assert_eq!(p.run_async(&["apply", "--timeout", "20s"]).await.code, 0);
    let history = |account: &str| {
        let run = p.run(&["history", account, "--format", "json"]);
        assert_eq!(run.code, 0, "{run:?}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        json["history"].as_array().unwrap().len()
    };
    let old = paystar_sync::clock::now_ms() - 500 * 86_400_000;
    let rows = [
        "1,Ada,Lovelace,ada@example.com,",
        "2,Grace,Hopper,grace@example.com,",
        "3,Edsger,Dijkstra,edsger@example.com,",
    ];
    // Customer 1's story is 500 days old.
    p.file("a.csv", csv(&rows[..1]));
    apply().await;
    p.execute_sql(&format!("UPDATE history SET at_ms = {old}"));
    p.file("a.csv", csv(&rows[..2]));
    apply().await;
    // Customer 3's line says 500 days too, but it was written after customer
    // 2's (a clock that stepped back): it is kept until the lines before it go.
    p.file("a.csv", csv(&rows));
    apply().await;
    p.execute_sql(&format!(
        "UPDATE history SET at_ms = {old} WHERE account = '3'"
    ));
    let (kept, stepped_back) = (history("2"), history("3"));
    assert!(history("1") > 0 && kept > 0 && stepped_back > 0);
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&format!("{config}history: {{ retention: 400d }}\n"));
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 0, "{validate:?}");
    apply().await;
    assert_eq!(history("1"), 0);
    assert_eq!(history("2"), kept);
    assert_eq!(history("3"), stepped_back);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_the_server_keeps_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (p, _sandbox) = setup().await;
    let config = std::fs::read_to_string(p.config_path()).unwrap().replace(
        "server: { listen: \"127.0.0.1:0\" }",
        "server: { listen: \"127.0.0.1:0\", header_read_timeout: 300ms, request_timeout: 500ms }",
    );
    p.config(&format!("{config}providers:\n  smarterpay:\n    auth: {{ basic_user_env: SP_USER, basic_password_env: SP_PASSWORD }}\n"));
    let daemon = p
        .start_daemon_with_env(&[("SP_USER", "u"), ("SP_PASSWORD", "p")])
        .await;
    let addr = daemon.http_addr();
    // 50 clients that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /webhooks/smarterpay HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A client that sends a tenth of its body.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(b"POST /webhooks/smarterpay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .await
        .unwrap();
    for mut stream in slow {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "a connection without headers stayed open");
    }
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, trickle.read(&mut answer))
        .await
        .expect("an answer to the slow body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    daemon.stop().await;
}

/// `promtool`, or `None` (said loudly) where it is missing; under `CI=true` it must be there.
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        paystar_sync::config::process_env("CI").as_deref() != Some("true"),
        "promtool is missing under CI=true: apt-get install prometheus"
    );
    eprintln!(
        "SKIPPED: promtool is not installed (apt-get install prometheus); /metrics not linted"
    );
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let (p, sandbox) = setup().await;
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,false"]));
    let daemon = p.start_daemon().await;
    sandbox.sandbox.paystar.wait_for(2, WAIT).await;
    daemon.signal("HUP");
    reloaded(&daemon).await;
    let metrics = daemon
        .metrics_until("paystar_sync_config_reloads_total{outcome=\"ok\"} 1")
        .await;
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A scraper that asks for OpenMetrics gets it.
    let open = reqwest::Client::new()
        .get(format!("http://{}/metrics", daemon.http_addr()))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = open.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE paystar_sync_events_delivered counter"),
        "{open}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_grace_bounds_the_stop_with_a_request_that_never_answers_and_webhooks_meanwhile_get_503()
 {
    use paystar_sync::sandbox::paystar::Fault;
    let (p, sandbox) = setup().await;
    let config = std::fs::read_to_string(p.config_path())
        .unwrap()
        .replace("  timeout: 2s\n", "  timeout: 1h\n");
    p.config(&format!("{config}shutdown_grace: 1s\n"));
    sandbox.sandbox.paystar.push_fault(Fault {
        hang: true,
        ..Fault::default()
    });
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let mut daemon = p.start_daemon().await;
    // The request is on the wire and will never be answered.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sandbox.sandbox.paystar.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request reached the sandbox"
        );
        sandbox
            .sandbox
            .paystar
            .wait_for(1, Duration::from_millis(50))
            .await;
    }
    let asked = tokio::time::Instant::now();
    daemon.signal("TERM");
    // While it stops, a webhook is refused unread, to be sent again to
    // whichever instance runs next, and /health turns a load balancer away.
    let base = format!("http://{}", daemon.http_addr());
    let refused = loop {
        let answer = reqwest::Client::new()
            .post(format!("{base}/webhooks/smarterpay"))
            .body("{}")
            .send()
            .await
            .expect("the listener stays open while the pipeline stops");
        if answer.status() == 503 {
            break answer;
        }
        assert!(asked.elapsed() < WAIT, "{}", answer.status());
    };
    assert_eq!(refused.headers()["retry-after"], "5");
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.text().await.unwrap(), "shutting down\n");
    assert_eq!(
        daemon.wait_exit(WAIT).await,
        Some(Some(0)),
        "{}",
        daemon.log_text()
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with shutdown_grace: 1s (at most the grace + 2 s)"
    );
    assert!(
        daemon
            .log_text()
            .contains("grace period over; abandoning in-flight requests"),
        "{}",
        daemon.log_text()
    );
    // Abandoned, not lost: it is still queued.
    assert_eq!(p.with_store(|s| s.counts().unwrap()).pending, 1);
}

#[test]
fn shutdown_grace_above_the_units_stop_timeout_is_refused() {
    let p = Project::new();
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&format!("{config}shutdown_grace: 40s\n"));
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("shutdown_grace: must be at most 25s"),
        "{}",
        run.stderr
    );
}
