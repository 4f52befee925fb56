//! TLS and QUIC transport settings for a LegalChat connection.
//!
//! The client trusts exactly the certificates it is given, never the operating
//! system's store: a law firm's chat server is reached through the firm's own CA (or,
//! in development, the daemon's self-signed certificate), and a public CA vouching for
//! some other "chat.firm.example" must not be enough.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::Error;

/// Default interval of QUIC keep-alive packets (see
/// [`ClientConfig::keep_alive_interval`](crate::ClientConfig::keep_alive_interval)).
pub const KEEP_ALIVE_INTERVAL: Duration = crate::config::DEFAULT_KEEP_ALIVE_INTERVAL;
/// Default idle timeout: a connection that hears nothing from the server for this long is
/// dead (see [`ClientConfig::idle_timeout`](crate::ClientConfig::idle_timeout)).
pub const IDLE_TIMEOUT: Duration = crate::config::DEFAULT_IDLE_TIMEOUT;

/// Builds a QUIC client configuration that trusts only the certificates in `ca_pem`
/// (a PEM bundle: a CA certificate, or a self-signed server certificate, or several),
/// speaks TLS 1.3 with ALPN `legalchat/1`, and sends keep-alives every
/// [`KEEP_ALIVE_INTERVAL`] with an idle timeout of [`IDLE_TIMEOUT`].
///
/// Sections of the bundle that are not certificates (e.g. a private key that was
/// concatenated into the same file) are skipped; a bundle without a single certificate is
/// an error.
pub fn client_config(ca_pem: &[u8]) -> Result<quinn::ClientConfig, Error> {
    client_config_with(ca_pem, IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL)
}

/// [`client_config`] with the given idle timeout and keep-alive interval (the
/// keep-alive must be shorter than the idle timeout for a quiet connection to live).
pub fn client_config_with(ca_pem: &[u8], idle_timeout: Duration, keep_alive_interval: Duration) -> Result<quinn::ClientConfig, Error> {
    let quic = QuicClientConfig::try_from(rustls_config(ca_pem)?).map_err(|e| Error::Tls(format!("QUIC TLS setup: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(idle_timeout, keep_alive_interval)));
    Ok(config)
}

/// The QUIC client configuration of [`client_config_with`], and the TLS configuration of
/// TLS over TCP (its own, so that a session ticket of one transport is never offered on
/// the other).
pub(crate) fn client_configs(
    ca_pem: &[u8],
    idle_timeout: Duration,
    keep_alive_interval: Duration,
) -> Result<(quinn::ClientConfig, Arc<rustls::ClientConfig>), Error> {
    Ok((client_config_with(ca_pem, idle_timeout, keep_alive_interval)?, Arc::new(rustls_config(ca_pem)?)))
}

/// The TLS configuration of both transports: only the certificates in `ca_pem` are
/// trusted, TLS 1.3 only (QUIC is defined over it; TLS over TCP asks no less), ALPN
/// `legalchat/1`.
pub(crate) fn rustls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(ca_pem).enumerate() {
        let cert = cert.map_err(|e| Error::Tls(format!("CA bundle: PEM section {}: {e}", index + 1)))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("CA bundle: certificate {} is unusable as a root: {e}", index + 1)))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("CA bundle contains no PEM certificate".into()));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![legalchat_protocol::ALPN.to_vec()];
    Ok(tls)
}

fn transport_config(idle_timeout: Duration, keep_alive_interval: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(keep_alive_interval));
    // `IdleTimeout` rejects only values beyond 2^62 µs, which `ClientConfig::validate`
    // refuses; should one get here anyway, fall back to the default rather than to none.
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).or_else(|_| quinn::IdleTimeout::try_from(IDLE_TIMEOUT)).ok());
    // The client opens the bidirectional streams. The server opens at most one stream:
    // the fan-out stream of a shared connection (unidirectional).
    transport.max_concurrent_bidi_streams(0u8.into());
    transport.max_concurrent_uni_streams(1u8.into());
    // Small frames, many packets: ask the server to acknowledge every 10th packet (or
    // after its max ACK delay) rather than every second one; ACKs ride along its frames.
    let mut ack_frequency = quinn::AckFrequencyConfig::default();
    ack_frequency.ack_eliciting_threshold(10u32.into());
    transport.ack_frequency_config(Some(ack_frequency));
    transport
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key generation");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.self_signed(&key).expect("self-signed certificate").pem()
    }

    #[test]
    fn accepts_a_self_signed_certificate_as_root() {
        assert!(client_config(self_signed_pem().as_bytes()).is_ok());
    }

    #[test]
    fn accepts_a_bundle_with_a_key_in_it() {
        let key = rcgen::KeyPair::generate().expect("key generation");
        let bundle = format!("{}{}", self_signed_pem(), key.serialize_pem());
        assert!(client_config(bundle.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_an_empty_bundle() {
        let err = client_config(b"").unwrap_err();
        assert!(matches!(&err, Error::Tls(m) if m.contains("no PEM certificate")), "{err}");
        let err = client_config(b"not a pem file at all").unwrap_err();
        assert!(matches!(err, Error::Tls(_)));
    }

    #[test]
    fn rejects_a_garbled_certificate() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(client_config(pem.as_bytes()), Err(Error::Tls(_))));
    }
}
