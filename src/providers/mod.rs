//! Payment providers' signals: events that stop autopay. Only this module (and
//! the sandbox) speaks the providers' HTTP APIs.

pub mod lotuspay;
pub mod payroc;
pub mod smarterpay;

/// A provider API call that failed; the poller tries again on its next run.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: {what}: {message}")]
    Api {
        provider: &'static str,
        what: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StateError),
}

/// The value at a dotted path such as `data.object.metadata.paystar_account_number`,
/// as text (numbers are accepted and written out).
pub fn text_at(value: &serde_json::Value, path: &str) -> Option<String> {
    let mut node = value;
    for part in path.split('.') {
        node = node.get(part)?;
    }
    match node {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
