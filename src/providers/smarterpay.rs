//! SmarterPay Cloud webhooks (SPEC §5, DOMAIN §5): v1 (`{"events": [one]}`) and
//! v2 (several events plus `idempotency_key`). Authentication is Basic, or an
//! HMAC-SHA256 of the raw body in a configurable header (hex, optionally
//! `sha256=`-prefixed: SmarterPay does not publish its signature format); any
//! failure is answered 498. `customer_account` events with `status: inactive`
//! are stop signals; unknown kinds are answered 204.

use super::text_at;
use crate::config::Secret;
use crate::customer::CustomerKey;
use crate::store::{EventOutcome, ProviderEventWrite};
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
            let account = text_at(event, &self.account_field);
            let (outcome, reason, key) = match (status, account) {
                ("inactive", Some(account)) => (
                    EventOutcome::Stop,
                    "customer account inactive".to_owned(),
                    Some(CustomerKey::new(&self.business_unit, &account, "")),
                ),
                ("inactive", None) => (
                    EventOutcome::Unmatched,
                    format!(
                        "customer account inactive, but `{}` is empty",
                        self.account_field
                    ),
                    None,
                ),
                _ => (
                    EventOutcome::Ignored,
                    format!(
                        "{kind} {status}: recorded only (field updates from SmarterPay are not applied yet)"
                    ),
                    None,
                ),
            };
            writes.push(ProviderEventWrite {
                provider: PROVIDER,
                event_id: id.to_owned(),
                channel: "webhook",
                event_type: kind.to_owned(),
                outcome,
                reason,
                key,
                raw: event.to_string(),
            });
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

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
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
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
