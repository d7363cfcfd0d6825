//! JWT verification (§3): who is calling, in what role, until when.

use crate::settings::JwtSettings;
use chrono::Utc;
use coachwire_shared::error::Failure;
use coachwire_shared::ids::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &settings.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key,
            validation,
            leeway: i64::try_from(settings.jwt_leeway_secs).unwrap_or(i64::MAX / 2),
        })
    }

    /// Verifies signature and claims; the reason goes to the client, never the token.
    pub fn verify(&self, token: &str) -> Result<Principal, Failure> {
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
