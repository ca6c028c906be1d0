//! The JSON API under `/api/v1/` (the document is `openapi.json`). Errors are
//! `{"error": "…"}` with the status that says why.

use super::auth::{self, Access};
use super::{Console, Unavailable, view};
use crate::clock::now_ms;
use crate::customer::CustomerKey;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/status", get(status))
        .route("/files", get(files))
        .route(
            "/customers/{businessUnitSlug}/{accountNumber}/history",
            get(history),
        )
        .route("/holds", get(holds))
        .route("/holds/approve", post(approve))
        .route("/parked", get(parked))
        .route("/parked/retry", post(retry))
        .route("/unmatched", get(unmatched))
}

pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

struct ApiUnavailable(Unavailable);

impl From<Unavailable> for ApiUnavailable {
    fn from(u: Unavailable) -> Self {
        Self(u)
    }
}

impl IntoResponse for ApiUnavailable {
    fn into_response(self) -> Response {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the state cannot be read: {}", self.0.0),
        )
    }
}

type Answer = Result<Response, ApiUnavailable>;

async fn status(State(c): State<Console>) -> Answer {
    let name = c.state_name.to_string();
    let mut status = c.read(move |s| view::status(s, name, now_ms())).await?;
    c.show_live(&mut status);
    Ok(Json(status).into_response())
}

async fn files(State(c): State<Console>) -> Answer {
    let files = c.read(view::files).await?;
    Ok(Json(json!({ "files": files })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct HistoryQuery {
    sub_account_number: Option<String>,
}

async fn history(
    State(c): State<Console>,
    Path((unit, account)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Answer {
    if blank_or_long(&unit)
        || blank_or_long(&account)
        || q.sub_account_number
            .as_deref()
            .is_some_and(|s| unfit(s, MOST_CHARS))
    {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "businessUnitSlug and accountNumber must not be empty, and no key part may be longer than 256 characters or hold a control character",
        ));
    }
    let key = CustomerKey::new(
        &unit,
        &account,
        q.sub_account_number.as_deref().unwrap_or(""),
    );
    let history = c.read(move |s| view::history(s, &key)).await?;
    Ok(Json(history).into_response())
}

use view::{MOST_CHARS, unfit};

/// An empty key part names no customer.
fn blank_or_long(text: &str) -> bool {
    text.is_empty() || unfit(text, MOST_CHARS)
}

async fn holds(State(c): State<Console>) -> Answer {
    let holds = c.read(view::holds).await?;
    Ok(Json(json!({ "holds": holds })).into_response())
}

async fn parked(State(c): State<Console>) -> Answer {
    let parked = c.read(view::parked).await?;
    Ok(Json(json!({ "parked": parked })).into_response())
}

async fn unmatched(State(c): State<Console>) -> Answer {
    let events = c.read(view::unmatched).await?;
    Ok(Json(json!({ "unmatched": events })).into_response())
}

/// Refuses an API action that may not act: read-only console, or a session
/// cookie without its CSRF token in `X-CSRF-Token`.
fn refuse(access: &Access, headers: &HeaderMap) -> Option<Response> {
    match access {
        Access::Bearer => None,
        Access::Session { csrf } => {
            let given = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            (!auth::same(csrf.as_bytes(), given.as_bytes())).then(|| {
                error(
                    StatusCode::FORBIDDEN,
                    "a session's action needs its CSRF token in X-CSRF-Token, or use Authorization: Bearer",
                )
            })
        }
        Access::ReadOnly => Some(error(
            StatusCode::FORBIDDEN,
            "this console is read-only: set console.auth to enable actions",
        )),
        Access::Denied => Some(error(StatusCode::UNAUTHORIZED, "send the console token")),
    }
}

/// The body of an action this request may take as `T`, or the answer that
/// refuses it (403, 401, or the 400 that says what is wrong with the body).
fn action<T: serde::de::DeserializeOwned>(
    access: &Access,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<T, Box<Response>> {
    if let Some(refused) = refuse(access, headers) {
        return Err(Box::new(refused));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not the JSON object this action takes: {e}"),
        ))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    cause: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn approve(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let b: ApproveBody = match action(&access, &headers, &bytes) {
        Ok(b) => b,
        Err(response) => return Ok(*response),
    };
    let cause = match (b.all, b.cause) {
        (true, None) => None,
        (false, Some(cause)) if !cause.is_empty() && !unfit(&cause, 1_000) => Some(cause),
        _ => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of: \"cause\" (a cause from /api/v1/holds) or \"all\": true",
            ));
        }
    };
    let n = c.approve(cause).await?;
    Ok(Json(json!({ "approved": n })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CustomerRef {
    business_unit_slug: String,
    account_number: String,
    #[serde(default)]
    sub_account_number: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryBody {
    customers: Option<Vec<CustomerRef>>,
    #[serde(default)]
    all: bool,
}

async fn retry(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let b: RetryBody = match action(&access, &headers, &bytes) {
        Ok(b) => b,
        Err(response) => return Ok(*response),
    };
    let keys = match (b.all, b.customers) {
        (true, None) => None,
        (false, Some(customers))
            if !customers.is_empty()
                && customers.len() <= view::LIST_LIMIT
                && customers.iter().all(|k| {
                    !blank_or_long(&k.business_unit_slug)
                        && !blank_or_long(&k.account_number)
                        && !unfit(&k.sub_account_number, MOST_CHARS)
                }) =>
        {
            Some(
                customers
                    .iter()
                    .map(|k| {
                        CustomerKey::new(
                            &k.business_unit_slug,
                            &k.account_number,
                            &k.sub_account_number,
                        )
                    })
                    .collect(),
            )
        }
        _ => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of: \"customers\" (1 to 1000 of {businessUnitSlug, accountNumber, subAccountNumber}) or \"all\": true",
            ));
        }
    };
    let n = c.retry(keys).await?;
    Ok(Json(json!({ "retried": n })).into_response())
}
