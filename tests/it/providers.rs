//! SPEC §5: provider signals. LotusPay events, polled from its simulator over
//! loopback, become UnenrollAutopay events exactly once.

use crate::support::{Project, TEST_LOTUSPAY_SECRET, daemon_config, with_sandbox};
use paystar_sync::sandbox::RunningSandbox;
use serde_json::json;
use std::time::Duration;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";

/// A project with LotusPay configured against the sandbox, and customer 12345 acknowledged.
async fn with_lotuspay(extra: &str) -> (Project, RunningSandbox) {
    let (p, sandbox) = with_sandbox("").await;
    sandbox
        .sandbox
        .lotuspay
        .require_secret(TEST_LOTUSPAY_SECRET);
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&format!(
        "{config}providers:\n  lotuspay:\n    base_url: {}\n    secret_key_env: LOTUSPAY_SECRET_KEY\n{extra}",
        sandbox.lotuspay_base_url()
    ));
    p.file(
        "c.csv",
        format!("{HEADER}12345,Ada,Lovelace,ada@example.com,true\n"),
    );
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    (p, sandbox)
}

fn mandate_event(kind: &str, account: Option<&str>) -> serde_json::Value {
    let metadata = match account {
        Some(a) => json!({ "paystar_account_number": a }),
        None => json!({}),
    };
    json!({ "type": kind, "resource_id": "MD0001", "data": { "object": { "object": "mandate", "id": "MD0001", "metadata": metadata } } })
}

