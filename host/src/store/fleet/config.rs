//! How a node or the CLI names its fleet: NATS server URLs and how to
//! authenticate to them. Pure parsing, checked before anything connects,
//! so a typo is an error naming the typo rather than a timeout.

use std::path::PathBuf;

/// The environment variable `--cluster` reads.
pub const CLUSTER_ENV: &str = "KEYHOLE_CLUSTER";
/// The environment variable naming a NATS credentials file (`.creds`).
pub const CREDENTIALS_ENV: &str = "KEYHOLE_CLUSTER_CREDS";
/// The environment variable naming a PEM file of CA certificates the NATS
/// servers' certificates are checked against (implies TLS).
pub const CA_ENV: &str = "KEYHOLE_CLUSTER_CA";
/// The environment variable naming the JetStream domain the fleet's
/// streams live in, for a node that talks to a leaf server at an edge site
/// (whose own JetStream is another domain).
pub const DOMAIN_ENV: &str = "KEYHOLE_CLUSTER_DOMAIN";

/// Where the fleet's NATS servers are and how to reach them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Server URLs, `nats://host:port` or `tls://host:port`, tried in turn.
    pub urls: Vec<String>,
    /// A NATS credentials file (JWT and NKey seed), if the servers ask.
    pub credentials: Option<PathBuf>,
    /// CA certificates for the servers' TLS certificates; with it (or a
    /// `tls://` URL) TLS is required.
    pub ca: Option<PathBuf>,
    /// The JetStream domain of the fleet's streams, when the servers named
    /// are leaf servers of another domain (`None`: the servers' own).
    pub domain: Option<String>,
}

// Credentials are paths, not secrets, but a URL may carry `user:password@`.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("urls", &self.display_urls())
            .field("credentials", &self.credentials)
            .field("ca", &self.ca)
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClusterConfig {
    /// Parses a comma-separated list of server URLs (`--cluster` /
    /// `KEYHOLE_CLUSTER`), e.g. `nats://10.0.0.1:4222,nats://10.0.0.2:4222`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut urls = Vec::new();
        // Every URL's `user:password@`, which must agree.
        let mut first_userinfo: Option<Option<String>> = None;
        for url in list.split(',').map(str::trim) {
            if url.is_empty() {
                continue;
            }
            let Some((scheme, rest)) = url.split_once("://") else {
                return Err(format!(
                    "`{}` is not a NATS server URL: write it as nats://HOST:PORT (or tls://HOST:PORT)",
                    redact_userinfo(url)
                ));
            };
            if !matches!(scheme, "nats" | "tls") {
                return Err(format!(
                    "`{}`: a NATS server URL starts with nats:// or tls://, not {scheme}://",
                    redact_userinfo(url)
                ));
            }
            let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host_port = host_port.trim_end_matches('/');
            let valid_port = host_port.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid_port {
                return Err(format!(
                    "`{}` names no host and port: write it as {scheme}://HOST:PORT, e.g. {scheme}://127.0.0.1:4222",
                    redact_userinfo(url)
                ));
            }
            let userinfo = rest.rsplit_once('@').map(|(info, _)| info);
            match (&first_userinfo, userinfo) {
                (None, info) => first_userinfo = Some(info.map(str::to_owned)),
                (Some(first), info) if first.as_deref() == info => {}
                (Some(_), _) => {
                    return Err(format!(
                        "`{}` carries other credentials than the URL before it: the client logs in to every server alike, so give the same user:password@ on each URL (or on none)",
                        redact_userinfo(url)
                    ));
                }
            }
            urls.push(url.to_owned());
        }
        if urls.is_empty() {
            return Err(format!(
                "--cluster ({CLUSTER_ENV}) names no server: give one or more nats://HOST:PORT, separated by commas"
            ));
        }
        Ok(Self {
            urls,
            credentials: None,
            ca: None,
            domain: None,
        })
    }

    /// Adds the credentials file, CA and JetStream domain from the
    /// environment ([`CREDENTIALS_ENV`], [`CA_ENV`], [`DOMAIN_ENV`]),
    /// checking them.
    pub fn with_environment(mut self) -> Result<Self, String> {
        if let Some(domain) = std::env::var(DOMAIN_ENV).ok().filter(|d| !d.is_empty()) {
            self = self.with_domain(&domain)?;
        }
        for (var, slot) in [
            (CREDENTIALS_ENV, &mut self.credentials),
            (CA_ENV, &mut self.ca),
        ] {
            if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(format!("{var}={} is not a readable file", path.display()));
                }
                *slot = Some(path);
            }
        }
        Ok(self)
    }

    /// The same, with the fleet's streams in JetStream domain `domain`.
    pub fn with_domain(mut self, domain: &str) -> Result<Self, String> {
        let valid = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !valid {
            return Err(format!(
                "{DOMAIN_ENV}=`{domain}` is not a JetStream domain: use letters, digits, `-` and `_`"
            ));
        }
        self.domain = Some(domain.to_owned());
        Ok(self)
    }

    /// Whether the servers must speak TLS.
    pub fn requires_tls(&self) -> bool {
        self.ca.is_some() || self.urls.iter().any(|u| u.starts_with("tls://"))
    }

    /// The login the URLs carry (`nats://user:password@host:port`, or a
    /// token alone as `nats://token@host:port`), percent-decoded: what the
    /// client sends every server. Refused beside a credentials file, which
    /// is another way to log in.
    pub fn url_login(&self) -> Result<Option<UrlLogin>, String> {
        let Some(info) = self.urls.iter().find_map(|url| {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            rest.rsplit_once('@').map(|(info, _)| info)
        }) else {
            return Ok(None);
        };
        if self.credentials.is_some() {
            return Err(format!(
                "both a login in the cluster URLs and {CREDENTIALS_ENV}: give one of them"
            ));
        }
        let decode = |text: &str| {
            percent_decode(text).ok_or_else(|| {
                "the login in the cluster URLs has a malformed %-escape or is not UTF-8".to_owned()
            })
        };
        Ok(Some(match info.split_once(':') {
            Some((user, password)) => UrlLogin::UserPassword {
                user: decode(user)?,
                password: zeroize::Zeroizing::new(decode(password)?),
            },
            None => UrlLogin::Token(zeroize::Zeroizing::new(decode(info)?)),
        }))
    }

    /// The URLs as they may be printed: any `user:password@` removed.
    pub fn display_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_userinfo(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How the cluster URLs say to log in (no `Debug`: it holds a password).
pub enum UrlLogin {
    /// `user:password@`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password, wiped when dropped.
        password: zeroize::Zeroizing<String>,
    },
    /// `token@`.
    Token(zeroize::Zeroizing<String>),
}

