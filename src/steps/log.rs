//! `log`: writes a message into the trace.

use crate::language::analyzer::Analyzer;
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError, shown_text};
use crate::run::trace::EventKind;

#[derive(Debug)]
pub struct Log {
    pub message: Template,
}

impl Log {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Log> {
        Some(Log {
            message: cx.template(node)?,
        })
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (message, tainted) = cx.render_text(&self.message)?;
        cx.emit(EventKind::Log {
            message: shown_text(message, tainted),
        });
        Ok(Next::Continue)
    }
}
