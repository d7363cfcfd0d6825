//! Fault scenarios: steady chat load from real clients while a process is killed,
//! terminated or loses its NATS, then one checker ([`checker::check`]) judges every §7
//! guarantee against Postgres and what each socket received.
//!
//! Each scenario injects its fault at a random point (printed with its seed; set
//! `COACHWIRE_FAULT_SEED` to replay one), stops the load, lets every retry finish, waits
//! until Postgres holds every acked message and every socket has caught up, then checks.
//! They run two at a time (nextest group `heavy`): the machine has two cores.

use coachwire_shared::subjects::{PARTITIONS, persister_consumer};
use coachwire_testkit::checker::Summary;
use coachwire_testkit::load::LoadReport;
use coachwire_testkit::nats_cluster::NatsCluster;
use coachwire_testkit::pg_server::PgServer;
use coachwire_testkit::scenario::*;
use coachwire_testkit::stack::{StackOptions, TEST_ACK_WAIT, TEST_PINNED_TTL};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long the load runs on after a fault (or after the faulty process is back): time
/// for clients to reconnect and for steady load to flow again. The checks do not need
/// more: `finish` then lets every retry end and waits until everything acked is stored.
const AFTER_FAULT: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_persister_killed_mid_batch_and_restarted_loses_and_duplicates_nothing() {
    let mut run = Run::start(plan("persister-kill", StackOptions::default())).await;
    let consumers = Consumers::connect(&run.stack.nats_url()).await;
    let fault = run.fault_point().await;
    run.stack.persisters[0].kill().await.expect("kill -9");
    print_consumers(
        run.name,
        "right after the kill",
        &consumers.snapshot().await,
    );
    run.random_pause(
        Duration::from_secs(1),
        Duration::from_secs(3),
        "persister down",
    )
    .await;
    let acked_before = run.progress().await.acked;
    run.stack.persisters[0].restart().await.expect("restarted");
    run.run_until(fault + AFTER_FAULT).await;
    let (_, _, summary) = run.finish().await;
    assert!(
        summary.acked as u64 > acked_before,
        "ingest kept accepting while the persister was down"
    );
}

#[tokio::test]
async fn a_fanout_killed_and_restarted_still_delivers_every_message_once_in_order() {
    let mut run = Run::start(plan("fanout-kill", StackOptions::default())).await;
    let fault = run.fault_point().await;
    run.stack.fanouts[0].kill().await.expect("kill -9");
    run.random_pause(
        Duration::from_secs(1),
        Duration::from_secs(3),
        "fanout down",
    )
    .await;
    run.stack.fanouts[0].restart().await.expect("restarted");
    run.run_until(fault + AFTER_FAULT).await;
    let (_, _, summary) = run.finish().await;
    assert_eq!(
        summary.reconnected, 0,
        "no socket was dropped by a fanout crash"
    );
}

#[tokio::test]
async fn clients_of_a_killed_ingest_node_reconnect_to_the_other_and_miss_nothing() {
    let mut run = Run::start(plan("ingest-kill", two_ingest_nodes())).await;
    let fault = run.fault_point().await;
    let victim = run.stack.ingest[1].url();
    run.stack.ingest[1].kill().await.expect("kill -9");
    run.run_until(fault + AFTER_FAULT).await;
    let (_, report, summary) = run.finish().await;
    let on_victim: Vec<_> = report
        .clients
        .iter()
        .filter(|c| c.joins.first().is_some_and(|j| j.url == victim))
        .collect();
    assert!(!on_victim.is_empty(), "some clients started on the victim");
    for client in &on_victim {
        assert!(
            client.reconnected && client.joins.last().is_some_and(|j| j.url != victim),
            "{} reconnected to the surviving node: {:?}",
            client.name,
            client.joins
        );
    }
    assert_eq!(
        summary.reconnected,
        on_victim.len(),
        "only the victim's clients moved"
    );
}

/// nats-server killed -9 and restarted on the same port and store after `outage`.
async fn nats_outage(name: &'static str, lo: Duration, hi: Duration) -> (LoadReport, Summary) {
    let mut run = Run::start(plan(name, StackOptions::default())).await;
    run.fault_point().await;
    run.stack.nats_server().kill().await;
    run.random_pause(lo, hi, "nats-server down").await;
    run.stack.nats_server().restart().await.expect("nats back");
    let back = run.started.elapsed();
    run.run_until(back + AFTER_FAULT).await;
    let (_, report, summary) = run.finish().await;
    (report, summary)
}

