//! How a Quench process reaches NATS: which servers, which credentials, which TLS, checked once before
//! anything connects.
//!
//! Secrets (a password, a token) live in a [`Credential`], which never prints; files holding secrets (an
//! nkey seed, a credentials file) are named here and read only when connecting. A server URL given as
//! `nats://user:password@host` is split when it is parsed, so the servers this module hands to logs and
//! error messages ([`NatsServers`]' `Display`) carry no secret.
//!
//! Everything here is a plain decision over plain data ([`NatsAccess::new`] reports every bad setting at
//! once); only [`NatsAccess::connect_options`] touches files.

use std::{fmt, path::PathBuf, str::FromStr};

use async_nats::{ConnectOptions, ServerAddr};

/// A secret given on the command line or in the environment. Neither `Debug` nor anything else prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl FromStr for Credential {
    type Err = std::convert::Infallible;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(secret))
    }
}

/// Bad NATS settings: every problem found, so an operator fixes them in one go. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct AccessError {
    pub problems: Vec<String>,
}

impl AccessError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// User name and password (or a token) found in server URLs.
#[derive(Clone, PartialEq, Eq)]
struct UrlCredentials {
    user: String,
    password: Option<Credential>,
}

/// One or more NATS servers (`nats://` or `tls://`, comma-separated), with any credentials taken out of
/// the URLs. `Display` and `Debug` show the servers without them.
#[derive(Clone)]
pub struct NatsServers {
    addrs: Vec<ServerAddr>,
    credentials: Option<UrlCredentials>,
}

impl NatsServers {
    /// Parses `nats://[user[:password]@]host[:port]` (or `tls://`, or a bare `host:port`), comma-separated.
    /// Errors name the server by position and never repeat the text, which may hold a password.
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let mut addrs = Vec::new();
        let mut credentials: Vec<Option<UrlCredentials>> = Vec::new();
        let mut problems = Vec::new();
        for (index, part) in text.split(',').map(str::trim).enumerate() {
            match parse_server(part) {
                Ok((addr, found)) => {
                    addrs.push(addr);
                    credentials.push(found);
                }
                Err(problem) => problems.push(format!("server {}: {problem}", index + 1)),
            }
        }
        if credentials.windows(2).any(|pair| pair[0] != pair[1]) {
            problems.push("every server URL must carry the same credentials (or none)".into());
        }
        if !problems.is_empty() {
            return Err(AccessError { problems });
        }
        Ok(Self {
            addrs,
            credentials: credentials.into_iter().next().flatten(),
        })
    }

    /// Whether any server is given as `tls://`.
    pub fn any_tls(&self) -> bool {
        self.addrs.iter().any(ServerAddr::tls_required)
    }

    pub fn addrs(&self) -> &[ServerAddr] {
        &self.addrs
    }
}

impl FromStr for NatsServers {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self.addrs.iter().map(ServerAddr::as_url_str).collect();
        f.write_str(&urls.join(","))
    }
}

impl fmt::Debug for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsServers({self})")
    }
}

fn parse_server(text: &str) -> Result<(ServerAddr, Option<UrlCredentials>), String> {
    if text.is_empty() {
        return Err("empty".into());
    }
    // `ServerAddr`'s own error repeats nothing of the input; ours say which part is wrong.
    let addr: ServerAddr = text.parse().map_err(|_| "not a URL".to_owned())?;
    if !matches!(addr.scheme(), "nats" | "tls") {
        return Err("use nats:// or tls://".into());
    }
    if addr.host().is_empty() {
        return Err("no host".into());
    }
    let credentials = match addr.username() {
        None if addr.password().is_some() => return Err("a password without a user".into()),
        None => None,
        Some(user) => Some(UrlCredentials {
            user: percent_decode(user)?,
            password: addr
                .password()
                .map(percent_decode)
                .transpose()?
                .map(Credential::new),
        }),
    };
    let mut url = addr.into_inner();
    // Cannot fail for nats:// and tls:// URLs with a host, which is all that reaches here.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let addr = ServerAddr::from_url(url).map_err(|_| "not a URL".to_owned())?;
    Ok((addr, credentials))
}

/// `%XX` escapes in the user-info part of a URL, as UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad %-escape in the credentials".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials that are not UTF-8".to_owned())
}

/// How a process proves who it is to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials: for a NATS without authorization (development only).
    None,
    UserPassword {
        user: String,
        password: Credential,
    },
    Token(Credential),
    /// A file holding an nkey user seed (`SU...`); the server knows the public key.
    Nkey(PathBuf),
    /// A `.creds` file (user JWT and nkey seed), for servers in operator (JWT) mode.
    CredentialsFile(PathBuf),
}

