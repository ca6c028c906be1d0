//! The pages' handlers, and the two actions behind their forms.

use super::auth::{self, Access};
use super::html::{self, problem};
use super::{Console, Unavailable, pages, view};
use crate::clock::now_ms;
use crate::customer::CustomerKey;
use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &Access::Denied,
            &format!("The state cannot be read: {}", self.0),
        )
    }
}

type Page = Result<Response, Unavailable>;

/// The overview reloads itself this often (a meta refresh: pages carry no script).
const OVERVIEW_REFRESH_S: u32 = 15;

pub async fn overview(State(c): State<Console>, Extension(access): Extension<Access>) -> Page {
    let name = c.state_name.to_string();
    let mut status = c.read(move |s| view::status(s, name, now_ms())).await?;
    c.show_live(&mut status);
    Ok(html::refreshing(
        "Overview",
        "/",
        &access,
        &pages::overview(&status),
        OVERVIEW_REFRESH_S,
    ))
}

pub async fn files(State(c): State<Console>, Extension(access): Extension<Access>) -> Page {
    let files = c.read(view::files).await?;
    Ok(html::page(
        "Manifest files",
        "/files",
        &access,
        &pages::files(&files),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomerQuery {
    business_unit: Option<String>,
    account: Option<String>,
    sub_account: Option<String>,
}

pub async fn customer(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    Query(q): Query<CustomerQuery>,
) -> Page {
    let unit = q
        .business_unit
        .filter(|u| !u.trim().is_empty())
        .or(c.settings().default_business_unit)
        .unwrap_or_default();
    let account = q.account.unwrap_or_default();
    let sub = q.sub_account.unwrap_or_default();
    let unfit = [&unit, &account, &sub]
        .iter()
        .any(|t| view::unfit(t, view::MOST_CHARS));
    if unfit {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            &access,
            "No customer has such a key: a key part is longer than 256 characters or holds a control character.",
        ));
    }
    let history = if account.trim().is_empty() || unit.trim().is_empty() {
        None
    } else {
        let key = CustomerKey::new(unit.trim(), account.trim(), sub.trim());
        Some(c.read(move |s| view::history(s, &key)).await?)
    };
    let body = pages::customer(&unit, &account, &sub, history.as_ref());
    Ok(html::page("Customers", "/customers", &access, &body))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Done {
    approved: Option<u64>,
    retried: Option<u64>,
}

pub async fn holds(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    Query(done): Query<Done>,
) -> Page {
    let holds = c.read(view::holds).await?;
    let message = done
        .approved
        .map(|n| format!("Approved {n} held unenroll(s); delivery sends them to Paystar now."));
    Ok(html::page(
        "Held unenrolls",
        "/holds",
        &access,
        &pages::holds(&holds, &access, message.as_deref()),
    ))
}

pub async fn parked(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    Query(done): Query<Done>,
) -> Page {
    let parked = c.read(view::parked).await?;
    let message = done
        .retried
        .map(|n| format!("Re-queued {n} parked customer(s); delivery tries them now."));
    Ok(html::page(
        "Parked customers",
        "/parked",
        &access,
        &pages::parked(&parked, &access, message.as_deref()),
    ))
}

pub async fn unmatched(State(c): State<Console>, Extension(access): Extension<Access>) -> Page {
    let events = c.read(view::unmatched).await?;
    Ok(html::page(
        "Unmatched provider events",
        "/unmatched",
        &access,
        &pages::unmatched(&events),
    ))
}

/// Refuses a form post that may not act: read-only console, or a session
/// form without its CSRF token.
fn refuse(access: &Access, csrf: Option<&str>) -> Option<Response> {
    match access {
        Access::ReadOnly => Some(problem(
            StatusCode::FORBIDDEN,
            access,
            "This console is read-only: set console.auth to act from here, or use the paystar-sync command.",
        )),
        Access::Session { csrf: expected } => {
            let given = csrf.unwrap_or("");
            (!auth::same(expected.as_bytes(), given.as_bytes())).then(|| {
                problem(
                    StatusCode::FORBIDDEN,
                    access,
                    "This form has expired or did not come from this console; open the page again and retry.",
                )
            })
        }
        Access::Bearer => None,
        Access::Denied => Some(problem(StatusCode::UNAUTHORIZED, access, "Sign in first.")),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ApproveForm {
    csrf: Option<String>,
    cause: Option<String>,
    all: Option<String>,
    confirm: Option<String>,
}

pub async fn approve(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    Form(form): Form<ApproveForm>,
) -> Page {
    if let Some(refused) = refuse(&access, form.csrf.as_deref()) {
        return Ok(refused);
    }
    let cause = match (form.all.as_deref(), form.cause) {
        (Some("yes"), _) => None,
        (_, Some(cause)) if !cause.is_empty() && !view::unfit(&cause, 1_000) => Some(cause),
        _ => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                &access,
                "Say which unenrolls to approve: one cause, or all.",
            ));
        }
    };
    if form.confirm.as_deref() != Some("yes") {
        let holds = c.read(view::holds).await?;
        let count: u64 = holds
            .iter()
            .filter(|h| cause.as_ref().is_none_or(|c| *c == h.cause))
            .map(|h| h.count)
            .sum();
        let question = match &cause {
            Some(cause) => format!(
                "Approve {count} held unenroll(s) held because: {cause}? They go to Paystar now, and Paystar cannot undo an unenroll."
            ),
            None => format!(
                "Approve all {count} held unenroll(s)? They go to Paystar now, and Paystar cannot undo an unenroll."
            ),
        };
        let fields: Vec<(&str, &str)> = match &cause {
            Some(cause) => vec![("cause", cause.as_str())],
            None => vec![("all", "yes")],
        };
        let body = pages::confirm("/holds/approve", &question, &fields, &access, "/holds");
        return Ok(html::page(
            "Approve held unenrolls",
            "/holds",
            &access,
            &body,
        ));
    }
    let n = c.approve(cause).await?;
    Ok(Redirect::to(&format!("/holds?approved={n}")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryForm {
    csrf: Option<String>,
    business_unit: Option<String>,
    account: Option<String>,
    sub_account: Option<String>,
    all: Option<String>,
    confirm: Option<String>,
}

pub async fn retry(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    Form(form): Form<RetryForm>,
) -> Page {
    if let Some(refused) = refuse(&access, form.csrf.as_deref()) {
        return Ok(refused);
    }
    let key = match (form.all.as_deref(), &form.business_unit, &form.account) {
        (Some("yes"), _, _) => None,
        (_, Some(unit), Some(account))
            if !unit.is_empty()
                && !account.is_empty()
                && [
                    unit.as_str(),
                    account.as_str(),
                    form.sub_account.as_deref().unwrap_or(""),
                ]
                .iter()
                .all(|t| !view::unfit(t, view::MOST_CHARS)) =>
        {
            Some(CustomerKey::new(
                unit,
                account,
                form.sub_account.as_deref().unwrap_or(""),
            ))
        }
        _ => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                &access,
                "Say which parked customers to retry: one, or all.",
            ));
        }
    };
    if form.confirm.as_deref() != Some("yes") {
        let (question, fields) = match &key {
            Some(k) => (
                format!("Retry {k}? Its newest state is sent to Paystar again."),
                vec![
                    ("businessUnit", k.business_unit.as_str()),
                    ("account", k.account.as_str()),
                    ("subAccount", k.sub_account.as_str()),
                ],
            ),
            None => (
                "Retry every parked customer? Their newest state is sent to Paystar again."
                    .to_owned(),
                vec![("all", "yes")],
            ),
        };
        let body = pages::confirm("/parked/retry", &question, &fields, &access, "/parked");
        return Ok(html::page(
            "Retry parked customers",
            "/parked",
            &access,
            &body,
        ));
    }
    let n = c.retry(key.map(|k| vec![k])).await?;
    Ok(Redirect::to(&format!("/parked?retried={n}")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this console: never another site (`//host`, `http:`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

pub async fn login_form(State(c): State<Console>, Query(q): Query<LoginQuery>) -> Response {
    if !c.guard.has_token() {
        return Redirect::to("/").into_response();
    }
    let next = safe_next(q.next.as_deref());
    html::page("Sign in", "", &Access::Denied, &pages::login(&next, false))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(State(c): State<Console>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    if !c.guard.is_token(form.token.trim()) {
        tracing::warn!("console: a sign-in with a wrong token was refused");
        let mut response = html::page("Sign in", "", &Access::Denied, &pages::login(&next, true));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let id = c.guard.sign_in(now_ms());
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = auth::session_cookie(&id).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LogoutForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(c): State<Console>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(refused) = refuse(&access, form.csrf.as_deref()) {
        return refused;
    }
    c.guard.sign_out(&headers);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = auth::cleared_cookie().parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

impl Console {
    /// Approves the held unenrolls of `cause` (all when `None`) as `console`.
    pub(super) async fn approve(&self, cause: Option<String>) -> Result<usize, Unavailable> {
        let n = self
            .store
            .call(move |s| s.approve(cause.as_deref(), "console", now_ms()))
            .await
            .map_err(|e| Unavailable(format!("{:#}", anyhow::Error::new(e))))?;
        tracing::info!(approved = n, "console: held unenrolls approved");
        self.wake.notify_one();
        Ok(n)
    }

    /// Re-queues parked customers (all when `None`) as `console`.
    pub(super) async fn retry(&self, keys: Option<Vec<CustomerKey>>) -> Result<usize, Unavailable> {
        let n = self
            .store
            .call(move |s| s.retry_parked(keys.as_deref(), "console", now_ms()))
            .await
            .map_err(|e| Unavailable(format!("{:#}", anyhow::Error::new(e))))?;
        tracing::info!(retried = n, "console: parked customers re-queued");
        self.wake.notify_one();
        Ok(n)
    }
}
