//! The fault suite's scenario machinery: a stack under steady load from real clients
//! ([`Run`]), fault times drawn from a printed, replayable seed ([`Rng`]), the
//! consumers' state as the server reports it ([`Consumers`]), and the end of every
//! scenario — stop, let retries finish, wait for Postgres and the sockets, then judge
//! every §7 guarantee with [`checker::check`] and the stream-order check.

use crate::checker::{self, Summary};
use crate::load::{Load, LoadClient, LoadConfig, LoadReport, Progress};
use crate::stack::{Stack, StackOptions, new_user, token};
use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_shared::subjects::{
    FANOUT_CONSUMER, MESSAGES_STREAM, PARTITIONS, PERSISTED_STREAM, persister_consumer,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long Postgres may take to catch up with every acked message after the load stops.
pub const STORE_WAIT: Duration = Duration::from_secs(60);
/// How long the sockets may take to receive (or sync) everything stored.
pub const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// How long a drain waits for every streamed reply to end: a reply its node left ends
/// within twice the idle time after its last append (§14 rule 3), and the soak's idle
/// time is [`crate::soak::topology::REPLY_IDLE_MS`].
pub const REPLY_END_WAIT: Duration = Duration::from_secs(45);
/// Every scenario's graceful stop must end within the contract's 10 s (§1).
pub const SIGTERM_WITHIN: Duration = Duration::from_secs(10);

/// A small deterministic generator (splitmix64): the fault times of a run are
/// reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_clock(scenario: &str) -> Self {
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

    /// The generator a seed starts (the same seed, the same sequence).
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` at millisecond resolution.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64 + 1;
        lo + Duration::from_millis(self.next_u64() % span)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The shape of one scenario's load.
pub struct Plan {
    pub name: &'static str,
    pub options: StackOptions,
    pub conversations: usize,
    pub per_conversation: usize,
    pub rate: u32,
}

/// A stack under load, and the clock the fault times are measured on.
pub struct Run {
    pub name: &'static str,
    pub stack: Stack,
    pub load: Load,
    pub conversations: Vec<ConversationId>,
    pub rng: Rng,
    pub started: Instant,
}

/// Whether each room has an AI coach streaming replies (§14) beside its users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coach {
    Absent,
    Streams,
}

/// The conversations of a load and who is in them.
pub struct Rooms {
    pub ids: Vec<ConversationId>,
    pub clients: Vec<LoadClient>,
    /// One coach (a token with role `ai`) per conversation, with [`Coach::Streams`].
    pub coaches: Vec<LoadClient>,
}

/// `conversations` fresh conversations of `per_conversation` users each (and a coach,
/// when asked), and a load client for every one; every conversation has sockets on every
/// one of `nodes` ingest nodes, so deliveries cross nodes.
pub async fn rooms(
    db: &crate::db::TestDb,
    conversations: usize,
    per_conversation: usize,
    nodes: usize,
    coach: Coach,
) -> anyhow::Result<Rooms> {
    let mut rooms = Rooms {
        ids: Vec::new(),
        clients: Vec::new(),
        coaches: Vec::new(),
    };
    let node = |i: usize| Some(i % nodes.max(1));
    for c in 0..conversations {
        let users: Vec<UserId> = (0..per_conversation).map(|_| new_user()).collect();
        let ai = (coach == Coach::Streams).then(new_user);
        let conversation = db
            .conversation(&users.iter().copied().chain(ai).collect::<Vec<_>>())
            .await?;
        rooms.ids.push(conversation);
        for (u, user) in users.into_iter().enumerate() {
            rooms.clients.push(LoadClient {
                name: format!("c{c}u{u}"),
                user,
                token: token(user, None, 3600),
                conversation,
                url_index: node(c + u),
            });
        }
        rooms.coaches.extend(ai.map(|user| LoadClient {
            name: format!("c{c}ai"),
            user,
            token: token(user, Some("ai"), 3600),
            conversation,
            url_index: node(c + 1),
        }));
    }
    Ok(rooms)
}

/// What the end of a load found: the driver's counts at its stop, and its full report
/// once Postgres and the sockets caught up (or their waits ran out).
pub struct Drained {
    pub stopped: Progress,
    pub report: LoadReport,
    /// How long Postgres took to hold every acked message (at most [`STORE_WAIT`]).
    pub store_wait: Duration,
}

/// Stops the load, lets every retry end, waits for Postgres to hold every acked message
/// and for the sockets to catch up with it, and reads the driver's report.
pub async fn drain(
    load: &mut Load,
    pool: &sqlx::PgPool,
    conversations: &[ConversationId],
) -> anyhow::Result<Drained> {
    let stopped = load.stop().await?;
    let waited = Instant::now();
    checker::wait_until_stored(pool, conversations, stopped.acked, STORE_WAIT).await?;
    let last_seq = checker::wait_until_ended(pool, conversations, REPLY_END_WAIT).await?;
    let store_wait = waited.elapsed();
    let report = load.settle(&last_seq, SETTLE_WAIT).await?;
    Ok(Drained {
        stopped,
        report,
        store_wait,
    })
}

impl Run {
    /// Starts the stack, creates the conversations, connects every client and starts
    /// the load; returns once messages are being acked.
    pub async fn start(plan: Plan) -> Run {
        let rng = Rng::from_env_or_clock(plan.name);
        let stack = Stack::start_with(plan.options).await.expect("stack");
        let nodes = stack.ingest.len();
        let Rooms {
            ids: conversations,
            clients,
            ..
        } = rooms(
            &stack.db,
            plan.conversations,
            plan.per_conversation,
            nodes,
            Coach::Absent,
        )
        .await
        .expect("conversations");
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

    /// Sleeps until a random point of [`FAULT_WINDOW`] after the load started: the fault
    /// time of a scenario.
    pub async fn fault_point(&mut self) -> Duration {
        self.random_point(FAULT_WINDOW.0, FAULT_WINDOW.1).await
    }

    /// Sleeps until a random point in `[lo, hi]` after the load started (the fault time).
    pub async fn random_point(&mut self, lo: Duration, hi: Duration) -> Duration {
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
    pub async fn random_pause(&mut self, lo: Duration, hi: Duration, what: &str) {
        let pause = self.rng.between(lo, hi);
        println!("{}: {what} for {pause:?}", self.name);
        tokio::time::sleep(pause).await;
    }

    /// Lets the load run until `since_start` after it began.
    pub async fn run_until(&self, since_start: Duration) {
        tokio::time::sleep_until(self.started + since_start).await;
    }

    pub async fn progress(&mut self) -> Progress {
        self.load.progress().await.expect("progress")
    }

    /// Stops the load, waits for every retry to end, for Postgres to hold every acked
    /// message and for the sockets to catch up, then runs the checker (panicking with
    /// its evidence on a violation).
    pub async fn finish(mut self) -> (Stack, LoadReport, Summary) {
        let load_time = self.started.elapsed();
        let Drained {
            stopped,
            report,
            store_wait,
        } = drain(&mut self.load, &self.stack.db.pool, &self.conversations)
            .await
            .expect("load drained");
        println!(
            "{}: load ran {load_time:?}; stop: sent {} acked {} failures {:?} reconnects {}; \
             Postgres caught up in {store_wait:?}; sockets settled in {:.0} ms (timed out: {})",
            self.name,
            stopped.sent,
            stopped.acked,
            stopped.failures,
            stopped.reconnects,
            report.settle_ms,
            report.timed_out
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
pub async fn nats_client(url: &str) -> async_nats::Client {
    connect_nats(url).await.expect("nats for the checks")
}

/// [`nats_client`] for a caller that handles the error.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    let servers = coachwire_shared::nats::server_addrs(url)?;
    Ok(async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await?)
}

/// One consumer's state as the server reports it.
#[derive(Clone, Debug, Default)]
pub struct ConsumerState {
    pub ack_pending: usize,
    pub redelivered: usize,
    pub pending: u64,
    pub pinned: Option<String>,
}

/// Reads the persister partitions' and the fanout's consumer info.
pub struct Consumers {
    pub js: async_nats::jetstream::Context,
}

impl Consumers {
    pub async fn connect(nats_url: &str) -> Consumers {
        Consumers {
            js: async_nats::jetstream::new(nats_client(nats_url).await),
        }
    }

    /// `persister-p0..7` and `fanout`; a consumer that cannot be read right now is absent.
    pub async fn snapshot(&self) -> BTreeMap<String, ConsumerState> {
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
    pub fn sample_redeliveries(self) -> Sampler {
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

pub struct Sampler {
    pub peaks: Arc<Mutex<BTreeMap<String, usize>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn finish(self) -> BTreeMap<String, usize> {
        self.task.abort();
        self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub fn print_consumers(scenario: &str, when: &str, states: &BTreeMap<String, ConsumerState>) {
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

/// When a scenario's fault comes after the load started: by then every client has joined
/// and a few hundred messages are in the pipeline at [`plan`]'s rate, which is all the
/// guarantees need; a later fault only makes the test longer.
pub const FAULT_WINDOW: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3));

pub fn plan(name: &'static str, options: StackOptions) -> Plan {
    Plan {
        name,
        options,
        conversations: 12,
        per_conversation: 3,
        rate: 200,
    }
}

pub fn two_ingest_nodes() -> StackOptions {
    StackOptions {
        ingest_nodes: 2,
        ..Default::default()
    }
}

/// Ack latency percentiles (ms) of the messages first sent within `[from, to)` on the
/// driver's clock.
pub fn ack_latency(report: &LoadReport, from: f64, to: f64) -> (usize, f64, f64) {
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
pub async fn readiness(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
