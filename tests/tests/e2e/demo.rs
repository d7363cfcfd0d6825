//! Demo mode (`COACHWIRE_DEMO`) against the real binaries. Off (the default), nothing
//! under `/demo` exists and `COACHWIRE_DEMO_DIR` is not read. On, the page's files are
//! served with a strict Content-Security-Policy, the four fixed users are listed, and a
//! token for one of them works against the API with that user's role. A missing page, or a
//! key setup ingest cannot sign with, stops startup with a line naming the setting.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coachwire_testkit::js::Driver;
use coachwire_testkit::nats_server::free_port;
use coachwire_testkit::repo_root;
use coachwire_testkit::stack::{JWT_SECRET, Stack, StackOptions, bin_dir};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::path::PathBuf;

/// The exact policy every `/demo` response must carry, written out again so that a change
/// to the server's value is a deliberate change to this test too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";
const INDEX_HTML: &str =
    "<!doctype html><title>coachwire demo</title><script src=\"app.js\"></script>";
const APP_JS: &str = "document.title = 'coachwire demo';\n";
/// A canonical UUID that is none of the demo users.
const STRANGER: &str = "0191e4f2-7c1a-7cc4-9a55-3b0f1f4b7a10";

/// A fresh page directory (`index.html` and `app.js`), removed when dropped.
struct PageDir(PathBuf);

impl PageDir {
    fn new() -> Self {
        let dir = Self::empty();
        std::fs::write(dir.0.join("index.html"), INDEX_HTML).expect("writes index.html");
        std::fs::write(dir.0.join("app.js"), APP_JS).expect("writes app.js");
        dir
    }

