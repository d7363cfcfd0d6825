//! The NATS adapter every service shares: connect (to one server or a cluster's list),
//! refuse servers that are too old, and declare streams and consumers idempotently.
//!
//! Declarations go through [`declare`]: every service declares the same streams at
//! start-up, often at the same moment, and a cluster that is still placing its raft
//! groups answers with timeouts and "not available" for a while. Those are retried with
//! backoff for [`DECLARE_PATIENCE`]; a refusal that no retry can change fails at once.

use crate::subjects::{
    DEAD_LETTER_ALL, DEAD_LETTER_STREAM, MESSAGES_INPUT, MESSAGES_PARTITIONED, MESSAGES_STREAM,
    PERSISTED_ALL, PERSISTED_STREAM, REPLIES_ALL, REPLIES_STREAM,
};
use async_nats::ServerAddr;
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, ErrorCode, stream};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Oldest server we run on. 2.12 brings the priority groups the persister's pinned
/// partitions need and `partition()` transforms; 2.12.3 fixes lost pending writes in
/// replicated streams and 2.12.4 replicas stuck `UNSYNCED` (see nats/README.md).
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 12, 4);
/// How long JetStream remembers a `Nats-Msg-Id`. Retries after it are still caught by the
/// deterministic id and Postgres' primary key; the window only saves a round trip. Memory
/// on the server grows with rate × window, hence not hours.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long accepted messages stay in the stream for replay after being persisted.
pub const MESSAGES_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Persisted events only need to outlive a fanout outage.
pub const PERSISTED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Appends of streamed replies: purged when their reply ends; the age only bounds what a
/// reply nobody could end would leave (every reply ends within minutes, §14).
pub const REPLIES_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a start-up waits for the first connection before giving up with one line.
/// Past a whole cluster's restart and elections (the soak saw 14.6 s, and a fanout that
/// started during one exited at 10 s).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// How long a declaration keeps retrying transient failures. On a cluster a new
/// replicated stream answers only once its own raft group has a leader: measured here,
/// 5–10 s per R3 stream on a freshly started cluster, past the 5 s JetStream request
/// timeout, so the first request times out while the creation goes on and a retry finds
/// the stream. 45 s covers a whole cluster and every service starting together, and a
/// real misconfiguration still ends the process within a minute.
pub const DECLARE_PATIENCE: Duration = Duration::from_secs(45);
/// First pause between attempts; doubled up to [`DECLARE_MAX_BACKOFF`]. Each attempt
/// already waits up to the JetStream request timeout (5 s) when the cluster is silent.
const DECLARE_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const DECLARE_MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS_URL entry {entry:?} is not a NATS server address: {cause}")]
    BadUrl {
        entry: String,
        cause: std::io::Error,
    },
    #[error("NATS_URL names no server")]
    NoUrl,
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("no connection to NATS at {url} within {} s", within.as_secs())]
    NotConnected { url: String, within: Duration },
    #[error("nats-server {found} is too old: coachwire needs {}.{}.{} or newer", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2)]
    TooOld { found: String },
    #[error("nats-server ignored the subject transform of stream {stream}")]
    TransformIgnored { stream: &'static str },
    #[error(transparent)]
    Declare(#[from] DeclareError),
}

/// A stream or consumer that could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    /// The server refused the declaration in a way no retry changes (a conflicting or
    /// invalid configuration, JetStream disabled, replicas on a single server).
    #[error("declaring {what}: refused: {cause}")]
    Refused {
        what: String,
        cause: async_nats::Error,
    },
    /// Transient failures (timeouts, a cluster without leader) lasted the whole patience.
    #[error("declaring {what}: still failing after {attempts} attempts in {} s: {cause}", elapsed.as_secs())]
    GaveUp {
        what: String,
        attempts: u32,
        elapsed: Duration,
        cause: async_nats::Error,
    },
}

/// What one failed declaration request means for the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclareFailure {
    /// The request was lost or the cluster is still settling: wait and try again.
    Transient,
    /// Another service declared it in the same instant. That is what we wanted: the next
    /// attempt finds it and updates it to our configuration, without waiting.
    AlreadyExists,
    /// Retrying cannot help.
    Refused,
}

/// Sorts an upstream declaration error by its kind (never its text).
pub trait Classify {
    fn classify(&self) -> DeclareFailure;
}

impl Classify for CreateStreamError {
    fn classify(&self) -> DeclareFailure {
        match self.kind() {
            CreateStreamErrorKind::TimedOut
            | CreateStreamErrorKind::JetStreamUnavailable
            | CreateStreamErrorKind::Response => DeclareFailure::Transient,
            CreateStreamErrorKind::JetStream(e) => classify_server(&e),
            _ => DeclareFailure::Refused,
        }
    }
}

