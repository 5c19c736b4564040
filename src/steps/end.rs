//! `end`: ends the run successfully, optionally with a message.

use crate::analyze::Analyzer;
use crate::raw::{Node, NodeValue};
use crate::steps::{Next, StepCx, StepError};
use crate::template::Template;

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
            Some(t) => Some(cx.render_text(t)?.0),
            None => None,
        };
        Ok(Next::End(message))
    }
}
