//! Arbitrary text as the daemon's configuration file, through `Config::from_toml`: the TOML
//! parser, the file's shape (unknown keys are refused) and the check of every setting.
//! What it accepts is then used as the daemon uses it when it starts: the token verifier
//! is built from `[jwt]` (HS256 with a secret) and must accept a token made for it; the
//! rate limits are built and consulted, and so are the push hosts.
//!
//! What must hold for any input: no panic; a refusal names the setting (`key` is the TOML
//! key, its environment variable and flag) or, for TOML that does not parse or a key that
//! does not exist, says where in the file; what is accepted is within the documented ranges.
#![no_main]

use legalchat_daemon::auth::{self, Authenticator};
use legalchat_daemon::config::{Config, ConfigError, JwtAlgorithm};
use legalchat_daemon::limits::{Limiter as _, LocalLimiter, RateLimits};
use legalchat_daemon::push;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(config) => accepted(&config),
        Err(ConfigError::Invalid { key, reason }) => {
            // `toml.key (ENV_VAR, --flag)`, or several of them joined by " / " or " or ".
            let setting = key.split([' ', '(']).next().unwrap_or_default();
            assert!(
                !setting.is_empty() && setting.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'),
                "{key:?} names no setting"
            );
            assert!(!reason.is_empty());
        }
        Err(ConfigError::File { reason, .. }) => assert!(reason.contains("line"), "no place in the file: {reason}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
});

fn accepted(config: &Config) {
    assert!((1..=256).contains(&config.shards));
    assert!(config.max_message_size + 1_024 <= config.max_frame_size);
    assert!((1..=1 << 32).contains(&config.files.max_file_size));
    assert!(!config.files.allowed_types.is_empty());
    assert!(config.tls_cert.is_some() == config.tls_key.is_some());

    let _ = push::check_host("https://fcm.googleapis.com/fcm/send/x", &config.push.allowed_hosts);
    // The rate limits it starts with answer.
    let limits = RateLimits::local(config.limits.clone());
    let _ = limits.check_connection("192.0.2.1".parse().expect("an address"));
    let _ = limits.messages.check("alice");
    let _ = LocalLimiter::per_hour(config.files.uploads_per_hour).check("alice");

    // The verifier the daemon would start with accepts a token made for it.
    if config.jwt.algorithm == JwtAlgorithm::Hs256
        && let Some(secret) = &config.jwt.secret
    {
        let verifier = Authenticator::new(&config.jwt, Some(secret.as_bytes())).expect("an HS256 verifier with a secret");
        let claims = auth::Claims {
            sub: "alice".into(),
            role: "advocate".into(),
            exp: auth::now_secs() + 600,
            iat: Some(auth::now_secs()),
            nbf: None,
            iss: config.jwt.issuer.clone(),
            aud: config.jwt.audience.clone(),
            name: None,
        };
        let token = auth::mint_hs256(secret.as_bytes(), &claims).expect("minting");
        if let Err(e) = verifier.verify(&token) {
            panic!("the configured verifier refuses a valid token ({e}); jwt settings {:?}", config.jwt);
        }
    }
}
