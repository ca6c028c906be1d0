//! Sends one event to the Paystar Events API and reports what happened, without
//! judging it (that is `classify`'s job).

use super::classify::Attempt;
use super::event::PaystarEvent;
use crate::config::Secret;
use std::time::Duration;

/// The start of a response body kept for logs and parked keys.
const BODY_LIMIT: usize = 4096;

#[derive(Clone)]
pub struct PaystarClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: Secret,
}

impl PaystarClient {
    pub fn new(endpoint: &str, api_key: Secret, timeout: Duration) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("paystar-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            endpoint: endpoint.to_owned(),
            api_key,
        })
    }

    pub async fn send(&self, event: &PaystarEvent) -> Attempt {
        let result = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Paystar-Api-Key", self.api_key.expose())
            .body(event.body.clone())
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => return transport(&err),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match read_limited(response).await {
            Ok(body) => body,
            Err(err) => return transport(&err),
        };
        Attempt::Response {
            status,
            retry_after,
            body,
        }
    }
}

fn transport(err: &reqwest::Error) -> Attempt {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Attempt::Transport {
        timeout: err.is_timeout(),
        message,
    }
}

async fn read_limited(mut response: reqwest::Response) -> reqwest::Result<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = BODY_LIMIT.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_LIMIT {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
