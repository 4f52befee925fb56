//! Tokens through the daemon's verifier (`auth::Authenticator`), which every session's
//! `Authenticate` and every `Reauthenticate` hand their token to. Four verifiers as the
//! configuration makes them: HS256 plain; HS256 with issuer, audience and leeway; EdDSA;
//! ES256 with an issuer.
//!
//! Three kinds of input, by the first byte: arbitrary text as a token; a token built from
//! the bytes (header and claims JSON with right and wrong types and times around now,
//! signed with the configured key, another key, the public key as an HMAC secret, other
//! algorithms, `alg: none` or garbage, in compact form or not); or claims signed by
//! `auth::mint_hs256`.
//!
//! What must hold for any input: no panic; a token is accepted only if ring (not the
//! verifier's own crypto) verifies its signature with the configured key and algorithm,
//! its header names that algorithm, and its claims are valid (`exp` not past and `nbf` not
//! ahead, leeway included; `iss` and `aud` as configured; `sub` a user id; `role` a role);
//! and a well-formed token signed so, with valid claims, is accepted.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use legalchat_daemon::auth::{self, Authenticator, Role};
use legalchat_daemon::config::{JwtAlgorithm, JwtConfig};
use legalchat_protocol::validate;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::{Map, Value, json};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";
/// DER prefixes of a SubjectPublicKeyInfo, before the raw public key.
const ED25519_SPKI: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const P256_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
    0x07, 0x03, 0x42, 0x00,
];

/// A verifier as the daemon builds it, and what the oracle needs to judge it.
struct Verifier {
    auth: Authenticator,
    /// The algorithm's name in a header.
    alg: &'static str,
    /// The HS256 secret, or the public key.
    key: Key,
    /// The public key as PEM (for the HS-with-public-key confusion), or the secret.
    pem: Vec<u8>,
    issuer: Option<&'static str>,
    audience: Option<&'static str>,
    leeway: u64,
}

enum Key {
    Hmac(&'static [u8]),
    Ed25519(Vec<u8>),
    P256(Vec<u8>),
}

struct World {
    ed: Ed25519KeyPair,
    ed_stranger: Ed25519KeyPair,
    ec: EcdsaKeyPair,
    ec_stranger: EcdsaKeyPair,
    rng: SystemRandom,
    verifiers: Vec<Verifier>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rng = SystemRandom::new();
    let ed = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("ed25519 key");
    let ed_stranger = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).expect("ed25519 key");
    let ec_key = |rng: &SystemRandom| {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, rng).expect("p256 key");
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng).expect("p256 key")
    };
    let (ec, ec_stranger) = (ec_key(&rng), ec_key(&rng));
    let ed_pem = pem(ED25519_SPKI, ed.public_key().as_ref());
    let ec_pem = pem(P256_SPKI, ec.public_key().as_ref());
    let verifiers = vec![
        verifier(JwtAlgorithm::Hs256, "HS256", Key::Hmac(SECRET), SECRET.to_vec(), None, None, 0),
        verifier(JwtAlgorithm::Hs256, "HS256", Key::Hmac(SECRET), SECRET.to_vec(), Some("firm"), Some("legalchat"), 30),
        verifier(JwtAlgorithm::EdDsa, "EdDSA", Key::Ed25519(ed.public_key().as_ref().to_vec()), ed_pem, None, None, 0),
        verifier(JwtAlgorithm::Es256, "ES256", Key::P256(ec.public_key().as_ref().to_vec()), ec_pem, Some("firm"), None, 5),
    ];
    World { ed, ed_stranger, ec, ec_stranger, rng, verifiers }
});

fn pem(spki_prefix: &[u8], public_key: &[u8]) -> Vec<u8> {
    let b64 = STANDARD.encode([spki_prefix, public_key].concat());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).expect("base64 is ASCII")).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n")).into_bytes()
}

