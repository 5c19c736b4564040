//! What a store, a trace file or a recording holds is input: any bytes,
//! read back as a stored run (its times, its id, its flow's text and
//! version) and as trace lines, must give a value or an error, never a
//! panic. The same readers `handoff runs`, `runs show`, `diff` and serve's
//! API and page use.
//!
//! Run (see docs/reliability.md, "Fuzzing"):
//! `cargo +nightly fuzz run read_back -- -max_total_time=600`

#![no_main]

use handoff::engine::checkpoint::DurableStatus;
use handoff::store::{Lease, StoredRun};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let number = |at: usize| {
        let mut b = [0u8; 8];
        for (i, slot) in b.iter_mut().enumerate() {
            *slot = data.get(at + i).copied().unwrap_or(0);
        }
        i64::from_le_bytes(b)
    };
    let text = String::from_utf8_lossy(data.get(32..).unwrap_or_default()).into_owned();
    let mut parts = text.splitn(4, '\u{0}');
    let id = parts.next().unwrap_or_default().to_string();
    let source = parts.next().unwrap_or_default().to_string();
    let state = parts.next().unwrap_or_default().to_string();
    let trace = parts.next().unwrap_or_default();
    let run = StoredRun {
        id: id.clone(),
        flow: id.clone(),
        flow_path: id.clone(),
        flow_hash: handoff::store::flow_hash(&source),
        flow_source: source,
        inputs: state.clone(),
        status: DurableStatus::Waiting,
        step: Some(id.clone()),
        wake_at_ms: Some(number(0)),
        steps_taken: number(8) as u64,
        state: state.clone(),
        outcome: Some(state),
        created_ms: number(16),
        updated_ms: number(24),
        lease: Some(Lease {
            owner: id.clone(),
            until_ms: number(0),
        }),
    };
    let _ = handoff::serve::api::summary(&run);
    let _ = handoff::store::durable::pinned_flow(&run);
    for at in [0, 8, 16, 24] {
        let _ = handoff::run::clock::rfc3339(handoff::run::clock::from_unix_ms(number(at)));
    }
    let _ = handoff::language::fields::clip(&id, (number(8) as usize) % 64);
    let style = handoff::cli::report::Style { color: false };
    for line in trace.lines() {
        if let Ok(event) = serde_json::from_str::<handoff::run::trace::TraceEvent>(line) {
            let _ = handoff::cli::report::pretty(&event, style, None);
            let _ = handoff::cli::report::jsonl(&event);
        }
    }
});
