//! Who may use the console: the token from `console.auth`, given once in the
//! sign-in form (which sets an `HttpOnly`, `SameSite=Strict` session cookie)
//! or with every API call as `Authorization: Bearer TOKEN`. A session carries
//! its own CSRF token, which every form that changes state must send back.
//! Without `console.auth` the console is read-only (and loopback only).

use crate::config::Secret;
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

pub const COOKIE: &str = "paystar_console";
/// A session ends this long after sign-in.
pub const SESSION_MS: i64 = 8 * 60 * 60 * 1000;
/// At most this many sessions are kept; the oldest goes first.
const MOST_SESSIONS: usize = 256;

/// What a request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// No `console.auth`: read, never act.
    ReadOnly,
    /// Signed in through the form; forms must carry this CSRF token.
    Session { csrf: String },
    /// `Authorization: Bearer` with the token: no ambient credential, no CSRF.
    Bearer,
    /// `console.auth` is set and the request did not prove it knows the token.
    Denied,
}

impl Access {
    pub fn may_act(&self) -> bool {
        matches!(self, Access::Session { .. } | Access::Bearer)
    }
}

struct Session {
    csrf: String,
    expires_ms: i64,
}

/// The token in force (a reload may change it, which ends every session) and
/// the signed-in sessions.
#[derive(Default)]
pub struct Guard {
    token: RwLock<Option<Secret>>,
    sessions: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Guard {
    pub fn new(token: Option<Secret>) -> Self {
        Self {
            token: RwLock::new(token),
            sessions: Mutex::default(),
        }
    }

    /// Puts a reloaded token in force; a changed token ends every session.
    pub fn set_token(&self, token: Option<Secret>) {
        let mut current = self.token.write().unwrap_or_else(PoisonError::into_inner);
        if *current != token {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        *current = token;
    }

    pub fn has_token(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether `given` is the token.
    pub fn is_token(&self, given: &str) -> bool {
        match &*self.token.read().unwrap_or_else(PoisonError::into_inner) {
            Some(token) => same(token.expose().as_bytes(), given.as_bytes()),
            None => false,
        }
    }

    /// Starts a session; returns its cookie value.
    pub fn sign_in(&self, now_ms: i64) -> String {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires_ms > now_ms);
        if sessions.len() >= MOST_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        let id = random_hex();
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_hex(),
                expires_ms: now_ms + SESSION_MS,
            },
        );
        id
    }

    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }

    /// What the request's credentials allow.
    pub fn access(&self, headers: &HeaderMap, now_ms: i64) -> Access {
        if !self.has_token() {
            return Access::ReadOnly;
        }
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return if self.is_token(bearer.trim()) {
                Access::Bearer
            } else {
                Access::Denied
            };
        }
        let Some(id) = cookie(headers, COOKIE) else {
            return Access::Denied;
        };
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(id) {
            Some(s) if s.expires_ms > now_ms => Access::Session {
                csrf: s.csrf.clone(),
            },
            _ => Access::Denied,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_MS / 1000
    )
}

pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, value.parse().unwrap());
        h
    }

    #[test]
    fn a_session_lasts_until_it_expires_or_the_token_changes() {
        let guard = Guard::new(Some(Secret::new("a-long-console-token")));
        assert_eq!(guard.access(&HeaderMap::new(), 0), Access::Denied);
        let id = guard.sign_in(1_000);
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        assert!(matches!(
            guard.access(&headers, 2_000),
            Access::Session { .. }
        ));
        assert_eq!(guard.access(&headers, 1_000 + SESSION_MS), Access::Denied);
        let id = guard.sign_in(3_000);
        let headers = with_cookie(&format!("{COOKIE}={id}"));
        guard.set_token(Some(Secret::new("a-long-console-token")));
        assert!(guard.access(&headers, 4_000).may_act(), "same token: kept");
        guard.set_token(Some(Secret::new("another-console-token")));
        assert_eq!(guard.access(&headers, 4_000), Access::Denied);
    }

    #[test]
    fn a_bearer_token_must_be_the_token_exactly() {
        let guard = Guard::new(Some(Secret::new("a-long-console-token")));
        let bearer = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
            h
        };
        assert_eq!(
            guard.access(&bearer("a-long-console-token"), 0),
            Access::Bearer
        );
        assert_eq!(
            guard.access(&bearer("a-long-console-toke"), 0),
            Access::Denied
        );
        assert_eq!(guard.access(&bearer(""), 0), Access::Denied);
        assert_eq!(Guard::new(None).access(&bearer("x"), 0), Access::ReadOnly);
    }
}
