//! `fail`: ends the run as failed, with a message, such as the poll loop's
//! "tried too often" path.

use crate::language::analyzer::Analyzer;
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError, shown_text};

#[derive(Debug)]
pub struct Fail {
    pub message: Template,
}

impl Fail {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Fail> {
        Some(Fail {
            message: cx.template(node)?,
        })
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (message, tainted) = cx.render_text(&self.message)?;
        Ok(Next::Fail(cx.data(&shown_text(message, tainted))))
    }
}
