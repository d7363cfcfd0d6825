//! `coachwire-load` against the real stack at a gentle rate: it must measure every
//! message it sent, find them all stored once, and say so in its JSON.

use coachwire_testkit::stack::{JWT_SECRET, Stack, StackOptions};
use serde_json::Value;

#[tokio::test]
async fn the_load_tool_measures_a_short_run_and_its_check_passes() {
    let stack = Stack::start_with(StackOptions {
        env: vec![
            ("COACHWIRE_MESSAGE_LIMIT".into(), "0".into()),
            ("COACHWIRE_CONNECTION_LIMIT".into(), "0".into()),
        ],
        ..Default::default()
    })
    .await
    .expect("stack");
    let json = std::env::temp_dir().join(format!("cw-load-{}.json", uuid::Uuid::new_v4()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_coachwire-load"))
        .args(["--url", &stack.url(), "--database-url", &stack.db.url])
        .args([
            "--jwt-secret",
            JWT_SECRET,
            "--connections",
            "12",
            "--room-size",
            "3",
        ])
        .args(["--rate", "100", "--warmup", "500ms", "--duration", "2s"])
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .expect("coachwire-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("send→room"), "a table on stdout: {stdout}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON results")).expect("JSON");
    let _ = std::fs::remove_file(&json);
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
