//! Token verification: who a session is, from its JWT.
//!
//! `sub` is the user id and the `role` claim is `advocate`, `client` or `admin`. HS256
//! (shared secret) and RS256/ES256/EdDSA (public key) are supported; `exp` is required,
//! and `nbf`, `iss` and `aud` are checked when configured or present. The algorithm is
//! pinned by configuration, never taken from the token header, so a token cannot pick
//! the weaker algorithm (the classic `alg: none` / HS-with-public-key confusion).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use legalchat_protocol::{pb, validate};

use crate::config::{JwtAlgorithm, JwtConfig};

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user_id: String,
    /// The global role.
    pub role: Role,
    /// Display name, when the token carries one.
    pub name: Option<String>,
}

/// A user's global role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A lawyer of the firm.
    Advocate,
    /// A client of the firm.
    Client,
    /// Administrative staff.
    Admin,
}

impl Role {
    /// Parses the `role` claim.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "advocate" => Some(Self::Advocate),
            "client" => Some(Self::Client),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Advocate => "advocate",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::UserRole {
        match self {
            Self::Advocate => pb::UserRole::Advocate,
            Self::Client => pb::UserRole::Client,
            Self::Admin => pb::UserRole::Admin,
        }
    }

    /// From the stored wire enum value.
    pub fn from_pb(v: i32) -> Option<Self> {
        match pb::UserRole::try_from(v).ok()? {
            pb::UserRole::Advocate => Some(Self::Advocate),
            pb::UserRole::Client => Some(Self::Client),
            pb::UserRole::Admin => Some(Self::Admin),
            pb::UserRole::Unspecified => None,
        }
    }
}

