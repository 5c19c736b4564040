//! Durations as a flow writes them: `5s`, `30m`, `1h 30m`, `250ms`.

use std::time::Duration;

/// Parses `5s`, `30m`, `1h 30m`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| "expected a duration such as `5s`, `30m` or `1h 30m`".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_flows_write() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration(" 250ms ").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_duration("5 parsecs").is_err());
    }
}
