//! Traces: one span per scan, per delivery attempt, per webhook and per poll
//! (named `paystar.*`, with outcome attributes). With `telemetry` configured
//! and the `otel` feature built in, they are exported over OTLP/HTTP; without
//! it they are plain `tracing` spans that cost next to nothing.
//!
//! Customers appear in spans only as [`KeyHash`]: a pseudonym that lets one
//! trace be matched with another, never the account number itself.

#[cfg(feature = "otel")]
mod otel;

use crate::customer::CustomerKey;
use sha2::{Digest, Sha256};
use std::fmt;

#[cfg(feature = "otel")]
pub use otel::Traces;

/// A customer key as a span attribute: the first 8 bytes of the SHA-256 of
/// business unit, account and sub-account, in hex. Computed only when a span
/// records it.
pub struct KeyHash<'a>(pub &'a CustomerKey);

impl fmt::Display for KeyHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hasher = Sha256::new();
        for part in [&self.0.business_unit, &self.0.account, &self.0.sub_account] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        for byte in &hasher.finalize()[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The span of one webhook request; a W3C `traceparent` header on the request
/// becomes its parent.
pub fn webhook_span(provider: &'static str, headers: &axum::http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "paystar.webhook",
        otel.name = "paystar.webhook",
        otel.kind = "server",
        provider,
        outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    #[cfg(feature = "otel")]
    otel::adopt_traceparent(&span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
    span
}

/// The traces exporter of a build without the `otel` feature: configuration
/// refuses `telemetry` there, so there is never one to start.
#[cfg(not(feature = "otel"))]
pub enum Traces {}

#[cfg(not(feature = "otel"))]
impl Traces {
    pub fn start(
        config: Option<&crate::config::TelemetryConfig>,
    ) -> anyhow::Result<Option<Traces>> {
        match config {
            None => Ok(None),
            Some(_) => anyhow::bail!("telemetry: this build has no `otel` feature"),
        }
    }

    pub fn layer(traces: Option<&Traces>) -> Option<tracing_subscriber::layer::Identity> {
        match traces {
            None => None,
            Some(never) => match *never {},
        }
    }

    pub fn announce(&self) {
        match *self {}
    }

    pub async fn shutdown(self) {
        match self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hash_is_sixteen_hex_digits_that_never_show_the_account() {
        let key = CustomerKey {
            business_unit: "water-bill-pay".into(),
            account: "12345".into(),
            sub_account: String::new(),
        };
        let hash = KeyHash(&key).to_string();
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!hash.contains("12345"));
        let other = CustomerKey {
            sub_account: "1".into(),
            ..key.clone()
        };
        assert_ne!(hash, KeyHash(&other).to_string());
        assert_eq!(hash, KeyHash(&key).to_string());
    }
}
