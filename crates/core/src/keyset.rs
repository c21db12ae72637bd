//! The edge's replica of every key: a synchronous lookup that event application keeps fresh.
//!
//! Reads are lock-free: the map is a `papaya` concurrent hash map, so a verification pins an epoch, looks
//! up one key id and hashes the presented secret. It never awaits, never blocks on the writer and never
//! allocates: the answer points at the key's interned profile (owner, APIs, scopes).
//!
//! Writes come from one follower at a time (a mutex makes that so; readers never touch it). Events must
//! arrive in sequence order: `apply` takes `applied + 1` and nothing else, so a duplicate is ignored and a
//! gap is reported for the caller to repair. Revocation is sticky: a revoked key stays in the map as a
//! tombstone, and no later event or snapshot for its id makes it valid again.
//!
//! Slow verifiers (argon2id, bcrypt) are not hashed here unless asked: [`KeySet::check`] answers every
//! key it can answer at once (SHA-256 keys, slow keys whose secret this edge has already confirmed, unknown
//! ids) and hands back a [`SlowCheck`] for the rest, so the caller decides where tens of milliseconds of
//! hashing run (the edge's HTTP layer uses a bounded pool, throttled per key id). A confirmed slow secret is
//! remembered as its SHA-256, so each key pays its slow hash once per edge. [`KeySet::verify`] is the
//! all-in-one form that runs the slow hash on the calling thread.
//!
//! Memory: an entry holds the 32-byte hash state after the salt block and the 32-byte digest inline, the expiry, a flag and a pointer to a
//! profile shared by every key with the same owner, APIs and scopes.

use std::{
    collections::HashMap as StdHashMap,
    hash::{BuildHasher, Hasher},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    event::{Change, Event, Seq},
    hash::{Verifier, digest_from_state, digests_equal, salt_state, sha256},
    key::{KeyId, Prefix, PresentedKey, Secret},
    names::{Label, Owner},
    record::EdgeKey,
    time::Timestamp,
};

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Malformed,
    Unknown,
    Revoked,
    Expired,
    Forbidden,
    Stale,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Forbidden => "forbidden",
            Self::Stale => "stale",
        }
    }
}

/// Owner, APIs and scopes: shared by every key that has the same ones.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    pub prefix: Prefix,
    pub owner: Owner,
    pub apis: Box<[Label]>,
    pub scopes: Box<[Label]>,
}

impl Profile {
    fn allows(&self, api: Option<&str>, scope: Option<&str>) -> bool {
        let api_ok = match api {
            None => true,
            Some(api) => self.apis.is_empty() || self.apis.iter().any(|a| a.as_str() == api),
        };
        let scope_ok = match scope {
            None => true,
            Some(scope) => self.scopes.iter().any(|s| s.as_str() == scope),
        };
        api_ok && scope_ok
    }
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Valid {
        key_id: KeyId,
        profile: &'static Profile,
    },
    Invalid {
        reason: Reason,
        /// Present only when the presented secret matched, so a guessed id learns nothing.
        key_id: Option<KeyId>,
    },
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Valid { .. } => None,
            Self::Invalid { reason, .. } => Some(*reason),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("sequence gap: expected {expected}, got {got}")]
    Gap { expected: Seq, got: Seq },
}

/// Slow hashes are paid once: after a successful check the SHA-256 of the secret is kept here, in memory.
#[derive(Debug)]
struct SlowVerifier {
    verifier: Verifier,
    verified: OnceLock<[u8; 32]>,
}

#[derive(Debug, Clone)]
enum EdgeVerifier {
    /// The SHA-256 state after the salt block stands in for the salt: one compression per check.
    Sha256 {
        state: [u32; 8],
        digest: [u8; 32],
    },
    Slow(Arc<SlowVerifier>),
}

impl EdgeVerifier {
    fn new(verifier: Verifier) -> Self {
        match verifier {
            Verifier::Sha256 { salt, digest } => Self::Sha256 {
                state: salt_state(&salt),
                digest,
            },
            slow => Self::Slow(Arc::new(SlowVerifier {
                verifier: slow,
                verified: OnceLock::new(),
            })),
        }
    }

    /// Matches `secret` as far as it can without a slow hash.
    fn quick_match(&self, secret: &[u8]) -> QuickMatch<'_> {
        let matched = match self {
            Self::Sha256 { state, digest } => {
                digests_equal(&digest_from_state(state, secret), digest)
            }
            Self::Slow(slow) => match slow.verified.get() {
                // Only one secret ever matches a verifier, so once it is known every other secret is
                // refused without the slow hash.
                Some(known) => digests_equal(&sha256(secret), known),
                None => return QuickMatch::NeedsSlow(slow),
            },
        };
        if matched {
            QuickMatch::Yes
        } else {
            QuickMatch::No
        }
    }

    /// The same slow verifier as `other`, whose confirmed secret can then be kept.
    fn same_slow<'a>(&self, other: &'a Self) -> Option<&'a Arc<SlowVerifier>> {
        match (self, other) {
            (Self::Slow(new), Self::Slow(old)) if new.verifier == old.verifier => Some(old),
            _ => None,
        }
    }
}