/// The daemon reads a public key from a file when it starts: written here, read, removed.
fn verifier(
    algorithm: JwtAlgorithm,
    alg: &'static str,
    key: Key,
    pem: Vec<u8>,
    issuer: Option<&'static str>,
    audience: Option<&'static str>,
    leeway: u64,
) -> Verifier {
    let file = (!matches!(key, Key::Hmac(_))).then(|| {
        let path = std::env::temp_dir().join(format!("legalchat-fuzz-jwt-{}-{alg}.pem", std::process::id()));
        std::fs::write(&path, &pem).expect("writing the public key");
        path
    });
    let config = JwtConfig {
        algorithm,
        secret: None,
        public_key_file: file.clone(),
        issuer: issuer.map(Into::into),
        audience: audience.map(Into::into),
        leeway_secs: leeway,
    };
    let auth = Authenticator::new(&config, Some(SECRET)).expect("verifier");
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    Verifier { auth, alg, key, pem, issuer, audience, leeway }
}

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    match data.split_first() {
        Some((mode, rest)) if mode % 4 == 1 => {
            let Ok(forged) = Forged::arbitrary_take_rest(Unstructured::new(rest)) else { return };
            let (token, canonical) = forged.token(world);
            let verifier = &world.verifiers[usize::from(forged.verifier) % world.verifiers.len()];
            check(verifier, &token, canonical);
        }
        Some((mode, rest)) if mode % 4 == 2 => {
            let Ok(minted) = Minted::arbitrary_take_rest(Unstructured::new(rest)) else { return };
            let Ok(token) = auth::mint_hs256(SECRET, &minted.claims()) else { return };
            for verifier in &world.verifiers[..2] {
                check(verifier, &token, true);
            }
        }
        _ => {
            let token = String::from_utf8_lossy(data);
            for verifier in &world.verifiers {
                check(verifier, &token, false);
            }
        }
    }
});

/// Verifies `token` and judges the answer. `canonical`: the token is well-formed, and
/// signed by the verifier's key and algorithm whenever its header names that algorithm.
fn check(verifier: &Verifier, token: &str, canonical: bool) {
    let before = auth::now_secs();
    let verdict = verifier.auth.verify_with_times(token);
    let after = auth::now_secs();
    let judged = judge(verifier, token, before, after);
    match verdict {
        Ok((identity, times)) => {
            let claims = match judged {
                Judged::Valid(claims) | Judged::Unsure(claims) => claims,
                Judged::Invalid(why) => panic!("accepted a token that must be refused ({why}): {token:?}"),
            };
            let claim = |k: &str| claims.get(k).unwrap_or(&Value::Null);
            assert_eq!(Some(identity.user_id.as_str()), claim("sub").as_str());
            assert_eq!(Some(identity.role.as_str()), claim("role").as_str());
            // A display name is kept when it is one: 1..=200 bytes without control characters.
            let name = claim("name").as_str().filter(|n| !n.is_empty() && n.len() <= 200 && !n.chars().any(char::is_control));
            assert_eq!(identity.name.as_deref(), name);
            let exp = claim("exp").as_u64().expect("judged");
            assert_eq!(times.expires_at_ms, i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if canonical && let Judged::Valid(_) = judged {
                panic!("refused a well-formed, well-signed token with valid claims ({e}): {token:?}");
            }
        }
    }
}

enum Judged {
    /// Must be accepted (when canonical).
    Valid(Map<String, Value>),
    /// Valid but for a time too close to now to tell.
    Unsure(Map<String, Value>),
    /// Must be refused.
    Invalid(&'static str),
}

/// What the token deserves from `verifier`, worked out without the verifier's code.
fn judge(verifier: &Verifier, token: &str, before: u64, after: u64) -> Judged {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, sig] = parts[..] else { return Judged::Invalid("not three parts") };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let (Some(header), Some(payload), Some(sig)) = (decode(header), decode(payload), decode(sig)) else {
        return Judged::Invalid("not base64url");
    };
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else { return Judged::Invalid("header not an object") };
    if header.get("alg").and_then(Value::as_str) != Some(verifier.alg) {
        return Judged::Invalid("another algorithm");
    }
    let signed = token.rsplit_once('.').expect("three parts").0.as_bytes();
    let verified = match &verifier.key {
        Key::Hmac(secret) => ring::hmac::verify(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), signed, &sig).is_ok(),
        Key::Ed25519(public) => UnparsedPublicKey::new(&signature::ED25519, public).verify(signed, &sig).is_ok(),
        Key::P256(public) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public).verify(signed, &sig).is_ok(),
    };
    if !verified {
        return Judged::Invalid("signature");
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else { return Judged::Invalid("claims not an object") };
    let absent = |k: &str| claims.get(k).is_none_or(Value::is_null);
    let string = |k: &str| claims.get(k).and_then(Value::as_str);
    let number = |k: &str| claims.get(k).and_then(Value::as_u64);
    if !string("sub").is_some_and(|s| validate::user_id("sub", s).is_ok()) {
        return Judged::Invalid("sub");
    }
    if !string("role").is_some_and(|r| Role::parse(r).is_some()) {
        return Judged::Invalid("role");
    }
    let Some(exp) = number("exp") else { return Judged::Invalid("exp") };
    // `nbf` is a NumericDate: a whole number of seconds, or a fraction (rounded).
    let nbf = match claims.get("nbf") {
        None => None,
        Some(v) => {
            match v.as_u64().or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f.round() as u64))
            {
                Some(n) => Some(n),
                None => return Judged::Invalid("nbf"),
            }
        }
    };
    if !absent("iat") && number("iat").is_none() {
        return Judged::Invalid("iat");
    }
    if !absent("name") && string("name").is_none() {
        return Judged::Invalid("name");
    }
    // A configured issuer is the token's one `iss`; a configured audience is its `aud`, or
    // one of them (RFC 7519: `iss` is a string, `aud` a string or a list of strings).
    if let Some(issuer) = verifier.issuer
        && string("iss") != Some(issuer)
    {
        return Judged::Invalid("iss");
    }
    if let Some(audience) = verifier.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().all(Value::is_string) && list.iter().any(|a| a == audience),
            _ => false,
        };
        if !ok {
            return Judged::Invalid("aud");
        }
    }
    // `exp` is past when below now − leeway; `nbf` ahead when above now + leeway. Now is
    // somewhere in before..=after.
    let leeway = verifier.leeway;
    if exp.saturating_add(leeway) < before || nbf.is_some_and(|n| n > after.saturating_add(leeway)) {
        return Judged::Invalid("expired or not yet valid");
    }
    if exp.saturating_add(leeway) < after || nbf.is_some_and(|n| n > before.saturating_add(leeway)) {
        return Judged::Unsure(claims);
    }
    Judged::Valid(claims)
}