impl Classify for ConsumerError {
    fn classify(&self) -> DeclareFailure {
        match self.kind() {
            ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => DeclareFailure::Transient,
            ConsumerErrorKind::JetStream(e) => classify_server(&e),
            _ => DeclareFailure::Refused,
        }
    }
}

/// Server answers that a settling cluster gives, and the "already exists" of a race.
fn classify_server(error: &jetstream::Error) -> DeclareFailure {
    const SETTLING: [ErrorCode; 11] = [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::CLUSTER_NOT_ACTIVE,
        ErrorCode::CLUSTER_NOT_ASSIGNED,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::CLUSTER_PEER_NOT_MEMBER,
        ErrorCode::CLUSTER_SERVER_NOT_MEMBER,
        ErrorCode::RAFT_GENERAL,
        // Placement fails this way while too few peers have joined to hold the replicas.
        ErrorCode::INSUFFICIENT_RESOURCES,
        // Every service declares the streams first; a consumer request that does not
        // see one yet met a server whose view has not caught up.
        ErrorCode::STREAM_NOT_FOUND,
    ];
    const EXISTS: [ErrorCode; 3] = [
        ErrorCode::STREAM_NAME_EXIST,
        ErrorCode::CONSUMER_NAME_EXIST,
        ErrorCode::CONSUMER_ALREADY_EXISTS,
    ];
    /// The API's status for "JetStream temporarily unavailable".
    const UNAVAILABLE_STATUS: usize = 503;
    let code = error.error_code();
    if EXISTS.contains(&code) {
        DeclareFailure::AlreadyExists
    } else if SETTLING.contains(&code) || error.code() == UNAVAILABLE_STATUS {
        DeclareFailure::Transient
    } else {
        DeclareFailure::Refused
    }
}

/// Runs `attempt` until it succeeds, retrying transient failures with backoff for
/// [`DECLARE_PATIENCE`]; the error names `what` and the last cause in one line.
pub async fn declare<T, E, F, Fut>(what: &str, attempt: F) -> Result<T, DeclareError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classify + Into<async_nats::Error>,
{
    declare_within(what, DECLARE_PATIENCE, attempt).await
}

/// [`declare`] with an explicit patience (tests use a short one).
pub async fn declare_within<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    mut attempt: F,
) -> Result<T, DeclareError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classify + Into<async_nats::Error>,
{
    let started = Instant::now();
    let mut backoff = DECLARE_FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let pause = match error.classify() {
            DeclareFailure::Refused => {
                return Err(DeclareError::Refused {
                    what: what.to_string(),
                    cause: error.into(),
                });
            }
            DeclareFailure::AlreadyExists => DECLARE_FIRST_BACKOFF,
            DeclareFailure::Transient => {
                let pause = backoff;
                backoff = (backoff * 2).min(DECLARE_MAX_BACKOFF);
                pause
            }
        };
        let elapsed = started.elapsed();
        if elapsed + pause > patience {
            return Err(DeclareError::GaveUp {
                what: what.to_string(),
                attempts,
                elapsed,
                cause: error.into(),
            });
        }
        let cause: async_nats::Error = error.into();
        tracing::warn!(what, attempts, error = %cause, "declaration failed; retrying");
        tokio::time::sleep(pause).await;
    }
}

/// Parses `NATS_URL`: one address, or several separated by commas (a cluster's nodes).
pub fn server_addrs(list: &str) -> Result<Vec<ServerAddr>, NatsError> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.iter().all(|e| e.is_empty()) {
        return Err(NatsError::NoUrl);
    }
    entries
        .into_iter()
        .map(|entry| {
            let bad = |cause| NatsError::BadUrl {
                entry: redact(entry),
                cause,
            };
            if entry.is_empty() {
                return Err(bad(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "empty entry",
                )));
            }
            let addr: ServerAddr = entry.parse().map_err(bad)?;
            if addr.host().is_empty() {
                return Err(bad(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no host",
                )));
            }
            Ok(addr)
        })
        .collect()
}

/// An entry as it may appear in an error: without a password.
fn redact(entry: &str) -> String {
    match (entry.find("://"), entry.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &entry[..scheme], &entry[at..])
        }
        (None, Some(at)) => format!("***{}", &entry[at..]),
        _ => entry.to_string(),
    }
}

/// Connects with a client name (visible in server monitoring) and checks the version,
/// waiting up to [`CONNECT_PATIENCE`] for the first connection. `url` may list several
/// servers; the client moves between them when one fails.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, NatsError> {
    connect_within(url, name, CONNECT_PATIENCE).await
}

