//! Demo mode (`COACHWIRE_DEMO`): the web chat page, and tokens for its fixed users, on the
//! public port, so that a person who ran `scripts/run-stack.sh` can open `/demo/` in a
//! browser and chat, as Alice, Bob, Carol or the coach, without minting tokens by hand.
//!
//! **Never enable demo mode in production.** `POST /demo/api/token` asks for no
//! credentials: anyone who can reach the port can act as any demo user, the coach (role
//! `ai`) included. Startup logs a warning whenever it is on.
//!
//! - `GET /demo/` and the files below it: `COACHWIRE_DEMO_DIR`, as it is on disk.
//! - `GET /demo/api/users`: the [`USERS`].
//! - `POST /demo/api/token` `{"userId"}`: a [`TOKEN_TTL`] token for one of them, signed as
//!   `coachwire-ingest token` signs (HS256 with `COACHWIRE_JWT_SECRET`).
//!
//! When demo mode is off none of these routes exist and the directory is never read.

use crate::auth::{Role, issue_token_until};
use crate::http::{ApiError, JsonBody};
use crate::settings::{DemoSettings, JwtSettings};
use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use coachwire_shared::error::{Detail, ErrorCode, Failure};
use coachwire_shared::ids::UserId;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;
use uuid::Uuid;

/// How long a demo token lives: long enough for a sitting, short enough that one copied
/// out of a browser is soon useless; the page asks for a new one when it runs out.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// For every response under `/demo/`: the page may load its own scripts, styles, images
/// and fonts and talk to this server only; no inline script, no plugins, no framing, no
/// forms. `connect-src 'self'` covers same-origin `ws:`/`wss:` (CSP Level 3, as browsers
/// implement it), which Socket.IO's WebSocket needs.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One of the fixed people of the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoUser {
    pub name: &'static str,
    pub user_id: UserId,
    pub role: Role,
}

/// The demo's people. Their ids are constants, so the conversations they start are theirs
/// again after a restart (the database keeps them; only tokens are new). The ids are
/// version-4-shaped UUIDs that start `d3e0` ("demo") and end in 1–4, easy to spot in logs
/// and tables:
///
/// | name  | userId                                 | role |
/// |-------|----------------------------------------|------|
/// | Alice | `d3e0a11c-0000-4000-8000-000000000001` | user |
/// | Bob   | `d3e0b0b0-0000-4000-8000-000000000002` | user |
/// | Carol | `d3e0ca01-0000-4000-8000-000000000003` | user |
/// | Coach | `d3e0c0ac-0000-4000-8000-000000000004` | ai   |
pub const USERS: [DemoUser; 4] = [
    DemoUser {
        name: "Alice",
        user_id: UserId(Uuid::from_u128(0xd3e0a11c_0000_4000_8000_000000000001)),
        role: Role::User,
    },
    DemoUser {
        name: "Bob",
        user_id: UserId(Uuid::from_u128(0xd3e0b0b0_0000_4000_8000_000000000002)),
        role: Role::User,
    },
    DemoUser {
        name: "Carol",
        user_id: UserId(Uuid::from_u128(0xd3e0ca01_0000_4000_8000_000000000003)),
        role: Role::User,
    },
    DemoUser {
        name: "Coach",
        user_id: UserId(Uuid::from_u128(0xd3e0c0ac_0000_4000_8000_000000000004)),
        role: Role::Ai,
    },
];

/// Why demo mode cannot start; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "COACHWIRE_DEMO_DIR {path} cannot be read (COACHWIRE_DEMO is on and serves the page from there)"
    )]
    NoDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "COACHWIRE_DEMO_DIR {path} has no index.html (COACHWIRE_DEMO is on and serves the page from there)"
    )]
    NoIndex { path: String },
    /// With a public key, ingest accepts only tokens of that key's algorithm, so even a
    /// configured secret could sign nothing ingest would accept.
    #[error(
        "COACHWIRE_DEMO signs tokens with COACHWIRE_JWT_SECRET, which ingest verifies only without COACHWIRE_JWT_PUBLIC_KEY: set the secret alone, or turn demo mode off"
    )]
    CannotSign,
}

