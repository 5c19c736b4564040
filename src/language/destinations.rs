//! Where a flow's secrets may be sent: worked out by
//! [`crate::language::analyze::reach`], checked by every request a step sends.

/// Where a flow's secrets may be sent: origins the operator named, never
/// values a caller chose (see [`crate::language::analyze::reach`]).
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Text fields that stay configuration for the whole run: no caller
    /// sets them and no step writes them. Their values' origins are trusted.
    pub config: Vec<String>,
    /// Origins fixed by the text of the NWC steps' base URLs and the token URL.
    pub nwc_literal: Vec<String>,
    /// Origins fixed by the text of any step's URL.
    pub literal: Vec<String>,
}

impl Destinations {
    /// Whether the `base_url` field is configuration: then its origin is NWC's.
    pub fn nwc_field(&self) -> bool {
        self.config.iter().any(|f| f == "base_url")
    }
}
