//! JWT verification (§3): who is calling, in what role, until when.

use crate::settings::JwtSettings;
use chrono::Utc;
use coachwire_shared::error::Failure;
use coachwire_shared::ids::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest token accepted. Real tokens (a few claims, an RS256 signature) are well under
/// 1 KiB; anything past this is refused before base64 or JSON decoding, so a 60 KiB token
/// costs no more than a short bad one.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The caller's role: only the AI coach may send `type: "ai"`, and it is not message-limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Ai,
}

/// An authenticated caller, kept on the socket for the life of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub role: Role,
    /// `exp` plus the configured leeway, in Unix seconds.
    pub valid_until: i64,
}

impl Principal {
    /// The token's `exp` holds for the whole connection: every event re-checks it.
    pub fn ensure_live(&self) -> Result<(), Failure> {
        if Utc::now().timestamp() >= self.valid_until {
            return Err(Failure::unauthorized("token expired"));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("set COACHWIRE_JWT_SECRET or COACHWIRE_JWT_PUBLIC_KEY")]
    NoKey,
    #[error("cannot read COACHWIRE_JWT_PUBLIC_KEY {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("COACHWIRE_JWT_PUBLIC_KEY is not an RSA, EC (P-256) or Ed25519 PEM public key")]
    BadKey,
}

/// Checks tokens against the configured key and claims.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: i64,
}

