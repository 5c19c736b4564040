//! `end`: ends the run successfully, optionally with a message.

use crate::language::analyzer::Analyzer;
use crate::language::raw::{Node, NodeValue};
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError, shown_text};

#[derive(Debug)]
pub struct End {
    pub message: Option<Template>,
}

impl End {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<End> {
        match node.value {
            NodeValue::Null => Some(End { message: None }),
            _ => Some(End {
                message: Some(cx.template(node)?),
            }),
        }
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let message = match &self.message {
            Some(t) => {
                let (message, tainted) = cx.render_text(t)?;
                Some(cx.data(&shown_text(message, tainted)))
            }
            None => None,
        };
        Ok(Next::End(message))
    }
}
