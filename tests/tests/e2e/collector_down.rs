//! A collector that is down or hangs never slows or fails the message path (§11): the
//! same load runs against a stack with no exporter, one whose collector refuses
//! connections (gRPC), and one whose collector accepts connections and never answers
//! (HTTP). Every run must pass the full §7 checker, and the acks must stay fast.
//!
//! Heavy (three stacks under load, one after another): nextest's group `heavy`.

use coachwire_testkit::nats_server::free_port;
use coachwire_testkit::scenario::{Plan, Run, ack_latency};
use coachwire_testkit::stack::StackOptions;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long each run sends: about a thousand acks measured after the first second, and
/// a path that waited on export would stall on the exporter's 10 s timeout within it.
const LOAD_TIME: Duration = Duration::from_secs(4);
/// Acks of a path that waited on export would take the exporter's timeout (10 s); with
/// export off the path, p99 stays in milliseconds. Generous, since the scenario runs
/// beside another heavy one (nextest group `heavy`) and this bound only has to tell
/// milliseconds from the exporter's seconds.
const ACK_P99_LIMIT_MS: f64 = 1000.0;

/// Runs the load with `env`; returns (acked, p50 ms, p99 ms) after the first second.
async fn run(name: &'static str, env: Vec<(String, String)>) -> (usize, f64, f64) {
    let mut env = env;
    // A small queue fills at once, so the drop-when-full path is the one exercised.
    env.push(("OTEL_BSP_MAX_QUEUE_SIZE".into(), "64".into()));
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    let plan = Plan {
        name,
        options: StackOptions {
            env,
            ..Default::default()
        },
        conversations: 10,
        per_conversation: 2,
        rate: 300,
    };
    let mut run = Run::start(plan).await;
    let from = run.progress().await.at + 1000.0;
    run.run_until(LOAD_TIME).await;
    let to = run.progress().await.at;
    let (_, report, summary) = run.finish().await;
    let (n, p50, p99) = ack_latency(&report, from, to);
    println!(
        "{name}: {} sent, {} acked, {} stored; ack latency n {n} p50 {p50:.1} ms p99 {p99:.1} ms",
        summary.sent, summary.acked, summary.stored
    );
    assert_eq!(summary.acked, summary.sent, "{name}: every message acked");
    (n, p50, p99)
}

fn collector(endpoint: String, protocol: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
    ]
}

#[tokio::test]
async fn a_refusing_or_hanging_collector_leaves_acks_working_and_fast() {
    let (_, _, p99_none) = run("no-collector", Vec::new()).await;

    let refused = free_port().expect("a free port");
    let (_, _, p99_refused) = run(
        "collector-refusing",
        collector(format!("http://127.0.0.1:{refused}"), "grpc"),
    )
    .await;

    // Accepts every connection and never reads or answers: the exporter waits out its
    // timeout on each export.
    let hanging = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = hanging.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let (_, _, p99_hanging) = run(
        "collector-hanging",
        collector(format!("http://127.0.0.1:{port}"), "http/protobuf"),
    )
    .await;
    holder.abort();

    println!(
        "ack p99: no collector {p99_none:.1} ms, refusing {p99_refused:.1} ms, hanging {p99_hanging:.1} ms"
    );
    for (case, p99) in [("refusing", p99_refused), ("hanging", p99_hanging)] {
        assert!(
            p99 < ACK_P99_LIMIT_MS,
            "a {case} collector slowed acks: p99 {p99:.1} ms (no collector: {p99_none:.1} ms)"
        );
    }
}
