//! Where CLI commands go: to the data directory, or to a running node's
//! admin API (`--node` / `KEYHOLE_NODE` with `KEYHOLE_TOKEN`).
//!
//! Both paths end in the same JSON reply, decoded into the same type, so a
//! command prints the same thing either way.

use super::cluster::open_replica;
use super::{Access, open_store};
use anyhow::{Context, bail};
use keyhole_host::admin::access::Caller;
use keyhole_host::admin::{Admin, AdminError, ErrorKind, Request, wire};
use keyhole_host::store::Store;
use keyhole_host::store::fleet::{ClusterConfig, Join};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The environment variable holding the admin API token.
pub const TOKEN_ENV: &str = "KEYHOLE_TOKEN";
/// The environment variable naming a PEM file of the CA certificates an
/// `https://` node's certificate is checked against (instead of the web's
/// public roots), e.g. a node's own self-signed certificate.
pub const CA_ENV: &str = "KEYHOLE_NODE_CA";

/// A place commands are carried out.
pub enum Backend {
    /// The store in the data directory, acting as its operator.
    Local(Admin),
    /// A node's admin API.
    Remote(Remote),
}

/// A node's admin API and the token to use with it.
pub struct Remote {
    agent: ureq::Agent,
    base: String,
    token: Zeroizing<String>,
}

/// Whether `node` names a node to talk to.
pub fn is_remote(node: Option<&str>) -> bool {
    node.is_some_and(|n| !n.is_empty())
}

impl Backend {
    /// The node at `node` if one is named, else the data directory `data`.
    /// With `cluster`, the data directory is a replica of that fleet,
    /// brought up to date before the command runs, and writes go to the fleet.
    pub fn open(
        data: &Path,
        node: Option<&str>,
        cluster: Option<&ClusterConfig>,
        access: Access,
    ) -> anyhow::Result<Self> {
        if let Some(url) = node.filter(|n| !n.is_empty()) {
            return Ok(Backend::Remote(Remote::new(url)?));
        }
        let store: Arc<dyn Store> = match cluster {
            // The state is the fleet's: a replica is made wherever a command
            // runs, reading or writing.
            Some(config) => open_replica(data, Access::CreateIfMissing, config, Join::Now)?,
            None => Arc::new(open_store(data, access)?),
        };
        let mut admin = Admin::new(store)
            .with_compiled_cache(data.join(keyhole_host::engine::runtime::COMPILED_CACHE_DIR));
        if let Some(fleet) = super::cluster::joined() {
            admin = admin.with_fleet_records(fleet.records());
        }
        Ok(Backend::Local(admin))
    }

    /// Sends `request` and decodes the reply as `R`.
    pub fn call<R: DeserializeOwned>(&self, request: Request) -> anyhow::Result<R> {
        let value = match self {
            Backend::Local(admin) => admin.handle(&Caller::Local, request)?,
            Backend::Remote(remote) => remote.send(&request)?,
        };
        serde_json::from_value(value).context("the reply does not have the expected shape")
    }
}

impl Remote {
    fn new(url: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            bail!(
                "--node must be an https:// URL (a node serving --admin-tls-cert), or http:// for a loopback admin listener, e.g. http://127.0.0.1:8081 (got `{base}`)"
            );
        }
        let token = std::env::var(TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!(
                "talking to a node needs a token: set {TOKEN_ENV} (an admin creates one with `keyhole token create`)"
            )
        })?;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(300)));
        if let Some(ca) = std::env::var_os(CA_ENV).filter(|v| !v.is_empty()) {
            let pem = std::fs::read(&ca).with_context(|| {
                format!(
                    "cannot read {CA_ENV} {}",
                    std::path::Path::new(&ca).display()
                )
            })?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!(
                    "{CA_ENV} {} holds no PEM certificate",
                    std::path::Path::new(&ca).display()
                );
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let agent = config.build().into();
        Ok(Self {
            agent,
            base,
            token: Zeroizing::new(token),
        })
    }

    fn send(&self, request: &Request) -> anyhow::Result<serde_json::Value> {
        let encoded = wire::encode(request);
        let url = format!("{}{}", self.base, encoded.path);
        let auth = Zeroizing::new(format!("Bearer {}", self.token.as_str()));
        let sent = match encoded.method {
            "GET" | "DELETE" => {
                let builder = if encoded.method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                builder.header("Authorization", auth.as_str()).call()
            }
            method => {
                let builder = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                let body = encoded.body.as_deref().map_or(&[][..], Vec::as_slice);
                builder
                    .header("Authorization", auth.as_str())
                    .header("Content-Type", "application/json")
                    .send(body)
            }
        };
        let mut response =
            sent.with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .with_context(|| {
                format!(
                    "reading the node's reply to {} {}",
                    encoded.method, encoded.path
                )
            })?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "the node at {} answered {status} with something that is not JSON",
                self.base
            )
        })?;
        if status == 200 {
            return Ok(value);
        }
        let error: AdminError = value
            .get("error")
            .cloned()
            .and_then(|e| serde_json::from_value(e).ok())
            .unwrap_or_else(|| {
                AdminError::new(
                    ErrorKind::from_status(status),
                    format!("the node answered {status}"),
                )
            });
        // The node's message, exactly as the same command prints it locally.
        Err(anyhow::Error::new(error))
    }
}
