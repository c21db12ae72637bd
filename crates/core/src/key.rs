//! The key format: `<prefix>_<key id><secret><checksum>`.
//!
//! * prefix: names the issuer, `[a-z][a-z0-9]{1,15}`; it cannot contain `_`, so the first `_` ends it.
//! * key id: 10 base62 characters, a random number below 62^10 (about 59.5 bits). Fixed length, so the
//!   edge finds the record with one map lookup and the secret can be salted or slow-hashed.
//! * secret: 43 base62 characters drawn uniformly from the OS CSPRNG: 43 * log2(62) = 256.03 bits.
//! * checksum: 6 base62 characters, the CRC32 of everything before it. CRC32 detects every error confined
//!   to 32 consecutive bits, so every single-character change is caught before any lookup, and a scanner
//!   confirms a candidate offline with no false positives from look-alike strings.
//!
//! [`ApiKey::parse`] is the only way to obtain a key from text; past it nothing re-checks.

use std::fmt;

use zeroize::Zeroize;

use crate::base62;

pub const KEY_ID_LEN: usize = 10;
pub const SECRET_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;
/// Everything after `<prefix>_`.
pub const BODY_LEN: usize = KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;
pub const PREFIX_MAX_LEN: usize = 16;
pub const DEFAULT_PREFIX: &str = "qk";

/// Why a text is not a key. Every variant means the same to a caller: `malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key is `<prefix>_<body>`; no `_` found")]
    MissingSeparator,
    #[error("the prefix must match [a-z][a-z0-9]{{1,15}}")]
    BadPrefix,
    #[error("the part after the prefix must be {BODY_LEN} characters")]
    BadLength,
    #[error("the key contains a character outside 0-9A-Za-z")]
    BadCharacter,
    #[error("the checksum does not match: the key was mistyped or altered")]
    BadChecksum,
    #[error("a key id is {KEY_ID_LEN} base62 characters below 62^{KEY_ID_LEN}")]
    BadKeyId,
}

/// The operating system's random source failed; nothing can be issued safely without it.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(pub getrandom::Error);

pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// An issuer prefix such as `qk`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    bytes: [u8; PREFIX_MAX_LEN],
    len: u8,
}

impl Prefix {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let raw = text.as_bytes();
        let valid = (2..=PREFIX_MAX_LEN).contains(&raw.len())
            && raw[0].is_ascii_lowercase()
            && raw[1..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(KeyError::BadPrefix);
        }
        let mut bytes = [0u8; PREFIX_MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Self {
            bytes,
            len: raw.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ever enters through `parse`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self::parse(DEFAULT_PREFIX).unwrap_or(Self {
            bytes: [0; PREFIX_MAX_LEN],
            len: 0,
        })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix({})", self.as_str())
    }
}

/// A key's public identifier: a number below 62^10, shown as 10 base62 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    pub const LIMIT: u64 = base62::pow62(KEY_ID_LEN as u32);

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.len() != KEY_ID_LEN {
            return Err(KeyError::BadKeyId);
        }
        match base62::decode_fixed(text.as_bytes()) {
            Some(value) if value < Self::LIMIT => Ok(Self(value)),
            _ => Err(KeyError::BadKeyId),
        }
    }

    pub fn from_u64(value: u64) -> Result<Self, KeyError> {
        if value < Self::LIMIT {
            Ok(Self(value))
        } else {
            Err(KeyError::BadKeyId)
        }
    }

    pub fn generate() -> Result<Self, RandomError> {
        // Rejection sampling keeps the distribution uniform below LIMIT.
        let zone = u64::MAX - u64::MAX % Self::LIMIT;
        loop {
            let mut raw = [0u8; 8];
            fill_random(&mut raw)?;
            let value = u64::from_le_bytes(raw);
            if value < zone {
                return Ok(Self(value % Self::LIMIT));
            }
        }
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn encode(self) -> [u8; KEY_ID_LEN] {
        let mut out = [0u8; KEY_ID_LEN];
        base62::encode_fixed(self.0, &mut out);
        out
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.encode();
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The secret part of a key. Neither `Debug` nor anything else prints it; it is wiped when dropped.
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    pub fn generate() -> Result<Self, RandomError> {
        let mut out = [0u8; SECRET_LEN];
        let mut filled = 0;
        let mut pool = [0u8; 64];
        while filled < SECRET_LEN {
            fill_random(&mut pool)?;
            // 248 = 4 * 62: bytes at or above it are dropped so every digit is equally likely.
            for &byte in pool.iter().filter(|&&b| b < 248) {
                if filled == SECRET_LEN {
                    break;
                }
                out[filled] = base62::ALPHABET[usize::from(byte % 62)];
                filled += 1;
            }
        }
        pool.zeroize();
        Ok(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A whole key, parsed and checksum-verified.
pub struct ApiKey {
    prefix: Prefix,
    id: KeyId,
    secret: Secret,
}

impl ApiKey {
    pub fn generate(prefix: Prefix) -> Result<Self, RandomError> {
        Ok(Self {
            prefix,
            id: KeyId::generate()?,
            secret: Secret::generate()?,
        })
    }

    /// Parses a key and copies its secret into memory that is wiped on drop.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let presented = PresentedKey::parse(text)?;
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(presented.secret);
        Ok(Self {
            prefix: presented.prefix,
            id: presented.id,
            secret: Secret(secret),
        })
    }

    /// A borrowed view, as the verify path takes it.
    pub fn presented(&self) -> PresentedKey<'_> {
        PresentedKey {
            prefix: self.prefix,
            id: self.id,
            secret: self.secret.as_bytes(),
        }
    }

    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The plaintext key. Call it only to hand a new key to its owner (create and rotate responses).
    pub fn expose(&self) -> String {
        let mut text = String::with_capacity(PREFIX_MAX_LEN + 1 + BODY_LEN);
        text.push_str(self.prefix.as_str());
        text.push('_');
        text.push_str(std::str::from_utf8(&self.id.encode()).unwrap_or_default());
        text.push_str(std::str::from_utf8(self.secret.as_bytes()).unwrap_or_default());
        let mut checksum = [0u8; CHECKSUM_LEN];
        base62::encode_fixed(u64::from(crc32fast::hash(text.as_bytes())), &mut checksum);
        text.push_str(std::str::from_utf8(&checksum).unwrap_or_default());
        text
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}_{}<redacted>)", self.prefix, self.id)
    }
}

