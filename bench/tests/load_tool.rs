//! `coachwire-load` against the real stack at a gentle rate: it must measure every
//! message it sent, find them all stored once, and say so in its JSON, whichever driver
//! plays the clients.

use coachwire_testkit::db::TestDb;
use coachwire_testkit::nats_server::free_port;
use coachwire_testkit::stack::{JWT_SECRET, Stack, StackOptions};
use serde_json::Value;

#[tokio::test]
async fn the_load_tool_measures_a_short_run_and_its_check_passes() {
    let results = run_load(&[]).await;
    assert_eq!(results["client"], "rust", "the default client: {results:#}");
    assert_measured(&results);
    // The stack's ingest was watched (`--cpu`): ~200 messages through a debug build cost
    // it well over one 10 ms tick.
    let ingest = results["cpu"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "ingest"))
        .unwrap_or_else(|| panic!("an ingest row: {results:#}"));
    assert!(
        ingest["cpu_secs"].as_f64() > Some(0.0) && ingest["us_per_message"].as_f64() > Some(0.0),
        "{results:#}"
    );
    // At 100 msg/s a cheap driver's CPU is a handful of the kernel's 10 ms ticks per
    // window, or none, so its size is the benchmark's business; but the headline figure
    // must be the driver's own row of the CPU table, which comes last.
    let rows = results["cpu"].as_array().cloned().unwrap_or_default();
    let driver = rows
        .last()
        .unwrap_or_else(|| panic!("a CPU table: {results:#}"));
    assert_eq!(driver["name"], "load driver", "{results:#}");
    assert_eq!(
        driver["us_per_message"].as_f64(),
        results["driver_cpu_us_per_msg"].as_f64(),
        "{results:#}"
    );
}

#[tokio::test]
async fn the_node_client_measures_the_same_run() {
    let results = run_load(&["--client", "node"]).await;
    assert_eq!(results["client"], "node", "{results:#}");
    assert_measured(&results);
}

#[tokio::test]
async fn the_floor_server_acks_and_broadcasts_and_its_cpu_is_measured() {
    let db = TestDb::new().await.expect("db");
    let port = free_port().expect("port");
    let mut floor = tokio::process::Command::new(env!("CARGO_BIN_EXE_coachwire-floor"))
        .env("PORT", port.to_string())
        .env("COACHWIRE_JWT_SECRET", JWT_SECRET)
        .kill_on_drop(true)
        .spawn()
        .expect("coachwire-floor starts");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the floor never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let watch = format!("floor={}", floor.id().expect("floor runs"));
    let url = format!("http://127.0.0.1:{port}");
    let results = load(&url, &db.url, &["--stores-nothing", "--cpu", &watch]).await;
    let _ = floor.kill().await;
    assert_eq!(
        results["check"], "not checked: the server stores nothing",
        "{results:#}"
    );
    let sent = results["counts"]["sent"].as_u64().unwrap_or(0);
    assert!(
        sent > 0 && results["counts"]["acked"].as_u64() == Some(sent),
        "{results:#}"
    );
    assert_eq!(
        results["room_ms"]["count"].as_u64(),
        Some(2 * sent),
        "{results:#}"
    );
    let names: Vec<&str> = results["cpu"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["floor", "load driver"], "{results:#}");
}

/// Starts a stack without abuse limits and runs [`load`] against it with `extra`
/// arguments, watching its ingest's CPU.
async fn run_load(extra: &[&str]) -> Value {
    let stack = Stack::start_with(StackOptions {
        env: vec![
            ("COACHWIRE_MESSAGE_LIMIT".into(), "0".into()),
            ("COACHWIRE_CONNECTION_LIMIT".into(), "0".into()),
        ],
        ..Default::default()
    })
    .await
    .expect("stack");
    let ingest = format!("ingest={}", stack.ingest[0].pid().expect("ingest runs"));
    let mut args = vec!["--cpu", &ingest];
    args.extend(extra);
    load(&stack.url(), &stack.db.url, &args).await
}

/// Runs `coachwire-load` against `url`: 12 connections in rooms of 3, 100 msg/s for 2 s
/// after 0.5 s, and reads its JSON.
async fn load(url: &str, database_url: &str, extra: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!("cw-load-{}.json", uuid::Uuid::new_v4()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_coachwire-load"))
        .args(["--url", url, "--database-url", database_url])
        .args([
            "--jwt-secret",
            JWT_SECRET,
            "--connections",
            "12",
            "--room-size",
            "3",
        ])
        .args(["--rate", "100", "--warmup", "500ms", "--duration", "2s"])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .expect("coachwire-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Shown with --no-capture (and on failure): the table a person would read.
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("send→room"), "a table on stdout: {stdout}");
    assert!(
        stdout.contains("driver CPU per message"),
        "the driver's cost on stdout: {stdout}"
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON results")).expect("JSON");
    let _ = std::fs::remove_file(&json);
    results
}

/// Every message sent in the window was acked, reached the room and was delivered, and
/// the checker passed.
fn assert_measured(results: &Value) {
    assert_eq!(results["check"], "passed", "{results:#}");
    let sent = results["counts"]["sent"].as_u64().unwrap_or(0);
    assert!(
        (150..=250).contains(&sent),
        "about 100 msg/s for 2 s: {results:#}"
    );
    assert_eq!(
        results["counts"]["acked"].as_u64(),
        Some(sent),
        "{results:#}"
    );
    assert_eq!(results["ack_ms"]["count"].as_u64(), Some(sent));
    // Rooms of 3: each message reaches the two other sockets.
    assert_eq!(
        results["room_ms"]["count"].as_u64(),
        Some(2 * sent),
        "{results:#}"
    );
    assert_eq!(
        results["delivered_ms"]["count"].as_u64(),
        Some(sent),
        "{results:#}"
    );
    let p = &results["ack_ms"];
    assert!(p["p50"].as_f64() <= p["p99"].as_f64() && p["p99"].as_f64() <= p["max"].as_f64());
}
