//! Loading and checking a flow, from any bytes: the result is a flow or
//! diagnostics (rendered with their code frames), never a panic. When the
//! bytes make a valid flow, they are also loaded as a mock file against it.
//!
//! Run: `cargo +nightly fuzz run check_flow -- -max_total_time=600`
//! (see docs/cli.md, "Fuzzing").

#![no_main]

use handoff::analyze::analyze;
use handoff::diagnostic::render_all;
use handoff::mock::Mock;
use handoff::source::Source;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = Source::new("fuzz.yaml", text.as_ref());
    match analyze(&source) {
        Ok(checked) => {
            let _ = render_all(&checked.warnings, false);
            if let Err(diagnostics) = Mock::load(&source, &checked.flow) {
                let _ = render_all(&diagnostics, false);
            }
        }
        Err(diagnostics) => {
            let _ = render_all(&diagnostics, false);
        }
    }
});
