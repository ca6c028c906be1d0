//! SmarterPay Cloud webhooks (SPEC §5, DOMAIN §5): v1 (`{"events": [one]}`) and
//! v2 (several events plus `idempotency_key`). Authentication is Basic, or an
//! HMAC-SHA256 of the raw body in a configurable header (hex, optionally
//! `sha256=`-prefixed: SmarterPay does not publish its signature format); any
//! failure is answered 498. `customer_account` events report the customer's
//! names and `Email` (applied unless a newer event's are stored; an empty or
//! invalid value is not applied), and `status: inactive` is a stop signal;
//! unknown kinds are answered 204.

use super::text_at;
use crate::config::Secret;
use crate::customer::{CustomerKey, FieldsBuf};
use crate::manifest::fields::{check_email, check_text};
use crate::store::{EventOutcome, FieldReport, ProviderEventWrite};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;

pub const PROVIDER: &str = "smarterpay";

#[derive(Clone)]
pub enum Auth {
    Basic { user: Secret, password: Secret },
    Signature { secret: Secret, header: String },
}

#[derive(Clone)]
pub struct SmarterPay {
    pub auth: Auth,
    /// `reference` or `custom_reference`.
    pub account_field: String,
    pub business_unit: String,
}

/// What to answer, and what to record.
#[derive(Debug)]
pub enum Verdict {
    /// 498 Token Invalid; nothing is recorded.
    Unauthorised,
    /// 400 with the reason.
    Malformed(String),
    /// 204: no event of a kind we handle.
    Unknown,
    /// 200 once these are durably recorded. `idempotency` is the v2 delivery key.
    Record {
        events: Vec<ProviderEventWrite>,
        idempotency: Option<String>,
    },
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SmarterPay {
    fn authorised(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> bool {
        match &self.auth {
            Auth::Basic { user, password } => {
                let expected = format!("{}:{}", user.expose(), password.expose());
                header("authorization")
                    .and_then(|v| v.strip_prefix("Basic ").map(str::to_owned))
                    .and_then(|b| {
                        base64::engine::general_purpose::STANDARD
                            .decode(b.trim())
                            .ok()
                    })
                    .is_some_and(|given| same(&given, expected.as_bytes()))
            }
            Auth::Signature {
                secret,
                header: name,
            } => {
                let Some(given) = header(&name.to_ascii_lowercase()) else {
                    return false;
                };
                let given = given.trim().trim_start_matches("sha256=");
                let Some(given) = decode_hex(given) else {
                    return false;
                };
                let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
                else {
                    return false;
                };
                mac.update(body);
                mac.verify_slice(&given).is_ok()
            }
        }
    }

    /// Judges one delivery. `header` looks a request header up by lower-case name.
    pub fn receive(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Verdict {
        if !self.authorised(header, body) {
            return Verdict::Unauthorised;
        }
        let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
            return Verdict::Malformed(
                "the body must be a JSON object with an `events` list".into(),
            );
        };
        let Some(events) = envelope.get("events").and_then(Value::as_array) else {
            return Verdict::Malformed("the body has no `events` list".into());
        };
        let idempotency = envelope.get("idempotency_key").map(|k| match k {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let mut writes = Vec::new();
        for event in events {
            let kind = event["resource_type"]
                .as_str()
                .or_else(|| event["event_type"].as_str())
                .unwrap_or("");
            if kind != "customer_account" && !kind.starts_with("customer.") {
                continue;
            }
            let Some(id) = event["id"].as_str().filter(|s| !s.is_empty()) else {
                return Verdict::Malformed("an event has no id".into());
            };
            let status = event["status"].as_str().unwrap_or("");
            let mut write = ProviderEventWrite {
                provider: PROVIDER,
                event_id: id.to_owned(),
                channel: "webhook",
                event_type: kind.to_owned(),
                outcome: EventOutcome::Unmatched,
                reason: format!(
                    "customer account {status}, but `{}` is empty: no customer key",
                    self.account_field
                ),
                key: None,
                raw: event.to_string(),
                fields: None,
                merchant: None,
            };
            if let Some(account) = text_at(event, &self.account_field) {
                write.key = Some(CustomerKey::new(&self.business_unit, &account, ""));
                let (report, notes) = field_report(event);
                let head = if status == "inactive" {
                    write.outcome = EventOutcome::Stop;
                    "customer account inactive"
                } else if report.is_some() {
                    write.outcome = EventOutcome::Fields;
                    "customer fields reported"
                } else {
                    write.outcome = EventOutcome::Ignored;
                    "nothing to apply"
                };
                write.reason = std::iter::once(head.to_owned())
                    .chain(notes)
                    .collect::<Vec<_>>()
                    .join("; ");
                write.fields = report;
            }
            writes.push(write);
        }
        if writes.is_empty() {
            return Verdict::Unknown;
        }
        Verdict::Record {
            events: writes,
            idempotency,
        }
    }
}

/// The names and `Email` a `customer_account` event reports, with notes on what
/// is not applied: an empty `Email` (SmarterPay allows it) or an invalid value
/// leaves that field as it was; an event without a readable `created_at` cannot
/// be ordered against others, so none of its fields are applied.
fn field_report(event: &Value) -> (Option<FieldReport>, Vec<String>) {
    let mut notes = Vec::new();
    let mut field = |name: &str, check: fn(&str) -> Result<(), String>| {
        let value = event[name].as_str().map(str::trim).unwrap_or("");
        if value.is_empty() {
            notes.push(format!("{name} is empty: not updated"));
            return String::new();
        }
        match check(value) {
            Ok(()) => value.to_owned(),
            Err(problem) => {
                notes.push(format!("{name} {problem}: not updated"));
                String::new()
            }
        }
    };
    let fields = FieldsBuf {
        first_name: field("first_name", check_text),
        last_name: field("last_name", check_text),
        email: field("Email", |v| check_text(v).and_then(|()| check_email(v))),
    };
    if [&fields.first_name, &fields.last_name, &fields.email]
        .iter()
        .all(|f| f.is_empty())
    {
        return (None, notes);
    }
    match event["created_at"].as_str().and_then(event_time) {
        Some(created_ms) => (Some(FieldReport { fields, created_ms }), notes),
        None => {
            notes.push(format!(
                "created_at {} is not an ISO 8601 time: fields not applied",
                event["created_at"]
            ));
            (None, notes)
        }
    }
}

/// An ISO 8601 time as unix ms; one without an offset is taken as UTC.
fn event_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> SmarterPay {
        SmarterPay {
            auth: Auth::Signature {
                secret: Secret::new("whsec"),
                header: "X-Signature".into(),
            },
            account_field: "reference".into(),
            business_unit: "water".into(),
        }
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(body);
        crate::hex::hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn a_good_signature_is_accepted_and_a_bad_one_refused() {
        let body = br#"{"events":[{"id":"EV1","resource_type":"customer_account","reference":"C1","status":"inactive"}]}"#;
        let good = sign(body);
        let verdict = signed().receive(
            &|h| (h == "x-signature").then(|| format!("sha256={good}")),
            body,
        );
        assert!(
            matches!(verdict, Verdict::Record { ref events, .. } if events[0].outcome == EventOutcome::Stop)
        );
        let verdict = signed().receive(&|h| (h == "x-signature").then(|| "00".repeat(32)), body);
        assert!(matches!(verdict, Verdict::Unauthorised));
        assert!(matches!(
            signed().receive(&|_| None, body),
            Verdict::Unauthorised
        ));
    }

    fn basic() -> SmarterPay {
        SmarterPay {
            auth: Auth::Basic {
                user: Secret::new("u"),
                password: Secret::new("p"),
            },
            ..signed()
        }
    }

    fn judge(event: Value) -> ProviderEventWrite {
        let body = json_body(event);
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        match basic().receive(&|h| (h == "authorization").then(|| auth.clone()), &body) {
            Verdict::Record { mut events, .. } => events.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn json_body(event: Value) -> Vec<u8> {
        serde_json::json!({ "events": [event] })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn names_and_email_are_reported_with_the_event_time_and_an_empty_email_is_left_out() {
        let write = judge(
            serde_json::json!({ "id": "EV1", "resource_type": "customer_account", "reference": "C1",
            "created_at": "2021-07-15T12:48:39.000Z", "first_name": " Lizzy ", "last_name": "Hale", "Email": "", "status": "active" }),
        );
        assert_eq!(write.outcome, EventOutcome::Fields);
        let report = write.fields.unwrap();
        assert_eq!(report.fields.first_name, "Lizzy");
        assert_eq!(report.fields.email, "");
        assert_eq!(report.created_ms, 1_626_353_319_000);
        assert!(write.reason.contains("Email is empty"), "{}", write.reason);
    }

    #[test]
    fn an_invalid_email_or_an_unreadable_time_is_not_applied_and_says_why() {
        let write = judge(
            serde_json::json!({ "id": "EV1", "resource_type": "customer_account", "reference": "C1",
            "created_at": "2021-07-15 12:48:39", "first_name": "Lizzy", "last_name": "Hale", "Email": "not-an-email", "status": "active" }),
        );
        assert_eq!(write.fields.unwrap().fields.email, "");
        assert!(
            write.reason.contains("Email is not a valid email address"),
            "{}",
            write.reason
        );
        let write = judge(
            serde_json::json!({ "id": "EV2", "resource_type": "customer_account", "reference": "C1",
            "created_at": "yesterday", "first_name": "Lizzy", "last_name": "Hale", "Email": "l@example.com", "status": "inactive" }),
        );
        assert_eq!(write.outcome, EventOutcome::Stop);
        assert_eq!(write.fields, None);
        assert!(
            write.reason.contains("not an ISO 8601 time"),
            "{}",
            write.reason
        );
    }

    #[test]
    fn an_event_without_a_reference_is_unmatched() {
        let write = judge(
            serde_json::json!({ "id": "EV1", "resource_type": "customer_account", "reference": "",
            "created_at": "2021-07-15T12:48:39.000Z", "first_name": "Lizzy", "last_name": "Hale", "Email": "", "status": "active" }),
        );
        assert_eq!(write.outcome, EventOutcome::Unmatched);
        assert_eq!(write.key, None);
    }

    #[test]
    fn unknown_kinds_are_answered_without_recording() {
        let body = br#"{"events":[{"id":"EV2","resource_type":"payment","status":"paid"}]}"#;
        let good = sign(body);
        assert!(matches!(
            signed().receive(&|_| Some(good.clone()), body),
            Verdict::Unknown
        ));
    }
}
