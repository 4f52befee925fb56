//! HS256 tokens the daemon accepts: `{sub, role, iat, exp}` signed with its shared secret.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// The claims LegalChat reads from a token (see `docs/INTERFACES.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `advocate`, `client` or `admin` (anything else is what a test of a bad role sends).
    pub role: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

impl Claims {
    /// Claims for `user` with `role`, valid from now for `ttl_secs` (negative: already expired).
    pub fn new(user: &str, role: &str, ttl_secs: i64) -> Self {
        let now = unix_now();
        Self { sub: user.to_owned(), role: role.to_owned(), iat: now, exp: now + ttl_secs }
    }
}

/// Signs tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret; never print it.
        f.debug_struct("TokenMinter").finish_non_exhaustive()
    }
}

/// Token lifetime long enough for any test or load run.
pub const DEFAULT_TTL_SECS: i64 = 3_600;

impl TokenMinter {
    /// A minter for the shared `secret`.
    pub fn new(secret: &str) -> Self {
        Self { key: EncodingKey::from_secret(secret.as_bytes()) }
    }

    /// A token for `user` with `role`, valid for an hour.
    pub fn token(&self, user: &str, role: &str) -> anyhow::Result<String> {
        self.sign(&Claims::new(user, role, DEFAULT_TTL_SECS))
    }

    /// A token carrying exactly `claims`.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        jsonwebtoken::encode(&Header::default(), claims, &self.key).context("signing a JWT")
    }
}

/// A random secret of 64 hex characters (256 bits).
pub fn random_secret() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
