//! The operations console over real HTTP: its keys, the token, the session
//! cookie, CSRF, the confirmation step, the JSON API and what it shows. The
//! browser tests (`browser.rs`) drive the same pages through Chromium.

use crate::support::{Daemon, Project, daemon_config, start_sandbox, unenrolled_accounts};
use paystar_sync::sandbox::RunningSandbox;
use std::time::Duration;

pub const TOKEN: &str = "console-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

pub fn csv(accounts: std::ops::Range<u32>) -> String {
    let mut text = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
    for a in accounts {
        text.push_str(&format!("{a},Ada,Lovelace,ada{a}@example.com,true\n"));
    }
    text
}

/// A daemon project with the console on (with the token when `auth`), removals
/// that unenroll, and a guard that holds more than two unenrolls at once.
pub async fn console_project(auth: bool) -> (Project, RunningSandbox) {
    let sandbox = start_sandbox().await;
    let mut config = daemon_config(&sandbox.paystar_endpoint(), "  on_removal: unenroll\n")
        .replace(
            "safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }",
            "safety: { max_unenrolls: 2, max_unenroll_percent: 100 }",
        );
    config.push_str("console:\n  listen: 127.0.0.1:0\n");
    if auth {
        config.push_str("  auth: { token_file: console-token }\n");
    }
    let p = Project::with_config(&config);
    std::fs::write(p.root().join("console-token"), format!("{TOKEN}\n")).unwrap();
    (p, sandbox)
}

