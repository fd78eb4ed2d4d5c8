//! Parsing of the config's human units: durations ("500ms", "30s"), sizes ("10m") and rates ("10r/s").

use std::time::Duration;

/// Why a config value is not the unit it should be; the text says so in the words the
/// config's diagnostics show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a duration: expected a number and a unit, like \"30s\" or \"500ms\"")]
    DurationWithoutNumber(String),
    #[error("`{text}` is not a duration: `{number}` is not a number")]
    DurationNumber { text: String, number: String },
    #[error("`{text}` is not a duration: unknown unit `{unit}` (use ms, s, m, h or d)")]
    DurationUnit { text: String, unit: String },
    #[error("`{0}` is too long a duration")]
    DurationTooLong(String),
    #[error("`{0}` is not a size: expected a number with an optional k, m or g, like \"10m\"")]
    Size(String),
    #[error("`{0}` is too large a size")]
    SizeTooLarge(String),
    #[error("`{0}` is not a rate: expected like \"10r/s\" or \"600r/m\"")]
    Rate(String),
    #[error("`{0}`: a rate must be at least 1 request")]
    RateZero(String),
}

/// Parses a duration such as `"500ms"`, `"30s"`, `"5m"`, `"1h"` or `"2d"`.
/// A bare number is seconds, as in nginx.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(UnitError::DurationWithoutNumber(text.to_string()));
    }
    let value: f64 = number.parse().map_err(|_| UnitError::DurationNumber {
        text: text.to_string(),
        number: number.to_string(),
    })?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(UnitError::DurationUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > 10.0 * 365.0 * 86_400.0 {
        return Err(UnitError::DurationTooLong(text.to_string()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a size such as `"10m"`, `"512k"`, `"1g"` or a bare number of bytes (nginx's units).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let (number, multiplier) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1u64 << 20),
        Some(b'g' | b'G') => (&text[..text.len() - 1], 1u64 << 30),
        _ => (text, 1),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| UnitError::Size(text.to_string()))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| UnitError::SizeTooLarge(text.to_string()))
}

/// A request rate: so many requests per so many seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in `per`.
    pub requests: u32,
    /// The period the requests are counted over.
    pub per: Duration,
}

impl Rate {
    /// The time between two requests at this rate (nginx's emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.requests
    }
}

/// Parses a rate such as `"10r/s"` or `"600r/m"`, as nginx's `limit_req_zone rate=`.
pub fn parse_rate(text: &str) -> Result<Rate, UnitError> {
    let bad = || UnitError::Rate(text.to_string());
    let (count, unit) = text.trim().split_once("r/").ok_or_else(bad)?;
    let requests: u32 = count.trim().parse().map_err(|_| bad())?;
    if requests == 0 {
        return Err(UnitError::RateZero(text.to_string()));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(bad()),
    };
    Ok(Rate { requests, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("65"), Ok(Duration::from_secs(65)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert_eq!(
            parse_duration("10 parsecs")
                .expect_err("not a duration")
                .to_string(),
            "`10 parsecs` is not a duration: unknown unit `parsecs` (use ms, s, m, h or d)"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999999g").is_err());
    }

    #[test]
    fn rates() {
        let rate = parse_rate("10r/s").expect("valid");
        assert_eq!(rate.interval(), Duration::from_millis(100));
        assert_eq!(
            parse_rate("600r/m").expect("valid").interval(),
            Duration::from_millis(100)
        );
        assert!(parse_rate("0r/s").is_err());
        assert!(parse_rate("10/s").is_err());
        assert!(parse_rate("10r/h").is_err());
    }
}
