//! Sends one event to the Paystar Events API and reports what happened, without
//! judging it (that is `classify`'s job).

use super::classify::{Attempt, Transport};
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
        kind: transport_kind(err.is_timeout(), &message),
        message,
    }
}

/// What kind of failure a transport error's whole chain describes: hyper's
/// connector says `dns error`; rustls names certificates and handshakes.
fn transport_kind(timeout: bool, chain: &str) -> Transport {
    let lower = chain.to_ascii_lowercase();
    if timeout {
        Transport::Timeout
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        Transport::Dns
    } else if lower.contains("certificate")
        || lower.contains("handshake")
        || lower.contains("peer sent no certificates")
        || lower.contains("received corrupt message")
    {
        Transport::Tls
    } else {
        Transport::Connection
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_and_tls_failures_are_told_apart_from_a_refused_connection() {
        let chain = |m: &str| {
            format!(
                "error sending request for url (https://paystar.example/integrations/events): client error (Connect): {m}"
            )
        };
        assert_eq!(
            transport_kind(
                false,
                &chain(
                    "dns error: failed to lookup address information: Name or service not known"
                )
            ),
            Transport::Dns
        );
        assert_eq!(
            transport_kind(false, &chain("invalid peer certificate: UnknownIssuer")),
            Transport::Tls
        );
        assert_eq!(
            transport_kind(
                false,
                &chain("received corrupt message of type InvalidContentType")
            ),
            Transport::Tls
        );
        assert_eq!(
            transport_kind(
                false,
                &chain("tcp connect error: Connection refused (os error 111)")
            ),
            Transport::Connection
        );
        assert_eq!(
            transport_kind(true, "operation timed out"),
            Transport::Timeout
        );
    }
}