/// A token made from the fuzz bytes.
#[derive(Arbitrary, Debug)]
struct Forged {
    verifier: u8,
    header: Header,
    claims: Claims,
    signer: Signer,
    form: Form,
}

#[derive(Arbitrary, Debug)]
enum Header {
    /// `{"alg": …, "typ": "JWT"}`.
    Alg(Alg),
    /// `{"alg": …}` and more fields.
    Fields(Alg, Vec<(HeaderField, Json)>),
    /// Any text as the header.
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Ps256,
    Es256,
    Es384,
    EdDsa,
    None,
    NoneCapitals,
    Hs256Lowercase,
    Missing,
    NotAString,
}

impl Alg {
    fn json(self) -> Option<Value> {
        Some(json!(match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::None => "none",
            Alg::NoneCapitals => "NONE",
            Alg::Hs256Lowercase => "hs256",
            Alg::Missing => return None,
            Alg::NotAString => return Some(json!(256)),
        }))
    }
}

#[derive(Arbitrary, Debug)]
enum HeaderField {
    Typ,
    Cty,
    Kid,
    Jku,
    Jwk,
    X5c,
    Crit,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    List(Vec<Scalar>),
    Object(Vec<(String, Scalar)>),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Null,
    Int(i64),
    Str(String),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::UInt(u) => json!(u),
            Json::Float(f) => json!(f),
            Json::Str(s) => json!(s),
            Json::List(l) => Value::Array(l.iter().map(Scalar::value).collect()),
            Json::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.value())).collect()),
        }
    }
}