/// Ten customers delivered, then their file removed: ten unenrolls held.
pub async fn with_held_unenrolls(p: &Project, sandbox: &RunningSandbox) -> Daemon {
    p.file("a.csv", csv(100..110));
    p.file("b.csv", csv(200..201));
    let daemon = p.start_daemon().await;
    assert_eq!(sandbox.sandbox.paystar.wait_for(11, WAIT).await.len(), 11);
    // Delivered means recorded too: a removal scanned before the acknowledgements
    // are recorded finds nothing acknowledged to unenroll.
    let deadline = tokio::time::Instant::now() + WAIT;
    while api(&daemon, "/api/v1/status").await["customers"]["acknowledged"] != 11 {
        assert!(tokio::time::Instant::now() < deadline, "never recorded");
        tokio::task::yield_now().await;
    }
    p.remove("a.csv");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = api(&daemon, "/api/v1/status").await;
        if status["queue"]["held"] == 10 && status["queue"]["pending"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing held: {status}"
        );
        tokio::task::yield_now().await;
    }
    daemon
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn api(daemon: &Daemon, path: &str) -> serde_json::Value {
    let response = client()
        .get(format!("{}{path}", daemon.console_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// POSTs `body` as JSON to the console's `path`, with the token when `bearer`;
/// returns the status and the JSON answer.
pub async fn post_json(
    daemon: &Daemon,
    path: &str,
    bearer: bool,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = client()
        .post(format!("{}{path}", daemon.console_url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if bearer {
        request = request.bearer_auth(TOKEN);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// Reads `path` until `done` says yes, for at most [`WAIT`].
pub async fn api_until(
    daemon: &Daemon,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = api(daemon, path).await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {value}");
        tokio::task::yield_now().await;
    }
}

/// Signs in through the form; returns the cookie pair and the page's CSRF token.
async fn sign_in(daemon: &Daemon) -> (String, String) {
    let base = daemon.console_url();
    let response = client()
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN), ("next", "/holds")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/holds");
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = client()
        .get(format!("{base}/holds"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field: {page}"))
        .to_owned();
    (cookie, csrf)
}

#[test]
fn console_keys_are_checked_and_say_what_to_do() {
    let p = Project::new();
    let base = std::fs::read_to_string(p.config_path()).unwrap();
    let cases = [
        (
            "console:\n  listen: 0.0.0.0:8081\n",
            "console.auth: is required when console.listen (0.0.0.0:8081) is not a loopback address",
        ),
        (
            "console:\n  listen: 127.0.0.1:8081\n  auth: { token: hunter2 }\n",
            "console.auth.token: secrets may not be written in the config file",
        ),
        (
            "console:\n  listen: 127.0.0.1:8081\n  auth: {}\n",
            "console.auth: set token_env",
        ),
        (
            "console:\n  listen: nowhere\n",
            "console.listen: \"nowhere\" is not an address:port",
        ),
        (
            "server: { listen: \"127.0.0.1:8081\" }\nconsole:\n  listen: 127.0.0.1:8081\n",
            "console.listen: 127.0.0.1:8081 is the port of server.listen",
        ),
    ];
    for (extra, expected) in cases {
        p.config(&format!("{base}{extra}"));
        let run = p.run(&["validate"]);
        assert_eq!(run.code, 78, "{extra}: {run:?}");
        assert!(run.stderr.contains(expected), "{extra}: {}", run.stderr);
    }
    std::fs::write(p.root().join("short"), "abc\n").unwrap();
    p.config(&format!(
        "{base}console:\n  listen: 127.0.0.1:8081\n  auth: {{ token_file: short }}\n"
    ));
    // Secrets may be missing where `validate` runs: a warning there, and the
    // daemon refuses to start.
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    let said = "console.auth.token_file: the console token is shorter than 16 characters";
    assert!(run.stdout.contains(said), "{}", run.stdout);
    let run = p.run(&["run"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains(said), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_the_token_is_refused_and_the_token_signs_in() {
    let (p, _sandbox) = console_project(true).await;
    p.file("b.csv", csv(1..3));
    let daemon = p.start_daemon().await;
    let base = daemon.console_url();
    let c = client();
    // The webhooks listener never serves the console.
    for path in ["/", "/api/v1/status", "/login"] {
        let elsewhere = c
            .get(format!("http://{}{path}", daemon.http_addr()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(elsewhere.status(), 404, "{path} on server.listen");
    }
    let denied = c.get(format!("{base}/api/v1/status")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    let wrong = c
        .get(format!("{base}/api/v1/status"))
        .bearer_auth("console-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let page = c.get(format!("{base}/files?x=1")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login?next=%2Ffiles%3Fx%3D1");
    let bad = c
        .post(format!("{base}/login"))
        .form(&[("token", "not-the-token-at-all"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("set-cookie").is_none());
    // Somewhere else after sign-in is never followed.
    let away = c
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN), ("next", "//evil.example.com/")])
        .send()
        .await
        .unwrap();
    assert_eq!(away.headers()["location"], "/");
    let (cookie, _) = sign_in(&daemon).await;
    let overview = c
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let csp = overview.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(overview.headers()["cache-control"], "no-store");
    let status = api(&daemon, "/api/v1/status").await;
    assert_eq!(status["customers"]["desired"], 2, "{status}");
    // A key no customer can have is refused before the state is asked.
    for path in [
        "/api/v1/customers/water-bill-pay/1%00/history",
        "/api/v1/customers/water-bill-pay/1/history?subAccountNumber=%1B",
    ] {
        let odd = c
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(odd.status(), 400, "{path}");
    }
    let odd = c
        .get(format!("{base}/customers?account=1%00"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 400);
    // The document is public; a stale cookie is not.
    assert_eq!(
        c.get(format!("{base}/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stale = c
        .get(format!("{base}/"))
        .header("cookie", "paystar_console=0123")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 303);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_needs_the_csrf_token_and_a_confirmation_and_sends_each_held_unenroll_once() {
    let (p, sandbox) = console_project(true).await;
    let daemon = with_held_unenrolls(&p, &sandbox).await;
    let base = daemon.console_url();
    let (cookie, csrf) = sign_in(&daemon).await;
    let post = |form: Vec<(&'static str, String)>| {
        client()
            .post(format!("{base}/holds/approve"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };
    let forged = post(vec![("all", "yes".into()), ("confirm", "yes".into())])
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let asked = post(vec![("all", "yes".into()), ("csrf", csrf.clone())])
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
    let question = asked.text().await.unwrap();
    assert!(
        question.contains("Approve all 10 held unenroll(s)?"),
        "{question}"
    );
    // A GET never acts, and nothing was sent before the confirmation.
    let get = client()
        .get(format!("{base}/holds/approve"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert!(unenrolled_accounts(&sandbox).is_empty());
    let done = post(vec![
        ("all", "yes".into()),
        ("csrf", csrf.clone()),
        ("confirm", "yes".into()),
    ])
    .await
    .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/holds?approved=10");
    sandbox.sandbox.paystar.wait_for(21, WAIT).await;
    let mut unenrolled = unenrolled_accounts(&sandbox);
    unenrolled.sort();
    let expected: Vec<String> = (100..110).map(|a| a.to_string()).collect();
    assert_eq!(unenrolled, expected);
    // Newest first: the unenroll's delivery, once its outcome is recorded.
    let story = api_until(
        &daemon,
        "/api/v1/customers/water-bill-pay/104/history",
        |s| s["history"][0]["kind"] == "delivered",
    )
    .await;
    let lines = story["history"].as_array().unwrap();
    assert_eq!(lines[0]["eventType"], "Accounts.UnenrollAutopay", "{story}");
    let approved = lines
        .iter()
        .find(|l| l["kind"] == "approved")
        .expect("approved line");
    assert_eq!(approved["actor"], "console");
    assert!(!story.to_string().contains("Lovelace"), "no names: {story}");
    assert!(
        !story.to_string().contains("ada104@"),
        "emails masked: {story}"
    );
    let status = api(&daemon, "/api/v1/status").await;
    assert_eq!(status["queue"]["held"], 0, "{status}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_approves_one_cause_and_retries_a_parked_customer_with_a_bearer_token() {
    use paystar_sync::sandbox::paystar::Fault;
    let (p, sandbox) = console_project(true).await;
    let daemon = with_held_unenrolls(&p, &sandbox).await;
    let base = daemon.console_url();
    let holds = api(&daemon, "/api/v1/holds").await;
    let cause = holds["holds"][0]["cause"].as_str().unwrap().to_owned();
    let c = client();
    let refused = c
        .post(format!("{base}/api/v1/holds/approve"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400, "neither a cause nor all");
    let (code, approved) = post_json(
        &daemon,
        "/api/v1/holds/approve",
        true,
        serde_json::json!({ "cause": cause }),
    )
    .await;
    assert_eq!(code, 200, "{approved}");
    assert_eq!(approved["approved"], 10);
    sandbox.sandbox.paystar.wait_for(21, WAIT).await;
    // Paystar refuses the next change for good: the customer is parked.
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 400,
        body: Some("{\"error\":\"ada200@example.com is not accepted\"}".into()),
        ..Fault::default()
    });
    p.file("b.csv", csv(200..201).replace("true", "false"));
    let parked = api_until(&daemon, "/api/v1/parked", |p| {
        !p["parked"].as_array().unwrap().is_empty()
    })
    .await;
    let one = &parked["parked"][0];
    assert_eq!(one["accountNumber"], "200", "{parked}");
    let said = one["lastResponse"].as_str().unwrap_or("");
    assert!(!said.contains("ada200@"), "masked: {parked}");
    let customers =
        serde_json::json!([{ "businessUnitSlug": "water-bill-pay", "accountNumber": "200" }]);
    let (code, retried) = post_json(
        &daemon,
        "/api/v1/parked/retry",
        true,
        serde_json::json!({ "customers": customers }),
    )
    .await;
    assert_eq!(code, 200, "{retried}");
    assert_eq!(retried["retried"], 1);
    let sent = sandbox.sandbox.paystar.wait_for(22, WAIT).await;
    assert_eq!(sent.len(), 22);
    api_until(
        &daemon,
        "/api/v1/customers/water-bill-pay/200/history",
        |s| {
            s["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["kind"] == "retried" && l["actor"] == "console")
        },
    )
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auth_the_console_is_read_only_and_shows_a_rejected_rows_line_and_reason() {
    let (p, _sandbox) = console_project(false).await;
    p.file(
        "bad.csv",
        "accountNumber,firstName,lastName,emailAddress,autopay\n1,Ada,Lovelace,ada@example.com,true\n2,Bob,Hope,not-an-email,true\n",
    );
    let daemon = p.start_daemon().await;
    let base = daemon.console_url();
    let c = client();
    let page = c.get(format!("{base}/files")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<code>bad.csv</code>"), "{html}");
    assert!(
        html.contains("<td class=\"num\">3</td><td>row</td><td>2</td><td>emailAddress</td>"),
        "{html}"
    );
    let files: serde_json::Value = c
        .get(format!("{base}/api/v1/files"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let error = &files["files"][0]["errors"][0];
    assert_eq!(error["line"], 3, "{files}");
    assert_eq!(error["field"], "emailAddress", "{files}");
    let (code, _) = post_json(
        &daemon,
        "/api/v1/holds/approve",
        false,
        serde_json::json!({ "all": true }),
    )
    .await;
    assert_eq!(code, 403);
    let form = c
        .post(format!("{base}/parked/retry"))
        .form(&[("all", "yes"), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 403);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_delivery_concurrency_is_shown_by_the_overview_the_api_the_metrics_and_status() {
    let (p, sandbox) = console_project(false).await;
    p.file("a.csv", csv(100..111));
    let daemon = p.start_daemon().await;
    assert_eq!(sandbox.sandbox.paystar.wait_for(11, WAIT).await.len(), 11);
    let status = api_until(&daemon, "/api/v1/status", |s| {
        s["delivery"]["concurrency"]["inFlight"] == 0
    })
    .await;
    let concurrency = &status["delivery"]["concurrency"];
    let describe = concurrency["describe"].as_str().unwrap();
    assert!(
        describe.starts_with("adaptive: ") && describe.ends_with(" now (up to 256)"),
        "{status}"
    );
    assert!(concurrency["limit"].as_i64().unwrap() >= 1, "{status}");
    let page = client()
        .get(daemon.console_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(
            "<td id=\"concurrency\">{describe}; 0 in flight</td>"
        )),
        "{page}"
    );
    let metrics = daemon.metrics().await;
    for line in [
        "\npaystar_sync_in_flight 0\n",
        "\npaystar_sync_pushbacks_total 0\n",
        "\npaystar_sync_concurrency_limit ",
    ] {
        assert!(metrics.contains(line), "{line:?} in\n{metrics}");
    }
    daemon.stop().await;
    // What the daemon learned is kept, and `status` says so.
    let run = p.run(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("delivery concurrency: adaptive: ")
                && l.ends_with(" as last learned (up to 256)")),
        "{}",
        run.stdout
    );
    let json = p.run(&["status", "--format", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["delivery"]["adaptive"], true, "{value}");
    assert!(
        value["delivery"]["learned"].as_u64().unwrap() >= 1,
        "{value}"
    );
}

/// schemathesis: `PAYSTAR_SYNC_SCHEMATHESIS`, the one `.ci/run` installs under
/// `target/schemathesis/`, or one on the PATH.
fn schemathesis() -> Option<std::path::PathBuf> {
    if let Some(path) = paystar_sync::config::process_env("PAYSTAR_SYNC_SCHEMATHESIS") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().unwrap();
    let venv = exe
        .ancestors()
        .nth(3)
        .unwrap()
        .join("schemathesis/bin/schemathesis");
    if venv.exists() {
        return Some(venv);
    }
    let on_path = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    on_path.then(|| "schemathesis".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document() {
    let Some(st) = schemathesis() else {
        let ci = paystar_sync::config::process_env("CI").is_some_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but schemathesis is missing: .ci/run installs it (pip install schemathesis)"
        );
        eprintln!(
            "SKIPPED: the console's API test needs schemathesis (python3 -m venv target/schemathesis && target/schemathesis/bin/pip install schemathesis)"
        );
        return;
    };
    // The document served is the one committed.
    let (p, sandbox) = console_project(true).await;
    let daemon = with_held_unenrolls(&p, &sandbox).await;
    let base = daemon.console_url();
    let served = client()
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), paystar_sync::console::OPENAPI);
    let report = p.root().join("schemathesis-report");
    let run = tokio::process::Command::new(&st)
        .args(["run", &format!("{base}/api/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "300",
            "--seed",
            "20261202",
        ])
        .args(["--no-color", "--report-dir"])
        .arg(&report)
        .current_dir(p.root())
        .output()
        .await
        .expect("run schemathesis");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{}\n{}",
        out.chars().take(20_000).collect::<String>(),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.contains("passed"), "{out}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_with_a_new_token_ends_the_old_one_and_its_sessions() {
    let (p, _sandbox) = console_project(true).await;
    p.file("b.csv", csv(1..2));
    let daemon = p.start_daemon().await;
    let base = daemon.console_url();
    let (cookie, _) = sign_in(&daemon).await;
    let new = "another-console-token-fedcba9876543210";
    std::fs::write(p.root().join("console-token"), new).unwrap();
    daemon.signal("HUP");
    loop {
        match daemon.next_notify(WAIT).await {
            Some(m) if m.contains("READY=1") => break,
            Some(_) => continue,
            None => panic!("no READY=1 after SIGHUP:\n{}", daemon.log_text()),
        }
    }
    let c = client();
    let status = |token: &'static str| {
        c.get(format!("{base}/api/v1/status"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(status(TOKEN).await.unwrap().status(), 401);
    assert_eq!(status(new).await.unwrap().status(), 200);
    let old_session = c
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old_session.status(), 303, "the old session ended");
    daemon.stop().await;
}
