//! A SmarterPay Cloud stand-in: `POST /_sandbox/smarterpay/send` makes it post a
//! v1 or v2 `customer_account` webhook to a URL, authenticated as configured,
//! and answers with the receiver's status.

use axum::Json;
use axum::Router;
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct Send {
    /// Where to post, e.g. `http://127.0.0.1:8080/webhooks/smarterpay`.
    pub url: String,
    /// 1 (one event) or 2 (several, with an idempotency key).
    #[serde(default = "one")]
    pub version: u8,
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password: Option<String>,
    #[serde(default)]
    pub signature_secret: Option<String>,
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Partial `customer_account` events; every documented key is filled in.
    pub events: Vec<Value>,
}

fn one() -> u8 {
    1
}

/// A complete v1 `customer_account` event (every key present; † values may be "").
pub fn customer_account(partial: &Value, n: usize) -> Value {
    let mut event = json!({
        "id": format!("SBEV{n:08}"), "created_at": "2026-01-01T00:00:00.000Z", "resource_type": "customer_account",
        "description": "API - Customer Account updated", "event_source": "20022091", "reference": "",
        "Email": "", "company_name": "", "first_name": "", "last_name": "", "title": "",
        "address_line1": "", "address_line2": "", "city": "", "postal_code": "", "country_code": "GB",
        "delivery_address_line1": "", "delivery_address_line2": "", "delivery_city": "",
        "delivery_postal_code": "", "delivery_country_code": "", "status": "active", "custom_reference": ""
    });
    for (k, v) in partial.as_object().into_iter().flatten() {
        event[k] = v.clone();
    }
    event
}

pub fn router() -> Router {
    Router::new().route("/_sandbox/smarterpay/send", post(send))
}

async fn send(Json(request): Json<Send>) -> Json<Value> {
    let events: Vec<Value> = request
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| customer_account(e, i + 1))
        .collect();
    let body = if request.version >= 2 {
        json!({ "id": "SBDELIVERY1", "idempotency_key": format!("{:x}", events.len() * 7919), "sent_at": "2026-01-01T00:00:00Z",
                "client": { "id": "SANDBOX" }, "events": events })
    } else {
        json!({ "events": events })
    }
    .to_string();
    let mut post = reqwest::Client::new()
        .post(&request.url)
        .header("content-type", "application/json");
    if let (Some(user), Some(password)) = (&request.basic_user, &request.basic_password) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        post = post.header("authorization", format!("Basic {token}"));
    }
    if let Some(secret) = &request.signature_secret
        && let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
    {
        mac.update(body.as_bytes());
        let hex = crate::hex::hex(&mac.finalize().into_bytes());
        post = post.header(
            request.signature_header.as_deref().unwrap_or("X-Signature"),
            hex,
        );
    }
    match post.body(body).send().await {
        Ok(response) => Json(json!({ "status": response.status().as_u16() })),
        Err(err) => Json(json!({ "error": err.to_string() })),
    }
}
