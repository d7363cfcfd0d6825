//! Fault scenarios: steady chat load from real clients while a process is killed,
//! terminated or loses its NATS, then one checker ([`checker::check`]) judges every §7
//! guarantee against Postgres and what each socket received.
//!
//! Each scenario injects its fault at a random point (printed with its seed; set
//! `COACHWIRE_FAULT_SEED` to replay one), stops the load, lets every retry finish, waits
//! until Postgres holds every acked message and every socket has caught up, then checks.
//! They run one at a time (nextest group `faults`): the machine has two cores.

use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_shared::subjects::{
    FANOUT_CONSUMER, MESSAGES_STREAM, PARTITIONS, PERSISTED_STREAM, persister_consumer,
};
use coachwire_testkit::checker::{self, Summary};
use coachwire_testkit::load::{Load, LoadClient, LoadConfig, LoadReport, Progress};
use coachwire_testkit::nats_cluster::NatsCluster;
use coachwire_testkit::pg_server::PgServer;
use coachwire_testkit::stack::{Stack, StackOptions, new_user, token};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long Postgres may take to catch up with every acked message after the load stops.
const STORE_WAIT: Duration = Duration::from_secs(60);
/// How long the sockets may take to receive (or sync) everything stored.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// Every scenario's graceful stop must end within the contract's 10 s (§1).
const SIGTERM_WITHIN: Duration = Duration::from_secs(10);

