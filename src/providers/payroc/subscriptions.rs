//! Payroc's API (DOMAIN §4): an identity token and the event subscription the
//! config declares, reconciled at start and kept so.

use super::PROVIDER;
use crate::config::Secret;
use serde_json::Value;
/// Payroc's API: an identity token (cached, refreshed five minutes before it
/// expires and once on a 401) and the event subscription the config declares.
pub struct PayrocApi {
    http: reqwest::Client,
    identity_url: String,
    api_url: String,
    api_key: Secret,
    token: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

/// What reconciling the subscription did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionAction {
    Unchanged(i64),
    Created(i64),
    Updated(i64),
    Reenabled(i64),
}

const REFRESH_MARGIN: std::time::Duration = std::time::Duration::from_secs(300);
const OURS: &str = "paystar-sync";

impl PayrocApi {
    pub fn new(identity_url: &str, api_url: &str, api_key: Secret) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .user_agent(concat!("paystar-sync/", env!("CARGO_PKG_VERSION")))
                .build()?,
            identity_url: identity_url.to_owned(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            api_key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    fn fail(what: &str, message: impl Into<String>) -> crate::providers::ProviderError {
        crate::providers::ProviderError::Api {
            provider: PROVIDER,
            what: what.to_owned(),
            message: message.into(),
        }
    }

    async fn token(&self, fresh: bool) -> Result<String, crate::providers::ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && !fresh
            && tokio::time::Instant::now() + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let response = self
            .http
            .post(&self.identity_url)
            .header("x-api-key", self.api_key.expose())
            .send()
            .await
            .map_err(|e| Self::fail("authorize", e.to_string()))?;
        if !response.status().is_success() {
            return Err(Self::fail(
                "authorize",
                format!(
                    "HTTP {} (check providers.payroc.api_key_env)",
                    response.status().as_u16()
                ),
            ));
        }
        let body: Value = serde_json::from_slice(
            &response
                .bytes()
                .await
                .map_err(|e| Self::fail("authorize", e.to_string()))?,
        )
        .map_err(|e| Self::fail("authorize", format!("not JSON: {e}")))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| Self::fail("authorize", "no access_token"))?
            .to_owned();
        let lifetime = std::time::Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
        *cached = Some((token.clone(), tokio::time::Instant::now() + lifetime));
        Ok(token)
    }

    /// One API call with a Bearer token; on 401 the token is renewed once.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), crate::providers::ProviderError> {
        let what = format!("{method} {path}");
        for fresh in [false, true] {
            let token = self.token(fresh).await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.api_url))
                .bearer_auth(&token);
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request
                .send()
                .await
                .map_err(|e| Self::fail(&what, e.to_string()))?;
            let status = response.status().as_u16();
            if status == 401 && !fresh {
                continue;
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Self::fail(&what, e.to_string()))?;
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !(200..300).contains(&status) && status != 404 {
                return Err(Self::fail(
                    &what,
                    format!("HTTP {status}: {}", value["title"].as_str().unwrap_or("")),
                ));
            }
            return Ok((status, value));
        }
        Err(Self::fail(&what, "HTTP 401 after renewing the token"))
    }

    /// Makes the declared subscription exist, match and be enabled. The create's
    /// Idempotency-Key is persisted before the request, so a retry after a crash
    /// cannot create a second subscription.
    pub async fn reconcile(
        &self,
        store: &crate::store::SharedStore,
        declared: &crate::config::PayrocSubscription,
        secret: &Secret,
    ) -> Result<SubscriptionAction, crate::providers::ProviderError> {
        let body = serde_json::json!({
            "enabled": true,
            "eventTypes": declared.event_types,
            "notifications": [{ "type": "webhook", "uri": declared.uri, "secret": secret.expose(), "supportEmailAddress": declared.support_email }],
            "metadata": { "managedBy": OURS },
        });
        let known: Option<i64> = store
            .call(|s| s.meta("payroc_subscription_id"))
            .await?
            .and_then(|v| v.parse().ok());
        let mut current = None;
        if let Some(id) = known {
            let (status, value) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/event-subscriptions/{id}"),
                    None,
                    None,
                )
                .await?;
            if status != 404 {
                current = Some(value);
            }
        }
        if current.is_none() {
            let (_, list) = self
                .call(reqwest::Method::GET, "/event-subscriptions", None, None)
                .await?;
            current = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| {
                    s["metadata"]["managedBy"] == OURS
                        || s["notifications"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|n| n["uri"] == declared.uri.as_str())
                })
                .cloned();
        }
        let Some(current) = current else {
            let key = match store.call(|s| s.meta("payroc_create_key")).await? {
                Some(key) => key,
                None => {
                    let key = uuid::Uuid::new_v4().to_string();
                    let stored = key.clone();
                    store
                        .call(move |s| s.set_meta("payroc_create_key", &stored))
                        .await?;
                    key
                }
            };
            let (_, created) = self
                .call(
                    reqwest::Method::POST,
                    "/event-subscriptions",
                    Some(&body),
                    Some(&key),
                )
                .await?;
            let id = created["id"]
                .as_i64()
                .ok_or_else(|| Self::fail("create subscription", "no id in the answer"))?;
            store
                .call(move |s| s.set_meta("payroc_subscription_id", &id.to_string()))
                .await?;
            return Ok(SubscriptionAction::Created(id));
        };
        let id = current["id"]
            .as_i64()
            .ok_or_else(|| Self::fail("subscription", "no id"))?;
        store
            .call(move |s| s.set_meta("payroc_subscription_id", &id.to_string()))
            .await?;
        let mut types: Vec<&str> = current["eventTypes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        types.sort_unstable();
        let mut wanted: Vec<&str> = declared.event_types.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        let notification = &current["notifications"][0];
        // Secrets come back masked: never compare them.
        let differs = types != wanted
            || notification["uri"] != declared.uri.as_str()
            || notification["supportEmailAddress"] != declared.support_email.as_str();
        if differs {
            self.call(
                reqwest::Method::PUT,
                &format!("/event-subscriptions/{id}"),
                Some(&body),
                None,
            )
            .await?;
            return Ok(SubscriptionAction::Updated(id));
        }
        let status = current["status"].as_str().unwrap_or("");
        if current["enabled"] != true || status == "failed" || status == "suspended" {
            tracing::error!(
                provider = PROVIDER,
                id,
                status,
                "the Payroc subscription was disabled; re-enabling it"
            );
            let patch = serde_json::json!([{ "op": "replace", "path": "/enabled", "value": true }]);
            let key = uuid::Uuid::new_v4().to_string();
            self.call(
                reqwest::Method::PATCH,
                &format!("/event-subscriptions/{id}"),
                Some(&patch),
                Some(&key),
            )
            .await?;
            return Ok(SubscriptionAction::Reenabled(id));
        }
        Ok(SubscriptionAction::Unchanged(id))
    }
}
