use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration such as `7d`, `6h`, `30m` or `604800s`: the one duration type used by
/// every interval in the product (key rotation, rotation policies, windows).
///
/// It keeps the text it was written with, so that what a user wrote is what they read
/// back (Terraform compares strings), and compares by meaning through [`Interval::seconds`].
#[derive(Debug, Clone)]
pub struct Interval {
    text: String,
    seconds: u64,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// Not of the form NUMBER followed by one of `s`, `m`, `h`, `d`.
    #[error("expected a number followed by s, m, h or d (for example 7d, 6h, 604800s)")]
    Syntax,
    /// Outside the allowed range.
    #[error("must be between {min} and {max}")]
    Range {
        /// Smallest allowed, as text.
        min: String,
        /// Largest allowed, as text.
        max: String,
    },
}

impl Interval {
    /// Parses `NUMBER UNIT` with unit `s`, `m`, `h` or `d`, nothing around them: the
    /// text is kept as written, and a tool comparing it with what it sent must find it
    /// the same.
    pub fn parse(text: &str) -> Result<Self, IntervalError> {
        let t = text;
        let unit = t.chars().last().ok_or(IntervalError::Syntax)?;
        let mult: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(IntervalError::Syntax),
        };
        let digits = &t[..t.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 {
            return Err(IntervalError::Syntax);
        }
        let n: u64 = digits.parse().map_err(|_| IntervalError::Syntax)?;
        Ok(Self {
            text: t.to_string(),
            seconds: n * mult,
        })
    }

    /// From a number of seconds, written in the largest whole unit.
    pub fn from_seconds(seconds: u64) -> Self {
        let text = if seconds > 0 && seconds.is_multiple_of(86_400) {
            format!("{}d", seconds / 86_400)
        } else if seconds > 0 && seconds.is_multiple_of(3_600) {
            format!("{}h", seconds / 3_600)
        } else {
            format!("{seconds}s")
        };
        Self { text, seconds }
    }

    /// Length in seconds.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Checks `min_secs <= self <= max_secs`.
    pub fn check_range(&self, min_secs: u64, max_secs: u64) -> Result<(), IntervalError> {
        if self.seconds < min_secs || self.seconds > max_secs {
            return Err(IntervalError::Range {
                min: Self::from_seconds(min_secs).text,
                max: Self::from_seconds(max_secs).text,
            });
        }
        Ok(())
    }
}

impl PartialEq for Interval {
    fn eq(&self, other: &Self) -> bool {
        self.seconds == other.seconds
    }
}
impl Eq for Interval {}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Interval {
    fn schema_name() -> Cow<'static, str> {
        "Interval".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{1,12}[smhd]$",
            "description": "A duration: a whole number followed by s, m, h or d, e.g. `7d`, `6h`, `604800s`"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_keeps_text() {
        let i = Interval::parse("7d").unwrap();
        assert_eq!(i.seconds(), 604_800);
        assert_eq!(i.as_str(), "7d");
        assert_eq!(Interval::parse("604800s").unwrap(), i);
        assert_eq!(Interval::parse("6h").unwrap().seconds(), 21_600);
        assert_eq!(Interval::parse("30m").unwrap().seconds(), 1_800);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "d",
            "7",
            "7w",
            "-7d",
            "7.5d",
            "1e3s",
            "9999999999999d",
            " 7d",
            "7d ",
            "7 d",
            "+7d",
        ] {
            assert_eq!(Interval::parse(bad), Err(IntervalError::Syntax), "{bad}");
        }
    }

    #[test]
    fn range_names_bounds() {
        let e = Interval::parse("1d")
            .unwrap()
            .check_range(7 * 86_400, 730 * 86_400)
            .unwrap_err();
        assert_eq!(e.to_string(), "must be between 7d and 730d");
    }
}