/// A small deterministic generator (splitmix64): the fault times of a run are
/// reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock(scenario: &str) -> Self {
        let seed = std::env::var("COACHWIRE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{scenario}: seed {seed} (COACHWIRE_FAULT_SEED={seed} replays it)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` at millisecond resolution.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64 + 1;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// The shape of one scenario's load.
struct Plan {
    name: &'static str,
    options: StackOptions,
    conversations: usize,
    per_conversation: usize,
    rate: u32,
}

/// A stack under load, and the clock the fault times are measured on.
struct Run {
    name: &'static str,
    stack: Stack,
    load: Load,
    conversations: Vec<ConversationId>,
    rng: Rng,
    started: Instant,
}

impl Run {
    /// Starts the stack, creates the conversations, connects every client and starts
    /// the load; returns once messages are being acked.
    async fn start(plan: Plan) -> Run {
        let rng = Rng::from_env_or_clock(plan.name);
        let stack = Stack::start_with(plan.options).await.expect("stack");
        let nodes = stack.ingest.len();
        let mut conversations = Vec::new();
        let mut clients = Vec::new();
        for c in 0..plan.conversations {
            let users: Vec<UserId> = (0..plan.per_conversation).map(|_| new_user()).collect();
            let conversation = stack.db.conversation(&users).await.expect("conversation");
            conversations.push(conversation);
            for (u, user) in users.into_iter().enumerate() {
                clients.push(LoadClient {
                    name: format!("c{c}u{u}"),
                    user,
                    token: token(user, None, 3600),
                    conversation,
                    // Every conversation has sockets on every node: deliveries cross nodes.
                    url_index: Some((c + u) % nodes),
                });
            }
        }
        let config = LoadConfig::new(stack.urls(), clients, plan.rate);
        let mut load = Load::start(&config).await.expect("load driver ready");
        load.begin().await.expect("load started");
        let started = Instant::now();
        load.wait_acked(20, Duration::from_secs(10))
            .await
            .expect("load is flowing");
        println!(
            "{}: {} conversations × {} sockets on {} ingest node(s), {} msg/s",
            plan.name, plan.conversations, plan.per_conversation, nodes, plan.rate
        );
        Run {
            name: plan.name,
            stack,
            load,
            conversations,
            rng,
            started,
        }
    }

    /// Sleeps until a random point in `[lo, hi]` after the load started (the fault time).
    async fn random_point(&mut self, lo: Duration, hi: Duration) -> Duration {
        let at = self.rng.between(lo, hi);
        tokio::time::sleep_until(self.started + at).await;
        let progress = self.progress().await;
        println!(
            "{}: fault at {at:?} after load start (sent {}, acked {})",
            self.name, progress.sent, progress.acked
        );
        at
    }

    /// Sleeps a random time in `[lo, hi]` (an outage's length) and says so.
    async fn random_pause(&mut self, lo: Duration, hi: Duration, what: &str) {
        let pause = self.rng.between(lo, hi);
        println!("{}: {what} for {pause:?}", self.name);
        tokio::time::sleep(pause).await;
    }

    /// Lets the load run until `since_start` after it began.
    async fn run_until(&self, since_start: Duration) {
        tokio::time::sleep_until(self.started + since_start).await;
    }

    async fn progress(&mut self) -> Progress {
        self.load.progress().await.expect("progress")
    }

    /// Stops the load, waits for every retry to end, for Postgres to hold every acked
    /// message and for the sockets to catch up, then runs the checker (panicking with
    /// its evidence on a violation).
    async fn finish(mut self) -> (Stack, LoadReport, Summary) {
        let load_time = self.started.elapsed();
        let stopped = self.load.stop().await.expect("load stopped");
        println!(
            "{}: load ran {load_time:?}; stop: sent {} acked {} failures {:?} reconnects {} \
             (retries ended after {:?})",
            self.name,
            stopped.sent,
            stopped.acked,
            stopped.failures,
            stopped.reconnects,
            self.started.elapsed() - load_time
        );
        let waited = Instant::now();
        let last_seq = checker::wait_until_stored(
            &self.stack.db.pool,
            &self.conversations,
            stopped.acked,
            STORE_WAIT,
        )
        .await
        .expect("reading Postgres");
        println!(
            "{}: Postgres caught up in {:?}",
            self.name,
            waited.elapsed()
        );
        let report = self
            .load
            .settle(&last_seq, SETTLE_WAIT)
            .await
            .expect("load report");
        println!(
            "{}: sockets settled in {:.0} ms (timed out: {})",
            self.name, report.settle_ms, report.timed_out
        );
        let checked = checker::check(&report, &self.stack.db.pool).await;
        let nats = nats_client(&self.stack.nats_url()).await;
        let stream_order = checker::check_stream_order(
            &self.stack.db.pool,
            &async_nats::jetstream::new(nats),
            &self.conversations,
        )
        .await;
        let summary = match checked {
            Ok(summary) => summary,
            Err(e) => {
                let kept = self.load.keep_report();
                let order = stream_order
                    .err()
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_default();
                panic!(
                    "{}: {e:#}\n{order}\nload report kept at {}",
                    self.name,
                    kept.display()
                )
            }
        };
        if let Err(e) = stream_order {
            panic!("{}: {e:#}", self.name);
        }
        let _ = self.load.shutdown().await;
        (self.stack, report, summary)
    }
}

/// A client of the stack's NATS: one server, or a cluster's comma-separated list.
async fn nats_client(url: &str) -> async_nats::Client {
    let servers = coachwire_shared::nats::server_addrs(url).expect("NATS url");
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .expect("nats for the checks")
}

/// One consumer's state as the server reports it.
#[derive(Clone, Debug, Default)]
struct ConsumerState {
    ack_pending: usize,
    redelivered: usize,
    pending: u64,
    pinned: Option<String>,
}

/// Reads the persister partitions' and the fanout's consumer info.
struct Consumers {
    js: async_nats::jetstream::Context,
}

impl Consumers {
    async fn connect(nats_url: &str) -> Consumers {
        Consumers {
            js: async_nats::jetstream::new(nats_client(nats_url).await),
        }
    }

    /// `persister-p0..7` and `fanout`; a consumer that cannot be read right now is absent.
    async fn snapshot(&self) -> BTreeMap<String, ConsumerState> {
        let mut names: Vec<(String, &str)> = (0..PARTITIONS)
            .map(|p| (persister_consumer(p), MESSAGES_STREAM))
            .collect();
        names.push((FANOUT_CONSUMER.to_string(), PERSISTED_STREAM));
        let mut states = BTreeMap::new();
        for (name, stream) in names {
            let info = async {
                let stream = self.js.get_stream(stream).await.ok()?;
                stream.consumer_info(&name).await.ok()
            };
            let Ok(Some(info)) = tokio::time::timeout(Duration::from_secs(2), info).await else {
                continue;
            };
            let pinned = info
                .priority_groups
                .iter()
                .find_map(|g| g.pinned_client_id.clone());
            states.insert(
                name,
                ConsumerState {
                    ack_pending: info.num_ack_pending,
                    redelivered: info.num_redelivered,
                    pending: info.num_pending,
                    pinned,
                },
            );
        }
        states
    }

    /// Samples every 200 ms in the background, keeping each consumer's highest
    /// `num_redelivered` (the server forgets a redelivery once it is acked).
    fn sample_redeliveries(self) -> Sampler {
        let peaks: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let into = Arc::clone(&peaks);
        let task = tokio::spawn(async move {
            loop {
                for (name, state) in self.snapshot().await {
                    let mut peaks = into.lock().unwrap_or_else(|e| e.into_inner());
                    let peak = peaks.entry(name).or_default();
                    *peak = (*peak).max(state.redelivered);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Sampler { peaks, task }
    }
}

struct Sampler {
    peaks: Arc<Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn finish(self) -> BTreeMap<String, usize> {
        self.task.abort();
        self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn print_consumers(scenario: &str, when: &str, states: &BTreeMap<String, ConsumerState>) {
    let line: Vec<String> = states
        .iter()
        .map(|(name, s)| {
            format!(
                "{name}: ack-pending {} redelivered {} pending {}",
                s.ack_pending, s.redelivered, s.pending
            )
        })
        .collect();
    println!("{scenario}: consumers {when}: {}", line.join("; "));
}

fn plan(name: &'static str, options: StackOptions) -> Plan {
    Plan {
        name,
        options,
        conversations: 12,
        per_conversation: 3,
        rate: 200,
    }
}

fn two_ingest_nodes() -> StackOptions {
    StackOptions {
        ingest_nodes: 2,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_persister_killed_mid_batch_and_restarted_loses_and_duplicates_nothing() {
    let mut run = Run::start(plan("persister-kill", StackOptions::default())).await;
    let consumers = Consumers::connect(&run.stack.nats_url()).await;
    let fault = run
        .random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
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
    run.run_until(fault + Duration::from_secs(10)).await;
    let (_, _, summary) = run.finish().await;
    assert!(
        summary.acked as u64 > acked_before,
        "ingest kept accepting while the persister was down"
    );
}

#[tokio::test]
async fn a_fanout_killed_and_restarted_still_delivers_every_message_once_in_order() {
    let mut run = Run::start(plan("fanout-kill", StackOptions::default())).await;
    let fault = run
        .random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    run.stack.fanouts[0].kill().await.expect("kill -9");
    run.random_pause(
        Duration::from_secs(1),
        Duration::from_secs(3),
        "fanout down",
    )
    .await;
    run.stack.fanouts[0].restart().await.expect("restarted");
    run.run_until(fault + Duration::from_secs(10)).await;
    let (_, _, summary) = run.finish().await;
    assert_eq!(
        summary.reconnected, 0,
        "no socket was dropped by a fanout crash"
    );
}

#[tokio::test]
async fn clients_of_a_killed_ingest_node_reconnect_to_the_other_and_miss_nothing() {
    let mut run = Run::start(plan("ingest-kill", two_ingest_nodes())).await;
    let fault = run
        .random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    let victim = run.stack.ingest[1].url();
    run.stack.ingest[1].kill().await.expect("kill -9");
    run.run_until(fault + Duration::from_secs(10)).await;
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
    run.random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    run.stack.nats_server().kill().await;
    run.random_pause(lo, hi, "nats-server down").await;
    run.stack.nats_server().restart().await.expect("nats back");
    let back = run.started.elapsed();
    run.run_until(back + Duration::from_secs(10)).await;
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
    let fault = run
        .random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    let before = consumers.snapshot().await;
    run.stack.persisters[0].kill().await.expect("kill -9");
    print_consumers(
        run.name,
        "right after the kill",
        &consumers.snapshot().await,
    );
    // Past pinned_ttl (20 s in production tuning) plus the standby's catch-up.
    run.run_until(fault + Duration::from_secs(25)).await;
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
    let fault = run
        .random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
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
    run.run_until(fault + Duration::from_secs(10)).await;
    let (_, _, summary) = run.finish().await;
    let peaks = sampler.finish();
    println!("{name}: peak num_redelivered per consumer during the run: {peaks:?}");
    assert!(summary.acked > 0);
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

/// Ack latency percentiles (ms) of the messages first sent within `[from, to)` on the
/// driver's clock.
fn ack_latency(report: &LoadReport, from: f64, to: f64) -> (usize, f64, f64) {
    let mut latencies: Vec<f64> = report
        .messages
        .iter()
        .filter_map(|m| Some((m.first_send_at?, m.ack_at?)))
        .filter(|(sent, _)| (from..to).contains(sent))
        .map(|(sent, acked)| acked - sent)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (latencies.len(), at(0.5), at(0.99))
}

/// `/readyz` of a service: status code and body.
async fn readiness(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// How long the contract's outage scenario keeps Postgres stopped.
const POSTGRES_OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn postgres_stopped_for_30_s_ingest_keeps_acking_and_the_persister_catches_up() {
    let mut pg = PgServer::start().await.expect("a private Postgres");
    let options = StackOptions {
        database_admin_url: Some(pg.admin_url()),
        ..Default::default()
    };
    let mut run = Run::start(plan("postgres-outage", options)).await;
    run.random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
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
        acked_while_down > 1000,
        "ingest kept acking for 30 s: {acked_while_down}"
    );
    assert!(
        p99_down < 100.0,
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
    run.random_point(Duration::from_secs(2), Duration::from_secs(5))
        .await;
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
    let acked_at_kill = run.progress().await.acked;
    run.run_until(run.started.elapsed() + Duration::from_secs(8))
        .await;
    let acked_after = run.progress().await.acked - acked_at_kill;
    let (_, _, summary) = run.finish().await;
    assert!(
        acked_after > 500,
        "the services carried on through the other nodes: {acked_after} acked after the kill"
    );
    assert_eq!(
        summary.reconnected, 0,
        "no socket was dropped by a NATS node's loss"
    );
}