impl NatsAuth {
    /// What kind of credentials, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::UserPassword { .. } => "user and password",
            Self::Token(_) => "token",
            Self::Nkey(_) => "nkey",
            Self::CredentialsFile(_) => "credentials file",
        }
    }
}

/// What an operator gave beside the servers, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct NatsAccessOptions {
    pub credentials_file: Option<PathBuf>,
    pub nkey_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Credential>,
    pub token: Option<Credential>,
    /// CA certificate(s) (PEM) to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for servers that verify clients (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// TLS settings; TLS is required for every server as soon as any of them is `tls://` or any of these is
/// given, so a fail-over never falls back to plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub required: bool,
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Servers, credentials and TLS, consistent with each other.
#[derive(Debug, Clone)]
pub struct NatsAccess {
    servers: NatsServers,
    auth: NatsAuth,
    tls: NatsTls,
}

impl NatsAccess {
    /// Servers as given, no credentials, TLS only for `tls://` URLs (and credentials in the URLs).
    pub fn plain(servers: &str) -> Result<Self, AccessError> {
        Self::new(NatsServers::parse(servers)?, NatsAccessOptions::default())
    }

    /// Checks that at most one kind of credentials is given, that a user comes with a password, and that a
    /// client certificate comes with its key; reports every problem at once.
    pub fn new(servers: NatsServers, options: NatsAccessOptions) -> Result<Self, AccessError> {
        let mut problems = Vec::new();
        let auth = choose_auth(&servers, &options, &mut problems);
        let client = match (options.client_cert, options.client_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push("a client certificate and its key go together".into());
                None
            }
        };
        if !problems.is_empty() {
            return Err(AccessError { problems });
        }
        let tls = NatsTls {
            required: servers.any_tls() || options.ca.is_some() || client.is_some(),
            ca: options.ca,
            client,
        };
        Ok(Self { servers, auth, tls })
    }

    pub fn servers(&self) -> &NatsServers {
        &self.servers
    }

    pub fn auth(&self) -> &NatsAuth {
        &self.auth
    }

    pub fn tls(&self) -> &NatsTls {
        &self.tls
    }

    /// Connection options carrying these credentials and TLS settings; reads the nkey seed or
    /// credentials file.
    pub async fn connect_options(&self) -> Result<ConnectOptions, AccessError> {
        let mut options = match &self.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_owned()),
            NatsAuth::Nkey(path) => ConnectOptions::with_nkey(read_seed(path).await?),
            NatsAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    AccessError::one(format!("credentials file {}: {e}", path.display()))
                })?,
        };
        if self.tls.required {
            // async-nats builds its TLS settings on the process's default rustls provider.
            let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca {
            readable(ca, "CA file").await?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            readable(cert, "client certificate").await?;
            readable(key, "client key").await?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}

fn choose_auth(
    servers: &NatsServers,
    options: &NatsAccessOptions,
    problems: &mut Vec<String>,
) -> NatsAuth {
    let url = servers.credentials.as_ref();
    let user = match (&options.user, url) {
        (Some(flag), Some(url)) if *flag != url.user => {
            problems.push("the user in the server URL and the user option differ".into());
            None
        }
        (Some(user), _) => Some(user.clone()),
        (None, url) => url.map(|u| u.user.clone()),
    };
    let url_password = url.and_then(|u| u.password.clone());
    let password = match (&options.password, url_password) {
        (Some(_), Some(_)) => {
            problems
                .push("a password both in the server URL and as an option: give it once".into());
            None
        }
        (Some(password), None) => Some(password.clone()),
        (None, password) => password,
    };
    let mut chosen = Vec::new();
    match (user, password) {
        (Some(user), Some(password)) => chosen.push(NatsAuth::UserPassword { user, password }),
        // `nats://TOKEN@host`: the NATS convention for a token in a URL.
        (Some(token), None) if options.user.is_none() => {
            chosen.push(NatsAuth::Token(Credential::new(token)));
        }
        (Some(_), None) => problems.push("a NATS user needs a password".into()),
        (None, Some(_)) => problems.push("a NATS password needs a user".into()),
        (None, None) => {}
    }
    if let Some(token) = &options.token {
        chosen.push(NatsAuth::Token(token.clone()));
    }
    if let Some(path) = &options.nkey_file {
        chosen.push(NatsAuth::Nkey(path.clone()));
    }
    if let Some(path) = &options.credentials_file {
        chosen.push(NatsAuth::CredentialsFile(path.clone()));
    }
    if chosen.len() > 1 {
        let kinds: Vec<&str> = chosen.iter().map(NatsAuth::kind).collect();
        problems.push(format!(
            "give one kind of NATS credentials, not {}",
            kinds.join(" and ")
        ));
        return NatsAuth::None;
    }
    chosen.pop().unwrap_or(NatsAuth::None)
}

async fn read_seed(path: &PathBuf) -> Result<String, AccessError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| AccessError::one(format!("nkey seed file {}: {e}", path.display())))?;
    let seed = text.trim();
    // A user seed is one line of base32 starting with `SU`; say so without echoing what was found.
    if !seed.starts_with("SU") || seed.contains(char::is_whitespace) {
        return Err(AccessError::one(format!(
            "nkey seed file {}: not an nkey user seed (one line starting with SU)",
            path.display()
        )));
    }
    Ok(seed.to_owned())
}

