//! Instants as milliseconds since the Unix epoch, shown as RFC 3339 in UTC.

use std::fmt;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(i64);

/// The latest instant Quench accepts (year 9999), so any arithmetic on timestamps stays far from overflow.
const MAX_MILLIS: i64 = 253_402_300_799_999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp between 1970 and 9999: {0}")]
pub struct TimestampError(String);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(now)
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed =
            OffsetDateTime::parse(text, &Rfc3339).map_err(|e| TimestampError(e.to_string()))?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        match i64::try_from(millis) {
            Ok(m) if (0..=MAX_MILLIS).contains(&m) => Ok(Self(m)),
            _ => Err(TimestampError(text.to_owned())),
        }
    }

    /// `self + seconds`, or `None` past year 9999.
    pub fn plus_seconds(self, seconds: u64) -> Option<Self> {
        let millis = i64::try_from(seconds).ok()?.checked_mul(1000)?;
        let sum = self.0.checked_add(millis)?;
        (sum <= MAX_MILLIS).then_some(Self(sum))
    }

    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .map_err(|_| fmt::Error)?;
        let text = at.format(&Rfc3339).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let text = at.to_string();
        assert_eq!(text, "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&text), Ok(at));
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::from_millis(0).plus_seconds(u64::MAX).is_none());
    }
}
