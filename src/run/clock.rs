//! Time, injected: the system clock for real runs, a virtual one for dry runs.
//!
//! The engine never reads global time. A [`VirtualClock`] jumps forward when a
//! timer or a scripted delay asks it to, which is how a 30-minute poll loop
//! replays in milliseconds, deterministically.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Clock: Send + Sync {
    /// Time since the clock was made: what the trace shows.
    fn elapsed(&self) -> Duration;
    /// Wall-clock time now, for `timer: { until: … }`.
    fn now(&self) -> SystemTime;
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
    fn is_virtual(&self) -> bool;
    /// [`Clock::elapsed`] and [`Clock::now`] at one instant: every trace
    /// event reads both.
    fn read(&self) -> (Duration, SystemTime) {
        (self.elapsed(), self.now())
    }
    /// How often a long timer says it is still waiting, when anyone watches
    /// a log rather than a countdown.
    fn heartbeat(&self) -> Option<Duration> {
        None
    }
}

/// How often a real run that does not print to a terminal says a long
/// timer is still waiting, so a log watcher can tell waiting from hung.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// The real clock. On a terminal it shows a countdown while a timer waits.
pub struct SystemClock {
    start: Instant,
    countdown: bool,
    heartbeat: Option<Duration>,
}

impl SystemClock {
    /// A countdown on stderr when it is a terminal; a heartbeat in the
    /// trace when stdout is not.
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
            countdown: std::io::stderr().is_terminal(),
            heartbeat: (!std::io::stdout().is_terminal()).then_some(HEARTBEAT),
        }
    }
}

impl SystemClock {
    /// For a run the worker service runs: no countdown and no heartbeat (its
    /// timers are rows, not sleeps), and time counted from when the run
    /// started, which may be before this process did.
    pub fn quiet(started: SystemTime) -> SystemClock {
        let ago = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        SystemClock {
            start: Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
            countdown: false,
            heartbeat: None,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // tokio's timers tick once a millisecond: a zero wait (`timer: 0s`,
            // `Retry-After: 0`) would still wait for the next tick. It only
            // gives the runtime its turn (Ctrl-C, other runs).
            if duration.is_zero() {
                tokio::task::yield_now().await;
                return;
            }
            if !self.countdown || duration < Duration::from_secs(2) {
                tokio::time::sleep(duration).await;
                return;
            }
            let deadline = tokio::time::Instant::now() + duration;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut err = std::io::stderr();
                let _ = write!(err, "\r\x1b[2K  waiting {}s …", left.as_secs() + 1);
                let _ = err.flush();
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        })
    }

    fn is_virtual(&self) -> bool {
        false
    }

    fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }
}

/// A clock that only moves when asked to. Sleeping returns at once.
pub struct VirtualClock {
    start_wall: SystemTime,
    offset: Mutex<Duration>,
    heartbeat: Option<Duration>,
}

impl VirtualClock {
    pub fn new(start_wall: SystemTime) -> VirtualClock {
        VirtualClock {
            start_wall,
            offset: Mutex::new(Duration::ZERO),
            heartbeat: None,
        }
    }

    /// Rehearses a real run's heartbeat, on virtual time.
    pub fn with_heartbeat(mut self, every: Duration) -> VirtualClock {
        self.heartbeat = Some(every);
        self
    }

    /// A fixed start (2025-06-02T00:00:00Z), so tests are deterministic.
    pub fn fixed() -> VirtualClock {
        VirtualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_822_400))
    }

    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }
}

impl Clock for VirtualClock {
    fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> SystemTime {
        self.start_wall + self.elapsed()
    }

    fn read(&self) -> (Duration, SystemTime) {
        let elapsed = self.elapsed();
        (elapsed, self.start_wall + elapsed)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }

    fn is_virtual(&self) -> bool {
        true
    }

    fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }
}

/// The longest a `timer` step waits.
pub const MAX_TIMER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const MAX_UNIX_MS: i64 = 253_402_300_799_999;

/// A time read back as Unix milliseconds (from a store, a trace): clamped
/// to what RFC 3339 can write, so a damaged value cannot overflow anything.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_UNIX_MS) as u64)
}

/// A wall-clock time as RFC 3339 in UTC, with milliseconds. A time outside
/// 1970 to 9999 is written as the nearest end of that range.
pub fn rfc3339(time: SystemTime) -> String {
    let ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(MAX_UNIX_MS as u128) as i64);
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

/// Formats a duration the way flows write them: `5s`, `1m30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = ms % 1000;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || frac > 0 {
        if frac > 0 {
            out.push_str(format!("{s}.{frac:03}").trim_end_matches('0'));
            out.push('s');
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_moves_only_when_told() {
        let clock = VirtualClock::fixed();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        futures_lite_block_on(clock.sleep(Duration::from_secs(1800)));
        assert_eq!(clock.elapsed(), Duration::from_secs(1800));
    }

    fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
