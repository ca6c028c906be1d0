//! Payroc event notifications (SPEC §5, DOMAIN §4): CloudEvents 1.0 posted to
//! `/webhooks/payroc` with the registered secret in `Payroc-Secret` (compared in
//! constant time; a wrong or missing secret gets 401 and nothing is recorded).
//! Payroc's events are merchant-level: they are recorded in the ledger and logged.

use crate::config::Secret;
use crate::store::{EventOutcome, ProviderEventWrite};
use serde_json::Value;

pub const PROVIDER: &str = "payroc";

#[derive(Clone)]
pub struct PayrocReceiver {
    pub secret: Secret,
}

#[derive(Debug)]
pub enum Verdict {
    /// 401; nothing is recorded.
    Unauthorised,
    /// 400 with the reason.
    Malformed(String),
    /// 200 once recorded.
    Record(Box<ProviderEventWrite>),
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PayrocReceiver {
    /// Judges one notification. `header` looks a request header up by lower-case name.
    pub fn receive(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Verdict {
        let given = header("payroc-secret").unwrap_or_default();
        if !same(given.as_bytes(), self.secret.expose().as_bytes()) {
            return Verdict::Unauthorised;
        }
        let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(body) else {
            return Verdict::Malformed("the body must be a CloudEvents JSON object".into());
        };
        let text = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if text("specversion") != Some("1.0") {
            return Verdict::Malformed("specversion must be \"1.0\"".into());
        }
        let (Some(kind), Some(source), Some(id)) = (text("type"), text("source"), text("id"))
        else {
            return Verdict::Malformed("a CloudEvent needs type, source and id".into());
        };
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        tracing::info!(
            provider = PROVIDER,
            event = kind,
            processing_account = data["processingAccountId"].as_str().unwrap_or(""),
            status = data["status"].as_str().unwrap_or(""),
            "merchant-level event recorded"
        );
        Verdict::Record(Box::new(ProviderEventWrite {
            provider: PROVIDER,
            // CloudEvents are unique by source and id.
            event_id: format!("{source}/{id}"),
            channel: "webhook",
            event_type: kind.to_owned(),
            outcome: EventOutcome::Ignored,
            reason: format!("{kind}: merchant-level, recorded only"),
            key: None,
            raw: String::from_utf8_lossy(body).into_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"specversion":"1.0","type":"processingAccount.status.changed","source":"payroc","id":"123e4567-e89b-12d3-a456-426614174000","time":"2024-05-12T12:34:56.789Z","datacontenttype":"application/json","data":{"processingAccountId":"12345678","status":"entered"}}"#;

    fn receiver() -> PayrocReceiver {
        PayrocReceiver {
            secret: Secret::new("s3cr3t-value"),
        }
    }

    #[test]
    fn the_right_secret_records_the_event_by_source_and_id() {
        let Verdict::Record(event) = receiver().receive(
            &|h| (h == "payroc-secret").then(|| "s3cr3t-value".into()),
            EVENT,
        ) else {
            panic!("not recorded");
        };
        assert_eq!(
            event.event_id,
            "payroc/123e4567-e89b-12d3-a456-426614174000"
        );
        assert_eq!(event.outcome, EventOutcome::Ignored);
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused() {
        assert!(matches!(
            receiver().receive(&|_| Some("s3cr3t-valuX".into()), EVENT),
            Verdict::Unauthorised
        ));
        assert!(matches!(
            receiver().receive(&|_| None, EVENT),
            Verdict::Unauthorised
        ));
    }

    #[test]
    fn a_body_that_is_not_a_cloudevent_is_malformed() {
        let ok = |_: &str| Some("s3cr3t-value".to_owned());
        assert!(matches!(
            receiver().receive(&ok, b"{\"type\":\"x\"}"),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            receiver().receive(&ok, b"not json"),
            Verdict::Malformed(_)
        ));
    }
}