use crate::support::unenrolled_accounts as unenrolls;

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_mandate_becomes_an_unenroll_even_though_the_manifest_says_autopay_true() {
    let (p, sandbox) = with_lotuspay("").await;
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", Some("12345")));
    let poll = p.run_async(&["poll", "--once"]).await;
    assert_eq!(poll.code, 0, "{poll:?}");
    assert!(
        poll.stdout.contains("1 new: 1 stop signal(s) queued"),
        "{}",
        poll.stdout
    );
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert_eq!(unenrolls(&sandbox), ["12345"]);
    // Sticky: the manifest still says autopay: true, and nothing more is sent.
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert_eq!(unenrolls(&sandbox).len(), 1);
    let history = p.run_async(&["history", "12345", "--format", "json"]).await;
    let history: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let last = history["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["cause"], "provider stop signal");
    assert_eq!(last["provenance"]["provider"], "lotuspay");
    assert_eq!(last["provenance"]["reason"], "mandate.cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_polls_record_nothing_new_and_retrieve_nothing_again() {
    let (p, sandbox) = with_lotuspay("").await;
    for kind in ["mandate.expired", "customer.active", "mandate.failed"] {
        sandbox
            .sandbox
            .lotuspay
            .add_event(mandate_event(kind, Some("12345")));
    }
    assert!(
        p.run_async(&["poll", "--once"])
            .await
            .stdout
            .contains("3 new: 2 stop signal(s) queued, 1 ignored")
    );
    let (_, retrieved) = sandbox.sandbox.lotuspay.calls();
    assert_eq!(
        retrieved, 3,
        "list items are summaries: each new event is retrieved by id"
    );
    let again = p.run_async(&["poll", "--once"]).await;
    assert!(again.stdout.contains("0 new"), "{}", again.stdout);
    assert_eq!(sandbox.sandbox.lotuspay.calls().1, 3);
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert_eq!(
        unenrolls(&sandbox),
        ["12345"],
        "two stop signals, one unenroll"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_returned_debit_stops_autopay_only_with_a_stop_code() {
    let (p, sandbox) = with_lotuspay("").await;
    p.file(
        "c.csv",
        format!("{HEADER}12345,Ada,Lovelace,ada@example.com,\n777,Alan,Turing,alan@example.com,\n"),
    );
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    let debit = |account: &str, code: &str| json!({ "type": "ach_debit.returned", "resource_id": "AD1", "data": { "object": { "object": "ach_debit", "response_code": code, "metadata": { "paystar_account_number": account } } } });
    sandbox.sandbox.lotuspay.add_event(debit("12345", "04")); // insufficient balance: transient
    sandbox.sandbox.lotuspay.add_event(debit("777", "01")); // account closed: stop
    let poll = p.run_async(&["poll", "--once"]).await;
    assert!(
        poll.stdout
            .contains("2 new: 1 stop signal(s) queued, 1 ignored"),
        "{}",
        poll.stdout
    );
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert_eq!(unenrolls(&sandbox), ["777"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_that_names_no_customer_is_kept_as_unmatched_and_reported() {
    let (p, sandbox) = with_lotuspay("").await;
    let event = sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", None));
    let poll = p.run_async(&["poll", "--once"]).await;
    assert!(poll.stdout.contains("1 unmatched"), "{}", poll.stdout);
    let status = p.run_async(&["status"]).await;
    assert!(
        status.stdout.contains(&format!(
            "lotuspay {}: mandate.cancelled, but no account number",
            event["id"].as_str().unwrap()
        )),
        "{}",
        status.stdout
    );
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert!(unenrolls(&sandbox).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_stops_are_never_held_by_the_mass_change_guard_and_reach_customers_no_manifest_knows()
 {
    let (p, sandbox) = with_lotuspay("").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.config(&config.replace(
        "safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }\n",
        "safety: { max_unenrolls: 0, max_unenroll_percent: 0 }\n",
    ));
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", Some("12345")));
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("customer.inactive", Some("99999")));
    assert_eq!(p.run_async(&["poll", "--once"]).await.code, 0);
    let run = p.run_async(&["apply"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut sent = unenrolls(&sandbox);
    sent.sort();
    assert_eq!(sent, ["12345", "99999"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_poll_cursor_survives_restarts_and_a_failed_poll_loses_nothing() {
    let (p, sandbox) = with_lotuspay("").await;
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("customer.active", Some("12345")));
    assert!(
        p.run_async(&["poll", "--once"])
            .await
            .stdout
            .contains("1 new")
    );
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", Some("12345")));
    sandbox.sandbox.lotuspay.fail_next(1);
    let failed = p.run_async(&["poll", "--once"]).await;
    assert_eq!(failed.code, 1);
    assert!(
        failed
            .stderr
            .contains("lotuspay: list events page 1: HTTP 503"),
        "{}",
        failed.stderr
    );
    let retry = p.run_async(&["poll", "--once"]).await;
    assert!(
        retry.stdout.contains("1 new: 1 stop signal(s) queued"),
        "{}",
        retry.stdout
    );
    assert_eq!(
        sandbox.sandbox.lotuspay.calls().1,
        2,
        "each event retrieved once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_key_is_reported_and_changes_nothing() {
    let (p, sandbox) = with_lotuspay("").await;
    sandbox.sandbox.lotuspay.require_secret("sk_test_other");
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", Some("12345")));
    let poll = p.run_async(&["poll", "--once"]).await;
    assert_eq!(poll.code, 1);
    assert!(poll.stderr.contains("HTTP 401"), "{}", poll.stderr);
    assert!(!poll.stderr.contains(TEST_LOTUSPAY_SECRET));
}

/// A running sandbox, and a daemon against it with `providers` (YAML under
/// `providers:`, `{lotuspay}` replaced by the simulator's URL) and `rows` in
/// c.csv, once Paystar acknowledged every row.
async fn daemon_with(
    providers: &str,
    rows: &str,
    env: &[(&str, &str)],
) -> (Project, RunningSandbox, crate::support::Daemon) {
    let sandbox = crate::support::start_sandbox().await;
    let config = format!(
        "{}providers:\n{}",
        daemon_config(&sandbox.paystar_endpoint(), ""),
        providers.replace("{lotuspay}", &sandbox.lotuspay_base_url())
    );
    let p = Project::with_config(&config);
    p.file("c.csv", format!("{HEADER}{rows}"));
    let daemon = p.start_daemon_with_env(env).await;
    let count = rows.lines().count();
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(count, Duration::from_secs(20))
        .await;
    assert_eq!(accepted.len(), count, "{}", daemon.log_text());
    (p, sandbox, daemon)
}

const SP_BASIC: &str =
    "  smarterpay:\n    auth: { basic_user_env: SP_USER, basic_password_env: SP_PASSWORD }\n";
const SP_ENV: [(&str, &str); 2] = [("SP_USER", "sp-user"), ("SP_PASSWORD", "sp-pass")];

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_polls_on_its_cron_schedule_and_sends_the_unenroll() {
    let (_p, sandbox, daemon) = daemon_with(
        "  lotuspay:\n    base_url: {lotuspay}\n    secret_key_env: LOTUSPAY_SECRET_KEY\n    schedule: \"* * * * * *\"\n",
        "12345,Ada,Lovelace,ada@example.com,\n",
        &[],
    )
    .await;
    sandbox
        .sandbox
        .lotuspay
        .add_event(mandate_event("mandate.cancelled", Some("12345")));
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    assert_eq!(accepted.len(), 2, "{}", daemon.log_text());
    assert_eq!(accepted[1].event_type, "Accounts.UnenrollAutopay");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smarterpay_webhooks_are_authenticated_deduplicated_and_an_inactive_account_is_unenrolled_once()
 {
    let (_p, sandbox, daemon) = daemon_with(
        SP_BASIC,
        "CUST1,Lizzy,Hale,lhale@example.com,\nCUST2,Mike,Walker,mike@example.com,\n",
        &SP_ENV,
    )
    .await;
    let url = format!("http://{}/webhooks/smarterpay", daemon.http_addr());
    let client = reqwest::Client::new();
    let event = |id: &str, reference: &str, status: &str| {
        json!({ "id": id, "created_at": "2021-07-15T12:48:39.000Z", "resource_type": "customer_account",
                "description": "API - Customer Account updated", "event_source": "20022091", "reference": reference,
                "Email": "", "first_name": "Lizzy", "last_name": "Hale", "status": status, "custom_reference": "" })
    };
    let post = |body: serde_json::Value, user: &'static str| {
        client
            .post(&url)
            .basic_auth(user, Some("sp-pass"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    // A wrong password: 498, nothing recorded.
    let bad = post(
        json!({ "events": [event("FTBEV1", "CUST1", "inactive")] }),
        "intruder",
    )
    .await
    .unwrap();
    assert_eq!(bad.status().as_u16(), 498);
    // The real one, then SmarterPay retrying it: one unenroll.
    for _ in 0..2 {
        let ok = post(
            json!({ "events": [event("FTBEV1", "CUST1", "inactive")] }),
            "sp-user",
        )
        .await
        .unwrap();
        assert_eq!(ok.status(), 200);
    }
    // v2: several events and an idempotency key.
    let v2 = json!({ "id": "D1", "idempotency_key": "K1", "sent_at": "2024-01-01T00:00:00Z", "client": { "id": "C" },
                     "events": [event("EV2000000000000000001", "CUST2", "inactive"), event("EV2000000000000000002", "CUST9", "active")] });
    assert_eq!(post(v2.clone(), "sp-user").await.unwrap().status(), 200);
    assert_eq!(post(v2, "sp-user").await.unwrap().status(), 200);
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(4, Duration::from_secs(20))
        .await;
    let unenrolled: Vec<String> = accepted[2..]
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.event_type,
                a.payload_json()["accountNumber"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(unenrolled.len(), 2, "{}", daemon.log_text());
    assert!(unenrolled.contains(&"Accounts.UnenrollAutopay CUST1".to_owned()));
    assert!(unenrolled.contains(&"Accounts.UnenrollAutopay CUST2".to_owned()));
    // Unknown kinds: 204. Malformed bodies, wrong content types, oversized bodies: 4xx.
    let payment =
        json!({ "events": [{ "id": "P1", "resource_type": "payment", "status": "paid" }] });
    assert_eq!(post(payment, "sp-user").await.unwrap().status(), 204);
    let garbage = client
        .post(&url)
        .basic_auth("sp-user", Some("sp-pass"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let text = client
        .post(&url)
        .basic_auth("sp-user", Some("sp-pass"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    // Its own connection: the server closes it after refusing the unread body.
    let huge = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let metrics = daemon.metrics().await;
    for line in [
        "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"unauthorised\"} 1",
        "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"recorded\"} 2",
        // The provider's retry and the v2 redelivery.
        "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"duplicate\"} 2",
        "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"unknown_kind\"} 1",
        // The unparsable body and the wrong content type.
        "paystar_sync_webhooks_total{provider=\"smarterpay\",outcome=\"malformed\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // Still healthy and nothing more was sent.
    let health = client
        .get(format!("http://{}/health", daemon.http_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 4);
    daemon.stop().await;
}

/// A daemon with SmarterPay (Basic auth, `precedence` as given) and CUST1 acknowledged.
async fn with_smarterpay(precedence: &str) -> (Project, RunningSandbox, crate::support::Daemon) {
    daemon_with(
        &format!("{SP_BASIC}    precedence: {precedence}\n"),
        "CUST1,Lizzy,Hale,lhale@example.com,\n",
        &SP_ENV,
    )
    .await
}

/// Posts one v1 `customer_account` event; returns the HTTP status.
async fn post_customer_account(daemon: &crate::support::Daemon, event: serde_json::Value) -> u16 {
    let mut full = paystar_sync::sandbox::smarterpay::customer_account(&event, 0);
    full["id"] = event["id"].clone();
    reqwest::Client::new()
        .post(format!("http://{}/webhooks/smarterpay", daemon.http_addr()))
        .basic_auth("sp-user", Some("sp-pass"))
        .header("content-type", "application/json")
        .body(json!({ "events": [full] }).to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn manage_lines(sandbox: &RunningSandbox) -> Vec<String> {
    sandbox
        .sandbox
        .paystar
        .accepted()
        .iter()
        .filter(|a| a.event_type == "Accounts.ManageCustomer")
        .map(|a| {
            let p = a.payload_json();
            format!(
                "{} {} {} {} {}",
                p["accountNumber"].as_str().unwrap(),
                p["firstName"].as_str().unwrap(),
                p["lastName"].as_str().unwrap(),
                p["emailAddress"].as_str().unwrap(),
                p["originalEmailAddress"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn smarterpay_fields_create_customers_no_manifest_knows_and_an_older_event_never_overwrites_a_newer_one()
 {
    let (p, sandbox, daemon) = with_smarterpay("manifests").await;
    let status = post_customer_account(
        &daemon,
        json!({ "id": "EV10", "created_at": "2026-03-02T10:00:00.000Z", "reference": "CUST5",
                "first_name": "Mike", "last_name": "Walker", "Email": "mike@example.com" }),
    )
    .await;
    assert_eq!(status, 200);
    sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    // Delivered late: written before EV10, so it changes nothing.
    let older = json!({ "id": "EV09", "created_at": "2026-03-01T10:00:00.000Z", "reference": "CUST5",
                        "first_name": "Michael", "last_name": "Walker", "Email": "old@example.com" });
    assert_eq!(post_customer_account(&daemon, older).await, 200);
    // Newer, with an empty Email: the names change, the email stays.
    let newer = json!({ "id": "EV11", "created_at": "2026-03-03T10:00:00+01:00", "reference": "CUST5",
                        "first_name": "Mick", "last_name": "Walker", "Email": "" });
    assert_eq!(post_customer_account(&daemon, newer).await, 200);
    // CUST1 is in a manifest, and manifests win: nothing is sent for it.
    let manifest_key = json!({ "id": "EV12", "created_at": "2026-03-04T10:00:00.000Z", "reference": "CUST1",
                               "first_name": "Elizabeth", "last_name": "Hale", "Email": "liz@example.com" });
    assert_eq!(post_customer_account(&daemon, manifest_key).await, 200);
    // A customer no manifest knows without an email cannot be created yet.
    let incomplete = json!({ "id": "EV13", "created_at": "2026-03-04T10:00:00.000Z", "reference": "CUST6",
                             "first_name": "Ann", "last_name": "Lee", "Email": "" });
    assert_eq!(post_customer_account(&daemon, incomplete).await, 200);
    sandbox
        .sandbox
        .paystar
        .wait_for(3, Duration::from_secs(20))
        .await;
    daemon.stop().await;
    // Whatever was still queued is sent now; nothing else may be.
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_eq!(
        manage_lines(&sandbox),
        [
            "CUST1 Lizzy Hale lhale@example.com -",
            "CUST5 Mike Walker mike@example.com -",
            "CUST5 Mick Walker mike@example.com -",
        ]
    );
    let ledger = p.with_store(|s| s.provider_event_outcomes("smarterpay").unwrap());
    let outcome = |id: &str| {
        ledger
            .iter()
            .find(|e| e.event_id == id)
            .map(|e| format!("{}: {}", e.outcome, e.reason))
            .unwrap()
    };
    assert!(outcome("EV09").starts_with("ignored"), "{ledger:?}");
    assert!(
        outcome("EV09").contains("event EV10 is newer"),
        "{ledger:?}"
    );
    assert!(outcome("EV11").contains("Email is empty"), "{ledger:?}");
    assert!(outcome("EV12").starts_with("applied"), "{ledger:?}");
    // The history says where CUST5's fields came from.
    let history = p.run(&["history", "CUST5"]);
    assert!(
        history.stdout.contains("from smarterpay event EV10"),
        "{}",
        history.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_precedence_over_manifests_smarterpay_fields_replace_the_manifest_ones() {
    let (p, sandbox, daemon) = with_smarterpay("over_manifests").await;
    let event = json!({ "id": "EV20", "created_at": "2026-03-04T10:00:00.000Z", "reference": "CUST1",
                        "first_name": "Elizabeth", "last_name": "Hale", "Email": "liz@example.com" });
    assert_eq!(post_customer_account(&daemon, event).await, 200);
    sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    // A manifest edit to the same key still loses to the provider's fields...
    p.file(
        "c.csv",
        format!("{HEADER}CUST1,Lizzie,Hale,lhale@example.com,false\n"),
    );
    // ...but its autopay still counts.
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(3, Duration::from_secs(20))
        .await;
    assert_eq!(accepted[2].event_type, "Accounts.UnenrollAutopay");
    daemon.stop().await;
    assert_eq!(
        manage_lines(&sandbox),
        [
            "CUST1 Lizzy Hale lhale@example.com -",
            "CUST1 Elizabeth Hale liz@example.com lhale@example.com",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smarterpay_simulator_posts_signed_v2_webhooks_to_the_daemon() {
    let (_p, sandbox, daemon) = daemon_with(
        "  smarterpay:\n    auth: { signature_secret_env: SP_SIGNING_SECRET, signature_header: X-SP-Signature }\n    account_field: custom_reference\n",
        "RUN33,Mike,Walker,mike@example.com,\n",
        &[("SP_SIGNING_SECRET", "whsec_sandbox")],
    )
    .await;
    let send = |secret: &str| {
        json!({ "url": format!("http://{}/webhooks/smarterpay", daemon.http_addr()), "version": 2,
                "signature_secret": secret, "signature_header": "X-SP-Signature",
                "events": [{ "reference": "CUST00032423", "custom_reference": "RUN33", "status": "inactive" }] })
        .to_string()
    };
    let client = reqwest::Client::new();
    let url = format!("http://{}/_sandbox/smarterpay/send", sandbox.addr);
    let sent = |secret: &str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(send(secret))
            .send()
    };
    let wrong = sent("not-the-secret").await.unwrap().text().await.unwrap();
    assert!(wrong.contains("\"status\":498"), "{wrong}");
    let right = sent("whsec_sandbox").await.unwrap().text().await.unwrap();
    assert!(right.contains("\"status\":200"), "{right}");
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    assert_eq!(
        accepted[1].event_type,
        "Accounts.UnenrollAutopay",
        "{}",
        daemon.log_text()
    );
    assert_eq!(accepted[1].payload_json()["accountNumber"], "RUN33");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payroc_notifications_need_the_secret_and_are_recorded_once() {
    let sandbox = crate::support::start_sandbox().await;
    let config = format!(
        "{}providers:\n  payroc:\n    webhook_secret_env: PAYROC_WEBHOOK_SECRET\n",
        daemon_config(&sandbox.paystar_endpoint(), "")
    );
    let p = Project::with_config(&config);
    let daemon = p
        .start_daemon_with_env(&[("PAYROC_WEBHOOK_SECRET", "pr_whsec_0c5d")])
        .await;
    let url = format!("http://{}/webhooks/payroc", daemon.http_addr());
    let client = reqwest::Client::new();
    // Hand-written: the vendor page's example lacks a comma after "version".
    let event = |id: &str| {
        json!({ "specversion": "1.0", "type": "processingAccount.status.changed", "version": "1.0", "source": "payroc",
                "id": id, "time": "2024-05-12T12:34:56.789Z", "datacontenttype": "application/json",
                "data": { "processingAccountId": "12345678", "status": "terminated" } })
        .to_string()
    };
    let post = |secret: Option<&str>, content_type: &str, body: String| {
        let mut request = client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(secret) = secret {
            request = request.header("Payroc-Secret", secret);
        }
        request.send()
    };
    let id = "123e4567-e89b-12d3-a456-426614174000";
    assert_eq!(
        post(Some("pr_whsec_0c5X"), "application/json", event(id))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(None, "application/json", event(id))
            .await
            .unwrap()
            .status(),
        401
    );
    let ledger = |ids: Vec<String>| p.with_store(|s| s.known_events("payroc", &ids).unwrap());
    assert!(
        ledger(vec![format!("payroc/{id}")]).is_empty(),
        "a refused notification is not recorded"
    );
    for _ in 0..2 {
        let ok = post(Some("pr_whsec_0c5d"), "application/json", event(id))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let other = post(
        Some("pr_whsec_0c5d"),
        "application/cloudevents+json",
        event("9b2f0c1e-0000-4000-8000-000000000001"),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 200);
    let bad = post(
        Some("pr_whsec_0c5d"),
        "application/json",
        json!({ "specversion": "0.3" }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    let known = ledger(vec![
        format!("payroc/{id}"),
        "payroc/9b2f0c1e-0000-4000-8000-000000000001".into(),
    ]);
    assert_eq!(known.len(), 2);
    assert!(
        sandbox.sandbox.paystar.accepted().is_empty(),
        "merchant-level events send nothing to Paystar"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_payroc_subscription_is_created_once_kept_in_line_and_re_enabled() {
    use paystar_sync::config::{PayrocSubscription, Secret};
    use paystar_sync::providers::payroc::{PayrocApi, SubscriptionAction};
    let sandbox = crate::support::start_sandbox().await;
    let sim = &sandbox.sandbox.payroc;
    let (identity, api_url) = sandbox.payroc_urls();
    let api = PayrocApi::new(&identity, &api_url, Secret::new("pr_api_key")).unwrap();
    let store =
        paystar_sync::store::SharedStore::new(paystar_sync::store::Store::in_memory().unwrap());
    let mut declared = PayrocSubscription {
        event_types: vec!["processingAccount.status.changed".into()],
        uri: "https://sync.example.com/webhooks/payroc".into(),
        support_email: "ops@example.com".into(),
    };
    let secret = Secret::new("pr_whsec_0c5d");
    let id = match api.reconcile(&store, &declared, &secret).await.unwrap() {
        SubscriptionAction::Created(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        api.reconcile(&store, &declared, &secret).await.unwrap(),
        SubscriptionAction::Unchanged(id)
    );
    assert_eq!(sim.subscriptions().len(), 1);
    assert_eq!(sim.authorize_calls(), 1, "the token is cached");
    // Payroc suspends it: it is re-enabled.
    sim.set_status(id, "suspended", false);
    assert_eq!(
        api.reconcile(&store, &declared, &secret).await.unwrap(),
        SubscriptionAction::Reenabled(id)
    );
    assert_eq!(sim.subscriptions()[0]["enabled"], true);
    // The declared event types change: the subscription is updated, not duplicated.
    declared
        .event_types
        .push("processingAccount.funding.status.changed".into());
    assert_eq!(
        api.reconcile(&store, &declared, &secret).await.unwrap(),
        SubscriptionAction::Updated(id)
    );
    assert_eq!(sim.subscriptions().len(), 1);
    // The token expires early: one 401, one new token, and the call goes through.
    sim.expire_tokens();
    assert_eq!(
        api.reconcile(&store, &declared, &secret).await.unwrap(),
        SubscriptionAction::Unchanged(id)
    );
    assert_eq!(sim.authorize_calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_creates_the_payroc_subscription_once_across_restarts_and_receives_its_events() {
    let sandbox = crate::support::start_sandbox().await;
    let (identity, api_url) = sandbox.payroc_urls();
    // The webhook URI must be known before the daemon picks its port: use a fixed free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "{}providers:\n  payroc:\n    identity_url: {identity}\n    api_url: {api_url}\n    api_key_env: PAYROC_API_KEY\n    webhook_secret_env: PAYROC_WEBHOOK_SECRET\n    subscription:\n      event_types: [processingAccount.status.changed]\n      uri: http://127.0.0.1:{port}/webhooks/payroc\n      support_email: ops@example.com\n",
        daemon_config(&sandbox.paystar_endpoint(), "").replace(
            "listen: \"127.0.0.1:0\"",
            &format!("listen: \"127.0.0.1:{port}\"")
        )
    );
    let p = Project::with_config(&config);
    let env = [
        ("PAYROC_API_KEY", "pr_api_key"),
        ("PAYROC_WEBHOOK_SECRET", "pr_whsec_0c5d"),
    ];
    for _ in 0..2 {
        let mut daemon = p.start_daemon_with_env(&env).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !daemon.log_text().contains("event subscription reconciled")
            && tokio::time::Instant::now() < deadline
        {
            tokio::task::yield_now().await;
        }
        assert!(
            daemon.log_text().contains("event subscription reconciled"),
            "{}",
            daemon.log_text()
        );
        daemon.signal("TERM");
        assert_eq!(
            daemon.wait_exit(Duration::from_secs(20)).await,
            Some(Some(0))
        );
    }
    assert_eq!(
        sandbox.sandbox.payroc.subscriptions().len(),
        1,
        "created once across restarts"
    );
    let daemon = p.start_daemon_with_env(&env).await;
    let delivered = reqwest::Client::new()
        .post(format!("http://{}/_sandbox/payroc/deliver", sandbox.addr))
        .header("content-type", "application/json")
        .body(json!({ "type": "processingAccount.status.changed", "data": { "processingAccountId": "38765", "status": "terminated" } }).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(delivered, r#"{"statuses":[200]}"#, "{}", daemon.log_text());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_payroc_processing_account_pauses_delivery_but_not_stops_until_a_newer_event_resumes_it()
 {
    let (p, sandbox, daemon) = daemon_with(
        &format!("  payroc:\n    webhook_secret_env: PAYROC_WEBHOOK_SECRET\n    pause:\n      business_units: [water-bill-pay]\n      processing_accounts: [\"38765\"]\n{SP_BASIC}"),
        "CUST1,Lizzy,Hale,lhale@example.com,\n",
        &[SP_ENV[0], SP_ENV[1], ("PAYROC_WEBHOOK_SECRET", "pr_whsec_0c5d")],
    )
    .await;
    let notify = |id: &str, account: &str, status: &str, time: &str| {
        let body = json!({ "specversion": "1.0", "type": "processingAccount.status.changed", "version": "1.0",
                           "source": "payroc", "id": id, "time": time, "datacontenttype": "application/json",
                           "data": { "processingAccountId": account, "status": status } });
        let url = format!("http://{}/webhooks/payroc", daemon.http_addr());
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("Payroc-Secret", "pr_whsec_0c5d")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Another processing account's status does not pause anything.
    assert_eq!(
        notify("e0", "11111", "terminated", "2026-05-01T10:00:00Z").await,
        200
    );
    assert_eq!(
        notify("e1", "38765", "terminated", "2026-05-02T10:00:00Z").await,
        200
    );
    let metrics = daemon
        .metrics_until("paystar_sync_paused_business_units 1")
        .await;
    assert!(
        metrics.contains("paystar_sync_paused_business_units 1"),
        "{metrics}"
    );
    // A change made while paused waits in the queue.
    p.file(
        "c.csv",
        format!("{HEADER}CUST1,Elizabeth,Hale,lhale@example.com,\n"),
    );
    let metrics = daemon
        .metrics_until("paystar_sync_queue{state=\"pending\"} 1")
        .await;
    assert!(
        metrics.contains("paystar_sync_queue{state=\"pending\"} 1"),
        "{metrics}"
    );
    // The worker sees the pause on its next step, which the queued change triggers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("delivery paused") && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    let status = p.run_async(&["status"]).await;
    assert!(
        status.stdout.contains(
            "paused: delivery to water-bill-pay waits (providers.payroc.pause): Payroc processing account 38765 is terminated (event payroc/e1)"
        ),
        "{}",
        status.stdout
    );
    // An older event that arrives late changes nothing; a newer one resumes delivery.
    assert_eq!(
        notify("e2", "38765", "approved", "2026-05-01T12:00:00Z").await,
        200
    );
    let ledger = p.with_store(|s| s.provider_event_outcomes("payroc").unwrap());
    assert!(
        ledger.iter().any(|e| e.event_id == "payroc/e2"
            && e.outcome == "ignored"
            && e.reason.contains("event payroc/e1 is newer")),
        "{ledger:?}"
    );
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 1);
    // A provider's stop is never held back: the unenroll goes out, the name change waits.
    let inactive = json!({ "id": "EV30", "created_at": "2026-05-02T11:00:00Z", "reference": "CUST1", "status": "inactive" });
    assert_eq!(post_customer_account(&daemon, inactive).await, 200);
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(2, Duration::from_secs(20))
        .await;
    assert_eq!(accepted[1].event_type, "Accounts.UnenrollAutopay");
    assert_eq!(
        notify("e3", "38765", "approved", "2026-05-03T10:00:00Z").await,
        200
    );
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(3, Duration::from_secs(20))
        .await;
    assert_eq!(accepted.len(), 3, "{}", daemon.log_text());
    assert_eq!(accepted[2].event_type, "Accounts.ManageCustomer");
    assert_eq!(accepted[2].payload_json()["firstName"], "Elizabeth");
    let log = daemon.log_text();
    assert!(log.contains("delivery paused"), "{log}");
    assert!(log.contains("delivery resumed"), "{log}");
    daemon.stop().await;
}

/// Sends a CloudEvents fixture written by the CloudEvents SDK for Python
/// (`tests/it/fixtures/cloudevents/make.py`) to `/webhooks/payroc`.
async fn post_cloudevent(daemon: &crate::support::Daemon, fixture: &str, secret: &str) -> u16 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/cloudevents")
        .join(fixture);
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/payroc", daemon.http_addr()))
        .header("Payroc-Secret", secret)
        .body(fixture["body"].as_str().unwrap().to_owned());
    for (name, value) in fixture["headers"].as_object().unwrap() {
        request = request.header(name.as_str(), value.as_str().unwrap());
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn payroc_cloudevents_are_accepted_in_binary_and_structured_mode_with_one_ledger_key() {
    let (p, _sandbox, daemon) = daemon_with(
        &format!("  payroc:\n    webhook_secret_env: PAYROC_WEBHOOK_SECRET\n    pause:\n      business_units: [water-bill-pay]\n      processing_accounts: [\"38765\"]\n{SP_BASIC}"),
        "CUST1,Lizzy,Hale,lhale@example.com,\n",
        &[SP_ENV[0], SP_ENV[1], ("PAYROC_WEBHOOK_SECRET", "pr_whsec_0c5d")],
    )
    .await;
    // The same secret check in binary mode.
    assert_eq!(
        post_cloudevent(&daemon, "binary-terminated.json", "wrong").await,
        401
    );
    assert_eq!(
        post_cloudevent(&daemon, "binary-terminated.json", "pr_whsec_0c5d").await,
        200
    );
    let metrics = daemon
        .metrics_until("paystar_sync_paused_business_units 1")
        .await;
    assert!(
        metrics.contains("paystar_sync_paused_business_units 1"),
        "{metrics}"
    );
    // The same event again, in structured mode: the same ledger key, a duplicate.
    assert_eq!(
        post_cloudevent(
            &daemon,
            "structured-duplicate-of-binary.json",
            "pr_whsec_0c5d"
        )
        .await,
        200
    );
    assert_eq!(
        post_cloudevent(&daemon, "structured-approved.json", "pr_whsec_0c5d").await,
        200
    );
    let metrics = daemon
        .metrics_until("paystar_sync_paused_business_units 0")
        .await;
    for line in [
        "paystar_sync_paused_business_units 0",
        "paystar_sync_webhooks_total{provider=\"payroc\",outcome=\"recorded\"} 2",
        "paystar_sync_webhooks_total{provider=\"payroc\",outcome=\"duplicate\"} 1",
        "paystar_sync_webhooks_total{provider=\"payroc\",outcome=\"unauthorised\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
    daemon.stop().await;
    let ledger = p.with_store(|s| s.provider_event_outcomes("payroc").unwrap());
    let ids: Vec<&str> = ledger.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        2,
        "one entry per source and id, whatever the mode: {ids:?}"
    );
    assert!(
        ids.contains(&"https://api.payroc.com/evt-binary-1"),
        "{ids:?}"
    );
}
