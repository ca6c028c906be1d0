//! The systemd notify protocol (`Type=notify`, `WatchdogSec=`): a datagram to
//! `$NOTIFY_SOCKET`. Outside systemd every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let target =
            env("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(|s| match s.strip_prefix('@') {
                    Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                    None => Target::Path(PathBuf::from(s)),
                });
        let socket = target.and_then(|t| UnixDatagram::unbound().ok().map(|s| (s, t)));
        let watchdog = env("WATCHDOG_USEC")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1`: half the configured watchdog interval.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    pub fn notify(&self, state: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
            }
        };
        if let Err(err) = sent {
            tracing::warn!(error = %err, "cannot notify systemd");
        }
    }
}
