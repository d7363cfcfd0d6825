//! Each binary speaks for itself: its errors, help and version carry its own name, with
//! the exit codes of §12 (2 for bad arguments, 1 for a failure, 0 for help).

use coachwire_testkit::db::TestDb;
use coachwire_testkit::nats_server::free_port;
use coachwire_testkit::stack::{JWT_SECRET, bin_dir};
use std::process::Output;

const BINARIES: [&str; 3] = [
    "coachwire-ingest",
    "coachwire-persister",
    "coachwire-fanout",
];

/// Runs `binary` with `args` and `env`, with nothing inherited that could change the
/// outcome (a developer's `NATS_URL`, say).
async fn run(binary: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = tokio::process::Command::new(bin_dir().join(binary));
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "COACHWIRE_JWT_SECRET",
        "COACHWIRE_STREAM_REPLICAS",
        "COACHWIRE_LISTEN",
        "COACHWIRE_ADMIN_LISTEN",
    ] {
        command.env_remove(var);
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("COACHWIRE_LOG_FORMAT", "json")
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {binary} (build the workspace first): {e}"))
}

/// Asserts exit `code` and exactly one stderr line, starting with `binary:`; returns it.
fn one_line(binary: &str, case: &str, output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{binary} {case}: stderr {stderr}"
    );
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{binary} {case}: {stderr}");
    assert!(
        lines[0].starts_with(&format!("{binary}:")),
        "{binary} {case}: {stderr}"
    );
    lines[0].to_string()
}

#[tokio::test]
async fn bad_subcommands_and_flags_exit_two_with_one_line_naming_the_binary() {
    let cases: [(&[&str], &str); 4] = [
        (&["no-such-command"], "unrecognized subcommand"),
        (&["--no-such-flag"], "unexpected argument"),
        (&["--stream-replicas", "9"], "9 is not in 1..=5"),
        (
            &["--nats-url", "nats://127.0.0.1:4222,nats://127.0.0.1:port"],
            "nats://127.0.0.1:port",
        ),
    ];
    for binary in BINARIES {
        for (args, expected) in cases {
            let output = run(binary, args, &[]).await;
            let line = one_line(binary, &format!("{args:?}"), &output, 2);
            assert!(line.contains(expected), "{binary} {args:?}: {line}");
        }
    }
}

#[tokio::test]
async fn a_token_that_would_be_expired_when_printed_is_refused() {
    let user = uuid::Uuid::new_v4().to_string();
    let env = [("COACHWIRE_JWT_SECRET", JWT_SECRET.to_string())];
    for ttl in ["0s", "0ms"] {
        let output = run(
            "coachwire-ingest",
            &["token", "--user", &user, "--ttl", ttl],
            &env,
        )
        .await;
        let line = one_line("coachwire-ingest", ttl, &output, 2);
        assert!(line.contains("longer than 0 s"), "{ttl}: {line}");
    }
    let output = run(
        "coachwire-ingest",
        &["token", "--user", &user, "--ttl", "1s"],
        &env,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "a positive ttl still works");
}

#[tokio::test]
async fn help_and_version_exit_zero_and_name_the_binary() {
    for binary in BINARIES {
        let help = run(binary, &["--help"], &[]).await;
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert_eq!(help.status.code(), Some(0), "{binary} --help");
        assert!(
            stdout.contains(&format!("Usage: {binary}")),
            "{binary} --help: {stdout}"
        );
        let version = run(binary, &["--version"], &[]).await;
        let stdout = String::from_utf8_lossy(&version.stdout);
        assert_eq!(version.status.code(), Some(0), "{binary} --version");
        assert!(
            stdout.starts_with(&format!("{binary} ")),
            "{binary} --version: {stdout}"
        );
    }
}

/// `COACHWIRE_STARTUP_PATIENCE_MS` for the unreachable cases: they give up after it.
const PATIENCE_MS: u64 = 2_000;

/// The binaries gave up after [`PATIENCE_MS`], not the default 30 s.
fn assert_patience_honoured(took: std::time::Duration) {
    assert!(
        took < std::time::Duration::from_secs(20),
        "COACHWIRE_STARTUP_PATIENCE_MS was not honoured: {took:?}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_exits_one_with_one_line_naming_the_binary() {
    let nobody = format!(
        "postgres://nobody@127.0.0.1:{}/none",
        free_port().expect("port")
    );
    let runs = BINARIES.map(|binary| {
        let env = [
            ("DATABASE_URL", nobody.clone()),
            ("COACHWIRE_JWT_SECRET", JWT_SECRET.to_string()),
            ("COACHWIRE_STARTUP_PATIENCE_MS", PATIENCE_MS.to_string()),
        ];
        async move { (binary, run(binary, &[], &env).await) }
    });
    let began = std::time::Instant::now();
    let outputs = futures::future::join_all(runs).await;
    assert_patience_honoured(began.elapsed());
    for (binary, output) in outputs {
        let line = one_line(binary, "unreachable Postgres", &output, 1);
        assert!(line.contains("Postgres"), "{binary}: {line}");
    }
}

#[tokio::test]
async fn an_unreachable_nats_exits_one_with_one_line_naming_the_binary() {
    let db = TestDb::new().await.expect("db");
    let nats = format!("nats://127.0.0.1:{}", free_port().expect("port"));
    let runs = BINARIES.map(|binary| {
        let env = [
            ("DATABASE_URL", db.url.clone()),
            ("NATS_URL", nats.clone()),
            ("COACHWIRE_JWT_SECRET", JWT_SECRET.to_string()),
            ("COACHWIRE_STARTUP_PATIENCE_MS", PATIENCE_MS.to_string()),
            (
                "COACHWIRE_LISTEN",
                format!("127.0.0.1:{}", free_port().expect("port")),
            ),
            (
                "COACHWIRE_ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port().expect("port")),
            ),
        ];
        async move { (binary, run(binary, &[], &env).await) }
    });
    let began = std::time::Instant::now();
    let outputs = futures::future::join_all(runs).await;
    assert_patience_honoured(began.elapsed());
    for (binary, output) in outputs {
        let line = one_line(binary, "unreachable NATS", &output, 1);
        assert!(line.contains("NATS"), "{binary}: {line}");
    }
}
