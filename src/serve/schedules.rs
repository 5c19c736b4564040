//! The flows' `schedule:` triggers under `serve`: each slot starts a run
//! once, across every worker on the store and every restart.
//!
//! A slot's run is created under the slot as an idempotency key (scope
//! `schedule/{flow}`, key the slot's RFC 3339 time): the store lets one
//! create through, and every other worker that fires the same slot finds
//! that run. At a start, `catch_up: one` fires the latest slot already past
//! (a slot that ran before is found, not run again); `none` fires only
//! slots to come. With `overlap: skip`, a slot finds the flow's run from an
//! earlier slot still under way and starts nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::language::schedule::{CatchUp, Overlap, slot_text};
use crate::run::clock::unix_ms;
use crate::serve::api::{Started, create_run};
use crate::serve::app::App;
use crate::store::{IdempotencyKey, RunFilter};

/// How long the loop sleeps at most between looks: it also watches for a shutdown.
const LOOK: Duration = Duration::from_millis(250);

/// Fires every scheduled flow's slots until the worker stops.
pub async fn run(app: Arc<App>) {
    let names: Vec<String> = app
        .loaded()
        .flows
        .by_name
        .values()
        .filter(|s| s.flow.schedule.is_some())
        .map(|s| s.flow.name.clone())
        .collect();
    let now = SystemTime::now();
    let mut next: BTreeMap<String, SystemTime> = BTreeMap::new();
    for name in &names {
        let loaded = app.loaded();
        let Some(schedule) = loaded
            .flows
            .by_name
            .get(name)
            .and_then(|s| s.flow.schedule.as_ref())
        else {
            continue;
        };
        if schedule.catch_up == CatchUp::One
            && let Some(slot) = schedule.latest_until(now)
        {
            fire(&app, name, slot).await;
        }
        if let Some(n) = schedule.next_after(now) {
            next.insert(name.clone(), n);
            app.schedules.update(name, |f| f.next = Some(n));
        }
    }
    while !app.worker.stopping() {
        let now = SystemTime::now();
        // A reload (SIGHUP) may add, change or drop schedules: a new one
        // starts at its next slot, a dropped one fires no more.
        let loaded = app.loaded();
        next.retain(|name, _| {
            loaded
                .flows
                .by_name
                .get(name)
                .is_some_and(|s| s.flow.schedule.is_some())
        });
        for s in loaded.flows.by_name.values() {
            if let Some(schedule) = &s.flow.schedule
                && !next.contains_key(&s.flow.name)
                && let Some(n) = schedule.next_after(now)
            {
                next.insert(s.flow.name.clone(), n);
                app.schedules.update(&s.flow.name, |f| f.next = Some(n));
            }
        }
        let due: Vec<(String, SystemTime)> = next
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, at)| (n.clone(), *at))
            .collect();
        for (name, slot) in due {
            fire(&app, &name, slot).await;
            let schedule = loaded
                .flows
                .by_name
                .get(&name)
                .and_then(|s| s.flow.schedule.as_ref());
            // After a stall (a suspended machine), slots long past are missed
            // ones: the catch-up policy speaks for them, not this loop.
            let after = if SystemTime::now()
                .duration_since(slot)
                .is_ok_and(|late| late > Duration::from_secs(60))
            {
                SystemTime::now()
            } else {
                slot
            };
            match schedule.and_then(|s| s.next_after(after)) {
                Some(n) => {
                    next.insert(name.clone(), n);
                    app.schedules.update(&name, |f| f.next = Some(n));
                }
                None => {
                    next.remove(&name);
                }
            }
        }
        let wait = next
            .values()
            .min()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(LOOK)
            .min(LOOK);
        tokio::time::sleep(wait).await;
    }
}

/// Starts the run of one slot, unless another worker did, or the flow's
/// previous run is still under way and it may not overlap.
async fn fire(app: &App, name: &str, slot: SystemTime) {
    let loaded = app.loaded();
    let Some(served) = loaded.flows.by_name.get(name) else {
        return;
    };
    let Some(schedule) = served.flow.schedule.as_ref() else {
        return;
    };
    let text = slot_text(slot);
    if schedule.overlap == Overlap::Skip {
        // A run from an earlier slot (created before this one came) still runs.
        let filter = RunFilter {
            flow: Some(name.to_string()),
            unfinished: true,
            limit: Some(50),
            ..RunFilter::default()
        };
        let slot_ms = unix_ms(slot);
        if let Ok(runs) = app.worker.runs.list(&filter).await
            && let Some(busy) = runs.iter().find(|r| r.created_ms < slot_ms)
        {
            app.schedules.update(name, |f| f.skipped += 1);
            app.worker.say(format!(
                "schedule of flow `{name}`: slot {text} skipped, run {} is still under way",
                busy.id
            ));
            return;
        }
    }
    let inputs = match schedule.inputs_for(&served.flow.env, slot) {
        Ok(i) => Value::Object(i.into_iter().collect()),
        Err(e) => {
            app.worker
                .say(format!("schedule of flow `{name}`: slot {text}: {e}"));
            return;
        }
    };
    let key = IdempotencyKey {
        scope: format!("schedule/{name}"),
        key: text.clone(),
        fingerprint: None,
    };
    match create_run(app, served, inputs, Some(key), None, None).await {
        Ok(Started::New(id, _)) => {
            app.schedules.update(name, |f| {
                f.fired += 1;
                f.last_slot = Some(slot);
                f.last_run = Some(id.clone());
            });
            app.worker.say(format!(
                "schedule of flow `{name}`: slot {text} started run {id}"
            ));
        }
        // Another worker fired it, or this one before a restart.
        Ok(Started::Existing(run)) => app.schedules.update(name, |f| {
            f.last_slot = Some(slot);
            f.last_run = Some(run.id.clone());
        }),
        Err(_) => app.worker.say(format!(
            "schedule of flow `{name}`: slot {text} could not start a run"
        )),
    }
}