/// [`connect`], waiting up to `patience` (`COACHWIRE_STARTUP_PATIENCE_MS`).
pub async fn connect_within(
    url: &str,
    name: &str,
    patience: Duration,
) -> Result<async_nats::Client, NatsError> {
    let servers = server_addrs(url)?;
    let shown = servers
        .iter()
        .map(|s| redact(s.as_url_str()))
        .collect::<Vec<_>>()
        .join(",");
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(servers)
        .await
        .map_err(|source| NatsError::Connect {
            url: shown.clone(),
            source,
        })?;
    tokio::time::timeout(patience, wait_connected(&client))
        .await
        .map_err(|_| NatsError::NotConnected {
            url: shown,
            within: patience,
        })?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

/// Connected, and the server's INFO read: the state can turn `Connected` a moment before
/// `server_info()` holds the server's, and the version check must not read an empty one.
async fn wait_connected(client: &async_nats::Client) {
    while client.connection_state() != async_nats::connection::State::Connected
        || client.server_info().version.is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Compares versions numerically (a string compare thinks "2.9.10" > "2.12").
pub fn check_version(found: &str) -> Result<(), NatsError> {
    let core = found.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let version = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    if version < MIN_SERVER_VERSION {
        return Err(NatsError::TooOld {
            found: found.to_string(),
        });
    }
    Ok(())
}

/// Creates or updates the three streams. Every service calls this at start-up so any
/// one of them can come up first. The three are declared at once: on a cluster each new
/// replicated stream waits for its own raft election (seconds), and one after the other
/// would add those waits up.
pub async fn ensure_streams(js: &jetstream::Context, replicas: usize) -> Result<(), NatsError> {
    let messages = stream::Config {
        name: MESSAGES_STREAM.into(),
        subjects: vec![MESSAGES_INPUT.into()],
        subject_transform: Some(stream::SubjectTransform {
            source: MESSAGES_INPUT.into(),
            destination: MESSAGES_PARTITIONED.into(),
        }),
        duplicate_window: DUPLICATE_WINDOW,
        max_age: MESSAGES_MAX_AGE,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let persisted = stream::Config {
        name: PERSISTED_STREAM.into(),
        subjects: vec![PERSISTED_ALL.into()],
        duplicate_window: DUPLICATE_WINDOW,
        max_age: PERSISTED_MAX_AGE,
        num_replicas: replicas,
        ..Default::default()
    };
    let replies = stream::Config {
        name: REPLIES_STREAM.into(),
        subjects: vec![REPLIES_ALL.into()],
        // An append retried after a lost PubAck carries the same `Nats-Msg-Id`.
        duplicate_window: DUPLICATE_WINDOW,
        max_age: REPLIES_MAX_AGE,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let dead_letters = stream::Config {
        name: DEAD_LETTER_STREAM.into(),
        subjects: vec![DEAD_LETTER_ALL.into()],
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let (info, _, _, _) = futures::future::try_join4(
        upsert(js, messages),
        upsert(js, persisted),
        upsert(js, replies),
        upsert(js, dead_letters),
    )
    .await?;
    if info.config.subject_transform.is_none() {
        return Err(NatsError::TransformIgnored {
            stream: MESSAGES_STREAM,
        });
    }
    Ok(())
}

async fn upsert(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Info, DeclareError> {
    let what = format!("stream {}", config.name);
    declare(&what, || js.create_or_update_stream(config.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn versions_compare_numerically() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.11.4").is_err());
        assert!(
            check_version("2.12.3").is_err(),
            "replicated-stream fixes missing"
        );
        assert!(check_version("2.12.4").is_ok());
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("2.14.0-beta.1").is_ok());
        assert!(check_version("10.0.0").is_ok());
    }

    #[test]
    fn a_comma_separated_list_becomes_one_address_per_server() {
        let addrs =
            server_addrs("nats://10.0.0.1:4222, nats://10.0.0.2:4223 ,tls://nats-3:4224,nats-4")
                .expect("valid list");
        let shown: Vec<(String, u16)> = addrs
            .iter()
            .map(|a| (a.host().to_string(), a.port()))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.0.0.1".to_string(), 4222),
                ("10.0.0.2".to_string(), 4223),
                ("nats-3".to_string(), 4224),
                ("nats-4".to_string(), 4222),
            ]
        );
    }

    #[test]
    fn a_single_url_is_a_list_of_one() {
        let addrs = server_addrs("nats://127.0.0.1:4222").expect("valid");
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].port(), 4222);
    }

    #[test]
    fn bad_entries_are_named_in_the_error() {
        let cases = [
            (
                "nats://a:4222,nats://b:notaport",
                "nats://b:notaport",
                "port is not a number",
            ),
            (
                "nats://a:4222,,nats://b:4222",
                "",
                "an empty entry between commas",
            ),
            ("nats://a:4222,", "", "a trailing comma"),
            ("http://a:4222", "http://a:4222", "not a NATS scheme"),
            ("nats://a:99999", "nats://a:99999", "port out of range"),
            ("nats://:4222", "nats://:4222", "no host"),
            (
                "nats://user:secret@b:x",
                "nats://***@b:x",
                "a password is not repeated in the error",
            ),
        ];
        for (list, entry, reason) in cases {
            match server_addrs(list) {
                Err(NatsError::BadUrl { entry: named, .. }) => {
                    assert_eq!(named, entry, "{reason}: {list}")
                }
                other => panic!("{reason}: {list} gave {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(matches!(server_addrs(""), Err(NatsError::NoUrl)));
        assert!(matches!(server_addrs(" , "), Err(NatsError::NoUrl)));
    }

    #[test]
    fn a_bad_entry_error_is_one_line_naming_it() {
        let err = server_addrs("nats://a:1,nats://b:notaport").expect_err("bad");
        let text = err.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("nats://b:notaport"), "{text}");
    }

    fn server_error(code: u64, status: usize) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": status, "err_code": code, "description": "test"
        }))
        .expect("error json")
    }

    #[test]
    fn server_answers_are_sorted_by_code() {
        let cases = [
            (
                10008,
                503,
                DeclareFailure::Transient,
                "cluster not available",
            ),
            (
                10005,
                500,
                DeclareFailure::Transient,
                "no peers yet for the replicas",
            ),
            (10009, 500, DeclareFailure::Transient, "not the leader"),
            (
                10058,
                400,
                DeclareFailure::AlreadyExists,
                "stream created by another service",
            ),
            (
                10148,
                400,
                DeclareFailure::AlreadyExists,
                "consumer created by another service",
            ),
            (
                10074,
                500,
                DeclareFailure::Refused,
                "replicas on a single server",
            ),
            (
                10052,
                500,
                DeclareFailure::Refused,
                "an invalid stream configuration",
            ),
            (
                10999,
                503,
                DeclareFailure::Transient,
                "any temporarily unavailable answer",
            ),
        ];
        for (code, status, expected, reason) in cases {
            assert_eq!(
                classify_server(&server_error(code, status)),
                expected,
                "{reason}"
            );
        }
    }

    #[test]
    fn client_side_kinds_are_sorted() {
        assert_eq!(
            CreateStreamError::new(CreateStreamErrorKind::TimedOut).classify(),
            DeclareFailure::Transient
        );
        assert_eq!(
            CreateStreamError::new(CreateStreamErrorKind::InvalidStreamName).classify(),
            DeclareFailure::Refused
        );
        assert_eq!(
            ConsumerError::new(ConsumerErrorKind::TimedOut).classify(),
            DeclareFailure::Transient
        );
        assert_eq!(
            ConsumerError::new(ConsumerErrorKind::InvalidName).classify(),
            DeclareFailure::Refused
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_one_succeeds() {
        let calls = AtomicU32::new(0);
        let result = declare("stream X", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 4 {
                Err(CreateStreamError::new(CreateStreamErrorKind::TimedOut))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.expect("succeeds"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn already_exists_is_followed_by_another_attempt_not_an_error() {
        let calls = AtomicU32::new(0);
        let result = declare("stream X", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(CreateStreamError::new(CreateStreamErrorKind::JetStream(
                    server_error(10058, 400),
                )))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_fails_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = declare("stream X", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CreateStreamError::new(CreateStreamErrorKind::JetStream(
                server_error(10074, 500),
            )))
        })
        .await;
        assert!(matches!(result, Err(DeclareError::Refused { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_give_up_after_the_patience_with_one_line() {
        let started = Instant::now();
        let result: Result<(), _> = declare("stream X", || async {
            Err(CreateStreamError::new(CreateStreamErrorKind::TimedOut))
        })
        .await;
        let Err(err @ DeclareError::GaveUp { .. }) = result else {
            panic!("expected GaveUp, got {result:?}");
        };
        assert!(started.elapsed() <= DECLARE_PATIENCE);
        assert!(started.elapsed() >= DECLARE_PATIENCE - DECLARE_MAX_BACKOFF);
        let text = err.to_string();
        assert_eq!(text.lines().count(), 1);
        assert!(
            text.starts_with("declaring stream X: still failing after"),
            "{text}"
        );
        assert!(text.contains("timed out"), "{text}");
    }
}
