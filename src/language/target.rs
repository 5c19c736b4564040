//! Where control goes after a step: another step, by its index in the flow,
//! or the end. The analyser resolves `goto:` names to these.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Step(usize),
    /// `goto: end`: the run ends successfully.
    End,
}
