//! GitHub secret-scanning partner program: GitHub finds Quench keys in public repositories and sends them
//! here, signed with ECDSA P-256 (SHA-256) over the raw body.
//!
//! The public keys come from GitHub's document (`{"public_keys": [{"key_identifier", "key", "is_current"}]}`,
//! PEM keys), given as a file or a URL (`--github-public-keys`). A request names its key in
//! `Github-Public-Key-Identifier` and carries a base64 DER signature in `Github-Public-Key-Signature`;
//! without a valid one nothing is read, let alone revoked.

use std::collections::HashMap;

use base64::Engine;
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier},
    pkcs8::DecodePublicKey,
};
use serde::Deserialize;

pub const KEY_ID_HEADER: &str = "github-public-key-identifier";
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubKeysError {
    #[error("reading {location}: {source}")]
    ReadFile {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {location}: {source}")]
    Fetch {
        location: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading {location}: HTTP {status}")]
    Status { location: String, status: u16 },
    #[error("not GitHub's public keys document: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not GitHub's public keys document: key {key_id}: {source}")]
    Key {
        key_id: String,
        #[source]
        source: p256::pkcs8::spki::Error,
    },
    #[error("not GitHub's public keys document: no public keys")]
    NoKeys,
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<DocumentKey>,
}

#[derive(Deserialize)]
struct DocumentKey {
    key_identifier: String,
    key: String,
}

/// GitHub's signing keys, by identifier.
#[derive(Clone, Default)]
pub struct GithubKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl std::fmt::Debug for GithubKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GithubKeys({} keys)", self.keys.len())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing the Github-Public-Key-Identifier or Github-Public-Key-Signature header")]
    Missing,
    #[error("unknown GitHub key identifier")]
    UnknownKey,
    #[error("the signature is not valid base64 DER")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

impl GithubKeys {
    /// Parses GitHub's public keys document.
    pub fn parse(document: &str) -> Result<Self, GithubKeysError> {
        let document: Document =
            serde_json::from_str(document).map_err(GithubKeysError::NotJson)?;
        let mut keys = HashMap::new();
        for key in document.public_keys {
            let parsed = VerifyingKey::from_public_key_pem(&key.key).map_err(|source| {
                GithubKeysError::Key {
                    key_id: key.key_identifier.clone(),
                    source,
                }
            })?;
            keys.insert(key.key_identifier, parsed);
        }
        if keys.is_empty() {
            return Err(GithubKeysError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// Reads the document from a file, or fetches it from an `https://` (or `http://`) URL.
    pub async fn load(location: &str) -> Result<Self, GithubKeysError> {
        let text = if location.starts_with("https://") || location.starts_with("http://") {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let fetch = |source| GithubKeysError::Fetch {
                location: location.into(),
                source,
            };
            let response = reqwest::get(location).await.map_err(fetch)?;
            if !response.status().is_success() {
                return Err(GithubKeysError::Status {
                    location: location.into(),
                    status: response.status().as_u16(),
                });
            }
            response.text().await.map_err(fetch)?
        } else {
            std::fs::read_to_string(location).map_err(|source| GithubKeysError::ReadFile {
                location: location.into(),
                source,
            })?
        };
        Self::parse(&text)
    }

    pub fn verify(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(SignatureError::Missing);
        };
        let key = self
            .keys
            .get(key_id.trim())
            .ok_or(SignatureError::UnknownKey)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
        key.verify(body, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_keys_document_says_what_is_wrong() {
        assert!(matches!(
            GithubKeys::parse("not json"),
            Err(GithubKeysError::NotJson(_))
        ));
        assert!(matches!(
            GithubKeys::parse(r#"{"public_keys": []}"#),
            Err(GithubKeysError::NoKeys)
        ));
        let bad_key = r#"{"public_keys": [{"key_identifier": "k1", "key": "not PEM"}]}"#;
        assert!(matches!(
            GithubKeys::parse(bad_key),
            Err(GithubKeysError::Key { key_id, .. }) if key_id == "k1"
        ));
    }

    #[tokio::test]
    async fn an_unreadable_keys_file_names_its_location() {
        let Err(error) = GithubKeys::load("/nonexistent/github-keys.json").await else {
            panic!("a missing file loaded");
        };
        assert!(matches!(error, GithubKeysError::ReadFile { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("reading /nonexistent/github-keys.json")
        );
    }
}
