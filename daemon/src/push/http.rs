//! The HTTPS client notifications go out through: hyper's pooled HTTP/1.1 client over
//! rustls (ring), trusting Mozilla's roots (the public push services) and the system's
//! store (a firm's own CA for its notification service). Plain http is refused except to
//! loopback addresses, which only tests and a local relay use.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::retry::{Outcome, parse_retry_after};

/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt may take, connection, TLS and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error answer is read (for the log) before the connection is dropped.
const MAX_ANSWER_BODY: usize = 4 * 1024;
/// Idle pooled connections kept per host: push services are few, deliveries many.
const MAX_IDLE_PER_HOST: usize = 16;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TLS settings were refused.
    #[error("TLS client configuration: {0}")]
    Tls(String),
}

/// A POST that could not be sent as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The URL is not https (or http to loopback).
    #[error("{0}")]
    Url(String),
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// For the retry policy.
    pub outcome: Outcome,
    /// The start of the answer's body (error answers only) or the network error, for logs.
    pub detail: String,
}

/// A pooled HTTPS client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector<PublicResolver>>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client; must run inside a Tokio runtime.
    pub fn new() -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "push: reading the system's trusted certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "push: system certificates trusted besides Mozilla's roots");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(PublicResolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(MAX_IDLE_PER_HOST).build(https);
        Ok(Self { inner })
    }

    /// POSTs `body` to `url` with `headers`; bounded by [`REQUEST_TIMEOUT`]. Network
    /// failures are an [`Answer`] (they are retried), not an error.
    pub async fn post(&self, url: &str, headers: &[(HeaderName, HeaderValue)], body: Bytes) -> Result<Answer, RequestError> {
        let uri = checked_uri(url)?;
        let mut request = hyper::Request::post(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| RequestError::Url(e.to_string()))?;
        let exchange = async {
            let response = match self.inner.request(request).await {
                Ok(r) => r,
                Err(e) => return Answer { outcome: Outcome::Network, detail: error_chain(&e) },
            };
            let status = response.status().as_u16();
            let retry_after = response.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            // Read a little of an error answer for the log; reading a success to its end
            // lets the connection go back to the pool.
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BODY).collect().await;
            let detail = match body {
                Ok(b) if !(200..300).contains(&status) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect(),
                _ => String::new(),
            };
            Answer { outcome: Outcome::Status { status, retry_after }, detail }
        };
        Ok(tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Answer { outcome: Outcome::Network, detail: format!("no answer within {REQUEST_TIMEOUT:?}") }))
    }
}

/// Resolves names for the push client and keeps only public addresses: a push service's
/// name that resolves (or is rebound) to loopback, private, link-local, shared or
/// unspecified addresses reaches nothing, so no subscription can aim the server at its own
/// network. `localhost` is the one name allowed to resolve to loopback (the firm's
/// notification service on the same host, configured by the operator); addresses written
/// in a URL are judged by [`checked_uri`] and the host allow-list, not here.
#[derive(Debug, Clone, Copy)]
struct PublicResolver;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PublicResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            reachable(&host, all).map(Vec::into_iter)
        })
    }
}

/// The addresses of `host` the push client may connect to: the public ones (and loopback
/// for `localhost`); an error when none is left.
fn reachable(host: &str, all: Vec<std::net::SocketAddr>) -> std::io::Result<Vec<std::net::SocketAddr>> {
    let local = host.eq_ignore_ascii_case("localhost");
    let kept: Vec<std::net::SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip()) || (local && a.ip().is_loopback())).collect();
    if kept.is_empty() {
        tracing::warn!(%host, addresses = ?all, "push: refusing a host that resolves only to internal addresses");
        return Err(std::io::Error::other(format!("{host} resolves only to internal addresses")));
    }
    Ok(kept)
}

/// Whether `ip` is an address on the public internet.
pub(crate) fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// The host of a URL as [`checked_uri`] reads it: lowercased, without IPv6 brackets. The
/// one parser for both the allow-list check and the request.
pub fn host_of(url: &str) -> Result<String, RequestError> {
    let uri = checked_uri(url)?;
    Ok(uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
}

/// Parses `url`, which must be https, or http to a loopback host.
pub fn checked_uri(url: &str) -> Result<hyper::Uri, RequestError> {
    let uri: hyper::Uri = url.parse().map_err(|_| RequestError::Url(format!("not a URL: {:?}", truncate(url))))?;
    // `user@host`: credentials in a URL are a classic way to disguise the real host.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(RequestError::Url(format!("refusing {:?}: credentials in the URL", truncate(url))));
    }
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        _ => Err(RequestError::Url(format!("refusing {:?}: only https, or http to loopback", truncate(url)))),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        for ok in [
            "https://fcm.googleapis.com/fcm/send/x",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]:8080/",
            "http://127.0.0.2/",
        ] {
            assert!(checked_uri(ok).is_ok(), "{ok}");
        }
        for bad in ["http://push.example/x", "http://10.0.0.1/x", "ftp://127.0.0.1/", "https:///x", "nonsense", ""] {
            assert!(checked_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_public_addresses_are_reached() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "142.250.0.1", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_rebound_name_reaches_only_its_public_addresses() {
        let addr = |s: &str| std::net::SocketAddr::new(s.parse().unwrap(), 443);
        // A push service's name rebound to the metadata service and loopback: nothing left.
        let e = reachable("fcm.googleapis.com", vec![addr("169.254.169.254"), addr("127.0.0.1")]).unwrap_err();
        assert!(e.to_string().contains("resolves only to internal addresses"), "{e}");
        // Mixed answers keep only the public address.
        assert_eq!(reachable("fcm.googleapis.com", vec![addr("10.0.0.1"), addr("142.250.0.1")]).unwrap(), vec![addr("142.250.0.1")]);
        // The operator's own host, by name.
        assert_eq!(reachable("localhost", vec![addr("127.0.0.1")]).unwrap(), vec![addr("127.0.0.1")]);
    }

    #[tokio::test]
    async fn the_resolver_lets_localhost_through() {
        use std::str::FromStr as _;
        use tower_service::Service as _;
        let name = hyper_util::client::legacy::connect::dns::Name::from_str("localhost").unwrap();
        let found = PublicResolver.call(name).await.expect("localhost is the operator's own host");
        assert!(found.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn the_client_builds_with_the_ring_provider_and_roots() {
        let client = HttpClient::new().unwrap();
        // Refused before any connection is made.
        assert!(client.post("http://push.example/x", &[], Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_a_network_failure() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = HttpClient::new().unwrap();
        let answer = client.post(&format!("http://127.0.0.1:{port}/x"), &[], Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(answer.outcome, Outcome::Network);
        assert!(!answer.detail.is_empty());
    }
}
