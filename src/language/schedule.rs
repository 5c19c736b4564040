//! `schedule:`: a flow that `handoff serve` starts on a cron pattern, in a
//! time zone, with an overlap policy and a catch-up policy.
//!
//! Slots are instants: a pattern is read on the zone's wall clock (croner,
//! after the Open Cron Pattern Specification), so a daily `30 2 * * *` in
//! Europe/Berlin runs once on the day the clocks skip 02:30 (at 03:00) and
//! once on the day 02:30 comes twice (the first). The worker starts each
//! slot's run under the slot as an idempotency key: once, whatever the
//! number of workers and restarts.

use std::sync::Arc;
use std::time::SystemTime;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::did_you_mean;
use crate::language::raw::Node;
use crate::language::source::Span;
use crate::language::template::{Scope, Template};

pub const KEYS: [&str; 5] = ["cron", "timezone", "overlap", "catch_up", "inputs"];
pub const OVERLAPS: [&str; 2] = ["skip", "allow"];
pub const CATCH_UPS: [&str; 2] = ["none", "one"];

/// What to do with a slot while the flow's previous run is still under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// No run for that slot.
    Skip,
    Allow,
}

/// What to do at a start with the slots missed while no worker ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    None,
    /// Run the latest missed slot, once.
    One,
}

#[derive(Debug)]
pub struct Schedule {
    pub pattern: String,
    cron: croner::Cron,
    pub timezone: String,
    zone: jiff::tz::TimeZone,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Input fields from the slot's time (`{{ slot }}`, RFC 3339 in UTC).
    pub inputs: IndexMap<String, Template>,
    pub span: Span,
}

impl Schedule {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Schedule> {
        let body = cx.body(node, "`schedule`", &KEYS, &["cron"])?;
        let cron_node = body.get("cron")?;
        let pattern = cx.string(cron_node, "a cron pattern")?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&pattern);
        let cron = match cron {
            Ok(c) => Some(c),
            Err(e) => {
                cx.error_help(
                    cron_node.span,
                    format!("`{pattern}` is not a cron pattern: {e}"),
                    "five fields (`*/5 * * * *`: minute, hour, day, month, weekday), or six with seconds first",
                );
                None
            }
        };
        let zone = match body.get("timezone") {
            Some(n) => {
                cx.string(n, "a time zone")
                    .and_then(|name| match jiff::tz::TimeZone::get(&name) {
                        Ok(z) => Some((name, z)),
                        Err(_) => {
                            let names: Vec<String> =
                                jiff::tz::db().available().map(|n| n.to_string()).collect();
                            let help = did_you_mean(&name, names.iter().map(String::as_str))
                                .unwrap_or_else(|| {
                                    "an IANA time zone such as `Europe/Berlin`, or `UTC`"
                                        .to_string()
                                });
                            cx.error_help(n.span, format!("unknown time zone `{name}`"), help);
                            None
                        }
                    })
            }
            None => Some(("UTC".to_string(), jiff::tz::TimeZone::UTC)),
        };
        let overlap = one_of(cx, body.get("overlap"), "overlap", &OVERLAPS).map(|w| match w {
            Some("allow") => Overlap::Allow,
            _ => Overlap::Skip,
        });
        let catch_up = one_of(cx, body.get("catch_up"), "catch_up", &CATCH_UPS).map(|w| match w {
            Some("one") => CatchUp::One,
            _ => CatchUp::None,
        });
        let mut inputs = IndexMap::new();
        if let Some(n) = body.get("inputs") {
            let Some(entries) = n.as_map() else {
                cx.error(
                    n.span,
                    "`schedule.inputs` maps input fields to templates over `slot`",
                );
                return None;
            };
            for (key, value) in entries {
                let Some(name) = key.as_str() else {
                    cx.not_text(key, "`schedule.inputs`");
                    return None;
                };
                if !cx.fields.get(name).is_some_and(|f| f.input) {
                    cx.error_help(
                        key.span,
                        format!("`{name}` is not an input field"),
                        "a schedule fills input fields: declare it with `input: true`",
                    );
                    return None;
                }
                let t = cx.template_over(
                    value,
                    &["slot"],
                    "a schedule's inputs see the slot's time as `slot`, not the flow's fields",
                )?;
                inputs.insert(name.to_string(), t);
            }
        }
        // Nobody calls a scheduled run: every input needs a value without one.
        let missing: Vec<(String, Span)> = cx
            .fields
            .values()
            .filter(|f| f.is_required() && !inputs.contains_key(&f.name))
            .map(|f| (f.name.clone(), f.span))
            .collect();
        for (name, span) in &missing {
            let d = crate::language::diagnostic::Diagnostic::error(format!(
                "input `{name}` has no value when the schedule starts a run"
            ))
            .at(&cx.source, *span)
            .also(node.span, "a scheduled run has no caller to give it")
            .help("give it a `default`, an `env:`, or a value under `schedule.inputs`");
            cx.push(d);
        }
        if !missing.is_empty() {
            return None;
        }
        let (timezone, zone) = zone?;
        Some(Schedule {
            pattern,
            cron: cron?,
            timezone,
            zone,
            overlap: overlap?,
            catch_up: catch_up?,
            inputs,
            span: node.span,
        })
    }

    fn zoned(&self, t: SystemTime) -> Option<jiff::Zoned> {
        let ts = jiff::Timestamp::try_from(t).ok()?;
        Some(ts.to_zoned(self.zone.clone()))
    }

    /// The first slot after `t`.
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let next = self
            .cron
            .find_next_occurrence(&self.zoned(t)?, false)
            .ok()?;
        Some(SystemTime::from(next.timestamp()))
    }

    /// The latest slot at or before `t`.
    pub fn latest_until(&self, t: SystemTime) -> Option<SystemTime> {
        let prev = self
            .cron
            .find_previous_occurrence(&self.zoned(t)?, true)
            .ok()?;
        Some(SystemTime::from(prev.timestamp()))
    }

    /// A slot's inputs, in the order the flow lists them.
    pub fn inputs_for(
        &self,
        env: &minijinja::Environment<'static>,
        slot: SystemTime,
    ) -> Result<IndexMap<String, Value>, String> {
        let mut names = IndexMap::new();
        names.insert("slot".to_string(), Value::String(slot_text(slot)));
        let scope = Scope::new(Arc::new(names));
        let mut out = IndexMap::new();
        for (name, template) in &self.inputs {
            let value = template
                .render(env, &scope)
                .map_err(|e| format!("`schedule.inputs.{name}`: {e}"))?;
            out.insert(name.clone(), value);
        }
        Ok(out)
    }
}

