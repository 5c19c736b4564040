//! Trace and span ids a run's id decides, so that every process that runs a
//! part of one run, and every replay of it, names its spans alike.
//!
//! The trace id is the run id's 16 bytes (a UUIDv7: the run id is the trace
//! id a backend searches for), or the caller's trace id when the run was
//! started with a W3C `traceparent`. A span's id is a hash of the run id and
//! the sequence number of the event that opens it: the run's own span is
//! number 0, a step's span the number of its `step_started`, a request's the
//! number of its `request_sent`.

use sha2::{Digest, Sha256};

use crate::run::trace::{EventKind, TraceEvent};

/// A caller's trace context, as a `traceparent` header carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl Parent {
    /// Reads a `traceparent` (W3C Trace Context, version 00; a later
    /// version's first four parts are read as the specification says).
    /// `None` when it is not one: an invalid header is ignored, never an error.
    pub fn parse(text: &str) -> Option<Parent> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        if version.len() != 2
            || version.eq_ignore_ascii_case("ff")
            || (version == "00" && rest.is_some())
            || flags.len() != 2
        {
            return None;
        }
        let is_lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if ![version, trace, span, flags]
            .iter()
            .all(|s| is_lower_hex(s))
        {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Parent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn header(&self) -> String {
        traceparent(&self.trace_id, &self.span_id, self.sampled)
    }
}

/// A `traceparent` header's value.
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> String {
    format!(
        "00-{}-{}-{}",
        hex(trace_id),
        hex(span_id),
        if sampled { "01" } else { "00" }
    )
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hexadecimal, as W3C and OTLP's JSON write ids.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Which traces are exported, as `OTEL_TRACES_SAMPLER` names it. The
/// decision depends only on the trace id (and the caller's flag), so every
/// process that runs a part of a run decides alike.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// This share of traces, by their id's random part.
    Ratio(f64),
    /// The caller's decision when a `traceparent` started the run, else this.
    ParentBased(Box<Sampler>),
}

impl Sampler {
    pub fn sampled(&self, trace_id: &[u8; 16], parent: Option<&Parent>) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(r) => {
                // The last 7 bytes: random in a UUIDv7 and in W3C's random ids.
                let mut low = [0u8; 8];
                low[1..].copy_from_slice(&trace_id[9..]);
                let value = u64::from_be_bytes(low) as f64;
                value < r * (1u64 << 56) as f64
            }
            Sampler::ParentBased(root) => match parent {
                Some(p) => p.sampled,
                None => root.sampled(trace_id, None),
            },
        }
    }

    pub fn parse(name: &str, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG is a ratio from 0 to 1, found `{a}`"
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::Ratio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::Ratio(ratio()?))),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER `{other}` is not one handoff knows: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ));
            }
        })
    }
}

/// One run's ids.
#[derive(Debug, Clone)]
pub struct TraceIds {
    run: String,
    pub trace_id: [u8; 16],
    /// The caller's span, when a `traceparent` started the run.
    pub parent: Option<Parent>,
}

impl TraceIds {
    pub fn new(run: &str, parent: Option<Parent>) -> TraceIds {
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => trace_id_of(run),
        };
        TraceIds {
            run: run.to_string(),
            trace_id,
            parent,
        }
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// The span an event numbered `seq` opens; 0 is the run's own.
    pub fn span(&self, seq: u64) -> [u8; 8] {
        let mut hash = Sha256::new();
        hash.update(b"handoff span\0");
        hash.update(self.run.as_bytes());
        hash.update([0]);
        hash.update(seq.to_be_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        id
    }
}

/// A run id's trace id: its UUID's bytes, or (an id of another form) a hash.
pub fn trace_id_of(run: &str) -> [u8; 16] {
    let digits: String = run.chars().filter(|c| *c != '-').collect();
    if let Some(id) = hex_bytes::<16>(&digits.to_ascii_lowercase())
        && id != [0; 16]
    {
        return id;
    }
    let digest = Sha256::digest([b"handoff trace\0".as_slice(), run.as_bytes()].concat());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Which span each event of a trace belongs to, followed event by event:
/// a step's events to its step, a request's answer to the request, the
/// run's beginning and end to the run.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// The steps (and `for_each` items) open, innermost last, by the seq
    /// of the event that opened them.
    pub open: Vec<u64>,
    /// The request sent and not yet answered, by seq.
    pub request: Option<u64>,
}

impl Tracker {
    /// The seq of the span `event` belongs to (0: the run's), updating what
    /// is open.
    pub fn follow(&mut self, event: &TraceEvent) -> u64 {
        match &event.kind {
            EventKind::FlowStarted { .. } | EventKind::FlowFinished(_) => {
                self.open.clear();
                self.request = None;
                0
            }
            EventKind::RunResumed { .. } => {
                // What was open stopped with the process that had it.
                self.open.clear();
                self.request = None;
                0
            }
            EventKind::StepStarted { .. } | EventKind::ItemStarted { .. } => {
                self.request = None;
                self.open.push(event.seq);
                event.seq
            }
            EventKind::RequestSent { .. } => {
                self.request = Some(event.seq);
                event.seq
            }
            EventKind::ResponseReceived { .. } => match self.request.take() {
                Some(seq) => seq,
                None => self.innermost(),
            },
            EventKind::StepFinished { .. }
            | EventKind::StepFailed { .. }
            | EventKind::ItemFinished { .. } => {
                self.request = None;
                self.open.pop().unwrap_or(0)
            }
            _ => self.innermost(),
        }
    }

    fn innermost(&self) -> u64 {
        self.open.last().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_and_bad_ones_are_ignored() {
        let p = Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert!(p.sampled);
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            p.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Parent::parse(bad), None, "{bad}");
        }
        // A later version may add parts after the flags.
        assert!(
            Parent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x").is_some()
        );
    }

    #[test]
    fn ids_follow_from_the_run_id_alone() {
        let run = "01890a5d-ac96-774b-bcce-b302099a8057";
        let a = TraceIds::new(run, None);
        let b = TraceIds::new(run, None);
        assert_eq!(hex(&a.trace_id), "01890a5dac96774bbcceb302099a8057");
        assert_eq!(a.span(7), b.span(7));
        assert_ne!(a.span(7), a.span(8));
        assert_ne!(a.span(0), TraceIds::new("another", None).span(0));
        // Not a UUID: still 16 bytes, and the same each time.
        assert_eq!(trace_id_of("dry-run"), trace_id_of("dry-run"));
        assert_ne!(trace_id_of("dry-run"), [0; 16]);
    }
}
