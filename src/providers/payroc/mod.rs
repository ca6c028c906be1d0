//! Payroc event notifications (SPEC §5, DOMAIN §4): CloudEvents 1.0 posted to
//! `/webhooks/payroc` with the registered secret in `Payroc-Secret` (compared in
//! constant time; a wrong or missing secret gets 401 and nothing is recorded).
//! Payroc's events are merchant-level: they are recorded in the ledger and logged,
//! and with `providers.payroc.pause` a processing account's status can pause
//! delivery to Paystar for configured business units (see [`pause_in_force`]).

mod subscriptions;

pub use subscriptions::{PayrocApi, SubscriptionAction};

use super::text_at;
use crate::config::{PayrocPause, Secret};
use crate::store::{EventOutcome, MerchantReport, MerchantStatus, ProviderEventWrite};
use serde_json::Value;

pub const PROVIDER: &str = "payroc";
const ACCOUNT_STATUS_CHANGED: &str = "processingAccount.status.changed";

#[derive(Clone)]
pub struct PayrocReceiver {
    pub secret: Secret,
    pub pause: Option<PayrocPause>,
}

/// Delivery paused for some business units, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub business_units: Vec<String>,
    pub cause: String,
}

/// The pause the rule puts in force, given each processing account's latest
/// status: delivery is paused while any watched account's latest status is one
/// of the rule's, and resumes once every such account reports another status.
pub fn pause_in_force(rule: &PayrocPause, latest: &[MerchantStatus]) -> Option<Pause> {
    let causes: Vec<String> = latest
        .iter()
        .filter(|s| s.provider == PROVIDER && watches(rule, &s.account))
        .filter(|s| rule.statuses.contains(&s.status))
        .map(|s| {
            format!(
                "Payroc processing account {} is {} (event {})",
                s.account, s.status, s.event_id
            )
        })
        .collect();
    (!causes.is_empty()).then(|| Pause {
        business_units: rule.business_units.clone(),
        cause: causes.join("; "),
    })
}

/// The pause in force now, read from the store; `None` without a rule.
pub fn current_pause(
    rule: Option<&PayrocPause>,
    store: &crate::store::Store,
) -> Result<Option<Pause>, crate::store::StateError> {
    match rule {
        Some(rule) => Ok(pause_in_force(rule, &store.merchant_statuses()?)),
        None => Ok(None),
    }
}

fn watches(rule: &PayrocPause, account: &str) -> bool {
    rule.processing_accounts
        .as_ref()
        .is_none_or(|accounts| accounts.iter().any(|a| a == account))
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

/// A binary-mode CloudEvent as the structured form's attributes: `ce-*`
/// headers (lower-case) for the context, the body (JSON) as `data`.
fn binary(
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, String> {
    let mut event = serde_json::Map::new();
    for name in [
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "dataschema",
    ] {
        if let Some(value) = header(&format!("ce-{name}")) {
            event.insert(name.to_owned(), Value::String(value));
        }
    }
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|_| "binary mode: the body (the event's data) must be JSON".to_owned())?
    };
    event.insert("data".to_owned(), data);
    Ok(event)
}

impl PayrocReceiver {
    /// Judges one notification. `header` looks a request header up by lower-case name.
    pub fn receive(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Verdict {
        let given = header("payroc-secret").unwrap_or_default();
        if !same(given.as_bytes(), self.secret.expose().as_bytes()) {
            return Verdict::Unauthorised;
        }
        let event = match header("ce-specversion") {
            // Binary content mode: the attributes in `ce-*` headers, the data as the body.
            Some(_) => match binary(header, body) {
                Ok(event) => event,
                Err(reason) => return Verdict::Malformed(reason),
            },
            None => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(event)) => event,
                _ => {
                    return Verdict::Malformed(
                        "the body must be a CloudEvents JSON object (structured mode), or send ce-* headers (binary mode)".into(),
                    );
                }
            },
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
        let (outcome, reason, merchant) = self.judge(kind, &data, text("time"));
        tracing::debug!(
            provider = PROVIDER,
            event = kind,
            processing_account = data["processingAccountId"].as_str().unwrap_or(""),
            status = data["status"].as_str().unwrap_or(""),
            "merchant-level event received"
        );
        Verdict::Record(Box::new(ProviderEventWrite {
            provider: PROVIDER,
            // CloudEvents are unique by source and id.
            event_id: format!("{source}/{id}"),
            channel: "webhook",
            event_type: kind.to_owned(),
            outcome,
            reason,
            key: None,
            // The event in structured form, whichever mode it came in.
            raw: Value::Object(event.clone()).to_string(),
            fields: None,
            merchant,
        }))
    }