/// A key as presented to an edge: parsed and checksum-verified, its secret borrowed from the caller's text
/// rather than copied. The verify path uses this so a check allocates and copies nothing.
#[derive(Clone, Copy)]
pub struct PresentedKey<'a> {
    prefix: Prefix,
    id: KeyId,
    secret: &'a [u8],
}

impl<'a> PresentedKey<'a> {
    /// Parses a presented key. The checksum is checked before anything else is looked at.
    pub fn parse(text: &'a str) -> Result<Self, KeyError> {
        let (prefix_text, body) = text.split_once('_').ok_or(KeyError::MissingSeparator)?;
        if body.len() != BODY_LEN || !body.is_ascii() {
            return Err(KeyError::BadLength);
        }
        let (covered, checksum) = text.split_at(text.len() - CHECKSUM_LEN);
        let expected = base62::decode_fixed(checksum.as_bytes()).ok_or(KeyError::BadCharacter)?;
        if u64::from(crc32fast::hash(covered.as_bytes())) != expected {
            return Err(KeyError::BadChecksum);
        }
        let prefix = Prefix::parse(prefix_text)?;
        let (id_text, rest) = body.as_bytes().split_at(KEY_ID_LEN);
        let id = base62::decode_fixed(id_text).ok_or(KeyError::BadCharacter)?;
        let id = KeyId::from_u64(id)?;
        let secret = &rest[..SECRET_LEN];
        // The base62 alphabet is exactly ASCII alphanumerics.
        if !secret.iter().all(u8::is_ascii_alphanumeric) {
            return Err(KeyError::BadCharacter);
        }
        Ok(Self { prefix, id, secret })
    }

    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn secret(&self) -> &'a [u8] {
        self.secret
    }

    /// Copies the secret into memory that is wiped on drop, for work that outlives the presented text
    /// (a slow hash on another thread).
    pub fn to_secret(&self) -> Secret {
        let mut out = [0u8; SECRET_LEN];
        out.copy_from_slice(self.secret);
        Secret(out)
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({}_{}<redacted>)", self.prefix, self.id)
    }
}

/// A key id as a person or a script gave it: the id itself, or by mistake the whole key. The format
/// makes a whole key's id exact (the checksum confirms the text is a key), so a caller can act on the
/// id, or refuse while naming it, without ever repeating the secret. Either way, a whole key given
/// where an id belongs has been exposed (shell history, CI logs, request logs) and should be treated
/// as leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GivenId {
    Id(KeyId),
    WholeKey { prefix: Prefix, id: KeyId },
}

impl GivenId {
    /// The error, like every [`KeyError`], never contains the text.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        match KeyId::parse(text) {
            Ok(id) => Ok(Self::Id(id)),
            Err(not_an_id) => PresentedKey::parse(text)
                .map(|key| Self::WholeKey {
                    prefix: key.prefix,
                    id: key.id,
                })
                .map_err(|_| not_an_id),
        }
    }

    pub fn id(self) -> KeyId {
        match self {
            Self::Id(id) | Self::WholeKey { id, .. } => id,
        }
    }
}

