//! `timer`: waits a `duration` or `until` a time, on the run's clock. A real
//! run sleeps; a dry run moves the virtual clock, so a 30-minute wait costs
//! nothing.

use std::time::{Duration, SystemTime};

use crate::language::analyzer::Analyzer;
use crate::language::keys::{Key, Shape, names, opt};
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError, shown_text};
use crate::run::trace::EventKind;

/// The longest single wait: a typo like `30d` should not park a worker for a month.
const MAX_WAIT: Duration = crate::run::clock::MAX_TIMER;

#[derive(Debug)]
pub enum Timer {
    Duration(Template),
    Until(Template),
}

/// What `timer` takes: one of the two.
pub const KEYS: &[Key] = &[
    opt(
        "duration",
        Shape::Duration,
        "How long to wait: `5s`, `30m`, `1h 30m`; at most 7 days.",
    ),
    opt(
        "until",
        Shape::Template,
        "A UTC time to wait until, such as `2025-06-02T09:30:00Z`.",
    ),
];

impl Timer {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Timer> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`timer`", &keys, &required)?;
        match (body.get("duration"), body.get("until")) {
            (Some(d), None) => {
                let t = cx.template(d)?;
                if t.is_literal() {
                    let d = cx.duration(d)?;
                    if d > MAX_WAIT {
                        cx.error(node.span, "a timer waits at most 7 days");
                        return None;
                    }
                }
                Some(Timer::Duration(t))
            }
            (None, Some(u)) => {
                let t = cx.template(u)?;
                if t.is_literal()
                    && humantime::parse_rfc3339_weak(&u.scalar_text().unwrap_or_default()).is_err()
                {
                    cx.error(
                        u.span,
                        "`until` takes a UTC time like `2025-06-02T09:30:00Z`",
                    );
                    return None;
                }
                Some(Timer::Until(t))
            }
            _ => {
                cx.error(node.span, "a `timer` takes either `duration` or `until`");
                None
            }
        }
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let wait = match self {
            Timer::Duration(t) => {
                let (text, tainted) = cx.render_text(t)?;
                let shown = cx.data(&shown_text(text.clone(), tainted));
                crate::language::duration::parse_duration(&text)
                    .map_err(|e| StepError::new(format!("`duration` is `{shown}`: {e}")))?
            }
            Timer::Until(t) => {
                let (text, tainted) = cx.render_text(t)?;
                let shown = cx.data(&shown_text(text.clone(), tainted));
                let until: SystemTime =
                    humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
                        StepError::new(format!(
                            "`until` is `{shown}`, not a UTC time like `2025-06-02T09:30:00Z`"
                        ))
                    })?;
                until
                    .duration_since(cx.clock.now())
                    .unwrap_or(Duration::ZERO)
            }
        };
        if wait > MAX_WAIT {
            return Err(StepError::new("a timer waits at most 7 days"));
        }
        let wake_at = cx.clock.now() + wait;
        cx.emit(EventKind::TimerStarted {
            duration_ms: wait.as_millis() as u64,
            wake_at: crate::run::clock::rfc3339(wake_at),
        });
        // The engine waits: a durable run is a row with `wake_at` meanwhile.
        Ok(Next::WaitUntil(wake_at))
    }
}