    /// What a merchant-level event means: a status the pause rule watches, or
    /// nothing but a record.
    fn judge(
        &self,
        kind: &str,
        data: &Value,
        time: Option<&str>,
    ) -> (EventOutcome, String, Option<MerchantReport>) {
        let recorded = || {
            (
                EventOutcome::Ignored,
                format!("{kind}: merchant-level, recorded only"),
                None,
            )
        };
        let Some(rule) = &self.pause else {
            return recorded();
        };
        let (Some(account), Some(status)) = (
            text_at(data, "processingAccountId"),
            text_at(data, "status"),
        ) else {
            return recorded();
        };
        if kind != ACCOUNT_STATUS_CHANGED || !watches(rule, &account) {
            return recorded();
        }
        let Some(event_ms) = time
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
        else {
            return (
                EventOutcome::Ignored,
                format!("{kind}: no RFC 3339 `time`, so it cannot be ordered; recorded only"),
                None,
            );
        };
        let effect = if rule.statuses.contains(&status) {
            format!("pauses delivery for {}", rule.business_units.join(", "))
        } else {
            "does not pause delivery".to_owned()
        };
        (
            EventOutcome::Merchant,
            format!("processing account {account} is {status}: {effect}"),
            Some(MerchantReport {
                account,
                status,
                event_ms,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"specversion":"1.0","type":"processingAccount.status.changed","source":"payroc","id":"123e4567-e89b-12d3-a456-426614174000","time":"2024-05-12T12:34:56.789Z","datacontenttype":"application/json","data":{"processingAccountId":"12345678","status":"entered"}}"#;

    /// Request headers holding only the right secret.
    fn secret_only(name: &str) -> Option<String> {
        (name == "payroc-secret").then(|| "s3cr3t-value".into())
    }

    fn receiver() -> PayrocReceiver {
        PayrocReceiver {
            secret: Secret::new("s3cr3t-value"),
            pause: None,
        }
    }

    fn rule(accounts: Option<&[&str]>) -> PayrocPause {
        PayrocPause {
            business_units: vec!["water".into()],
            statuses: vec!["terminated".into(), "cancelled".into()],
            processing_accounts: accounts.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn status(account: &str, status: &str) -> MerchantStatus {
        MerchantStatus {
            provider: PROVIDER.into(),
            account: account.into(),
            status: status.into(),
            event_id: format!("payroc/{account}"),
            event_ms: 0,
        }
    }

    #[test]
    fn a_watched_account_in_a_pausing_status_pauses_its_business_units() {
        let pause = pause_in_force(
            &rule(None),
            &[status("1", "approved"), status("2", "terminated")],
        );
        assert_eq!(
            pause,
            Some(Pause {
                business_units: vec!["water".into()],
                cause: "Payroc processing account 2 is terminated (event payroc/2)".into(),
            })
        );
        assert_eq!(
            pause_in_force(&rule(None), &[status("2", "approved")]),
            None
        );
        assert_eq!(
            pause_in_force(&rule(Some(&["1"])), &[status("2", "terminated")]),
            None,
            "an account the rule does not watch"
        );
    }

    #[test]
    fn a_status_event_for_a_watched_account_is_applied_with_its_time() {
        let receiver = PayrocReceiver {
            pause: Some(rule(None)),
            ..receiver()
        };
        let Verdict::Record(event) = receiver.receive(&secret_only, EVENT) else {
            panic!("not recorded");
        };
        assert_eq!(event.outcome, EventOutcome::Merchant);
        assert_eq!(
            event.reason,
            "processing account 12345678 is entered: does not pause delivery"
        );
        assert_eq!(
            event.merchant,
            Some(MerchantReport {
                account: "12345678".into(),
                status: "entered".into(),
                event_ms: 1_715_517_296_789,
            })
        );
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
            receiver().receive(
                &|name| (name == "payroc-secret").then(|| "s3cr3t-valuX".into()),
                EVENT
            ),
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
