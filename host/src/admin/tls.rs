//! TLS for the admin listener: bearer tokens cross the network only
//! encrypted and only to the server the operator's certificate names.
//!
//! The node loads a PEM certificate chain and its private key once at start
//! (`keyhole serve --admin-tls-cert --admin-tls-key`); rustls with the ring
//! provider, TLS 1.2 and 1.3, no client certificates (callers authenticate
//! with their tokens).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the admin listener's TLS could not be set up; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate file holds no usable PEM certificate.
    #[error("cannot read a PEM certificate chain from {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("cannot read a PEM private key from {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused them.
    #[error("the certificate {cert} and key {key} do not make a TLS server: {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The server configuration for the certificate chain at `cert` and the
/// private key at `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError::Certificate {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Certificate {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block in it".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| TlsSetupError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}
