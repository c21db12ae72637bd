//! What a manager token may do.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything, including issuing tokens.
    Admin,
    KeysRead,
    KeysWrite,
    KeysRevoke,
    LeaksReport,
    /// What an edge needs: read the event log and snapshots, report its progress.
    Edge,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?}; scopes are admin, keys:read, keys:write, keys:revoke, leaks:report, edge"
)]
pub struct ScopeError(pub String);

impl Scope {
    pub const ALL: [Scope; 6] = [
        Self::Admin,
        Self::KeysRead,
        Self::KeysWrite,
        Self::KeysRevoke,
        Self::LeaksReport,
        Self::Edge,
    ];

    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| ScopeError(text.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::KeysRead => "keys:read",
            Self::KeysWrite => "keys:write",
            Self::KeysRevoke => "keys:revoke",
            Self::LeaksReport => "leaks:report",
            Self::Edge => "edge",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A set of scopes; `admin` includes every other.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(mut scopes: Vec<Scope>) -> Self {
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|&s| s == needed || s == Scope::Admin)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Space-separated, as stored.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn decode(text: &str) -> Result<Self, ScopeError> {
        text.split_whitespace()
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_everything_and_others_only_themselves() {
        let admin = Scopes::new(vec![Scope::Admin]);
        assert!(Scope::ALL.iter().all(|&s| admin.allows(s)));
        let reader = Scopes::new(vec![Scope::KeysRead]);
        assert!(reader.allows(Scope::KeysRead));
        assert!(!reader.allows(Scope::KeysRevoke));
        assert_eq!(Scopes::decode(&reader.encode()), Ok(reader));
        assert!(Scope::parse("root").is_err());
    }
}
