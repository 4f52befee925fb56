//! VAPID (RFC 8292): the application server identifies itself to push services with a
//! JWT signed by its P-256 key, and browsers bind a subscription to that key's public half
//! (`applicationServerKey`), so only this server can push to it.
//!
//! ```text
//!  Authorization: vapid t=<JWT ES256 {aud: origin of the endpoint, exp: now + 12 h, sub}>, k=<public key>
//! ```

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};

/// How long a VAPID token is valid. RFC 8292 §2 allows at most 24 hours; half of that
/// leaves room for clock skew between us and the push service.
pub const TOKEN_LIFETIME_SECS: u64 = 12 * 3_600;

/// Why a VAPID key or token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VapidError {
    /// The key file does not hold a P-256 private key.
    #[error("not a P-256 private key in PEM (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\") or base64url: {0}")]
    BadKey(String),
    /// The endpoint has no origin (scheme and host).
    #[error("endpoint {0:?} is not an http(s) URL with a host")]
    BadEndpoint(String),
    /// Signing failed.
    #[error("signing the VAPID token: {0}")]
    Sign(String),
}

/// The server's VAPID key pair.
pub struct VapidKey {
    signing: EncodingKey,
    /// Uncompressed public point, base64url without padding: what browsers take as
    /// `applicationServerKey` and push services receive as `k=`.
    public_b64: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        f.debug_struct("VapidKey").field("public", &self.public_b64).finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl VapidKey {
    /// Reads a key as kept in a file: PEM PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`), PEM SEC1 (`openssl ecparam -name prime256v1 -genkey`), or
    /// the raw 32-byte scalar in base64url (what `web-push generate-vapid-keys` prints).
    pub fn parse(text: &str) -> Result<Self, VapidError> {
        let text = text.trim();
        let key = if text.contains("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(text).map_err(|e| VapidError::BadKey(e.to_string()))?
        } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(text).map_err(|e| VapidError::BadKey(e.to_string()))?
        } else {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| VapidError::BadKey("neither PEM nor base64url".into()))?;
            p256::SecretKey::from_slice(&raw).map_err(|e| VapidError::BadKey(e.to_string()))?
        };
        Self::from_secret(&key)
    }

    /// A key pair from its private half.
    pub fn from_secret(key: &p256::SecretKey) -> Result<Self, VapidError> {
        let der = key.to_pkcs8_der().map_err(|e| VapidError::BadKey(e.to_string()))?;
        let public = key.public_key().to_encoded_point(false);
        Ok(Self {
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            public_b64: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes()),
        })
    }

    /// A new random key as PKCS#8 PEM, for the development key file.
    pub fn generate_pem() -> Result<String, VapidError> {
        let key = super::encryption::random_secret_key();
        Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| VapidError::BadKey(e.to_string()))?.to_string())
    }

    /// The public key, base64url (65 bytes uncompressed, no padding).
    pub fn public_key_b64(&self) -> &str {
        &self.public_b64
    }

    /// The `Authorization` header value for a push to `endpoint` at `now_secs`.
    pub fn authorization(&self, endpoint: &str, subject: &str, now_secs: u64) -> Result<String, VapidError> {
        let aud = origin(endpoint)?;
        let claims = Claims { aud: &aud, exp: now_secs + TOKEN_LIFETIME_SECS, sub: subject };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing).map_err(|e| VapidError::Sign(e.to_string()))?;
        Ok(format!("vapid t={token}, k={}", self.public_b64))
    }
}

/// The origin (RFC 6454) of a push endpoint: lowercase scheme and host, and the port only
/// when it is not the scheme's default — what push services compare the token's `aud` to.
pub fn origin(endpoint: &str) -> Result<String, VapidError> {
    let bad = || VapidError::BadEndpoint(endpoint.chars().take(100).collect());
    let uri: hyper::Uri = endpoint.parse().map_err(|_| bad())?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase).ok_or_else(bad)?;
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(bad()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?.to_ascii_lowercase();
    Ok(match uri.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_scheme_host_and_non_default_port() {
        assert_eq!(origin("https://fcm.googleapis.com/fcm/send/abc:def").unwrap(), "https://fcm.googleapis.com");
        assert_eq!(
            origin("https://Updates.Push.Services.Mozilla.com:443/wpush/v2/x").unwrap(),
            "https://updates.push.services.mozilla.com"
        );
        assert_eq!(origin("https://push.example:8443/a?b=c").unwrap(), "https://push.example:8443");
        assert_eq!(origin("http://127.0.0.1:5000/wp/bob").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(origin("http://[::1]:80/x").unwrap(), "http://[::1]");
        for bad in ["", "/relative", "ftp://x/y", "https://", "not a url"] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorization_header_carries_a_token_the_public_key_verifies() {
        let pem = VapidKey::generate_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = VapidKey::parse(&pem).unwrap();
        let header = key.authorization("https://push.example:8443/send/xyz", "mailto:it@firm.example", 1_000).unwrap();
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (token, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_key_b64());

        // Verify with the public key as a push service would: from the k= parameter alone.
        let point = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4));
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..])).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://push.example:8443"]);
        validation.validate_exp = false; // `exp` is 1_000 + 12 h here, long past.
        validation.set_required_spec_claims(&["aud", "exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap();
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
        assert_eq!(data.claims["sub"], "mailto:it@firm.example");
        assert_eq!(data.claims["exp"], 1_000 + TOKEN_LIFETIME_SECS);

        // Another key's public half does not verify it.
        let other = VapidKey::parse(&VapidKey::generate_pem().unwrap()).unwrap();
        let point = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(other.public_key_b64()).unwrap();
        let wrong = jsonwebtoken::DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..])).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(token, &wrong, &validation).is_err());
    }

    #[test]
    fn keys_are_read_in_every_usual_form() {
        let secret = crate::push::encryption::random_secret_key();
        let expected = VapidKey::from_secret(&secret).unwrap();
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.to_bytes());
        for text in [pkcs8.to_string(), format!("\n{}\n\n", pkcs8.trim()), sec1.to_string(), raw] {
            assert_eq!(VapidKey::parse(&text).unwrap().public_key_b64(), expected.public_key_b64());
        }
        for bad in ["", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "c2hvcnQ"] {
            assert!(VapidKey::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{expected:?}").contains("signing"), "Debug never shows the private key");
    }
}
