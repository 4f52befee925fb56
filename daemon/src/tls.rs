//! TLS material for the QUIC endpoint.
//!
//! Production deployments give a certificate chain and key. In development mode a
//! self-signed certificate for `localhost` and `127.0.0.1` is generated once and kept in
//! `DATA_DIR/tls/`, so clients can be told to trust that one file and keep trusting it
//! across restarts.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate chain and key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or parsing a PEM file failed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating the development certificate failed.
    #[error("generating the development certificate: {0}")]
    Generate(String),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// Loads a PEM chain and key.
pub fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    Ok(TlsMaterial { chain, key })
}

/// Loads the development certificate from `dir`, generating it on first use. Both files
/// are written durably (key first, then certificate), so a power cut leaves the pair or
/// nothing; a pair that is there but cannot be loaded (damaged, or left half-written by
/// an older daemon) is generated again, with a warning: clients that trusted the old
/// certificate must be given the new one.
pub fn load_or_generate_dev(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        match load(&cert, &key) {
            Ok(material) => return Ok(material),
            Err(e) => tracing::warn!(error = %e, "the development certificate is damaged; generating a new one"),
        }
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    crate::fsutil::write_private(&key, generated.signing_key.serialize_pem().as_bytes()).map_err(|e| file_err(&key, e))?;
    crate::fsutil::write_durably(&cert, generated.cert.pem().as_bytes(), crate::fsutil::Access::Public).map_err(|e| file_err(&cert, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed development certificate");
    load(&cert, &key)
}

/// The QUIC server configuration: TLS 1.3 only, ALPN `legalchat/1`.
pub fn server_config(material: TlsMaterial) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(material.chain, material.key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![legalchat_protocol::ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}
