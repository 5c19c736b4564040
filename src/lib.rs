pub mod diagnostic;
pub mod raw;
pub mod source;
pub mod fields;
pub mod redact;
pub mod template;