impl Verifier {
    pub fn new(settings: &JwtSettings) -> Result<Self, AuthConfigError> {
        let (key, algorithms) = match (&settings.jwt_public_key, &settings.jwt_secret) {
            (Some(path), _) => public_key(path)?,
            (None, Some(secret)) if !secret.is_empty() => (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ),
            _ => return Err(AuthConfigError::NoKey),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = settings.jwt_leeway_secs;
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss`/`aud` only when the token carries them: a configured
        // issuer or audience must also be required, or a token without the claim passes.
        let mut required = vec!["exp", "sub"];
        match &settings.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            leeway: i64::try_from(settings.jwt_leeway_secs).unwrap_or(i64::MAX / 2),
        })
    }

    /// Verifies signature and claims; the reason goes to the client, never the token. A
    /// token longer than any real one is refused before it is decoded.
    pub fn verify(&self, token: &str) -> Result<Principal, Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::unauthorized("token too long"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Failure::unauthorized(reason(&e)))?;
        let claims = data.claims;
        let user = UserId::parse(&claims.sub)
            .ok_or_else(|| Failure::unauthorized("token subject is not a UUID"))?;
        Ok(Principal {
            user,
            role: claims.role.unwrap_or(Role::User),
            valid_until: claims.exp.saturating_add(self.leeway),
        })
    }
}

/// The token of an `Authorization` header value: the scheme `Bearer` in any case
/// (RFC 7235 makes it case-insensitive), then the token.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid",
        K::InvalidSignature => "bad token signature",
        K::InvalidAudience => "token audience not accepted",
        K::InvalidIssuer => "token issuer not accepted",
        K::InvalidAlgorithm => "token algorithm not accepted",
        K::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "malformed token",
    }
}

fn public_key(path: &std::path::Path) -> Result<(DecodingKey, Vec<Algorithm>), AuthConfigError> {
    let pem = std::fs::read(path).map_err(|source| AuthConfigError::ReadKey {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, vec![Algorithm::RS256]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, vec![Algorithm::ES256]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err(AuthConfigError::BadKey)
}

/// Signs an HS256 development token (`coachwire-ingest token`).
pub fn issue_token(
    secret: &str,
    user: UserId,
    role: Role,
    ttl: std::time::Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = Utc::now().timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
    issue_token_until(secret, user, role, exp)
}

/// Signs an HS256 token that expires at `exp` (Unix seconds), for a caller that must tell
/// the holder exactly when (the demo's token route).
pub fn issue_token_until(
    secret: &str,
    user: UserId,
    role: Role,
    exp: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: user.to_string(),
        exp,
        role: (role == Role::Ai).then_some(Role::Ai),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(secret: &str) -> JwtSettings {
        JwtSettings {
            jwt_secret: Some(secret.into()),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 0,
        }
    }

    #[test]
    fn an_issued_token_verifies_and_carries_the_role() {
        let user = UserId(uuid::Uuid::new_v4());
        let token = issue_token("s3cret", user, Role::Ai, Duration::from_secs(60)).expect("signs");
        let verifier = Verifier::new(&settings("s3cret")).expect("configures");
        let p = verifier.verify(&token).expect("verifies");
        assert_eq!((p.user, p.role), (user, Role::Ai));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let user = UserId(uuid::Uuid::new_v4());
        let token = issue_token("other", user, Role::User, Duration::from_secs(60)).expect("signs");
        let verifier = Verifier::new(&settings("s3cret")).expect("configures");
        let err = verifier.verify(&token).expect_err("refused");
        assert_eq!(err.error, "bad token signature");
    }
}

/// Verification against the public-key algorithms and every claim rule of §3. The keys in
/// `ingest/tests/keys/` are test-only (see the README there).
#[cfg(test)]
mod verification_tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use coachwire_shared::error::ErrorCode;
    use serde_json::{Value, json};

    const SECRET: &str = "s3cret";
    const ISSUER: &str = "https://issuer.example";
    const AUDIENCE: &str = "coachwire";

    /// The three public-key algorithms §3 accepts, with their test key pairs.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Rsa,
        Ec,
        Ed,
    }

    impl Kind {
        const ALL: [Kind; 3] = [Kind::Rsa, Kind::Ec, Kind::Ed];

        fn alg(self) -> Algorithm {
            match self {
                Kind::Rsa => Algorithm::RS256,
                Kind::Ec => Algorithm::ES256,
                Kind::Ed => Algorithm::EdDSA,
            }
        }

        fn public_path(self) -> &'static str {
            match self {
                Kind::Rsa => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_public.pem"),
                Kind::Ec => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ec_public.pem"),
                Kind::Ed => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ed25519_public.pem"),
            }
        }

        /// The private key matching `public_path`.
        fn private_key(self) -> EncodingKey {
            self.encoding_key(match self {
                Kind::Rsa => include_bytes!("../tests/keys/rsa_private.pem"),
                Kind::Ec => include_bytes!("../tests/keys/ec_private.pem"),
                Kind::Ed => include_bytes!("../tests/keys/ed25519_private.pem"),
            })
        }

        /// A key of the same type that has nothing to do with `public_path`.
        fn other_private_key(self) -> EncodingKey {
            self.encoding_key(match self {
                Kind::Rsa => include_bytes!("../tests/keys/rsa_other_private.pem"),
                Kind::Ec => include_bytes!("../tests/keys/ec_other_private.pem"),
                Kind::Ed => include_bytes!("../tests/keys/ed25519_other_private.pem"),
            })
        }

        fn encoding_key(self, pem: &[u8]) -> EncodingKey {
            match self {
                Kind::Rsa => EncodingKey::from_rsa_pem(pem),
                Kind::Ec => EncodingKey::from_ec_pem(pem),
                Kind::Ed => EncodingKey::from_ed_pem(pem),
            }
            .expect("the test private key parses")
        }

        fn sign(self, claims: &Value) -> String {
            jsonwebtoken::encode(&Header::new(self.alg()), claims, &self.private_key())
                .expect("signs")
        }

        fn verifier(self) -> Verifier {
            Verifier::new(&JwtSettings {
                jwt_public_key: Some(self.public_path().into()),
                ..hs256_settings()
            })
            .expect("the test public key configures a verifier")
        }
    }

    fn hs256_settings() -> JwtSettings {
        JwtSettings {
            jwt_secret: Some(SECRET.into()),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 0,
        }
    }

    fn hs256_verifier(settings: JwtSettings) -> Verifier {
        Verifier::new(&settings).expect("configures")
    }

    fn sign_hs256(secret: &[u8], claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("signs")
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    fn user() -> UserId {
        UserId(uuid::Uuid::new_v4())
    }

    /// Claims that pass every check: a UUID subject expiring in five minutes.
    fn good_claims(user: UserId) -> Value {
        json!({"sub": user.to_string(), "exp": now() + 300})
    }

    /// `good_claims` with `changes` merged in; a `null` value removes the claim.
    fn claims_with(user: UserId, changes: &Value) -> Value {
        let mut claims = good_claims(user);
        let map = claims.as_object_mut().expect("an object");
        for (k, v) in changes.as_object().expect("an object") {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
        claims
    }

    /// Expects a refusal, and checks what every refusal must be: `UNAUTHORIZED`, without
    /// the token (nor any of its parts) in the text the client and the logs will see.
    fn refused(verifier: &Verifier, token: &str) -> Failure {
        let failure = verifier
            .verify(token)
            .expect_err("the token should be refused");
        assert_eq!(failure.code, ErrorCode::Unauthorized, "{failure:?}");
        assert!(
            token.is_empty() || !failure.error.contains(token),
            "{failure:?} echoes the token"
        );
        for part in token.split('.').filter(|p| p.len() >= 8) {
            assert!(!failure.error.contains(part), "{failure:?} echoes {part}");
        }
        assert!(failure.details.is_empty(), "{failure:?}");
        failure
    }

    /// `base64url(header).base64url(claims).` — an unsigned token, as an attacker builds it.
    fn unsigned_token(header: &Value, claims: &Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("serializes"));
        format!("{}.{}.", part(header), part(claims))
    }

    #[test]
    fn tokens_signed_with_each_private_key_verify_with_its_public_key_and_carry_user_and_role() {
        let roles = [
            (None, Role::User),
            (Some("user"), Role::User),
            (Some("ai"), Role::Ai),
        ];
        for kind in Kind::ALL {
            let verifier = kind.verifier();
            for (role_claim, role) in roles {
                let user = user();
                let exp = now() + 300;
                let mut claims = json!({"sub": user.to_string(), "exp": exp});
                if let Some(r) = role_claim {
                    claims["role"] = json!(r);
                }
                let p = verifier
                    .verify(&kind.sign(&claims))
                    .unwrap_or_else(|f| panic!("{kind:?} {role_claim:?}: {f:?}"));
                assert_eq!(
                    p,
                    Principal {
                        user,
                        role,
                        valid_until: exp
                    },
                    "{kind:?} {role_claim:?}"
                );
                assert!(p.ensure_live().is_ok(), "{kind:?}");
            }
        }
    }

    #[test]
    fn a_token_signed_with_another_key_of_the_same_type_is_refused() {
        for kind in Kind::ALL {
            let token = jsonwebtoken::encode(
                &Header::new(kind.alg()),
                &good_claims(user()),
                &kind.other_private_key(),
            )
            .expect("signs");
            let failure = refused(&kind.verifier(), &token);
            assert_eq!(failure.error, "bad token signature", "{kind:?}");
        }
    }

    #[test]
    fn a_token_signed_for_one_key_type_is_refused_by_a_verifier_of_another() {
        for signer in Kind::ALL {
            for checker in Kind::ALL.into_iter().filter(|k| k.alg() != signer.alg()) {
                let token = signer.sign(&good_claims(user()));
                let failure = refused(&checker.verifier(), &token);
                assert_eq!(
                    failure.error, "token algorithm not accepted",
                    "{signer:?} token, {checker:?} verifier"
                );
            }
        }
    }

    #[test]
    fn an_hs256_token_is_refused_by_a_verifier_configured_with_a_public_key() {
        for kind in Kind::ALL {
            let public_pem = std::fs::read(kind.public_path()).expect("reads the public key");
            // Algorithm confusion: the classic forgery uses the public key itself as the secret.
            for secret in [SECRET.as_bytes(), public_pem.as_slice()] {
                let token = sign_hs256(secret, &good_claims(user()));
                let failure = refused(&kind.verifier(), &token);
                assert_eq!(failure.error, "token algorithm not accepted", "{kind:?}");
            }
        }
    }

    #[test]
    fn a_public_key_token_is_refused_by_a_verifier_configured_with_a_secret() {
        let verifier = hs256_verifier(hs256_settings());
        for kind in Kind::ALL {
            let failure = refused(&verifier, &kind.sign(&good_claims(user())));
            assert_eq!(failure.error, "token algorithm not accepted", "{kind:?}");
        }
    }

    #[test]
    fn an_unsigned_token_with_alg_none_is_refused() {
        let verifiers = [
            ("HS256", hs256_verifier(hs256_settings())),
            ("RS256", Kind::Rsa.verifier()),
            ("ES256", Kind::Ec.verifier()),
            ("EdDSA", Kind::Ed.verifier()),
        ];
        for (name, verifier) in &verifiers {
            for alg in ["none", "None", "NONE"] {
                let token =
                    unsigned_token(&json!({"alg": alg, "typ": "JWT"}), &good_claims(user()));
                // Nor may a stray signature segment make it pass.
                for token in [token.clone(), format!("{token}AAAA")] {
                    let failure = refused(verifier, &token);
                    assert_eq!(
                        failure.error, "malformed token",
                        "{name} verifier, alg {alg}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required_and_must_match() {
        let verifier = hs256_verifier(JwtSettings {
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..hs256_settings()
        });
        let table: [(&str, Value, Result<(), &str>); 8] = [
            (
                "right iss and aud",
                json!({"iss": ISSUER, "aud": AUDIENCE}),
                Ok(()),
            ),
            (
                "aud as an array holding ours",
                json!({"iss": ISSUER, "aud": ["other", AUDIENCE]}),
                Ok(()),
            ),
            (
                "wrong iss",
                json!({"iss": "https://evil.example", "aud": AUDIENCE}),
                Err("token issuer not accepted"),
            ),
            (
                "missing iss",
                json!({"aud": AUDIENCE}),
                Err("token lacks a required claim"),
            ),
            (
                "wrong aud",
                json!({"iss": ISSUER, "aud": "someone-else"}),
                Err("token audience not accepted"),
            ),
            (
                "aud array without ours",
                json!({"iss": ISSUER, "aud": ["a", "b"]}),
                Err("token audience not accepted"),
            ),
            (
                "missing aud",
                json!({"iss": ISSUER}),
                Err("token lacks a required claim"),
            ),
            ("neither", json!({}), Err("token lacks a required claim")),
        ];
        for (case, extra, expected) in table {
            let user = user();
            let token = sign_hs256(SECRET.as_bytes(), &claims_with(user, &extra));
            match expected {
                Ok(()) => {
                    let p = verifier
                        .verify(&token)
                        .unwrap_or_else(|f| panic!("{case}: {f:?}"));
                    assert_eq!(p.user, user, "{case}");
                }
                Err(reason) => assert_eq!(refused(&verifier, &token).error, reason, "{case}"),
            }
        }
    }

    #[test]
    fn without_a_configured_issuer_or_audience_tokens_carrying_them_are_accepted() {
        let verifier = hs256_verifier(hs256_settings());
        for extra in [
            json!({"aud": "some-service"}),
            json!({"aud": ["a", "b"]}),
            json!({"iss": "https://anyone.example"}),
        ] {
            let token = sign_hs256(SECRET.as_bytes(), &claims_with(user(), &extra));
            assert!(verifier.verify(&token).is_ok(), "{extra}");
        }
    }

    #[test]
    fn a_token_whose_nbf_is_in_the_future_is_not_yet_valid() {
        let verifier = hs256_verifier(hs256_settings());
        let early = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"nbf": now() + 60})),
        );
        assert_eq!(refused(&verifier, &early).error, "token not yet valid");
        let due = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"nbf": now() - 1})),
        );
        assert!(verifier.verify(&due).is_ok());
    }

    #[test]
    fn the_leeway_also_covers_nbf() {
        let verifier = hs256_verifier(JwtSettings {
            jwt_leeway_secs: 30,
            ..hs256_settings()
        });
        let soon = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"nbf": now() + 10})),
        );
        assert!(verifier.verify(&soon).is_ok());
        let later = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"nbf": now() + 120})),
        );
        assert_eq!(refused(&verifier, &later).error, "token not yet valid");
    }

    #[test]
    fn a_token_that_expired_within_the_leeway_verifies_until_exp_plus_leeway() {
        let user = user();
        let exp = now() - 10;
        let token = sign_hs256(
            SECRET.as_bytes(),
            &json!({"sub": user.to_string(), "exp": exp}),
        );

        let lenient = hs256_verifier(JwtSettings {
            jwt_leeway_secs: 30,
            ..hs256_settings()
        });
        let p = lenient.verify(&token).expect("within the leeway");
        assert_eq!((p.user, p.valid_until), (user, exp + 30));
        assert!(p.ensure_live().is_ok());

        let strict = hs256_verifier(hs256_settings());
        assert_eq!(refused(&strict, &token).error, "token expired");
    }

    #[test]
    fn a_token_that_expired_beyond_the_leeway_is_refused() {
        let verifier = hs256_verifier(JwtSettings {
            jwt_leeway_secs: 30,
            ..hs256_settings()
        });
        let token = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"exp": now() - 60})),
        );
        assert_eq!(refused(&verifier, &token).error, "token expired");
    }

    #[test]
    fn tokens_with_a_missing_or_bad_subject_expiry_or_role_are_refused() {
        let verifier = hs256_verifier(hs256_settings());
        let table = [
            ("missing sub", json!({"sub": null})),
            ("non-UUID sub", json!({"sub": "alice"})),
            (
                "unhyphenated UUID sub",
                json!({"sub": "0191e4f27c1a7cc49a553b0f1f4b7a10"}),
            ),
            (
                "braced UUID sub",
                json!({"sub": "{0191e4f2-7c1a-7cc4-9a55-3b0f1f4b7a10}"}),
            ),
            ("numeric sub", json!({"sub": 42})),
            ("missing exp", json!({"exp": null})),
            ("string exp", json!({"exp": "tomorrow"})),
            ("unknown role", json!({"role": "admin"})),
            ("role in the wrong case", json!({"role": "AI"})),
            ("empty role", json!({"role": ""})),
        ];
        for (case, changes) in table {
            let token = sign_hs256(SECRET.as_bytes(), &claims_with(user(), &changes));
            let failure = refused(&verifier, &token);
            assert!(!failure.error.is_empty(), "{case}");
        }
        // The same claims with a proper subject and role verify: the refusals above are
        // about the one claim each case changed.
        let token = sign_hs256(
            SECRET.as_bytes(),
            &claims_with(user(), &json!({"role": "ai"})),
        );
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn ensure_live_fails_once_valid_until_is_in_the_past() {
        let principal = |valid_until| Principal {
            user: user(),
            role: Role::User,
            valid_until,
        };
        assert!(principal(now() + 60).ensure_live().is_ok());
        for valid_until in [now(), now() - 1, now() - 3600, i64::MIN] {
            let failure = principal(valid_until)
                .ensure_live()
                .expect_err("no longer live");
            assert_eq!(
                (failure.code, failure.error.as_str()),
                (ErrorCode::Unauthorized, "token expired"),
                "valid_until {valid_until}"
            );
        }
    }

    #[test]
    fn garbage_tokens_are_refused_without_being_echoed() {
        let verifier = hs256_verifier(hs256_settings());
        let valid = sign_hs256(SECRET.as_bytes(), &good_claims(user()));
        let (unsigned, _) = valid.rsplit_once('.').expect("three parts");
        let mut tampered_claims = valid.split('.').map(str::to_owned).collect::<Vec<_>>();
        tampered_claims[1] = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(
                &json!({"sub": user().to_string(), "exp": now() + 300, "role": "ai"}),
            )
            .expect("serializes"),
        );
        for token in [
            String::new(),
            "not-a-jwt".into(),
            "a.b.c".into(),
            format!("{unsigned}."),
            unsigned.to_owned(),
            format!("{valid}.extra"),
            format!("Bearer {valid}"),
            tampered_claims.join("."),
            "secret-looking-token-value-1234567890".into(),
        ] {
            refused(&verifier, &token);
        }
    }

    #[test]
    fn unusable_key_settings_are_configuration_errors() {
        let no_key = JwtSettings {
            jwt_secret: None,
            ..hs256_settings()
        };
        assert!(matches!(
            Verifier::new(&no_key),
            Err(AuthConfigError::NoKey)
        ));
        let empty_secret = JwtSettings {
            jwt_secret: Some(String::new()),
            ..hs256_settings()
        };
        assert!(matches!(
            Verifier::new(&empty_secret),
            Err(AuthConfigError::NoKey)
        ));
        let missing_file = JwtSettings {
            jwt_public_key: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/nope.pem").into(),
            ),
            ..hs256_settings()
        };
        assert!(matches!(
            Verifier::new(&missing_file),
            Err(AuthConfigError::ReadKey { .. })
        ));
        let not_a_key = JwtSettings {
            jwt_public_key: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/README.md").into(),
            ),
            ..hs256_settings()
        };
        assert!(matches!(
            Verifier::new(&not_a_key),
            Err(AuthConfigError::BadKey)
        ));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_nothing_else_is_a_token() {
        let table = [
            ("Bearer abc", Some("abc"), "canonical"),
            ("bearer abc", Some("abc"), "lower case"),
            ("BEARER  abc ", Some("abc"), "upper case, extra spaces"),
            ("Basic abc", None, "another scheme"),
            ("Bearerabc", None, "no space"),
            ("abc", None, "no scheme"),
        ];
        for (header, token, reason) in table {
            assert_eq!(bearer_token(header), token, "{reason}");
        }
    }

    #[test]
    fn an_oversized_token_is_refused_before_it_is_decoded() {
        let verifier = hs256_verifier(hs256_settings());
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        let refused = verifier.verify(&huge).expect_err("too long");
        assert_eq!(refused.error, "token too long");
    }
}