/// Demo mode, checked and ready to serve.
pub struct Demo {
    dir: PathBuf,
    secret: String,
}

impl Demo {
    /// `None` when demo mode is off (and then `COACHWIRE_DEMO_DIR` is not looked at).
    /// When on, the page's directory and the signing key are checked now, so a mistake
    /// stops startup instead of surfacing as a 404 or 500 in the browser.
    pub fn from_settings(
        demo: &DemoSettings,
        jwt: &JwtSettings,
    ) -> Result<Option<Self>, DemoError> {
        if !demo.demo {
            return Ok(None);
        }
        let dir = page_dir(&demo.demo_dir)?;
        let secret = match (&jwt.jwt_public_key, &jwt.jwt_secret) {
            (None, Some(secret)) if !secret.is_empty() => secret.clone(),
            _ => return Err(DemoError::CannotSign),
        };
        tracing::warn!(
            dir = %dir.display(),
            "demo mode is on: /demo/ gives anyone who can reach this port a token for any demo \
             user, the coach included; never enable COACHWIRE_DEMO in production"
        );
        Ok(Some(Self { dir, secret }))
    }

    /// Every `/demo` route, each response carrying the page's security headers.
    pub fn router(self) -> Router {
        // `/demo/` itself is the page; below it, files only: a directory listing or a
        // redirect computed by `ServeDir` (which sees the path without `/demo`) would be wrong.
        let files = Router::new()
            .route_service("/", ServeFile::new(self.dir.join("index.html")))
            .route_service(
                "/{*path}",
                ServeDir::new(&self.dir).append_index_html_on_directories(false),
            );
        Router::new()
            // Relative URLs in the page resolve against `/demo/`, so it must end in a slash.
            .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
            .route("/demo/api/users", get(users))
            .route("/demo/api/token", post(token))
            .with_state(Arc::new(self.secret))
            .nest("/demo/", files)
            .layer(header(
                CONTENT_SECURITY_POLICY,
                CONTENT_SECURITY_POLICY_VALUE,
            ))
            .layer(header(X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(header(REFERRER_POLICY, "no-referrer"))
    }
}

/// The directory, made absolute so the log and every request name the same place.
fn page_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    let dir = std::fs::canonicalize(dir).map_err(|source| DemoError::NoDir {
        // A relative default depends on where the binary was started: say where that was.
        path: std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string(),
        source,
    })?;
    if !dir.join("index.html").is_file() {
        return Err(DemoError::NoIndex {
            path: dir.display().to_string(),
        });
    }
    Ok(dir)
}

fn header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

#[derive(Serialize)]
struct UserList {
    users: [DemoUser; 4],
}

async fn users() -> Json<UserList> {
    Json(UserList { users: USERS })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedToken {
    token: String,
    #[serde(flatten)]
    user: DemoUser,
    /// RFC 3339, the token's `exp` to the second.
    expires_at: String,
}

async fn token(
    State(secret): State<Arc<String>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let user = body
        .get("userId")
        .and_then(|id| id.as_str())
        .and_then(UserId::parse)
        .and_then(|id| USERS.into_iter().find(|u| u.user_id == id))
        .ok_or_else(|| {
            Failure::validation(vec![Detail::new(
                "/userId",
                "must be the userId of a demo user (GET /demo/api/users)",
            )])
        })?;
    let expires_at = Utc::now() + TOKEN_TTL;
    let exp = expires_at.timestamp();
    let token = issue_token_until(&secret, user.user_id, user.role, exp).map_err(|e| {
        tracing::error!(error = %e, "signing a demo token failed");
        Failure::new(ErrorCode::Internal, "could not sign a token")
    })?;
    let expires_at = DateTime::from_timestamp(exp, 0)
        .unwrap_or(expires_at)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    // A bearer token: no cache along the way may keep a copy.
    let no_store = [(CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    Ok((
        no_store,
        Json(IssuedToken {
            token,
            user,
            expires_at,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_user_ids_are_distinct_and_exactly_one_user_is_the_coach() {
        let mut ids: Vec<_> = USERS.iter().map(|u| u.user_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), USERS.len());
        let coaches: Vec<_> = USERS.iter().filter(|u| u.role == Role::Ai).collect();
        assert_eq!(coaches.len(), 1);
        assert_eq!(coaches[0].name, "Coach");
    }

    #[test]
    fn demo_users_serialize_as_the_page_reads_them() {
        let json = serde_json::to_value(USERS[3]).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "Coach",
                "userId": "d3e0c0ac-0000-4000-8000-000000000004",
                "role": "ai"
            })
        );
    }

    fn settings(demo: bool, dir: &str) -> DemoSettings {
        DemoSettings {
            demo,
            demo_dir: dir.into(),
        }
    }

    fn jwt(secret: Option<&str>, public_key: Option<&str>) -> JwtSettings {
        JwtSettings {
            jwt_secret: secret.map(Into::into),
            jwt_public_key: public_key.map(Into::into),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 0,
        }
    }

    #[test]
    fn when_off_nothing_is_checked() {
        let off = Demo::from_settings(&settings(false, "/no/such/dir"), &jwt(None, None));
        assert!(matches!(off, Ok(None)));
    }

    #[test]
    fn when_on_a_bad_directory_or_a_key_ingest_cannot_sign_with_is_refused() {
        // This crate's own directory exists but holds no index.html.
        let here = env!("CARGO_MANIFEST_DIR");
        let cases = [
            ("/no/such/dir", jwt(Some("s"), None), "COACHWIRE_DEMO_DIR"),
            (here, jwt(Some("s"), None), "has no index.html"),
        ];
        for (dir, jwt, expected) in cases {
            let error = match Demo::from_settings(&settings(true, dir), &jwt) {
                Ok(_) => panic!("{dir}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(error.contains(expected), "{dir}: {error}");
            assert!(error.contains("COACHWIRE_DEMO_DIR"), "{dir}: {error}");
        }
    }

    /// A fresh directory holding an `index.html`, removed when dropped.
    struct PageDir(PathBuf);

    impl PageDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("coachwire-demo-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("creates the directory");
            std::fs::write(dir.join("index.html"), "<!doctype html>").expect("writes index.html");
            Self(dir)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("a UTF-8 temp path")
        }
    }

    impl Drop for PageDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn when_on_only_a_secret_without_a_public_key_can_sign() {
        let page = PageDir::new();
        let key = "/any/public.pem";
        let cases = [
            (
                jwt(None, Some(key)),
                false,
                "a public key only: nothing to sign with",
            ),
            (
                jwt(Some("s"), Some(key)),
                false,
                "a public key wins: ingest would refuse what the secret signs",
            ),
            (jwt(Some(""), None), false, "an empty secret"),
            (jwt(None, None), false, "no key at all"),
            (jwt(Some("s"), None), true, "a secret alone"),
        ];
        for (jwt, accepted, reason) in cases {
            match Demo::from_settings(&settings(true, page.path()), &jwt) {
                Ok(Some(_)) => assert!(accepted, "{reason}: accepted"),
                Ok(None) => panic!("{reason}: demo mode is on"),
                Err(e) => {
                    assert!(!accepted, "{reason}: {e}");
                    assert!(matches!(e, DemoError::CannotSign), "{reason}: {e}");
                    assert!(
                        e.to_string().contains("COACHWIRE_JWT_PUBLIC_KEY"),
                        "{reason}"
                    );
                }
            }
        }
    }
}