/// The claims LegalChat reads and, for development tokens, writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Global role.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why a token was refused. The message is what the client sees in `Unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a JWT at all.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// Signed with another algorithm than the configured one.
    #[error("token uses a disallowed algorithm")]
    WrongAlgorithm,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` does not match.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not match.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is absent or of the wrong type.
    #[error("token claim {0} is missing or invalid")]
    BadClaim(String),
    /// The key material in the configuration is unusable.
    #[error("server key is misconfigured: {0}")]
    Key(String),
}

/// Verifies tokens with the configured key and rules.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// The one `alg` accepted, as a token's header spells it.
    alg: &'static str,
}

/// The claims as a token carries them, before they are checked: a missing `exp` is then
/// reported as the missing claim it is, not as an unreadable payload.
#[derive(Debug, Deserialize)]
struct Presented {
    sub: String,
    role: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    name: Option<String>,
}

/// The `alg` a token's header names: read before anything else, so that `none` or another
/// algorithm is refused as such (with the reason the client sees), whatever else is wrong.
fn header_alg(token: &str) -> Result<String, AuthError> {
    use base64::Engine as _;
    let head = token.split('.').next().filter(|h| !h.is_empty()).ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')).map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) => Ok(alg.clone()),
        _ => Err(AuthError::WrongAlgorithm),
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

fn alg_name(a: JwtAlgorithm) -> &'static str {
    match a {
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Rs256 => "RS256",
        JwtAlgorithm::Es256 => "ES256",
        JwtAlgorithm::EdDsa => "EdDSA",
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

impl Authenticator {
    /// Builds a verifier. `secret` is used for HS256; for the public-key algorithms the
    /// PEM file named in `config` is read.
    pub fn new(config: &JwtConfig, secret: Option<&[u8]>) -> Result<Self, AuthError> {
        let key = match config.algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = secret.ok_or_else(|| AuthError::Key("no HS256 secret configured".into()))?;
                DecodingKey::from_secret(secret)
            }
            other => {
                let path = config.public_key_file.as_ref().ok_or_else(|| AuthError::Key("no public key file configured".into()))?;
                let pem = std::fs::read(path).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
                let parsed = match other {
                    JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&pem),
                    JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                };
                parsed.map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?
            }
        };
        let mut validation = Validation::new(algorithm(config.algorithm));
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            // No audience configured: a token that names one is still accepted.
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation, alg: alg_name(config.algorithm) })
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_with_times(token).map(|(identity, _)| identity)
    }

    /// Verifies `token` and returns who it names, and when it was issued and expires.
    pub fn verify_with_times(&self, token: &str) -> Result<(Identity, TokenTimes), AuthError> {
        if header_alg(token)? != self.alg {
            return Err(AuthError::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<Presented>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(c.clone()),
            ErrorKind::Json(_) => AuthError::BadClaim("payload".into()),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        validate::user_id("sub", &claims.sub).map_err(|_| AuthError::BadClaim("sub".into()))?;
        let role = Role::parse(&claims.role).ok_or_else(|| AuthError::BadClaim("role".into()))?;
        let name = claims.name.filter(|n| !n.is_empty() && n.len() <= 200 && !n.chars().any(char::is_control));
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let exp = claims.exp.ok_or_else(|| AuthError::BadClaim("exp".into()))?;
        let times = TokenTimes { issued_at_ms: claims.iat.map(ms), expires_at_ms: ms(exp) };
        Ok((Identity { user_id: claims.sub, role, name }, times))
    }
}

/// When a verified token was issued and when it expires, milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    /// `iat`, when the token has one.
    pub issued_at_ms: Option<i64>,
    /// `exp`: when a session on it ends (the leeway for clock skew lets a token just
    /// past it sign in, and that session ends at once, saying why).
    pub expires_at_ms: i64,
}

/// Signs HS256 tokens with the configured secret. For development and demos only: in
/// production the firm's identity provider issues tokens.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::Key(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn config() -> JwtConfig {
        JwtConfig { algorithm: JwtAlgorithm::Hs256, secret: None, public_key_file: None, issuer: None, audience: None, leeway_secs: 0 }
    }

    fn claims(role: &str, exp_offset: i64) -> Claims {
        let exp = now_secs().saturating_add_signed(exp_offset);
        Claims { sub: "alice".into(), role: role.into(), exp, iat: None, nbf: None, iss: None, aud: None, name: Some("Alice".into()) }
    }

    #[test]
    fn valid_token_yields_identity() {
        let auth = Authenticator::new(&config(), Some(SECRET)).unwrap();
        let id = auth.verify(&mint_hs256(SECRET, &claims("advocate", 60)).unwrap()).unwrap();
        assert_eq!(id, Identity { user_id: "alice".into(), role: Role::Advocate, name: Some("Alice".into()) });
    }

    #[test]
    fn rejections_say_why() {
        let auth = Authenticator::new(&config(), Some(SECRET)).unwrap();
        assert_eq!(auth.verify("garbage"), Err(AuthError::Malformed));
        assert_eq!(auth.verify(&mint_hs256(SECRET, &claims("advocate", -120)).unwrap()), Err(AuthError::Expired));
        let other = b"another-secret-another-secret-xx";
        assert_eq!(auth.verify(&mint_hs256(other, &claims("advocate", 60)).unwrap()), Err(AuthError::BadSignature));
        assert_eq!(auth.verify(&mint_hs256(SECRET, &claims("judge", 60)).unwrap()), Err(AuthError::BadClaim("role".into())));
        let mut c = claims("client", 60);
        c.nbf = Some(now_secs() + 3_600);
        assert_eq!(auth.verify(&mint_hs256(SECRET, &c).unwrap()), Err(AuthError::NotYetValid));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let mut cfg = config();
        cfg.issuer = Some("firm".into());
        cfg.audience = Some("legalchat".into());
        let auth = Authenticator::new(&cfg, Some(SECRET)).unwrap();
        let mut c = claims("admin", 60);
        assert!(matches!(auth.verify(&mint_hs256(SECRET, &c).unwrap()), Err(AuthError::BadClaim(_))));
        c.iss = Some("firm".into());
        c.aud = Some("elsewhere".into());
        assert_eq!(auth.verify(&mint_hs256(SECRET, &c).unwrap()), Err(AuthError::WrongAudience));
        c.aud = Some("legalchat".into());
        assert!(auth.verify(&mint_hs256(SECRET, &c).unwrap()).is_ok());
        c.iss = Some("impostor".into());
        assert_eq!(auth.verify(&mint_hs256(SECRET, &c).unwrap()), Err(AuthError::WrongIssuer));
    }

    /// A token with this header and payload JSON, signed with HS256 under `key`.
    fn forged(header: &str, payload: &str, key: &[u8]) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn the_algorithm_and_a_missing_expiry_are_named_as_such() {
        let auth = Authenticator::new(&config(), Some(SECRET)).unwrap();
        let exp = now_secs() + 60;
        let payload = format!(r#"{{"sub":"alice","role":"admin","exp":{exp}}}"#);
        assert!(auth.verify(&forged(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, SECRET)).is_ok(), "the control is accepted");
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"None"}"#, r#"{"typ":"JWT"}"#, r#"{"alg":"HS512"}"#, r#"{"alg":"RS256"}"#] {
            assert_eq!(auth.verify(&forged(header, &payload, SECRET)), Err(AuthError::WrongAlgorithm), "{header}");
        }
        let unsigned = forged(r#"{"alg":"none"}"#, &payload, SECRET);
        let unsigned = format!("{}.", unsigned.rsplit_once('.').unwrap().0);
        assert_eq!(auth.verify(&unsigned), Err(AuthError::WrongAlgorithm), "alg none without a signature");
        let no_exp = forged(r#"{"alg":"HS256"}"#, r#"{"sub":"alice","role":"admin"}"#, SECRET);
        assert_eq!(auth.verify(&no_exp), Err(AuthError::BadClaim("exp".into())));
        assert_eq!(AuthError::BadClaim("exp".into()).to_string(), "token claim exp is missing or invalid");
    }

    #[test]
    fn hostile_subject_is_refused() {
        let auth = Authenticator::new(&config(), Some(SECRET)).unwrap();
        let mut c = claims("client", 60);
        c.sub = "../../etc".into();
        assert_eq!(auth.verify(&mint_hs256(SECRET, &c).unwrap()), Err(AuthError::BadClaim("sub".into())));
    }

    fn public_key_config(algorithm: JwtAlgorithm, dir: &std::path::Path, public_pem: &str) -> JwtConfig {
        let path = dir.join("jwt-public.pem");
        std::fs::write(&path, public_pem).unwrap();
        JwtConfig { algorithm, secret: None, public_key_file: Some(path), issuer: None, audience: None, leeway_secs: 0 }
    }

    #[test]
    fn public_key_algorithms_verify_and_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        for (alg, rc_alg, jwt_alg) in [
            (JwtAlgorithm::EdDsa, &rcgen::PKCS_ED25519, Algorithm::EdDSA),
            (JwtAlgorithm::Es256, &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        ] {
            let pair = rcgen::KeyPair::generate_for(rc_alg).unwrap();
            let auth = Authenticator::new(&public_key_config(alg, dir.path(), &pair.public_key_pem()), None).unwrap();
            let private = pair.serialize_pem();
            let key = match alg {
                JwtAlgorithm::EdDsa => EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
                _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            };
            let token = jsonwebtoken::encode(&Header::new(jwt_alg), &claims("admin", 60), &key).unwrap();
            assert_eq!(auth.verify(&token).unwrap().role, Role::Admin, "{alg:?}");

            // A token signed by another key of the same kind is refused.
            let stranger = rcgen::KeyPair::generate_for(rc_alg).unwrap().serialize_pem();
            let key = match alg {
                JwtAlgorithm::EdDsa => EncodingKey::from_ed_pem(stranger.as_bytes()).unwrap(),
                _ => EncodingKey::from_ec_pem(stranger.as_bytes()).unwrap(),
            };
            let forged = jsonwebtoken::encode(&Header::new(jwt_alg), &claims("admin", 60), &key).unwrap();
            assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature), "{alg:?}");

            // An HS256 token is refused however it was made: the algorithm is pinned.
            let hs = mint_hs256(pair.public_key_pem().as_bytes(), &claims("admin", 60)).unwrap();
            assert_eq!(auth.verify(&hs), Err(AuthError::WrongAlgorithm), "{alg:?}");
        }
    }

    #[test]
    fn unreadable_public_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Authenticator::new(&public_key_config(JwtAlgorithm::Rs256, dir.path(), "not a key"), None).unwrap_err();
        assert!(matches!(e, AuthError::Key(ref m) if m.contains("jwt-public.pem")), "{e}");
    }
}
