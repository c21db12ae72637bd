//! A webhook's URL: what may be subscribed, and how it is shown.
//!
//! Checked when a webhook is created, so mistakes get a clear 422 instead of a delivery that fails for a
//! day: only `http` and `https`, a host, a bounded length, and no IP literal the address guard refuses (a
//! literal is never resolved, so this is the one place it can be judged before the first delivery; the
//! dispatcher judges it again before every send, since the allowlist may have changed since). Names are
//! judged only when a delivery resolves them.
//!
//! A webhook URL may carry the receiver's credential (`https://user:pass@host/...`, `?token=...`). The
//! manager needs it to deliver, but shows it to nobody: every listing, the creation answer included,
//! shows the URL with its user information and query values masked, and no log line carries a URL.

use std::net::IpAddr;

use reqwest::Url;

use super::guard::{AddressGuard, Refused};

/// Longest webhook URL accepted.
pub const MAX_URL: usize = 2048;

/// What stands for a hidden credential in a shown URL.
pub const MASK: &str = "***";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("url: at most {MAX_URL} characters")]
    TooLong,
    #[error("url: {0}")]
    Unparsable(String),
    #[error("url: an http:// or https:// URL with a host")]
    Scheme,
    #[error(
        "url: {0}; webhooks reach only public addresses unless the operator allows a range (--webhook-allow)"
    )]
    Refused(Refused),
}

/// A URL a webhook may be created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(text: &str, guard: &AddressGuard) -> Result<Self, TargetError> {
        if text.len() > MAX_URL {
            return Err(TargetError::TooLong);
        }
        let url = Url::parse(text.trim()).map_err(|e| TargetError::Unparsable(e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(TargetError::Scheme);
        }
        if let Some(ip) = ip_literal(&url) {
            guard.check(ip).map_err(TargetError::Refused)?;
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The address a URL names directly, if its host is an IP literal (in any spelling the URL parser
/// accepts: `http://2130706433/` is 127.0.0.1).
pub fn ip_literal(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        // Whatever the HTTP client would itself take for an address skips name resolution too.
        url::Host::Domain(name) => name.trim_matches(['[', ']']).parse().ok(),
    }
}

/// `url` as it may be shown: user information and every query value masked, no fragment. A URL that does
/// not parse is not shown at all.
pub fn redacted(url: &str) -> String {
    let Ok(mut url) = Url::parse(url) else {
        return MASK.to_owned();
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Both fail only for URLs that cannot have user information, which then have none.
        let _ = url.set_password(None);
        let _ = url.set_username(MASK);
    }
    if url.query().is_some() {
        let masked: Vec<String> = url
            .query_pairs()
            .map(|(name, value)| {
                // A bare `?<token>` is all secret; otherwise the name stays, for recognition.
                if value.is_empty() {
                    MASK.to_owned()
                } else {
                    format!("{}={MASK}", encode_name(&name))
                }
            })
            .collect();
        url.set_query(Some(&masked.join("&")));
    }
    url.set_fragment(None);
    url.to_string()
}

fn encode_name(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::guard::{Cidr, SpecialUse};

    #[test]
    fn only_http_urls_with_a_host_and_no_refused_literal_are_accepted() {
        let guard = AddressGuard::default();
        for good in [
            "https://hooks.example.com/quench",
            "http://hooks.example.com:8080/x?y=1",
            "https://1.1.1.1/x",
            "https://[2606:4700::1111]/x",
            // A name is judged when it resolves, not here.
            "http://localhost:9/x",
        ] {
            assert!(WebhookUrl::parse(good, &guard).is_ok(), "{good}");
        }
        for (bad, expected) in [
            ("ftp://example.com/x", TargetError::Scheme),
            ("file:///etc/passwd", TargetError::Scheme),
            ("gopher://example.com/", TargetError::Scheme),
            ("data:text/plain,hi", TargetError::Scheme),
        ] {
            assert_eq!(WebhookUrl::parse(bad, &guard), Err(expected), "{bad}");
        }
        assert!(matches!(
            WebhookUrl::parse("not a url", &guard),
            Err(TargetError::Unparsable(_))
        ));
        assert_eq!(
            WebhookUrl::parse(
                &format!("https://x.example/{}", "a".repeat(MAX_URL)),
                &guard
            ),
            Err(TargetError::TooLong)
        );
        for (literal, why) in [
            ("http://127.0.0.1:7600/", SpecialUse::Loopback),
            ("http://2130706433/", SpecialUse::Loopback),
            ("http://0x7f.1/", SpecialUse::Loopback),
            ("http://[::1]/", SpecialUse::Loopback),
            ("http://[::ffff:7f00:1]/", SpecialUse::Loopback),
            (
                "http://169.254.169.254/latest/meta-data/",
                SpecialUse::LinkLocal,
            ),
            ("http://10.0.0.1/", SpecialUse::Private),
            ("http://0.0.0.0:7600/", SpecialUse::Unspecified),
            ("http://[fd00::1]/", SpecialUse::UniqueLocal),
        ] {
            match WebhookUrl::parse(literal, &guard) {
                Err(TargetError::Refused(refused)) => assert_eq!(refused.why, why, "{literal}"),
                other => panic!("{literal}: {other:?}"),
            }
        }
        let allowed = AddressGuard::new(vec![Cidr::parse("127.0.0.0/8").expect("cidr")]);
        assert!(WebhookUrl::parse("http://127.0.0.1:7600/", &allowed).is_ok());
    }

    #[test]
    fn credentials_never_show() {
        for (url, shown) in [
            (
                "https://user:pa55@hooks.example.com/q",
                "https://***@hooks.example.com/q",
            ),
            (
                "https://tok3n@hooks.example.com/q",
                "https://***@hooks.example.com/q",
            ),
            (
                "https://hooks.example.com/q?token=s3cret&channel=ops",
                "https://hooks.example.com/q?token=***&channel=***",
            ),
            (
                "https://hooks.example.com/q?s3cret",
                "https://hooks.example.com/q?***",
            ),
            (
                "https://hooks.example.com/q#frag",
                "https://hooks.example.com/q",
            ),
            ("https://hooks.example.com/q", "https://hooks.example.com/q"),
            ("not a url with s3cret", "***"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
