//! The worker's log on stderr: a line per event, as text (`run 01a2… (flow)
//! succeeded: …`) or, with `--log-format json`, one JSON object per line
//! (`time` RFC 3339 in UTC, `level`, `target`, `message`, and `run` and `flow`
//! where the line is about a run). `HANDOFF_LOG` picks what is written, with
//! the usual syntax: a default level, then `target=level` for parts of it
//! (`info,handoff::serve::schedules=warn`); the longest matching target wins.
//! No line carries a field value: they say what happened, by name.

use std::io::Write as _;

/// How important a line is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    /// Nothing at all (`HANDOFF_LOG=off`).
    Off,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            "off" => Level::Off,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Off => "off",
        }
    }
}

/// Text for people, or JSON lines for a log shipper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What is written: a default level, and levels for targets.
#[derive(Debug, Clone)]
pub struct Filter {
    default: Level,
    /// `(target, level)`, longest target first.
    targets: Vec<(String, Level)>,
}

impl Filter {
    /// `HANDOFF_LOG`'s syntax; `Err` names the part it cannot read.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut filter = Filter {
            default: Level::Info,
            targets: Vec::new(),
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                format!(
                    "`{part}` in HANDOFF_LOG is not a level (trace, debug, info, warn, error, off) or `target=level`"
                )
            };
            match part.split_once('=') {
                Some((target, level)) => {
                    let level = Level::parse(level).ok_or_else(bad)?;
                    filter.targets.push((target.trim().to_string(), level));
                }
                None => filter.default = Level::parse(part).ok_or_else(bad)?,
            }
        }
        filter.targets.sort_by_key(|t| std::cmp::Reverse(t.0.len()));
        Ok(filter)
    }

    /// Whether a line of `level` from `target` is written.
    pub fn allows(&self, target: &str, level: Level) -> bool {
        let wanted = self
            .targets
            .iter()
            .find(|(t, _)| {
                target == t
                    || target
                        .strip_prefix(t.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l);
        wanted != Level::Off && level >= wanted
    }
}

/// The log: its format and filter.
#[derive(Debug, Clone)]
pub struct Log {
    pub format: Format,
    pub filter: Filter,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            format: Format::Text,
            filter: Filter::parse("info").unwrap_or(Filter {
                default: Level::Info,
                targets: Vec::new(),
            }),
        }
    }
}

impl Log {
    /// Writes one line, if the filter lets it through. `run`: the run and
    /// its flow it is about.
    /// A line; a run's names it, its flow and its trace (`trace_id`, as
    /// exported spans and JSONL traces carry it).
    pub fn line(
        &self,
        level: Level,
        target: &str,
        message: &str,
        run: Option<(&str, &str, &[u8; 16])>,
    ) {
        if !self.filter.allows(target, level) {
            return;
        }
        let text = match self.format {
            Format::Text => match level {
                Level::Warn => format!("warning: {message}\n"),
                Level::Error => format!("error: {message}\n"),
                _ => format!("{message}\n"),
            },
            Format::Json => {
                let mut object = serde_json::json!({
                    "time": crate::run::clock::rfc3339(std::time::SystemTime::now()),
                    "level": level.name(),
                    "target": target,
                    "message": message,
                });
                if let Some((id, flow, trace)) = run {
                    object["run"] = id.into();
                    object["flow"] = flow.into();
                    object["trace_id"] = crate::run::otel::ids::hex(trace).into();
                }
                format!("{object}\n")
            }
        };
        // One write a line, so lines from several tasks never interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    pub fn info(&self, target: &str, message: &str) {
        self.line(Level::Info, target, message, None);
    }

    pub fn warn(&self, target: &str, message: &str) {
        self.line(Level::Warn, target, message, None);
    }

    pub fn error(&self, target: &str, message: &str) {
        self.line(Level::Error, target, message, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_target_decides() {
        let f = Filter::parse("info,handoff::store=debug,handoff::serve::schedules=off").unwrap();
        assert!(f.allows("handoff::serve::worker", Level::Info));
        assert!(!f.allows("handoff::serve::worker", Level::Debug));
        assert!(f.allows("handoff::store::sql", Level::Debug));
        assert!(
            !f.allows("handoff::storefront", Level::Debug),
            "a target is a path, not a prefix of text"
        );
        assert!(!f.allows("handoff::serve::schedules", Level::Error));
        let quiet = Filter::parse("warn").unwrap();
        assert!(!quiet.allows("handoff::serve", Level::Info));
        assert!(quiet.allows("handoff::serve", Level::Warn));
        assert!(Filter::parse("loud").is_err());
        assert!(Filter::parse("handoff=shouty").is_err());
    }
}