impl Scalar {
    fn value(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Int(i) => json!(i),
            Scalar::Str(s) => json!(s),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Claims {
    Fields {
        sub: Claim<Sub>,
        role: Claim<RoleName>,
        exp: Claim<Time>,
        nbf: Claim<Time>,
        iat: Claim<Time>,
        iss: Claim<Who>,
        aud: Claim<Who>,
        name: Claim<String>,
        extra: Vec<(String, Json)>,
    },
    /// Any text as the claims.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Claim<T> {
    Absent,
    Null,
    Value(T),
    Other(Json),
}

#[derive(Arbitrary, Debug)]
enum Sub {
    Alice,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum RoleName {
    Advocate,
    Client,
    Admin,
    Any(String),
}

/// A time in seconds since the epoch.
#[derive(Arbitrary, Debug)]
enum Time {
    /// Now plus or minus a little.
    Around(i16),
    Any(u64),
    Float(f64),
}

#[derive(Arbitrary, Debug)]
enum Who {
    Firm,
    Legalchat,
    Any(String),
    List(Vec<String>),
}

trait ToJson {
    fn to_json(&self) -> Value;
}

impl ToJson for Sub {
    fn to_json(&self) -> Value {
        json!(match self {
            Sub::Alice => "alice",
            Sub::Any(s) => s,
        })
    }
}

impl ToJson for RoleName {
    fn to_json(&self) -> Value {
        json!(match self {
            RoleName::Advocate => "advocate",
            RoleName::Client => "client",
            RoleName::Admin => "admin",
            RoleName::Any(s) => s,
        })
    }
}

impl ToJson for Time {
    fn to_json(&self) -> Value {
        match self {
            Time::Around(offset) => json!(auth::now_secs().saturating_add_signed(i64::from(*offset))),
            Time::Any(t) => json!(t),
            Time::Float(f) => json!(f),
        }
    }
}

impl ToJson for Who {
    fn to_json(&self) -> Value {
        match self {
            Who::Firm => json!("firm"),
            Who::Legalchat => json!("legalchat"),
            Who::Any(s) => json!(s),
            Who::List(l) => json!(l),
        }
    }
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        json!(self)
    }
}

impl<T: ToJson> Claim<T> {
    fn put(&self, name: &str, into: &mut Map<String, Value>) {
        let value = match self {
            Claim::Absent => return,
            Claim::Null => Value::Null,
            Claim::Value(v) => v.to_json(),
            Claim::Other(j) => j.value(),
        };
        into.insert(name.to_owned(), value);
    }
}

/// How the token is signed.
#[derive(Arbitrary, Debug)]
enum Signer {
    /// With the verifier's key (its secret, or the private half of its public key), by the
    /// algorithm the header names (the verifier's own when the header names none we make).
    Configured,
    /// With another key of the same kind.
    Stranger,
    /// HMAC keyed with the verifier's public key as PEM (the classic key confusion).
    PublicKeyAsHmacSecret,
    /// HMAC keyed with these bytes.
    Hmac(Vec<u8>),
    /// No signature.
    Empty,
    /// These bytes as the signature.
    Bytes(Vec<u8>),
}

/// How the parts are put together.
#[derive(Arbitrary, Debug, PartialEq, Eq)]
enum Form {
    Compact,
    Padded,
    StandardAlphabet,
    ExtraPart,
    TwoParts,
    Spaces,
}

impl Forged {
    /// The token, and whether it is canonical (see [`check`]).
    fn token(&self, world: &World) -> (String, bool) {
        let verifier = &world.verifiers[usize::from(self.verifier) % world.verifiers.len()];
        let (header, alg) = match &self.header {
            Header::Alg(alg) => {
                let mut h = Map::new();
                if let Some(a) = alg.json() {
                    h.insert("alg".into(), a);
                }
                h.insert("typ".into(), json!("JWT"));
                (Value::Object(h).to_string(), Some(*alg))
            }
            Header::Fields(alg, fields) => {
                let mut h = Map::new();
                for (field, value) in fields {
                    let name = match field {
                        HeaderField::Typ => "typ",
                        HeaderField::Cty => "cty",
                        HeaderField::Kid => "kid",
                        HeaderField::Jku => "jku",
                        HeaderField::Jwk => "jwk",
                        HeaderField::X5c => "x5c",
                        HeaderField::Crit => "crit",
                        HeaderField::Other(o) => o,
                    };
                    h.insert(name.to_owned(), value.value());
                }
                if let Some(a) = alg.json() {
                    h.insert("alg".into(), a);
                }
                (Value::Object(h).to_string(), Some(*alg))
            }
            Header::Raw(text) => (text.clone(), None),
        };
        let claims = match &self.claims {
            Claims::Fields { sub, role, exp, nbf, iat, iss, aud, name, extra } => {
                // The named claims last, so that an extra one of the same name gives way.
                let mut c: Map<String, Value> = extra.iter().map(|(k, v)| (k.clone(), v.value())).collect();
                sub.put("sub", &mut c);
                role.put("role", &mut c);
                exp.put("exp", &mut c);
                nbf.put("nbf", &mut c);
                iat.put("iat", &mut c);
                iss.put("iss", &mut c);
                aud.put("aud", &mut c);
                name.put("name", &mut c);
                Value::Object(c).to_string()
            }
            Claims::Raw(text) => text.clone(),
        };
        let engine = match self.form {
            Form::Padded => &URL_SAFE,
            Form::StandardAlphabet => &STANDARD_NO_PAD,
            _ => &URL_SAFE_NO_PAD,
        };
        let signed = format!("{}.{}", engine.encode(&header), engine.encode(&claims));
        let sig = self.sign(world, verifier, alg, signed.as_bytes());
        let token = match self.form {
            Form::ExtraPart => format!("{signed}.{}.{}", engine.encode(&sig), engine.encode(&sig)),
            Form::TwoParts => signed,
            Form::Spaces => format!(" {signed}.{}\n", engine.encode(&sig)),
            _ => format!("{signed}.{}", engine.encode(&sig)),
        };
        let verifiers_alg = match verifier.key {
            Key::Hmac(_) => Alg::Hs256,
            Key::Ed25519(_) => Alg::EdDsa,
            Key::P256(_) => Alg::Es256,
        };
        let canonical = matches!(self.header, Header::Alg(a) if a == verifiers_alg)
            && matches!(self.signer, Signer::Configured)
            && matches!(self.claims, Claims::Fields { .. })
            && self.form == Form::Compact;
        (token, canonical)
    }

    fn sign(&self, world: &World, verifier: &Verifier, alg: Option<Alg>, signed: &[u8]) -> Vec<u8> {
        use ring::hmac;
        // The algorithm to sign with: the header's when it is one we make, else the verifier's.
        let alg = match alg {
            Some(a @ (Alg::Hs256 | Alg::Hs384 | Alg::Hs512 | Alg::EdDsa | Alg::Es256)) => a,
            _ => match verifier.key {
                Key::Hmac(_) => Alg::Hs256,
                Key::Ed25519(_) => Alg::EdDsa,
                Key::P256(_) => Alg::Es256,
            },
        };
        let hmac_alg = match alg {
            Alg::Hs384 => hmac::HMAC_SHA384,
            Alg::Hs512 => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        };
        let mac = |key: &[u8]| hmac::sign(&hmac::Key::new(hmac_alg, key), signed).as_ref().to_vec();
        let stranger = matches!(self.signer, Signer::Stranger);
        match &self.signer {
            Signer::Configured | Signer::Stranger => match alg {
                Alg::EdDsa => (if stranger { &world.ed_stranger } else { &world.ed }).sign(signed).as_ref().to_vec(),
                Alg::Es256 => {
                    let key = if stranger { &world.ec_stranger } else { &world.ec };
                    key.sign(&world.rng, signed).map(|s| s.as_ref().to_vec()).unwrap_or_default()
                }
                _ if stranger => mac(OTHER_SECRET),
                _ => mac(match verifier.key {
                    Key::Hmac(secret) => secret,
                    _ => SECRET,
                }),
            },
            Signer::PublicKeyAsHmacSecret => mac(&verifier.pem),
            Signer::Hmac(key) => mac(key),
            Signer::Empty => Vec::new(),
            Signer::Bytes(b) => b.clone(),
        }
    }
}

/// Claims for `auth::mint_hs256`.
#[derive(Arbitrary, Debug)]
struct Minted {
    sub: Sub,
    role: RoleName,
    exp: i32,
    nbf: Option<i32>,
    iat: Option<i32>,
    iss: Option<Who>,
    aud: Option<Who>,
    name: Option<String>,
}

impl Minted {
    fn claims(&self) -> auth::Claims {
        let at = |offset: i32| auth::now_secs().saturating_add_signed(i64::from(offset));
        let text = |v: Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
        auth::Claims {
            sub: text(self.sub.to_json()),
            role: text(self.role.to_json()),
            exp: at(self.exp),
            iat: self.iat.map(at),
            nbf: self.nbf.map(at),
            iss: self.iss.as_ref().map(|w| text(w.to_json())),
            aud: self.aud.as_ref().map(|w| text(w.to_json())),
            name: self.name.clone(),
        }
    }
}