enum QuickMatch<'a> {
    Yes,
    No,
    NeedsSlow(&'a Arc<SlowVerifier>),
}

/// What [`KeySet::check`] found without paying for a slow hash.
#[derive(Debug)]
pub enum Check {
    /// The answer.
    Done(Verdict),
    /// The key's verifier is argon2id or bcrypt and this secret has not been confirmed here yet: run the
    /// check (tens of milliseconds of CPU), then ask again if it matched.
    Slow(SlowCheck),
}

/// One slow hash of a presented secret against a key's verifier. It owns a copy of the secret (wiped on
/// drop), so it can run on another thread. On a match the secret's SHA-256 is remembered in the key set,
/// and the next [`KeySet::check`] of that key answers at once.
pub struct SlowCheck {
    key_id: KeyId,
    verifier: Arc<SlowVerifier>,
    secret: Secret,
}

impl SlowCheck {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Runs the slow hash. Returns whether the secret matched.
    pub fn run(&self) -> bool {
        let secret = self.secret.as_bytes();
        let matched = self.verifier.verifier.matches(secret);
        if matched {
            let _ = self.verifier.verified.set(sha256(secret));
        }
        matched
    }
}

impl std::fmt::Debug for SlowCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlowCheck({})", self.key_id)
    }
}

const NO_EXPIRY: i64 = i64::MAX;

#[derive(Debug, Clone)]
struct Entry {
    profile: &'static Profile,
    expires_at: i64,
    revoked: bool,
    verifier: EdgeVerifier,
}

/// Key ids are drawn uniformly at random by the manager, so their low bits already spread evenly; a
/// multiply mixes the rest. Presented ids cannot steer where stored ids land, so this is not a
/// hash-flooding risk.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyIdHasher(u64);

impl Hasher for KeyIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ (value >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BuildKeyIdHasher;

impl BuildHasher for BuildKeyIdHasher {
    type Hasher = KeyIdHasher;

    fn build_hasher(&self) -> KeyIdHasher {
        KeyIdHasher::default()
    }
}

pub type KeyMap<V> = papaya::HashMap<u64, V, BuildKeyIdHasher>;

#[derive(Default)]
struct Writer {
    profiles: StdHashMap<&'static Profile, ()>,
}

impl Writer {
    /// Profiles live as long as the process: one per distinct (issuer, owner, APIs, scopes), shared by
    /// every key that has them. Keys are never deleted either, so nothing would ever free one; making
    /// them `'static` lets a verification hand out its profile without touching a reference count.
    fn intern(&mut self, profile: Profile) -> &'static Profile {
        if let Some((existing, ())) = self.profiles.get_key_value(&profile) {
            return existing;
        }
        let shared: &'static Profile = Box::leak(Box::new(profile));
        self.profiles.insert(shared, ());
        shared
    }

    fn entry(&mut self, key: EdgeKey) -> (u64, Entry) {
        let profile = self.intern(Profile {
            prefix: key.prefix,
            owner: key.owner,
            apis: key.apis.into_boxed_slice(),
            scopes: key.scopes.into_boxed_slice(),
        });
        let entry = Entry {
            profile,
            expires_at: key.expires_at.map_or(NO_EXPIRY, Timestamp::as_millis),
            revoked: key.revoked,
            verifier: EdgeVerifier::new(key.verifier),
        };
        (key.id.as_u64(), entry)
    }
}

