//! Loading and checking a flow, from any bytes: the result is a flow or
//! diagnostics (rendered with their code frames), never a panic. When the
//! bytes make a valid flow, they are also loaded as a mock file and as an
//! input file against it, and the flow is dry-run on the virtual clock, so
//! templates render (and hit their limits) too.
//!
//! Run (see docs/reliability.md, "Fuzzing"):
//! `cargo +nightly fuzz run check_flow -- -max_total_time=600 -max_len=131072 -dict=fuzz/flow.dict`

#![no_main]

use std::sync::Arc;

use handoff::engine::Engine;
use handoff::language::analyze::analyze;
use handoff::language::diagnostic::render_all;
use handoff::language::source::Source;
use handoff::run::clock::VirtualClock;
use handoff::run::inputs::{Inputs, initial_state};
use handoff::run::mock::{Mock, MockTransport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = Source::new("fuzz.yaml", text.as_ref());
    let checked = match analyze(&source) {
        Ok(checked) => checked,
        Err(diagnostics) => {
            let _ = render_all(&diagnostics, false);
            return;
        }
    };
    let flow = checked.flow;
    let _ = render_all(&checked.warnings, false);
    let mock = match Mock::load(&source, &flow) {
        Ok(mock) => mock,
        Err(diagnostics) => {
            let _ = render_all(&diagnostics, false);
            Mock {
                entries: Vec::new(),
            }
        }
    };
    let mut inputs = Inputs::default();
    if let Ok(node) = handoff::run::inputs::parse_input_file(&source) {
        inputs.file = Some((source.clone(), node));
    }
    let state = match initial_state(&flow, &inputs, &|_| Some("fuzz-secret-value".to_string())) {
        Ok(state) => state,
        Err(diagnostics) => {
            let _ = render_all(&diagnostics, false);
            return;
        }
    };
    let clock = Arc::new(VirtualClock::fixed());
    let transport = MockTransport::new(mock, clock.clone());
    let engine = Engine {
        run_id: "fuzz".to_string(),
        flow: &flow,
        clock: &*clock,
        transport: &transport,
        dry_run: true,
        durable: None,
    };
    let mut observer = |e: &handoff::run::trace::TraceEvent| {
        let _ = handoff::cli::report::jsonl(e);
    };
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() {
        let _ = rt.block_on(engine.run(state, &mut observer));
    }
});