async fn readable(path: &PathBuf, what: &str) -> Result<(), AccessError> {
    tokio::fs::metadata(path)
        .await
        .map(|_| ())
        .map_err(|e| AccessError::one(format!("{what} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(servers: &str, options: NatsAccessOptions) -> Result<NatsAccess, AccessError> {
        NatsAccess::new(NatsServers::parse(servers)?, options)
    }

    #[test]
    fn credentials_in_urls_are_taken_out_and_never_displayed() {
        let servers =
            NatsServers::parse("nats://quench:s%40cret@a:4222, tls://quench:s%40cret@b:4223")
                .expect("valid");
        let shown = format!("{servers} {servers:?}");
        assert!(
            !shown.contains("cret") && !shown.contains("quench"),
            "{shown}"
        );
        assert_eq!(shown.matches("a:4222").count(), 2, "{shown}");
        assert!(servers.any_tls());
        let access = NatsAccess::new(servers, NatsAccessOptions::default()).expect("valid");
        assert_eq!(
            access.auth(),
            &NatsAuth::UserPassword {
                user: "quench".into(),
                password: Credential::new("s@cret"),
            }
        );
        assert!(!format!("{access:?}").contains("cret"));
        assert!(
            access.tls().required,
            "one tls:// server makes TLS required"
        );
    }

    #[test]
    fn bad_urls_are_reported_without_repeating_them() {
        let error = NatsServers::parse("nats://u:hunter2@a:99999,http://b, ").expect_err("bad");
        assert_eq!(error.problems.len(), 3, "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error =
            NatsServers::parse("nats://u:one@a:4222,nats://u:two@b:4222").expect_err("differ");
        assert!(!error.to_string().contains("one") || !error.to_string().contains("two"));
        assert!(error.to_string().contains("same credentials"), "{error}");
    }

    #[test]
    fn one_kind_of_credentials_at_a_time() {
        let error = access(
            "nats://a",
            NatsAccessOptions {
                token: Some(Credential::new("t")),
                nkey_file: Some("seed".into()),
                user: Some("u".into()),
                client_cert: Some("c.pem".into()),
                ..Default::default()
            },
        )
        .expect_err("conflicting");
        assert_eq!(error.problems.len(), 3, "{error}");
        let text = error.to_string();
        assert!(text.contains("needs a password"), "{text}");
        assert!(text.contains("token and nkey"), "{text}");
        assert!(text.contains("certificate and its key"), "{text}");

        let error = access(
            "nats://u:p@a",
            NatsAccessOptions {
                password: Some(Credential::new("q")),
                ..Default::default()
            },
        )
        .expect_err("twice");
        assert!(error.to_string().contains("give it once"), "{error}");
    }

    #[test]
    fn a_user_alone_in_a_url_is_a_token_and_options_combine_with_url_users() {
        let token = access("nats://s3cret@a", NatsAccessOptions::default()).expect("token");
        assert_eq!(token.auth(), &NatsAuth::Token(Credential::new("s3cret")));
        let combined = access(
            "nats://quench@a",
            NatsAccessOptions {
                user: Some("quench".into()),
                password: Some(Credential::new("pw")),
                ..Default::default()
            },
        )
        .expect("user from the URL, password from the environment");
        assert_eq!(combined.auth().kind(), "user and password");
        let plain = NatsAccess::plain("127.0.0.1:4222").expect("plain");
        assert_eq!(plain.auth(), &NatsAuth::None);
        assert!(!plain.tls().required);
        let with_ca = access(
            "nats://a",
            NatsAccessOptions {
                ca: Some("ca.pem".into()),
                ..Default::default()
            },
        )
        .expect("ca");
        assert!(with_ca.tls().required, "a CA file means TLS");
    }

    #[test]
    fn credentials_never_print() {
        assert_eq!(
            format!("{:?}", Credential::new("hunter2")),
            "Credential(<redacted>)"
        );
    }
}
