//! The HTTP client webhooks are sent with, and the name resolver that keeps the address guard honest.
//!
//! Judging a URL's host name when the webhook is created proves nothing about where a delivery goes
//! later: DNS answers change (and an attacker's DNS changes them on purpose, "rebinding" a name to
//! 127.0.0.1 after it passed a check). So the guard sits inside name resolution, where the HTTP client
//! asks for the addresses it will connect to: [`GuardedResolver`] resolves, drops every address the guard
//! refuses, and fails the request when none is left. Nothing is connected that the guard did not see.
//! IP literals are never resolved; the dispatcher checks them before it sends (see `attempt`).
//!
//! The client follows no redirects (a redirect would send the signed body to a place nobody checked)
//! and uses no proxy from the environment (a proxy would resolve the name itself, past the guard).

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::guard::{AddressGuard, Refused};

/// A name resolver for webhook deliveries, replaceable in tests. The default asks the system.
#[derive(Clone)]
pub struct WebhookResolver(pub Arc<dyn Resolve>);

impl fmt::Debug for WebhookResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookResolver")
    }
}

impl Default for WebhookResolver {
    fn default() -> Self {
        Self(Arc::new(SystemResolver))
    }
}

/// The operating system's resolver (`getaddrinfo`, on a blocking thread).
#[derive(Debug)]
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let addrs: Addrs = Box::new(found.collect::<Vec<_>>().into_iter());
            Ok(addrs)
        })
    }
}

/// No address of a name passed the guard.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {refused}")]
pub struct NameRefused {
    pub name: String,
    /// The first address refused.
    pub refused: Refused,
}

/// Resolves with the inner resolver, then lets through only what the guard allows.
struct GuardedResolver {
    guard: AddressGuard,
    inner: WebhookResolver,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let guard = self.guard.clone();
        let resolving = self.inner.0.resolve(name);
        Box::pin(async move {
            let found: Vec<SocketAddr> = resolving.await?.collect();
            let (allowed, refused) = screen(&guard, found);
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(Box::new(NameRefused {
                    name: host,
                    refused,
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// Splits resolved addresses into those the guard allows and the first it refused.
pub fn screen(guard: &AddressGuard, found: Vec<SocketAddr>) -> (Vec<SocketAddr>, Option<Refused>) {
    let mut refused = None;
    let allowed = found
        .into_iter()
        .filter(|addr| match guard.check(addr.ip()) {
            Ok(()) => true,
            Err(why) => {
                refused.get_or_insert(why);
                false
            }
        })
        .collect();
    (allowed, refused)
}

/// The webhook client: guarded resolution, no redirects, no proxy, bounded time.
pub fn client(
    guard: &AddressGuard,
    resolver: &WebhookResolver,
    timeout: Duration,
) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("quench-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver {
            guard: guard.clone(),
            inner: resolver.clone(),
        })
        .build()
        // A default client would follow redirects and skip the guard; refuse to run with one.
        .expect("the webhook HTTP client builds (rustls with ring)")
}

/// The guard's refusal somewhere in a failed request's chain of causes.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<NameRefused>() {
            return Some(refused.refused);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::guard::{Cidr, SpecialUse};

    #[test]
    fn screening_keeps_allowed_addresses_and_reports_the_first_refused() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let (allowed, refused) = screen(
            &AddressGuard::default(),
            vec![addr("127.0.0.1:80"), addr("1.1.1.1:80"), addr("[::1]:80")],
        );
        assert_eq!(allowed, [addr("1.1.1.1:80")]);
        assert_eq!(refused.map(|r| r.why), Some(SpecialUse::Loopback));
        let guard = AddressGuard::new(vec![Cidr::parse("::1").expect("cidr")]);
        let (allowed, refused) = screen(&guard, vec![addr("127.0.0.1:80"), addr("[::1]:80")]);
        assert_eq!(allowed, [addr("[::1]:80")]);
        assert_eq!(
            refused.map(|r| r.address.to_string()),
            Some("127.0.0.1".into())
        );
        assert_eq!(screen(&guard, Vec::new()), (Vec::new(), None));
    }
}