/// A slot as text: RFC 3339 in UTC, to the second. The slot's input, and
/// its idempotency key.
pub fn slot_text(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// One of `words`, or nothing: `Some(None)` when the key is absent.
fn one_of<'w>(
    cx: &mut Analyzer,
    node: Option<&Node>,
    key: &str,
    words: &[&'w str],
) -> Option<Option<&'w str>> {
    let Some(node) = node else {
        return Some(None);
    };
    let text = node.as_str().unwrap_or_default();
    match words.iter().find(|w| **w == text) {
        Some(w) => Some(Some(*w)),
        None => {
            cx.error_help(
                node.span,
                format!("`{key}` is one of {}", list(words)),
                did_you_mean(text, words.iter().copied())
                    .unwrap_or_else(|| format!("write `{}`", words[0])),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn schedule(pattern: &str, zone: &str) -> Schedule {
        Schedule {
            pattern: pattern.to_string(),
            cron: croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .build()
                .parse(pattern)
                .unwrap(),
            timezone: zone.to_string(),
            zone: jiff::tz::TimeZone::get(zone).unwrap(),
            overlap: Overlap::Skip,
            catch_up: CatchUp::None,
            inputs: IndexMap::new(),
            span: Span::new(0, 0),
        }
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<jiff::Timestamp>().unwrap())
    }

    /// Every slot from `from` to `to`, walked as the worker walks them.
    fn slots(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        let (mut t, end) = (at(from), at(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(t).filter(|n| *n <= end) {
            out.push(slot_text(next));
            t = next;
        }
        out
    }

    #[test]
    fn a_daily_slot_runs_once_on_both_days_the_clocks_change() {
        let s = schedule("30 2 * * *", "Europe/Berlin");
        // 29 March 2026: 02:00 becomes 03:00, so 02:30 never comes: 03:00 CEST once.
        let spring = slots(&s, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
        assert_eq!(spring.len(), 2, "{spring:?}");
        assert_eq!(
            spring[0], "2026-03-29T01:00:00Z",
            "03:00 CEST, the first time after the gap"
        );
        assert_eq!(spring[1], "2026-03-30T00:30:00Z", "02:30 CEST");
        // 25 October 2026: 03:00 becomes 02:00, so 02:30 comes twice: once.
        let autumn = slots(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
        assert_eq!(
            autumn,
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            "02:30 CEST (the first of the two), then 02:30 CET"
        );
    }

    #[test]
    fn an_interval_neither_skips_nor_doubles_a_slot_across_the_changes() {
        let s = schedule("*/30 * * * *", "Europe/Berlin");
        for (from, to) in [
            ("2026-03-28T22:00:00Z", "2026-03-29T04:00:00Z"),
            ("2026-10-24T22:00:00Z", "2026-10-25T04:00:00Z"),
        ] {
            let got = slots(&s, from, to);
            // Six real hours: twelve half hours, evenly spaced in real time.
            assert_eq!(got.len(), 12, "{got:?}");
            let times: Vec<SystemTime> = got.iter().map(|t| at(t)).collect();
            for pair in times.windows(2) {
                assert_eq!(
                    pair[1].duration_since(pair[0]).unwrap(),
                    Duration::from_secs(1800),
                    "{got:?}"
                );
            }
        }
    }

    #[test]
    fn the_latest_slot_until_now_is_the_one_to_catch_up() {
        let s = schedule("0 * * * *", "UTC");
        assert_eq!(
            slot_text(s.latest_until(at("2026-12-04T10:59:59Z")).unwrap()),
            "2026-12-04T10:00:00Z"
        );
        assert_eq!(
            slot_text(s.latest_until(at("2026-12-04T11:00:00Z")).unwrap()),
            "2026-12-04T11:00:00Z"
        );
    }
}
