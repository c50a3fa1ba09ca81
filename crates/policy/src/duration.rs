//! Window durations as users write them: `30s`, `1m`, `1h30m`, `1d`.
//!
//! Kept to whole seconds and four units on purpose: a rate-limit window of
//! `1.5m` or `90000ms` is more likely a mistake than an intent, and every
//! accepted spelling must mean the same thing in the sidecar, the CRD pattern
//! and the docs.

use std::fmt;
use std::time::Duration;

/// The longest window accepted; beyond a year a "rate" is a quota.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The regex the CRD schema uses for the same syntax.
pub const PATTERN: &str = "^([0-9]+[smhd])+$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty, or not digits-then-unit.
    #[error(
        "{0:?} is not a duration; write whole numbers with a unit s, m, h or d, e.g. \"30s\", \"1m\", \"1h30m\""
    )]
    Syntax(String),
    /// Parsed to zero.
    #[error("{0:?} is zero; a window must be at least \"1s\"")]
    Zero(String),
    /// Longer than [`MAX_WINDOW`].
    #[error("{0:?} is longer than the maximum window of 366d")]
    TooLong(String),
}

/// Parses `30s`, `1m`, `1h30m`, `2d` into a [`Duration`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    if text.is_empty() {
        return Err(syntax());
    }
    let mut total: u64 = 0;
    let mut digits: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = digits.unwrap_or(0);
            digits = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(|| DurationError::TooLong(text.to_owned()))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(syntax()),
        };
        let n = digits.take().ok_or_else(syntax)?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
    }
    if digits.is_some() {
        // Trailing number without a unit, e.g. "60".
        return Err(syntax());
    }
    let window = Duration::from_secs(total);
    if window.is_zero() {
        return Err(DurationError::Zero(text.to_owned()));
    }
    if window > MAX_WINDOW {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    Ok(window)
}

/// Parses a point in time written like a window, from a start: the same
/// syntax as [`parse`], and `0s` for the start itself.
pub(crate) fn parse_offset(text: &str) -> Result<Duration, DurationError> {
    match parse(text) {
        Err(DurationError::Zero(_)) => Ok(Duration::ZERO),
        other => other,
    }
}

/// Formats a duration back into the shortest spelling [`parse`] accepts.
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            // Sub-second remainders only occur in retry hints; round up so a
            // client never retries too early.
            return f.write_str(if self.0.is_zero() { "0s" } else { "1s" });
        }
        if self.0.subsec_nanos() > 0 {
            secs += 1;
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1m1m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn refuses_what_is_not_a_whole_duration() {
        for bad in [
            "", "60", "1.5m", "1 m", "m", "-1m", "1w", "1M", "1ms", " 1m",
        ] {
            assert!(
                matches!(parse(bad), Err(DurationError::Syntax(_))),
                "{bad:?} should be a syntax error, got {:?}",
                parse(bad)
            );
        }
        assert_eq!(parse("0s"), Err(DurationError::Zero("0s".into())));
        assert!(matches!(parse("367d"), Err(DurationError::TooLong(_))));
        assert!(matches!(
            parse("99999999999999999999999s"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn the_crd_pattern_accepts_exactly_the_syntax() {
        let re = regex::Regex::new(PATTERN).unwrap();
        for ok in ["30s", "1h30m", "2d"] {
            assert!(re.is_match(ok) && parse(ok).is_ok());
        }
        for bad in ["60", "1.5m", "1w", ""] {
            assert!(!re.is_match(bad) && parse(bad).is_err());
        }
    }

    #[test]
    fn formats_round_up_to_whole_seconds() {
        assert_eq!(Human(Duration::from_secs(90)).to_string(), "1m30s");
        assert_eq!(Human(Duration::from_millis(1500)).to_string(), "2s");
        assert_eq!(Human(Duration::from_millis(10)).to_string(), "1s");
        assert_eq!(
            Human(Duration::from_secs(86_400 + 61)).to_string(),
            "1d1m1s"
        );
    }
}
