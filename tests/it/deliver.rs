//! SPEC §4 delivery guarantees, through the real binary and the Paystar simulator
//! over loopback HTTP.

use crate::support::{Project, with_sandbox};
use paystar_sync::sandbox::paystar::Fault;

const HEADER: &str = "accountNumber,subAccountNumber,firstName,lastName,emailAddress,autopay\n";

fn csv(rows: &[&str]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

fn event_types(sandbox: &paystar_sync::sandbox::RunningSandbox) -> Vec<String> {
    sandbox
        .sandbox
        .paystar
        .accepted()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.event_type,
                a.payload_json()["accountNumber"].as_str().unwrap()
            )
        })
        .collect()
}

async fn apply(p: &Project) -> crate::support::Run {
    p.run_async(&["apply", "--timeout", "20s"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn paystar_receives_the_vendor_envelope_with_the_payload_as_a_json_string() {
    let (p, sandbox) = with_sandbox("").await;
    p.file(
        "c.csv",
        csv(&["12345,,John,Smith,john.smith@example.com,no"]),
    );
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    let accepted = sandbox.sandbox.paystar.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].event_type, "Accounts.ManageCustomer");
    assert_eq!(accepted[0].business_unit_slug, "water-bill-pay");
    assert_eq!(
        accepted[0].payload,
        r#"{"accountNumber":"12345","subAccountNumber":"","firstName":"John","lastName":"Smith","emailAddress":"john.smith@example.com"}"#
    );
    assert_eq!(accepted[1].event_type, "Accounts.UnenrollAutopay");
    assert_eq!(
        accepted[1].payload,
        r#"{"accountNumber":"12345","subAccountNumber":""}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_sends_nothing() {
    let (p, sandbox) = with_sandbox("").await;
    p.file(
        "c.csv",
        csv(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,false",
        ]),
    );
    assert_eq!(apply(&p).await.code, 0);
    let requests = sandbox.sandbox.paystar.requests();
    assert_eq!(requests, 3);
    let again = apply(&p).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sandbox.sandbox.paystar.requests(), requests);
    assert!(
        again.stdout.contains("0 event(s) acknowledged"),
        "{}",
        again.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_503s_then_a_200_deliver_the_event_once() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 503,
        count: 2,
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sandbox.sandbox.paystar.requests(), 3);
    assert_eq!(event_types(&sandbox), ["Accounts.ManageCustomer 1"]);
    assert!(run.stdout.contains("2 retry(ies)"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_longer_than_the_schedule_is_honoured() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 429,
        retry_after: Some("1".into()),
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    let started = tokio::time::Instant::now();
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the 50ms schedule must wait for Retry-After: 1"
    );
    assert_eq!(event_types(&sandbox), ["Accounts.ManageCustomer 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_parks_the_customer_until_retry() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 400,
        body: Some(r#"{"hasErrors":true,"errors":["account locked"]}"#.into()),
        ..Fault::default()
    });
    p.file(
        "c.csv",
        csv(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    let run = apply(&p).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        sandbox.sandbox.paystar.accepted().len(),
        1,
        "the other customer is not held back"
    );
    let status = p.run_async(&["status"]).await;
    assert!(status.stdout.contains("1 parked"), "{}", status.stdout);
    assert!(
        status.stdout.contains("HTTP 400") && status.stdout.contains("account locked"),
        "{}",
        status.stdout
    );
    // A parked customer is not retried by the next apply on its own…
    let requests = sandbox.sandbox.paystar.requests();
    assert_eq!(apply(&p).await.code, 1);
    assert_eq!(sandbox.sandbox.paystar.requests(), requests);
    // …only after `retry`.
    let retry = p.run_async(&["retry", "--all"]).await;
    assert!(retry.stdout.contains("re-queued 1 parked"), "{retry:?}");
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_customer_is_retried_when_its_desired_state_changes() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 422,
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(apply(&p).await.code, 1);
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada.lovelace@example.com,"]));
    assert_eq!(apply(&p).await.code, 0);
    let accepted = sandbox.sandbox.paystar.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].payload_json()["emailAddress"],
        "ada.lovelace@example.com"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn has_errors_true_in_a_2xx_parks_the_customer() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 200,
        body: Some(r#"{"hasErrors":true,"errors":["unknown business unit"]}"#.into()),
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(apply(&p).await.code, 1);
    let status = p.run_async(&["status", "--format", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["counts"]["parked"], 1);
    assert!(
        status["queue"][0]["lastError"]
            .as_str()
            .unwrap()
            .contains("unknown business unit")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_hangs_times_out_and_is_retried() {
    let (p, sandbox) = with_sandbox("").await;
    p.config(
        &std::fs::read_to_string(p.config_path())
            .unwrap()
            .replace("timeout: 2s", "timeout: 300ms"),
    );
    sandbox.sandbox.paystar.push_fault(Fault {
        hang: true,
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert_eq!(event_types(&sandbox), ["Accounts.ManageCustomer 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_retry_schedule_parks_the_customer() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox.sandbox.paystar.push_fault(Fault {
        status: 500,
        count: 4,
        ..Fault::default()
    });
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(apply(&p).await.code, 1);
    assert_eq!(sandbox.sandbox.paystar.requests(), 4);
    let status = p.run_async(&["status"]).await;
    assert!(
        status
            .stdout
            .contains("retry schedule exhausted after 4 attempts"),
        "{}",
        status.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_made_while_a_customer_waits_are_sent_once_with_the_acknowledged_email_as_original() {
    let (p, sandbox) = with_sandbox("").await;
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(apply(&p).await.code, 0);
    for email in [
        "second@example.com",
        "third@example.com",
        "fourth@example.com",
    ] {
        p.file("c.csv", csv(&[&format!("1,,Ada,Lovelace,{email},")]));
        p.commit();
    }
    assert_eq!(apply(&p).await.code, 0);
    let accepted = sandbox.sandbox.paystar.accepted();
    assert_eq!(accepted.len(), 2);
    let payload = accepted[1].payload_json();
    assert_eq!(payload["emailAddress"], "fourth@example.com");
    assert_eq!(payload["originalEmailAddress"], "ada@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_is_bounded_and_a_customer_is_never_in_flight_twice() {
    let (p, sandbox) = with_sandbox("  concurrency: 4\n").await;
    sandbox
        .sandbox
        .paystar
        .set_latency(std::time::Duration::from_millis(30));
    let rows: Vec<String> = (0..24)
        .map(|i| format!("{i},,Ada,Lovelace,ada{i}@example.com,no"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("c.csv", csv(&rows));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    let sim = &sandbox.sandbox.paystar;
    assert_eq!(sim.accepted().len(), 48);
    assert_eq!(sim.max_concurrent(), 4);
    assert_eq!(sim.same_customer_overlaps(), 0);
    // Per customer, ManageCustomer always comes before UnenrollAutopay.
    for i in 0..24 {
        let order: Vec<String> = sim
            .accepted()
            .iter()
            .filter(|a| a.payload_json()["accountNumber"].as_str() == Some(i.to_string().as_str()))
            .map(|a| a.event_type.clone())
            .collect();
        assert_eq!(
            order,
            ["Accounts.ManageCustomer", "Accounts.UnenrollAutopay"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_without_an_api_key_is_a_configuration_error() {
    let (p, _sandbox) = with_sandbox("").await;
    p.file("c.csv", csv(&["1,,Ada,Lovelace,ada@example.com,"]));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["apply", "--config"])
        .arg(p.config_path())
        .env_remove("PAYSTAR_API_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("paystar.api_key_env: environment variable PAYSTAR_API_KEY is not set")
    );
}

#[test]
fn a_due_retry_is_claimed_before_a_backlog_of_fresh_keys() {
    use paystar_sync::customer::CustomerKey;
    use paystar_sync::store::{Outcome, OutcomeResult};
    let p = crate::support::Project::new();
    let mut rows = String::from("accountNumber,firstName,lastName,emailAddress\n");
    for i in 0..10_000 {
        rows.push_str(&format!("{i},Ada,Lovelace,ada{i}@example.com\n"));
    }
    p.file("a.csv", rows);
    p.commit();
    let mut store = p.store();
    // Later than the harness's scan clock, so the fresh keys are all due.
    let now = crate::support::now_ms() + 20_000;
    let retried = CustomerKey {
        business_unit: "water-bill-pay".into(),
        account: "9999".into(),
        sub_account: String::new(),
    };
    let outcome = Outcome {
        key: retried.clone(),
        acked_fields: None,
        acked_unenroll: false,
        result: OutcomeResult::Retry {
            attempts: 1,
            next_attempt_at: now + 100,
            error: "HTTP 503".into(),
        },
        history: Vec::new(),
        claimed: None,
    };
    store.record_outcomes(&[outcome], |_| true, now).unwrap();
    // Not due yet: the backlog goes first.
    let early = store.upcoming(9, &[], now).unwrap();
    assert!(!early.iter().any(|(k, _)| *k == retried), "{early:?}");
    // Due: it is the first claimed, ahead of 9,999 fresh keys queued before it.
    let due = store.upcoming(9, &[], now + 100).unwrap();
    assert_eq!(due[0].0, retried, "{due:?}");
    assert_eq!(due.len(), 9);
    assert_eq!(due.iter().filter(|(k, _)| *k == retried).count(), 1);
    // The worker's claim says the same, with each key's state, and never
    // claims a key in flight.
    let claim = store.claim(9, &[], now + 100, &[]).unwrap();
    assert_eq!(claim.claimed[0].0, retried);
    assert_eq!(claim.claimed[0].1.queue.as_ref().unwrap().attempts, 1);
    assert_eq!(claim.claimed.len(), 9);
    assert!(claim.more);
    let busy = [retried.clone(), claim.claimed[1].0.clone()];
    let claim = store.claim(9, &[], now + 100, &busy).unwrap();
    assert_eq!(claim.claimed.len(), 9);
    assert!(claim.claimed.iter().all(|(k, _)| !busy.contains(k)));
    assert!(claim.claimed.iter().all(|(_, s)| s.desired.is_some()));
    // Nothing due yet for a retry alone: it says when.
    let early = store.claim(9, &[], now, &[]).unwrap();
    assert!(!early.claimed.iter().any(|(k, _)| *k == retried));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_pauses_every_request_not_only_that_customers() {
    let (p, sandbox) = with_sandbox("  concurrency: 4\n").await;
    let paystar = &sandbox.sandbox.paystar;
    paystar.push_fault(Fault {
        status: 429,
        retry_after: Some("2".into()),
        ..Fault::default()
    });
    let rows: Vec<String> = (0..30)
        .map(|i| format!("{},,Ann,Lee,ann{i}@example.com,", 700 + i))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("c.csv", csv(&rows));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut arrived: Vec<i64> = paystar.accepted().iter().map(|a| a.received_ms).collect();
    assert_eq!(arrived.len(), 30, "each customer once");
    arrived.sort_unstable();
    // Besides the requests already on the wire with the 429, nothing reached
    // Paystar for the two seconds it asked for.
    let longest_gap = arrived.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest_gap >= 1_800,
        "longest gap {longest_gap} ms: {arrived:?}"
    );
    assert!(
        run.stderr
            .contains("Paystar asked to wait (Retry-After on a 429 or 503)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paystar_rate_limit_spaces_requests_evenly_at_the_rate() {
    let (p, sandbox) = with_sandbox("  concurrency: 8\n  rate_limit: 20/s\n").await;
    let rows: Vec<String> = (0..21)
        .map(|i| format!("{},,Ann,Lee,ann{i}@example.com,", 800 + i))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("c.csv", csv(&rows));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut arrived: Vec<i64> = sandbox
        .sandbox
        .paystar
        .accepted()
        .iter()
        .map(|a| a.received_ms)
        .collect();
    assert_eq!(arrived.len(), 21);
    arrived.sort_unstable();
    // 21 requests 50 ms apart take a second, never a burst of eight at once.
    let span = arrived[20] - arrived[0];
    assert!(span >= 950, "21 requests within {span} ms: {arrived:?}");
    let tightest = arrived.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        tightest >= 40,
        "two requests {tightest} ms apart: {arrived:?}"
    );
}

#[test]
fn a_rate_limit_that_is_not_a_rate_is_a_configuration_error_naming_the_form() {
    let p = Project::with_config(
        &crate::support::BASE_CONFIG.replace("paystar:\n", "paystar:\n  rate_limit: fast\n"),
    );
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("paystar.rate_limit: \"fast\" is not a rate; write requests per second or per minute, e.g. 50/s or 3000/m"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_adaptive_concurrency_settles_under_a_paystar_that_takes_20_and_a_restart_starts_from_it()
 {
    let (p, sandbox) = with_sandbox("  max_concurrency: 64\n").await;
    let paystar = &sandbox.sandbox.paystar;
    paystar.set_capacity(Some(20));
    paystar.set_latency(std::time::Duration::from_millis(20));
    let rows: Vec<String> = (0..600)
        .map(|i| format!("{},,Ann,Lee,ann{i}@example.com,", 10_000 + i))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("c.csv", csv(&rows));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(paystar.accepted_total(), 600);
    // Pushed back rarely: each 429 cost a retry, and no customer was parked.
    let (requests, refused) = (paystar.requests(), paystar.over_capacity());
    assert!(
        refused * 20 <= requests,
        "{refused} of {requests} requests answered 429"
    );
    let learned: usize = p
        .with_store(|s| s.meta("delivery.concurrency.learned").unwrap())
        .expect("the learned limit is kept")
        .parse()
        .unwrap();
    assert!((12..=21).contains(&learned), "learned {learned}");
    // The next run starts from it.
    p.file("d.csv", csv(&["20000,,Bo,Diaz,bo@example.com,"]));
    let run = apply(&p).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(&format!("start={learned}")) && run.stderr.contains("from=\"learned\""),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandboxs_paystar_capacity_is_set_over_http() {
    let (p, sandbox) = with_sandbox("").await;
    let set = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{}/_sandbox/paystar/capacity", sandbox.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // No room at all: every request is answered 429 until the customer is parked.
    assert_eq!(set(r#"{"requests": 0}"#).await.unwrap().status(), 204);
    p.file("c.csv", csv(&["31,,Ann,Lee,ann@example.com,"]));
    assert_eq!(apply(&p).await.code, 1);
    assert!(sandbox.sandbox.paystar.over_capacity() >= 1);
    assert_eq!(sandbox.sandbox.paystar.accepted_total(), 0);
    assert_eq!(set(r#"{"requests": null}"#).await.unwrap().status(), 204);
    assert_eq!(p.run_async(&["retry", "--all"]).await.code, 0);
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(sandbox.sandbox.paystar.accepted_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandboxs_paystar_takes_a_token_bucket_a_503_with_retry_after_and_jitter_over_http() {
    let (_p, sandbox) = with_sandbox("").await;
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: &'static str| {
        http.post(format!("http://{}/_sandbox/paystar/{path}", sandbox.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let event = |i: usize| {
        let payload = format!(
            r#"{{"accountNumber":"{i}","subAccountNumber":"","firstName":"A","lastName":"B","emailAddress":"a@example.com"}}"#
        );
        http.post(sandbox.paystar_endpoint())
            .header("x-paystar-api-key", "k")
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "eventType": "Accounts.ManageCustomer",
                    "businessUnitSlug": "w",
                    "payload": payload,
                })
                .to_string(),
            )
            .send()
    };
    // A bucket of two that refills once a minute: two taken, the third refused
    // as asked (503, Retry-After: 7).
    let bucket = r#"{"rate": 0.0167, "burst": 2, "status": 503, "retry_after": "7"}"#;
    assert_eq!(post("capacity", bucket).await.unwrap().status(), 204);
    assert_eq!(event(1).await.unwrap().status(), 200);
    assert_eq!(event(2).await.unwrap().status(), 200);
    let refused = event(3).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "7");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("rate limit exceeded")
    );
    assert_eq!(sandbox.sandbox.paystar.over_capacity(), 1);
    assert_eq!(sandbox.sandbox.paystar.most_refusals_of_one_customer(), 1);
    // Only 429 and 503 are refusals; an unknown field is refused by name.
    let wrong = post("capacity", r#"{"status": 418}"#).await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert!(
        post("capacity", r#"{"requets": 3}"#)
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    // `{}` is unlimited again; a latency of 40 ± 20 ms holds each answer 20–60 ms.
    assert_eq!(post("capacity", "{}").await.unwrap().status(), 204);
    let latency = r#"{"ms": 40, "jitter_ms": 20}"#;
    assert_eq!(post("latency", latency).await.unwrap().status(), 204);
    for i in 10..15 {
        let started = tokio::time::Instant::now();
        assert_eq!(event(i).await.unwrap().status(), 200);
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(20), "{took:?}");
    }
}
