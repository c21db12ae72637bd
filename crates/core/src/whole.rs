//! Whole numbers as JSON Schema counts them: `5` and `5.0` are the same integer there, while serde's
//! unsigned integers refuse `5.0`. The APIs document their counts and durations as `integer`, so the fields
//! behind them take either spelling (`deserialize_with`), and still refuse fractions, negatives and values
//! out of range.

use std::fmt;

use serde::{Deserializer, de};

struct Whole {
    max: u64,
}

impl de::Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.max)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        if value <= self.max {
            Ok(value)
        } else {
            Err(E::invalid_value(de::Unexpected::Unsigned(value), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(value), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        // `max as f64` may round up (u64::MAX becomes 2^64), so compare strictly below the next power.
        let whole = value.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&value);
        if whole {
            self.visit_u64(value as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(value), &self))
        }
    }
}

pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(Whole { max: u64::MAX })
}

pub fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = deserializer.deserialize_any(Whole {
        max: u64::from(u32::MAX),
    })?;
    Ok(value as u32)
}

struct MaybeWhole;

impl<'de> de::Visitor<'de> for MaybeWhole {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        u64(deserializer).map(Some)
    }
}

/// An optional whole number: absent and `null` are `None`. Use with `#[serde(default)]`.
pub fn option_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_option(MaybeWhole)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "super::u64")]
        big: u64,
        #[serde(deserialize_with = "super::u32")]
        small: u32,
        #[serde(default, deserialize_with = "super::option_u64")]
        maybe: Option<u64>,
    }

    fn parse(text: &str) -> Result<Counts, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn whole_numbers_in_either_spelling() {
        let counts = parse(r#"{"big": 5.0, "small": 7, "maybe": 1e3}"#).expect("whole");
        assert_eq!((counts.big, counts.small, counts.maybe), (5, 7, Some(1000)));
        let counts = parse(r#"{"big": 18446744073709551615, "small": 4294967295.0}"#).expect("max");
        assert_eq!(
            (counts.big, counts.small, counts.maybe),
            (u64::MAX, u32::MAX, None)
        );
        assert_eq!(
            parse(r#"{"big": 1, "small": 1, "maybe": null}"#)
                .expect("null")
                .maybe,
            None
        );
    }

    #[test]
    fn fractions_negatives_and_overflow_are_refused() {
        for text in [
            r#"{"big": 5.5, "small": 1}"#,
            r#"{"big": -1, "small": 1}"#,
            r#"{"big": -0.5, "small": 1}"#,
            r#"{"big": 1, "small": 4294967296}"#,
            r#"{"big": 18446744073709551616.0, "small": 1}"#,
            r#"{"big": "5", "small": 1}"#,
            r#"{"big": 1, "small": 1, "maybe": 2.5}"#,
        ] {
            assert!(parse(text).is_err(), "{text} should be refused");
        }
    }
}