/// What a scanner needs: does this text look like a key (cheap), and is it one (checksum)?
/// Returns the key id of a checksum-valid candidate without keeping the secret.
pub fn confirm_candidate(text: &str) -> Option<(Prefix, KeyId)> {
    PresentedKey::parse(text)
        .ok()
        .map(|key| (key.prefix, key.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_prefix() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{1,15}"
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate(Prefix::default()).expect("random");
        let text = key.expose();
        assert_eq!(text.len(), 3 + BODY_LEN);
        assert!(text.starts_with("qk_"));
        assert!(text[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = ApiKey::generate(Prefix::default()).expect("random");
        let secret = std::str::from_utf8(key.secret().as_bytes())
            .expect("ascii")
            .to_owned();
        let shown = format!("{key:?} {:?} {:?}", key.secret(), key.presented());
        assert!(!shown.contains(&secret));
        assert!(shown.contains(&key.id().to_string()));
    }

    #[test]
    fn rejects_each_kind_of_malformed_text() {
        let good = ApiKey::generate(Prefix::default())
            .expect("random")
            .expose();
        assert_eq!(
            ApiKey::parse("nounderscore").err(),
            Some(KeyError::MissingSeparator)
        );
        assert_eq!(ApiKey::parse("qk_short").err(), Some(KeyError::BadLength));
        assert_eq!(
            ApiKey::parse(&format!("{good}x")).err(),
            Some(KeyError::BadLength)
        );
        assert_eq!(ApiKey::parse("").err(), Some(KeyError::MissingSeparator));
        let mut bad_sum = good.clone();
        let last = bad_sum.pop().expect("non-empty");
        bad_sum.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(ApiKey::parse(&bad_sum).err(), Some(KeyError::BadChecksum));
    }

    #[test]
    fn a_valid_checksum_over_a_bad_prefix_is_still_rejected() {
        // Build `Q1_...` with a correct checksum: the prefix rule must still refuse it.
        let good = ApiKey::generate(Prefix::default())
            .expect("random")
            .expose();
        let mut text = format!("Q1_{}", &good[3..good.len() - CHECKSUM_LEN]);
        let mut sum = [0u8; CHECKSUM_LEN];
        base62::encode_fixed(u64::from(crc32fast::hash(text.as_bytes())), &mut sum);
        text.push_str(std::str::from_utf8(&sum).expect("ascii"));
        assert_eq!(ApiKey::parse(&text).err(), Some(KeyError::BadPrefix));
    }

    #[test]
    fn a_whole_key_given_as_an_id_yields_its_id() {
        let key = ApiKey::generate(Prefix::default()).expect("random");
        let id = key.id();
        assert_eq!(GivenId::parse(&id.to_string()), Ok(GivenId::Id(id)));
        let given = GivenId::parse(&key.expose()).expect("a whole key");
        assert_eq!(
            given,
            GivenId::WholeKey {
                prefix: Prefix::default(),
                id
            }
        );
        assert_eq!(given.id(), id);
        let mut typo = key.expose();
        typo.pop();
        typo.push('!');
        assert_eq!(GivenId::parse(&typo), Err(KeyError::BadKeyId));
        assert!(!KeyError::BadKeyId.to_string().contains(&typo));
    }

    #[test]
    fn key_ids_round_trip_and_bound() {
        let id = KeyId::generate().expect("random");
        assert_eq!(KeyId::parse(&id.to_string()), Ok(id));
        assert!(KeyId::from_u64(KeyId::LIMIT).is_err());
        assert!(KeyId::parse("zzzzzzzzzz").is_ok());
        assert!(KeyId::parse("zzzzzzzzz").is_err());
        assert!(KeyId::parse("zzzzzzzzz-").is_err());
    }

    proptest! {
        #[test]
        fn generate_then_parse_round_trips(prefix in any_prefix()) {
            let prefix = Prefix::parse(&prefix).expect("strategy yields valid prefixes");
            let key = ApiKey::generate(prefix).expect("random");
            let text = key.expose();
            let parsed = ApiKey::parse(&text).expect("a generated key parses");
            prop_assert_eq!(parsed.prefix(), prefix);
            prop_assert_eq!(parsed.id(), key.id());
            prop_assert_eq!(parsed.secret().as_bytes(), key.secret().as_bytes());
            prop_assert_eq!(parsed.expose(), text);
        }

        #[test]
        fn every_single_character_change_is_rejected(
            prefix in any_prefix(),
            position in any::<prop::sample::Index>(),
            replacement in proptest::char::range('!', '~'),
        ) {
            let key = ApiKey::generate(Prefix::parse(&prefix).expect("valid")).expect("random");
            let text = key.expose();
            let at = position.index(text.len());
            let original = text.as_bytes()[at] as char;
            prop_assume!(original != replacement);
            let mut changed = text.clone().into_bytes();
            changed[at] = replacement as u8;
            let changed = String::from_utf8(changed).expect("ascii");
            prop_assert!(ApiKey::parse(&changed).is_err(), "accepted {changed} from {text}");
        }

        #[test]
        fn parse_never_panics(text in ".{0,120}") {
            let _ = ApiKey::parse(&text);
        }
    }
}