pub struct KeySet {
    keys: KeyMap<Entry>,
    applied: AtomicU64,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .field("applied", &self.applied())
            .finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl KeySet {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: papaya::HashMap::builder()
                .capacity(capacity)
                .hasher(BuildKeyIdHasher)
                .build(),
            applied: AtomicU64::new(0),
            writer: Mutex::new(Writer::default()),
        }
    }

    /// The last sequence number applied.
    pub fn applied(&self) -> Seq {
        Seq::new(self.applied.load(Ordering::Acquire))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the writer cannot leave the map half-updated (each insert is atomic).
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Installs a snapshot consistent at `seq`. Older than what is applied: ignored. Revoked keys stay
    /// revoked whatever the snapshot says.
    pub fn install_snapshot<I>(&self, seq: Seq, keys: I) -> bool
    where
        I: IntoIterator<Item = EdgeKey>,
    {
        let mut writer = self.writer();
        if seq < self.applied() {
            return false;
        }
        let map = self.keys.pin();
        for key in keys {
            let (id, mut entry) = writer.entry(key);
            if let Some(old) = map.get(&id) {
                entry.revoked |= old.revoked;
                // A re-bootstrap keeps what slow hashes already confirmed.
                if let Some(kept) = entry.verifier.same_slow(&old.verifier) {
                    entry.verifier = EdgeVerifier::Slow(Arc::clone(kept));
                }
            }
            map.insert(id, entry);
        }
        self.applied.store(seq.get(), Ordering::Release);
        true
    }

    /// Applies the next event. Only `applied + 1` is accepted.
    pub fn apply(&self, event: &Event) -> Result<Applied, ApplyError> {
        let mut writer = self.writer();
        let applied = self.applied();
        if event.seq <= applied {
            return Ok(Applied::Duplicate);
        }
        if event.seq != applied.next() {
            return Err(ApplyError::Gap {
                expected: applied.next(),
                got: event.seq,
            });
        }
        let map = self.keys.pin();
        match &event.change {
            Change::KeyCreated { key } => {
                // Ids are never reused: a second creation of a known id changes nothing.
                if map.get(&key.id.as_u64()).is_none() {
                    let (id, entry) = writer.entry(key.clone());
                    map.insert(id, entry);
                }
            }
            Change::KeyRevoked { id, .. } => {
                let id = id.as_u64();
                match map.get(&id) {
                    Some(old) => {
                        let mut entry = old.clone();
                        entry.revoked = true;
                        map.insert(id, entry);
                    }
                    None => {
                        // A revocation of a key never seen still leaves a tombstone.
                        map.insert(id, tombstone(&mut writer));
                    }
                }
            }
            Change::KeyExpiryChanged { id, expires_at } => {
                let id = id.as_u64();
                if let Some(old) = map.get(&id).filter(|old| !old.revoked) {
                    let mut entry = old.clone();
                    entry.expires_at = expires_at.map_or(NO_EXPIRY, Timestamp::as_millis);
                    map.insert(id, entry);
                }
            }
        }
        self.applied.store(event.seq.get(), Ordering::Release);
        Ok(Applied::Changed)
    }

    /// Is `key` valid for `api` and `scope` at `now`? Runs a slow hash on the calling thread when the
    /// key needs one (see [`KeySet::check`] to run it elsewhere).
    pub fn verify(
        &self,
        key: &PresentedKey<'_>,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Verdict {
        match self.check(key, api, scope, now) {
            Check::Done(verdict) => verdict,
            Check::Slow(slow) if slow.run() => match self.check(key, api, scope, now) {
                Check::Done(verdict) => verdict,
                // The key's verifier was replaced while hashing: nothing to vouch for.
                Check::Slow(_) => unknown(),
            },
            Check::Slow(_) => unknown(),
        }
    }

    /// Like [`KeySet::verify`], but never runs a slow hash: a key that needs one comes back as
    /// [`Check::Slow`]. Lock-free and allocation-free for every answer it gives. The presented secret is
    /// checked before anything about the key is revealed.
    pub fn check(
        &self,
        key: &PresentedKey<'_>,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Check {
        let map = self.keys.pin();
        let Some(entry) = map.get(&key.id().as_u64()) else {
            return Check::Done(unknown());
        };
        if entry.profile.prefix != key.prefix() {
            return Check::Done(unknown());
        }
        match entry.verifier.quick_match(key.secret()) {
            QuickMatch::Yes => Check::Done(judge(entry, key.id(), api, scope, now)),
            QuickMatch::No => Check::Done(unknown()),
            QuickMatch::NeedsSlow(verifier) => Check::Slow(SlowCheck {
                key_id: key.id(),
                verifier: Arc::clone(verifier),
                secret: key.to_secret(),
            }),
        }
    }

    /// Whether the replica holds `id` as revoked (for tests and diagnostics).
    pub fn is_revoked(&self, id: KeyId) -> Option<bool> {
        self.keys.pin().get(&id.as_u64()).map(|e| e.revoked)
    }
}

/// The verdict on a key whose secret matched.
fn judge(
    entry: &Entry,
    key_id: KeyId,
    api: Option<&str>,
    scope: Option<&str>,
    now: Timestamp,
) -> Verdict {
    let reason = if entry.revoked {
        Reason::Revoked
    } else if entry.expires_at <= now.as_millis() {
        Reason::Expired
    } else if !entry.profile.allows(api, scope) {
        Reason::Forbidden
    } else {
        return Verdict::Valid {
            key_id,
            profile: entry.profile,
        };
    };
    Verdict::Invalid {
        reason,
        key_id: Some(key_id),
    }
}

fn unknown() -> Verdict {
    Verdict::Invalid {
        reason: Reason::Unknown,
        key_id: None,
    }
}

fn tombstone(writer: &mut Writer) -> Entry {
    let profile = writer.intern(Profile {
        prefix: Prefix::default(),
        owner: Owner::parse("unknown").expect("a constant, valid owner"),
        apis: Box::new([]),
        scopes: Box::new([]),
    });
    Entry {
        profile,
        expires_at: 0,
        revoked: true,
        // No secret hashes to an all-zero digest.
        verifier: EdgeVerifier::Sha256 {
            state: [0; 8],
            digest: [0; 32],
        },
    }
}

#[cfg(test)]
mod tests;
