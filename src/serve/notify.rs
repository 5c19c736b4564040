//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): the worker says
//! `READY=1` once it listens, `RELOADING=1` … `READY=1` around a SIGHUP
//! reload, `STOPPING=1` on its way out, and `WATCHDOG=1` every half of the
//! watchdog's period for as long as its store answers, so systemd restarts a
//! worker whose store has hung it. Datagrams to `$NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace); without it, nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    /// How often to say `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is
    /// meant for this process (`$WATCHDOG_PID`).
    pub watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Notifier {
        let socket = env("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .and_then(|path| UnixDatagram::unbound().ok().map(|s| (s, path)));
        let for_us =
            env("WATCHDOG_PID").is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = env("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && socket.is_some())
            .map(|u| Duration::from_micros(u / 2));
        Notifier { socket, watchdog }
    }

    /// Whether systemd listens.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one state (`READY=1\nSTATUS=…`); a failure is not the worker's
    /// concern, and is dropped.
    pub fn send(&self, state: &str) {
        let Some((socket, path)) = &self.socket else {
            return;
        };
        let _ = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
            }
            None => socket.send_to(state.as_bytes(), path),
        };
    }
}