/// Failed attempts a client saw: UNAVAILABLE, no answer, or a dropped socket.
fn failed_attempts(summary: &Summary) -> usize {
    ["UNAVAILABLE", "timeout", "disconnected"]
        .iter()
        .filter_map(|code| summary.codes.get(*code))
        .sum()
}

/// The slowest success: from first send to the success ack, in ms.
fn slowest_ack_ms(report: &LoadReport) -> f64 {
    report
        .messages
        .iter()
        .filter_map(|m| Some(m.ack_at? - m.first_send_at?))
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn a_short_nats_outage_delays_acks_but_never_acks_what_is_not_stored() {
    // Shorter than ingest's 5 s PubAck timeout: publishes wait in the client's buffer and
    // are acked once the server is back, or answered UNAVAILABLE; either way the checker
    // holds every success to being stored.
    let (report, summary) =
        nats_outage("nats-kill", Duration::from_secs(2), Duration::from_secs(4)).await;
    let slowest = slowest_ack_ms(&report);
    println!(
        "nats-kill: slowest ack {slowest:.0} ms, failed attempts {}",
        failed_attempts(&summary)
    );
    assert!(
        slowest > 1000.0 || failed_attempts(&summary) > 0,
        "the outage was seen by the clients (slowest ack {slowest:.0} ms, codes {:?})",
        summary.codes
    );
}

#[tokio::test]
async fn a_long_nats_outage_answers_unavailable_and_retries_are_stored_once() {
    // Longer than the PubAck timeout: sends fail honestly and the clients' retries with
    // the same clientMessageId must each be stored once.
    let (report, summary) = nats_outage(
        "nats-long-outage",
        Duration::from_secs(6),
        Duration::from_secs(8),
    )
    .await;
    println!(
        "nats-long-outage: slowest ack {:.0} ms, failed attempts {}, duplicate acks {}",
        slowest_ack_ms(&report),
        failed_attempts(&summary),
        summary.duplicates_acked
    );
    assert!(
        failed_attempts(&summary) > 0,
        "sends during the outage failed: {:?}",
        summary.codes
    );
}

#[tokio::test]
async fn a_killed_persisters_partitions_move_to_the_standby_with_order_intact() {
    let options = StackOptions {
        fanouts: 2,
        ..Default::default()
    };
    let mut run = Run::start(plan("persister-handover", options)).await;
    // Added once the first one has pinned every partition in use, so the hand-over
    // certainly moves all of them (a pin stays with its live client).
    run.run_until(Duration::from_millis(1500)).await;
    run.stack.add_persister().await.expect("standby persister");
    let consumers = Consumers::connect(&run.stack.nats_url()).await;
    let fault = run.fault_point().await;
    let before = consumers.snapshot().await;
    run.stack.persisters[0].kill().await.expect("kill -9");
    print_consumers(
        run.name,
        "right after the kill",
        &consumers.snapshot().await,
    );
    // Past pinned_ttl (the test stacks' short one) plus the standby's catch-up.
    run.run_until(fault + TEST_PINNED_TTL + Duration::from_secs(5))
        .await;
    let (stack, _, _) = run.finish().await;
    let after = consumers.snapshot().await;
    let pin = |s: &BTreeMap<String, ConsumerState>, name: &str| {
        s.get(name).and_then(|c| c.pinned.clone())
    };
    let held: Vec<String> = (0..PARTITIONS)
        .map(persister_consumer)
        .filter(|name| pin(&before, name).is_some())
        .collect();
    let moved: Vec<&String> = held
        .iter()
        .filter(|name| pin(&after, name).is_some_and(|p| Some(p) != pin(&before, name)))
        .collect();
    println!(
        "persister-handover: the killed persister held {} partitions, {} moved: {moved:?}",
        held.len(),
        moved.len()
    );
    assert!(!held.is_empty(), "the killed persister held partitions");
    assert_eq!(moved.len(), held.len(), "every held partition moved");
    drop(stack);
}

/// SIGTERM of `victim` under load, restarted a second later: it exits 0 in time, every
/// acked message is stored once, and the consumers' redeliveries are printed.
async fn sigterm_scenario(name: &'static str, options: StackOptions, victim: Victim) {
    let mut run = Run::start(plan(name, options)).await;
    let consumers = Consumers::connect(&run.stack.nats_url()).await;
    let sampler = Consumers::connect(&run.stack.nats_url())
        .await
        .sample_redeliveries();
    let fault = run.fault_point().await;
    let service = match victim {
        Victim::Persister => &mut run.stack.persisters[0],
        Victim::Fanout => &mut run.stack.fanouts[0],
        Victim::Ingest => &mut run.stack.ingest[1],
    };
    let asked = Instant::now();
    let status = service
        .terminate(SIGTERM_WITHIN)
        .await
        .expect("exits in time");
    println!(
        "{name}: {} exited {status} after {:?}",
        service.name,
        asked.elapsed()
    );
    assert!(status.success(), "{} exited with {status}", service.name);
    print_consumers(name, "right after the exit", &consumers.snapshot().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.restart().await.expect("restarted");
    run.run_until(fault + AFTER_FAULT).await;
    let (_, report, summary) = run.finish().await;
    let peaks = sampler.finish();
    println!("{name}: peak num_redelivered per consumer during the run: {peaks:?}");
    assert!(summary.acked > 0);
    let cut: usize = report
        .messages
        .iter()
        .flat_map(|m| &m.attempts)
        .filter(|(_, outcome)| outcome == "disconnected")
        .count();
    println!("{name}: {cut} send(s) cut by a disconnect before their ack");
    if matches!(victim, Victim::Ingest) {
        // A success ack lost at shutdown would show when its client retries: the retry is
        // answered `duplicate: true`. The sends cut by the close (on the wire, or answered
        // in its last moments) were never stored, so their retries are not duplicates.
        assert_eq!(
            summary.duplicates_acked, 0,
            "a success ack was lost at shutdown ({cut} sends cut by the close)"
        );
    }
}

enum Victim {
    Persister,
    Fanout,
    Ingest,
}

#[tokio::test]
async fn a_persister_terminated_under_load_exits_cleanly_and_loses_nothing() {
    sigterm_scenario(
        "persister-sigterm",
        StackOptions::default(),
        Victim::Persister,
    )
    .await;
}

#[tokio::test]
async fn a_fanout_terminated_under_load_exits_cleanly_and_loses_nothing() {
    sigterm_scenario("fanout-sigterm", StackOptions::default(), Victim::Fanout).await;
}

#[tokio::test]
async fn an_ingest_node_terminated_under_load_exits_cleanly_and_loses_nothing() {
    sigterm_scenario("ingest-sigterm", two_ingest_nodes(), Victim::Ingest).await;
}

/// How long the outage scenario keeps Postgres stopped: past a redelivery (`ack_wait`, the
/// test stacks' short one), so the persister's held batch must survive one.
const POSTGRES_OUTAGE: Duration = TEST_ACK_WAIT
    .saturating_mul(2)
    .saturating_add(Duration::from_secs(1));
/// How long the services may take to carry on after a NATS node of a 3-node cluster dies.
const NODE_FAILOVER_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn postgres_stopped_past_a_redelivery_ingest_keeps_acking_and_the_persister_catches_up() {
    let mut pg = PgServer::start().await.expect("a private Postgres");
    let options = StackOptions {
        database_admin_url: Some(pg.admin_url()),
        ..Default::default()
    };
    let plan = plan("postgres-outage", options);
    // What the load offers over the outage: ingest must ack nearly all of it. A fixed
    // count would be all of it at this outage and rate (exactly 1000 failed once).
    let offered = f64::from(plan.rate) * POSTGRES_OUTAGE.as_secs_f64();
    let mut run = Run::start(plan).await;
    run.fault_point().await;
    pg.stop().await.expect("Postgres stopped");
    let down_at = run.progress().await.at;
    let persister = run.stack.persisters[0].admin_url();
    let mut seen = (200, serde_json::Value::Null);
    for _ in 0..100 {
        seen = readiness(&persister).await;
        if seen.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "postgres-outage: persister /readyz while down: {} {}",
        seen.0, seen.1
    );
    assert_eq!(seen.0, 503, "the persister is not ready without Postgres");
    let reason = seen.1["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("Postgres"), "it says why: {}", seen.1);
    let (status, body) = readiness(&run.stack.ingest[0].url()).await;
    assert_eq!(status, 200, "ingest stays ready (§7.5, §8): {body}");
    assert_ne!(
        body["postgres"], "ok",
        "ingest reports Postgres down: {body}"
    );
    let acked_when_down = run.progress().await.acked;

    tokio::time::sleep(POSTGRES_OUTAGE).await;
    let up_at = run.progress().await.at;
    let acked_while_down = run.progress().await.acked - acked_when_down;
    pg.start_again().await.expect("Postgres back");
    println!(
        "postgres-outage: Postgres back after {POSTGRES_OUTAGE:?}; {acked_while_down} acked meanwhile"
    );
    run.run_until(run.started.elapsed() + Duration::from_secs(3))
        .await;
    let (stack, report, _) = run.finish().await;
    let (n_before, p50_before, p99_before) = ack_latency(&report, 0.0, down_at);
    let (n_down, p50_down, p99_down) = ack_latency(&report, down_at, up_at);
    println!(
        "postgres-outage: ack latency before: n {n_before} p50 {p50_before:.1} ms p99 {p99_before:.1} ms; \
         while down: n {n_down} p50 {p50_down:.1} ms p99 {p99_down:.1} ms"
    );
    assert!(
        acked_while_down as f64 >= 0.9 * offered,
        "ingest kept acking for {POSTGRES_OUTAGE:?}: {acked_while_down} of about {offered:.0} sent"
    );
    assert!(
        p99_down < 150.0,
        "acks kept their normal latency while Postgres was down (p99 {p99_down:.1} ms)"
    );
    let (status, _) = readiness(&stack.persisters[0].admin_url()).await;
    assert_eq!(status, 200, "the persister is ready again");
}

#[tokio::test]
async fn the_nats_node_the_services_use_is_killed_and_nothing_acked_is_lost() {
    let mut cluster = NatsCluster::start().await.expect("a 3-node cluster");
    let options = StackOptions {
        nats_url: Some(cluster.urls()),
        env: vec![("COACHWIRE_STREAM_REPLICAS".into(), "3".into())],
        ..Default::default()
    };
    let mut run = Run::start(plan("nats-node-kill", options)).await;
    run.fault_point().await;
    let mut busiest = (0, 0);
    for node in 0..3 {
        let ours = cluster
            .client_connections(node)
            .await
            .expect("connz")
            .iter()
            .filter(|c| c.name.starts_with("coachwire-"))
            .count();
        println!("nats-node-kill: node {node} has {ours} coachwire connections");
        if ours > busiest.1 {
            busiest = (node, ours);
        }
    }
    assert!(busiest.1 > 0, "the services are connected somewhere");
    cluster.kill(busiest.0).await;
    println!(
        "nats-node-kill: killed node {} ({} service connections)",
        busiest.0, busiest.1
    );
    let killed_at = Instant::now();
    let acked_at_kill = run.progress().await.acked;
    // Acks resume once the streams have new leaders: JetStream's Raft election alone
    // waits 4-9 s after a leader is lost, so the wait is for the event, with room for it.
    let resumed = run
        .load
        .wait_acked(acked_at_kill + 500, NODE_FAILOVER_WITHIN)
        .await;
    println!(
        "nats-node-kill: 500 more acked {:?} after the kill",
        killed_at.elapsed()
    );
    // Load on for 8 s after the kill in any case: the rest of the cluster's streams settle
    // meanwhile, and the checker reads them.
    run.run_until(
        run.started.elapsed() + Duration::from_secs(8).saturating_sub(killed_at.elapsed()),
    )
    .await;
    let (_, _, summary) = run.finish().await;
    if let Err(e) = resumed {
        panic!("the services never carried on through the other nodes: {e:#}");
    }
    assert_eq!(
        summary.reconnected, 0,
        "no socket was dropped by a NATS node's loss"
    );
}
