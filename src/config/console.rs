//! The `console` section (SPEC §13): the operations console's own listener
//! and the token that guards it.

use super::SecretSource;
use super::walk::{self, Walker};
use std::net::SocketAddr;
use std::str::FromStr;

/// `console`: off unless `console.listen` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// `console.listen`: never the webhooks listener's address.
    pub listen: SocketAddr,
    /// `console.auth.token_env` / `token_file`. Without it the console is
    /// read-only and only a loopback address is allowed.
    pub token: Option<SecretSource>,
}

/// The shortest token accepted: a guessable token would guard approvals.
pub const MIN_TOKEN_LEN: usize = 16;

pub(super) fn build(
    w: &mut Walker,
    root: &walk::Section<'_>,
    server_listen: SocketAddr,
) -> Option<ConsoleConfig> {
    if !w.present(root, "console") {
        return None;
    }
    let c = w.section(root, "console", &["listen", "auth"]);
    let token = if w.present(&c, "auth") {
        let auth = w.section(&c, "auth", &["token_env", "token_file", "token"]);
        let token = w.secret(&auth, "token");
        if token.is_none() && !w.present(&auth, "token") {
            w.error(
                "console.auth",
                "set token_env (an environment variable) or token_file (a file, e.g. from systemd LoadCredential=) holding the console's token",
            );
        }
        token
    } else {
        None
    };
    let text = w.string(&c, "listen")?;
    let Ok(listen) = SocketAddr::from_str(&text) else {
        w.error(
            "console.listen",
            format!("{text:?} is not an address:port such as 127.0.0.1:8081"),
        );
        return None;
    };
    if listen.port() != 0 && listen.port() == server_listen.port() {
        w.error(
            "console.listen",
            format!(
                "{listen} is the port of server.listen ({server_listen}); the console needs a listener of its own, e.g. 127.0.0.1:8081"
            ),
        );
    }
    if !listen.ip().is_loopback() && token.is_none() && !w.present(&c, "auth") {
        w.error(
            "console.auth",
            format!(
                "is required when console.listen ({listen}) is not a loopback address: set console.auth.token_file or token_env, or listen on 127.0.0.1"
            ),
        );
    }
    Some(ConsoleConfig { listen, token })
}