/// `text` with its `%XX` escapes decoded, if they are well formed and the
/// result is UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with any `user:password@` replaced, for messages.
fn redact_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_connects() {
        let config =
            ClusterConfig::parse("nats://127.0.0.1:4222, tls://nats.example:4443").unwrap();
        assert_eq!(config.urls.len(), 2);
        assert!(config.requires_tls());
        for (bad, says) in [
            ("", "names no server"),
            ("127.0.0.1:4222", "write it as nats://HOST:PORT"),
            ("http://127.0.0.1:4222", "not http://"),
            ("nats://127.0.0.1", "names no host and port"),
            ("nats://:4222", "names no host and port"),
            ("nats://h:99999", "names no host and port"),
        ] {
            let err = ClusterConfig::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_domain_is_a_name_not_a_subject() {
        let config = ClusterConfig::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(
            config
                .clone()
                .with_domain("hub-eu_1")
                .unwrap()
                .domain
                .as_deref(),
            Some("hub-eu_1")
        );
        for bad in ["", "hub.eu", "hub>", "a b", "*"] {
            let err = config.clone().with_domain(bad).unwrap_err();
            assert!(err.contains("is not a JetStream domain"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_login_in_the_urls_is_decoded_and_must_be_the_same_on_each() {
        let config =
            ClusterConfig::parse("nats://ops:p%40ss%3Aword@a:4222,nats://ops:p%40ss%3Aword@b:4222")
                .unwrap();
        match config.url_login().unwrap() {
            Some(UrlLogin::UserPassword { user, password }) => {
                assert_eq!((user.as_str(), password.as_str()), ("ops", "p@ss:word"));
            }
            _ => panic!("no user and password"),
        }
        let token = ClusterConfig::parse("nats://s3cr3t@a:4222").unwrap();
        assert!(
            matches!(token.url_login(), Ok(Some(UrlLogin::Token(t))) if t.as_str() == "s3cr3t")
        );
        assert!(matches!(
            ClusterConfig::parse("nats://a:4222").unwrap().url_login(),
            Ok(None)
        ));
        let err = ClusterConfig::parse("nats://ops:one@a:4222,nats://ops:two@b:4222").unwrap_err();
        assert!(
            err.contains("the same user:password@") && !err.contains("two"),
            "{err}"
        );
        let err = ClusterConfig::parse("nats://ops:one@a:4222,nats://b:4222").unwrap_err();
        assert!(err.contains("other credentials"), "{err}");
        let mut both = ClusterConfig::parse("nats://ops:one@a:4222").unwrap();
        both.credentials = Some(PathBuf::from("/etc/nats/keyhole.creds"));
        assert!(both.url_login().err().unwrap().contains(CREDENTIALS_ENV));
        let bad = ClusterConfig::parse("nats://ops:%zz@a:4222").unwrap();
        let err = bad.url_login().err().unwrap();
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn a_password_in_a_url_is_never_printed() {
        let config = ClusterConfig::parse("nats://keyhole:hunter2@127.0.0.1:4222").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.display_urls().contains("hunter2"));
        let err = ClusterConfig::parse("nats://keyhole:hunter2@127.0.0.1").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
