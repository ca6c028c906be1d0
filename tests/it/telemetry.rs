//! Traces (the `otel` feature): what the exporter sends over OTLP/HTTP is
//! decoded here with the OpenTelemetry protocol's own message types, by a
//! collector this test serves on loopback.

use crate::support::{Project, daemon_config, start_sandbox};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// An OTLP/HTTP collector on a free loopback port: every decoded export
/// request, and the content types they came with.
struct Collector {
    addr: std::net::SocketAddr,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, ExportTraceServiceRequest)>,
}

async fn collector() -> Collector {
    use axum::routing::post;
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/v1/traces",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("the exporter sends an OTLP protobuf ExportTraceServiceRequest");
                    let _ = tx.send((content_type, request));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Collector { addr, received }
}

/// A span's attributes, as text.
fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A resource's `service.name`.
fn service_name(resource: &opentelemetry_proto::tonic::trace::v1::ResourceSpans) -> Option<String> {
    resource
        .resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .map(|kv| text(kv.value.as_ref()))
}

const ONE_CUSTOMER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n90817,Ada,Lovelace,ada@example.com,true\n";

/// Drops one customer into the folder, waits until Paystar accepted it, stops
/// the daemon and returns its log.
async fn deliver_one_and_stop(
    p: &Project,
    sandbox: &paystar_sync::sandbox::RunningSandbox,
    daemon: crate::support::Daemon,
) -> String {
    p.file("c.csv", ONE_CUSTOMER);
    let accepted = sandbox
        .sandbox
        .paystar
        .wait_for(1, Duration::from_secs(20))
        .await;
    assert_eq!(accepted.len(), 1, "{}", daemon.log_text());
    let log = daemon.log.clone();
    daemon.stop().await;
    std::fs::read_to_string(log).unwrap()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn scans_deliveries_webhooks_and_polls_reach_an_otlp_collector_as_spans_with_outcomes_and_no_account_numbers()
 {
    let mut collector = collector().await;
    let sandbox = start_sandbox().await;
    let config = format!(
        "{}telemetry: {{ otlp_endpoint: \"http://{}\", service_name: paystar-sync-test }}\nproviders:\n  lotuspay:\n    base_url: {}\n    secret_key_env: LOTUSPAY_SECRET_KEY\n    schedule: \"* * * * * *\"\n  payroc:\n    webhook_secret_env: PAYROC_WEBHOOK_SECRET\n",
        daemon_config(&sandbox.paystar_endpoint(), ""),
        collector.addr,
        sandbox.lotuspay_base_url(),
    );
    let p = Project::with_config(&config);
    p.file("c.csv", ONE_CUSTOMER);
    let daemon = p
        .start_daemon_with_env(&[("PAYROC_WEBHOOK_SECRET", "pr_whsec_0c5d")])
        .await;
    let paystar = &sandbox.sandbox.paystar;
    assert_eq!(paystar.wait_for(1, Duration::from_secs(20)).await.len(), 1);
    // A cancelled mandate, polled: a poll span with a stop, then an unenroll.
    sandbox.sandbox.lotuspay.add_event(json!({
        "type": "mandate.cancelled", "resource_id": "MD0001",
        "data": { "object": { "object": "mandate", "id": "MD0001",
                              "metadata": { "paystar_account_number": "90817" } } }
    }));
    let accepted = paystar.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(accepted.len(), 2, "{}", daemon.log_text());
    // A webhook that carries its caller's trace.
    let event = json!({ "specversion": "1.0", "type": "processingAccount.status.changed", "source": "payroc",
        "id": "7d3c1a52-5f0e-4c1e-9a67-1f1f5b0c2d11", "time": "2024-05-12T12:34:56.789Z",
        "datacontenttype": "application/json",
        "data": { "processingAccountId": "38765", "status": "approved" } });
    let answer = reqwest::Client::new()
        .post(format!("http://{}/webhooks/payroc", daemon.http_addr()))
        .header("content-type", "application/json")
        .header("Payroc-Secret", "pr_whsec_0c5d")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Shutting down sends what is still batched.
    daemon.stop().await;

    let mut spans = Vec::new();
    while let Ok((content_type, request)) = collector.received.try_recv() {
        assert_eq!(content_type, "application/x-protobuf");
        for resource in request.resource_spans {
            assert_eq!(
                service_name(&resource).as_deref(),
                Some("paystar-sync-test")
            );
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let scans = named("paystar.scan");
    let start = scans
        .iter()
        .map(|s| attributes(s))
        .find(|a| a["trigger"] == "start")
        .unwrap_or_else(|| panic!("no startup scan span in {names:?}"));
    assert_eq!(start["outcome"], "committed");
    assert_eq!(start["changed"], "1");
    assert_eq!(start["errors"], "0");

    let key = paystar_sync::customer::CustomerKey {
        business_unit: "water-bill-pay".into(),
        account: "90817".into(),
        sub_account: String::new(),
    };
    let hash = paystar_sync::telemetry::KeyHash(&key).to_string();
    let deliveries: Vec<BTreeMap<String, String>> = named("paystar.deliver")
        .iter()
        .map(|s| {
            assert_eq!(s.kind, SpanKind::Client as i32);
            attributes(s)
        })
        .collect();
    let events: Vec<&str> = deliveries.iter().map(|a| a["event"].as_str()).collect();
    assert_eq!(
        events,
        ["Accounts.ManageCustomer", "Accounts.UnenrollAutopay"],
        "{deliveries:?}"
    );
    for attempt in &deliveries {
        assert_eq!(attempt["outcome"], "delivered");
        assert_eq!(attempt["http.response.status_code"], "200");
        assert_eq!(attempt["customer.key_hash"], hash);
    }

    let polls = named("paystar.poll");
    assert!(
        polls
            .iter()
            .map(|s| attributes(s))
            .any(|a| a["outcome"] == "done" && a["stops"] == "1" && a["provider"] == "lotuspay"),
        "no poll span with the stop in {polls:?}"
    );

    let webhooks = named("paystar.webhook");
    assert_eq!(webhooks.len(), 1, "{names:?}");
    let webhook = webhooks[0];
    assert_eq!(hex(&webhook.trace_id), TRACE_ID);
    assert_eq!(hex(&webhook.parent_span_id), PARENT_ID);
    assert_eq!(webhook.kind, SpanKind::Server as i32);
    let a = attributes(webhook);
    assert_eq!(a["provider"], "payroc");
    assert_eq!(a["outcome"], "recorded");
    assert_eq!(a["http.response.status_code"], "200");

    // The customer appears only as its hash; log lines stay out of traces.
    for span in &spans {
        for (key, value) in attributes(span) {
            assert!(!value.contains("90817"), "{} {key}={value}", span.name);
        }
        assert!(
            span.events.is_empty(),
            "{} has events {:?}",
            span.name,
            span.events
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_costs_the_daemon_nothing_but_a_warning() {
    // A port nothing listens on: the exporter fails, delivery does not.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let sandbox = start_sandbox().await;
    let config = format!(
        "{}telemetry: {{ otlp_endpoint: \"http://{addr}\" }}\n",
        daemon_config(&sandbox.paystar_endpoint(), ""),
    );
    let p = Project::with_config(&config);
    let daemon = p.start_daemon().await;
    let log = deliver_one_and_stop(&p, &sandbox, daemon).await;
    assert!(
        log.lines()
            .any(|l| l.contains("opentelemetry") && l.contains("export")),
        "the failed export is logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_telemetry_keeps_the_running_exporter_and_says_so() {
    let mut collector = collector().await;
    let sandbox = start_sandbox().await;
    let base = daemon_config(&sandbox.paystar_endpoint(), "");
    let with_service = |name: &str| {
        format!(
            "{base}telemetry: {{ otlp_endpoint: \"http://{}\", service_name: {name} }}\n",
            collector.addr
        )
    };
    let p = Project::with_config(&with_service("before-reload"));
    let daemon = p.start_daemon().await;
    p.config(&with_service("after-reload"));
    daemon.signal("HUP");
    for expected in ["RELOADING=1", "READY=1"] {
        let message = daemon.next_notify(Duration::from_secs(20)).await;
        assert!(
            message.as_deref().is_some_and(|m| m.contains(expected)),
            "{message:?}\n{}",
            daemon.log_text()
        );
    }
    let log = deliver_one_and_stop(&p, &sandbox, daemon).await;
    assert!(
        log.contains("telemetry changes take effect on restart"),
        "{log}"
    );
    let mut services = std::collections::BTreeSet::new();
    let mut delivered = false;
    while let Ok((_, request)) = collector.received.try_recv() {
        for resource in request.resource_spans {
            services.extend(service_name(&resource));
            delivered |= resource
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .any(|s| s.name == "paystar.deliver");
        }
    }
    assert!(delivered, "the delivery after the reload was traced");
    assert_eq!(services.into_iter().collect::<Vec<_>>(), ["before-reload"]);
}