    /// A directory without `index.html`.
    fn empty() -> Self {
        let dir = std::env::temp_dir().join(format!("cw-demo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creates the page directory");
        Self(dir)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for PageDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn demo_stack(page: &PageDir) -> Stack {
    Stack::start_with(StackOptions {
        env: vec![
            ("COACHWIRE_DEMO".into(), "true".into()),
            ("COACHWIRE_DEMO_DIR".into(), page.path()),
        ],
        ..Default::default()
    })
    .await
    .expect("stack")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn send(stack: &Stack, method: Method, path: &str, body: Option<Value>) -> Response {
    let request = client().request(method, format!("{}{path}", stack.url()));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.expect("request")
}

fn header(response: &Response, name: impl reqwest::header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn assert_security_headers(response: &Response, what: &str) {
    assert_eq!(header(response, "content-security-policy"), CSP, "{what}");
    assert_eq!(
        header(response, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(response, "referrer-policy"), "no-referrer", "{what}");
}

async fn demo_users(stack: &Stack) -> Vec<Value> {
    let (status, body) = stack
        .api(Method::GET, "/demo/api/users", None, None)
        .await
        .expect("users");
    assert_eq!(status, 200, "{body}");
    body["users"].as_array().cloned().unwrap_or_default()
}

/// The claims of a JWT, read without checking it (the server's acceptance is the check).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload part");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn without_demo_mode_no_demo_route_exists_and_the_directory_is_not_read() {
    let stack = Stack::start_with(StackOptions {
        env: vec![(
            "COACHWIRE_DEMO_DIR".into(),
            "/no/such/coachwire/demo/dir".into(),
        )],
        ..Default::default()
    })
    .await
    .expect("a stack with demo mode off starts whatever COACHWIRE_DEMO_DIR says");
    let requests = [
        (Method::GET, "/demo", None),
        (Method::GET, "/demo/", None),
        (Method::GET, "/demo/index.html", None),
        (Method::GET, "/demo/api/users", None),
        (
            Method::POST,
            "/demo/api/token",
            Some(json!({"userId": "d3e0a11c-0000-4000-8000-000000000001"})),
        ),
    ];
    for (method, path, body) in requests {
        let response = send(&stack, method.clone(), path, body).await;
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(header(&response, "content-security-policy"), "");
    }
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_the_security_headers() {
    let page = PageDir::new();
    let stack = demo_stack(&page).await;

    let index = send(&stack, Method::GET, "/demo/", None).await;
    assert_eq!(index.status(), 200);
    assert_security_headers(&index, "GET /demo/");
    assert!(header(&index, CONTENT_TYPE).starts_with("text/html"));
    assert_eq!(index.text().await.expect("body"), INDEX_HTML);

    let bare = send(&stack, Method::GET, "/demo", None).await;
    assert!(bare.status().is_redirection(), "{}", bare.status());
    assert_eq!(
        header(&bare, LOCATION),
        "/demo/",
        "relative URLs in the page need the slash"
    );
    assert_security_headers(&bare, "GET /demo");

    let script = send(&stack, Method::GET, "/demo/app.js", None).await;
    assert_eq!(script.status(), 200);
    assert_security_headers(&script, "GET /demo/app.js");
    let content_type = header(&script, CONTENT_TYPE).to_string();
    assert!(
        content_type.contains("javascript"),
        "nosniff needs a script type: {content_type}"
    );
    assert_eq!(script.text().await.expect("body"), APP_JS);

    // The client would resolve a literal `..` itself; an encoded slash reaches the server.
    for path in ["/demo/missing.js", "/demo/..%2f..%2fetc%2fpasswd"] {
        let missing = send(&stack, Method::GET, path, None).await;
        assert_eq!(missing.status(), 404, "{path}");
        assert_security_headers(&missing, path);
    }

    let users = send(&stack, Method::GET, "/demo/api/users", None).await;
    assert_security_headers(&users, "GET /demo/api/users");
}

#[tokio::test]
async fn each_listed_user_gets_a_short_lived_token_that_works_with_its_role() {
    let page = PageDir::new();
    let stack = demo_stack(&page).await;
    let users = demo_users(&stack).await;
    let names: Vec<&str> = users.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["Alice", "Bob", "Carol", "Coach"], "{users:?}");
    let coaches: Vec<&Value> = users.iter().filter(|u| u["role"] == "ai").collect();
    assert_eq!(coaches.len(), 1, "{users:?}");
    assert_eq!(coaches[0]["name"], "Coach");

    for user in &users {
        let name = user["name"].as_str().unwrap_or_default();
        let response = send(
            &stack,
            Method::POST,
            "/demo/api/token",
            Some(json!({"userId": user["userId"]})),
        )
        .await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(header(&response, CACHE_CONTROL), "no-store", "{name}");
        assert_security_headers(&response, "POST /demo/api/token");
        let issued: Value = response.json().await.expect("JSON");
        for field in ["userId", "name", "role"] {
            assert_eq!(issued[field], user[field], "{name}: {issued}");
        }
        let token = issued["token"].as_str().expect("a token");

        let expires_at = issued["expiresAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .unwrap_or_else(|| panic!("{name}: expiresAt is not RFC 3339: {issued}"));
        let lifetime = expires_at.timestamp() - chrono::Utc::now().timestamp();
        assert!(
            (14 * 60..=15 * 60).contains(&lifetime),
            "{name}: lives {lifetime} s"
        );
        let claims = claims(token);
        assert_eq!(claims["sub"], user["userId"], "{name}: {claims}");
        assert_eq!(claims["exp"], expires_at.timestamp(), "{name}: {claims}");
        let role = claims["role"].as_str().unwrap_or("user");
        assert_eq!(role, user["role"], "{name}: {claims}");

        let (status, body) = stack
            .api(Method::GET, "/api/conversations", Some(token), None)
            .await
            .expect("list");
        assert_eq!(status, 200, "{name}: {body}");
    }
}

/// One person's tabs, reloads, CLI clients and coach all come from loopback: in demo mode
/// the per-IP connection limit does not count them (it counts everyone else as ever).
#[tokio::test]
async fn demo_mode_does_not_lock_its_own_loopback_user_out() {
    let page = PageDir::new();
    let stack = Stack::start_with(StackOptions {
        env: vec![
            ("COACHWIRE_DEMO".into(), "true".into()),
            ("COACHWIRE_DEMO_DIR".into(), page.path()),
            ("COACHWIRE_CONNECTION_LIMIT".into(), "2".into()),
            ("COACHWIRE_CONNECTION_WINDOW_MS".into(), "300000".into()),
        ],
        ..Default::default()
    })
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    for tab in 0..5 {
        driver
            .connect(&format!("tab{tab}"), &stack.url(), Some(&room.alice_token))
            .await
            .unwrap_or_else(|e| panic!("tab {tab} of a limit of 2 was refused: {e:#}"));
    }
}

#[tokio::test]
async fn a_token_request_for_anyone_else_is_a_validation_failure() {
    let page = PageDir::new();
    let stack = demo_stack(&page).await;
    let cases = [
        (json!({"userId": STRANGER}), "a user who is not a demo user"),
        (
            json!({"userId": "D3E0A11C-0000-4000-8000-00000000000"}),
            "a demo id cut short",
        ),
        (json!({"userId": "alice"}), "a name, not an id"),
        (json!({"userId": 1}), "a number"),
        (json!({"userId": null}), "null"),
        (json!({}), "no userId"),
        (json!(["d3e0a11c-0000-4000-8000-000000000001"]), "an array"),
    ];
    for (body, reason) in cases {
        let response = send(&stack, Method::POST, "/demo/api/token", Some(body)).await;
        assert_eq!(response.status(), 400, "{reason}");
        let failure: Value = response.json().await.expect("JSON");
        assert_eq!(failure["success"], false, "{reason}: {failure}");
        assert_eq!(failure["code"], "VALIDATION_FAILED", "{reason}: {failure}");
        assert!(failure["error"].is_string(), "{reason}: {failure}");
        assert!(failure.get("token").is_none(), "{reason}: {failure}");
    }
    let not_json = client()
        .post(format!("{}/demo/api/token", stack.url()))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"userId\":")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), 400);
    let failure: Value = not_json.json().await.expect("JSON");
    assert_eq!(failure["code"], "VALIDATION_FAILED", "{failure}");
}

/// One way demo mode cannot start, and the setting its error line must name.
struct BadSetup {
    dir: String,
    secret: Option<&'static str>,
    public_key: Option<PathBuf>,
    names: &'static str,
    reason: &'static str,
}

impl BadSetup {
    /// Runs ingest with this setup and nothing inherited that could change the outcome.
    /// Nothing answers at its `DATABASE_URL`: a check made after connecting would fail
    /// naming Postgres instead.
    async fn run(&self, nobody: &str) -> std::process::Output {
        let mut command = tokio::process::Command::new(bin_dir().join("coachwire-ingest"));
        command
            .env_remove("COACHWIRE_JWT_SECRET")
            .env_remove("COACHWIRE_JWT_PUBLIC_KEY")
            .env("COACHWIRE_DEMO", "true")
            .env("COACHWIRE_DEMO_DIR", &self.dir)
            .env("DATABASE_URL", nobody)
            .env("RUST_LOG", "off");
        if let Some(secret) = self.secret {
            command.env("COACHWIRE_JWT_SECRET", secret);
        }
        if let Some(key) = &self.public_key {
            command.env("COACHWIRE_JWT_PUBLIC_KEY", key);
        }
        command
            .output()
            .await
            .expect("run coachwire-ingest (build it first)")
    }
}

#[tokio::test]
async fn demo_mode_without_its_page_or_a_signing_key_stops_startup_naming_the_setting() {
    let page = PageDir::new();
    let no_index = PageDir::empty();
    let public_key = repo_root().join("ingest/tests/keys/rsa_public.pem");
    let cases = [
        BadSetup {
            dir: page.0.join("missing").display().to_string(),
            secret: Some(JWT_SECRET),
            public_key: None,
            names: "COACHWIRE_DEMO_DIR",
            reason: "a directory that does not exist",
        },
        BadSetup {
            dir: no_index.path(),
            secret: Some(JWT_SECRET),
            public_key: None,
            names: "COACHWIRE_DEMO_DIR",
            reason: "a directory without index.html",
        },
        BadSetup {
            dir: page.path(),
            secret: None,
            public_key: Some(public_key.clone()),
            names: "COACHWIRE_JWT_PUBLIC_KEY",
            reason: "a public key and no secret: nothing to sign with",
        },
        BadSetup {
            dir: page.path(),
            secret: Some(JWT_SECRET),
            public_key: Some(public_key),
            names: "COACHWIRE_JWT_PUBLIC_KEY",
            reason: "a public key beside the secret: ingest would refuse what the secret signs",
        },
    ];
    let nobody = format!(
        "postgres://nobody@127.0.0.1:{}/none",
        free_port().expect("port")
    );
    for case in cases {
        let output = case.run(&nobody).await;
        let (reason, stderr) = (case.reason, String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{reason}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{reason}: {stderr}");
        assert!(
            stderr.starts_with("coachwire-ingest:") && stderr.contains(case.names),
            "{reason}: {stderr}"
        );
    }
}
