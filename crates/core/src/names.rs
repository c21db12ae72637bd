//! Names users give things: owners, API names, scopes, key names. Each is parsed once at the boundary.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may contain only letters, digits and . _ : @ / + -")]
    BadCharacter { what: &'static str },
    #[error("{what} must not contain control characters")]
    Control { what: &'static str },
}

pub const LABEL_MAX: usize = 128;
pub const KEY_NAME_MAX: usize = 200;

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '/' | '+' | '-')
}

fn check_label(text: &str, what: &'static str) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { what });
    }
    if text.len() > LABEL_MAX {
        return Err(NameError::TooLong {
            what,
            max: LABEL_MAX,
        });
    }
    if !text.chars().all(label_char) {
        return Err(NameError::BadCharacter { what });
    }
    Ok(())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, NameError> {
                check_label(text, $what)?;
                Ok(Self(text.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_type!(
    /// Who a key belongs to: a team, a customer, a service.
    Owner,
    "owner"
);
label_type!(
    /// The name of an API a key may call, or of a scope it carries.
    Label,
    "name"
);
label_type!(
    /// An edge's id. Parsed before it is stored, waited for or written as a metric label: its
    /// characters need no escaping anywhere.
    EdgeId,
    "edge id"
);
label_type!(
    /// The region an edge says it serves; parsed like [`EdgeId`], for the same reasons.
    Region,
    "region"
);

/// A key's free-text display name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyName(Box<str>);

impl KeyName {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let what = "key name";
        if text.trim().is_empty() {
            return Err(NameError::Empty { what });
        }
        if text.chars().count() > KEY_NAME_MAX {
            return Err(NameError::TooLong {
                what,
                max: KEY_NAME_MAX,
            });
        }
        if text.chars().any(char::is_control) {
            return Err(NameError::Control { what });
        }
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_accept_common_shapes_and_refuse_the_rest() {
        for ok in [
            "team-payments",
            "orders:read",
            "alice@example.com",
            "svc/a.b_c+1",
        ] {
            assert!(Owner::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Label::parse(""), Err(NameError::Empty { what: "name" }));
        assert!(Label::parse("has space").is_err());
        assert!(Label::parse(&"x".repeat(LABEL_MAX + 1)).is_err());
        assert!(KeyName::parse("line\nbreak").is_err());
        assert!(KeyName::parse("CI deploy key (prod)").is_ok());
    }

    #[test]
    fn edge_ids_and_regions_refuse_what_would_break_a_metric_label() {
        assert!(Region::parse("eu-west-1").is_ok());
        assert!(EdgeId::parse("edge-7").is_ok());
        for bad in ["eu\"} 1", "eu\nfake 1", "{eu}", "eu west", "eu\\", ""] {
            assert!(Region::parse(bad).is_err(), "{bad:?}");
            assert!(EdgeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
