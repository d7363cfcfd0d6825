//! Rate limits (§6) with `governor`'s GCRA: `limit` per `window` means a burst of `limit`
//! refilling one every `window / limit`, so a client can never exceed `limit` in any window.
//!
//! Keyed state is pruned by [`Limits::prune`] (run periodically by the app), which drops
//! keys whose bucket is full again; a flood of distinct users or IPs therefore costs memory
//! only for those seen within the last window.

use crate::auth::{Principal, Role};
use crate::settings::LimitSettings;
use coachwire_shared::error::Failure;
use coachwire_shared::ids::{ConversationId, MessageId, UserId};
use coachwire_shared::metrics::RATE_LIMITED_TOTAL;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use socketioxide::socket::Sid;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Typing indicators per user (all their sockets together, so five tabs relay no more than
/// one): a human types in bursts; ten a second is plenty, and typing is never stored, so
/// the excess is dropped silently.
const TYPING_PER_SECOND: u32 = 10;
/// `user_joined` / `user_left` one user may cause in one conversation per minute: a page
/// reload costs two, while a join/leave loop aimed at someone's screen is cut to a trickle.
/// Presence past it is not relayed (it is advisory and never stored); the join or leave
/// itself still happens.
const PRESENCE_PER_MINUTE: u32 = 12;
/// Events other than `message` and `typing` (`join_conversation`, `leave_conversation`,
/// `sync`) that one socket may send: each may cost a Postgres query. A reconnecting client
/// re-joins and syncs every conversation it has open at once, hence the burst; past it,
/// twenty a second keeps one socket from making a node run hundreds of queries a second.
const CONTROL_BURST: u32 = 100;
/// `reply_append`s per second per reply (§14 rule 5): a model's tokens batched every 20 ms.
const APPENDS_PER_SECOND: u32 = 50;
const CONTROL_PER_SECOND: u32 = 20;

/// One keyed limiter, or none when configured off (limit 0).
struct Limiter<K: Hash + Eq + Clone> {
    inner: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// At most `limit` per `window`, as a burst of `limit`; `limit` 0 means no limit.
    fn new(limit: u32, window: Duration) -> Self {
        Self::with_burst(limit, window, limit)
    }

    /// `rate` per `window` after a burst of `burst`; `rate` 0 means no limit.
    fn with_burst(rate: u32, window: Duration, burst: u32) -> Self {
        let quota = NonZeroU32::new(rate).and_then(|rate| {
            let burst = NonZeroU32::new(burst.max(rate.get())).unwrap_or(rate);
            Quota::with_period(window / rate.get()).map(|q| q.allow_burst(burst))
        });
        Self {
            inner: quota.map(RateLimiter::keyed),
        }
    }

    /// `Err(wait)` when the key is over its limit.
    fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn prune(&self) {
        if let Some(limiter) = &self.inner {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |l| l.len())
    }
}

/// All of ingest's limiters.
pub struct Limits {
    messages: Limiter<UserId>,
    connections: Limiter<IpAddr>,
    conversations: Limiter<UserId>,
    control: Limiter<Sid>,
    typing: Limiter<UserId>,
    presence: Limiter<(UserId, ConversationId)>,
    appends: Limiter<MessageId>,
    /// Conversations one socket may have joined at once; `None`: no limit.
    pub rooms_per_socket: Option<usize>,
    pub trust_proxy: bool,
    connections_from: ConnectionsFrom,
}

/// Whose handshakes the connection limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionsFrom {
    Everyone,
    /// All but loopback: in demo mode every tab, reload, CLI client and bot of the one
    /// person running it comes from 127.0.0.1, and the limit would lock them out of it.
    AllButLoopback,
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            messages: Limiter::new(
                settings.message_limit,
                Duration::from_millis(settings.message_window_ms),
            ),
            connections: Limiter::new(
                settings.connection_limit,
                Duration::from_millis(settings.connection_window_ms),
            ),
            conversations: Limiter::new(
                settings.conversation_limit,
                Duration::from_millis(settings.conversation_window_ms),
            ),
            control: Limiter::with_burst(CONTROL_PER_SECOND, Duration::from_secs(1), CONTROL_BURST),
            typing: Limiter::new(TYPING_PER_SECOND, Duration::from_secs(1)),
            presence: Limiter::new(PRESENCE_PER_MINUTE, Duration::from_secs(60)),
            appends: Limiter::new(APPENDS_PER_SECOND, Duration::from_secs(1)),
            rooms_per_socket: (settings.rooms_per_socket > 0).then_some(settings.rooms_per_socket),
            trust_proxy: settings.trust_proxy,
            connections_from: ConnectionsFrom::Everyone,
        }
    }

    /// The same limits, with the connection limit counting only `from`.
    pub fn counting_connections(self, from: ConnectionsFrom) -> Self {
        Self {
            connections_from: from,
            ..self
        }
    }

    /// A `message` from `user`; the excess is refused with `retryAfterMs`.
    pub fn message(&self, user: UserId) -> Result<(), Failure> {
        self.messages.check(&user).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "message").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A conversation created by `user`; the excess is refused with `retryAfterMs`.
    pub fn conversation(&self, user: UserId) -> Result<(), Failure> {
        self.conversations.check(&user).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "conversation").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A `join_conversation`, `leave_conversation` or `sync` from socket `sid`. The AI
    /// coach is exempt: it re-joins every conversation it serves after each reconnect.
    pub fn control(&self, principal: Principal, sid: Sid) -> Result<(), Failure> {
        if principal.role == Role::Ai {
            return Ok(());
        }
        self.control.check(&sid).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "event").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A `reply_append` to reply `id`; the excess is refused with `retryAfterMs`.
    pub fn append(&self, id: MessageId) -> Result<(), Failure> {
        self.appends.check(&id).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "append").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// Whether `user_joined` / `user_left` by `user` in `conversation` is relayed.
    pub fn presence(&self, user: UserId, conversation: ConversationId) -> bool {
        let allowed = self.presence.check(&(user, conversation)).is_ok();
        if !allowed {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "presence").increment(1);
        }
        allowed
    }

    /// A handshake from `ip`.
    pub fn connection(&self, ip: IpAddr) -> Result<(), Failure> {
        if self.connections_from == ConnectionsFrom::AllButLoopback && ip.is_loopback() {
            return Ok(());
        }
        self.connections.check(&ip).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "connection").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A `typing` event from `user`: `false` means drop it.
    pub fn typing(&self, user: UserId) -> bool {
        let allowed = self.typing.check(&user).is_ok();
        if !allowed {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "typing").increment(1);
        }
        allowed
    }

    /// Forgets keys whose buckets have refilled; returns how many keys remain.
    pub fn prune(&self) -> usize {
        self.messages.prune();
        self.connections.prune();
        self.conversations.prune();
        self.control.prune();
        self.typing.prune();
        self.presence.prune();
        self.appends.prune();
        self.appends.len()
            + self.messages.len()
            + self.connections.len()
            + self.conversations.len()
            + self.control.len()
            + self.typing.len()
            + self.presence.len()
    }
}

/// Rounded up, and at least 1 ms, so a client that waits exactly this long succeeds.
fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            user: UserId(uuid::Uuid::new_v4()),
            role,
            valid_until: i64::MAX,
        }
    }

    fn settings(message_limit: u32) -> LimitSettings {
        LimitSettings {
            message_limit,
            message_window_ms: 60_000,
            connection_limit: 2,
            connection_window_ms: 60_000,
            conversation_limit: 2,
            conversation_window_ms: 60_000,
            rooms_per_socket: 500,
            trust_proxy: false,
        }
    }

    #[test]
    fn in_demo_mode_loopback_connections_are_not_counted_and_everyone_else_is() {
        let demo = Limits::new(&settings(3)).counting_connections(ConnectionsFrom::AllButLoopback);
        for ip in ["127.0.0.1", "::1"].into_iter().cycle().take(10) {
            demo.connection(ip.parse().expect("ip"))
                .expect("loopback is not counted");
        }
        let remote: IpAddr = "203.0.113.9".parse().expect("ip");
        demo.connection(remote).expect("first");
        demo.connection(remote).expect("second");
        demo.connection(remote)
            .expect_err("the third is over the limit of 2");
        let plain = Limits::new(&settings(3));
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        plain.connection(loopback).expect("first");
        plain.connection(loopback).expect("second");
        plain
            .connection(loopback)
            .expect_err("outside demo mode loopback counts");
    }

    #[test]
    fn the_message_past_the_limit_is_refused_with_a_retry_hint() {
        let limits = Limits::new(&settings(3));
        let user = UserId(uuid::Uuid::new_v4());
        for _ in 0..3 {
            limits.message(user).expect("within the limit");
        }
        let refused = limits.message(user).expect_err("over the limit");
        let retry = refused.retry_after_ms.expect("has retryAfterMs");
        assert!(retry > 0 && retry <= 20_000, "{retry}");
        limits
            .message(UserId(uuid::Uuid::new_v4()))
            .expect("another user has their own budget");
    }

    #[test]
    fn limiter_memory_is_released_once_a_flood_of_distinct_keys_goes_quiet() {
        let window = Duration::from_millis(1000);
        let limits = Limits::new(&LimitSettings {
            message_limit: 5,
            message_window_ms: 1000,
            connection_limit: 5,
            connection_window_ms: 1000,
            conversation_limit: 0,
            conversation_window_ms: 1000,
            rooms_per_socket: 0,
            trust_proxy: false,
        });
        let flood_started = std::time::Instant::now();
        for i in 0..5_000u32 {
            limits
                .message(UserId(uuid::Uuid::from_u128(u128::from(i))))
                .expect("first message");
            limits
                .connection(IpAddr::from(i.to_be_bytes()))
                .expect("first handshake");
        }
        let kept = limits.prune();
        assert!(
            flood_started.elapsed() < window,
            "the flood outlasted the window; the test proves nothing"
        );
        assert_eq!(kept, 10_000, "keys inside their window are kept");
        std::thread::sleep(
            window.saturating_sub(flood_started.elapsed()) + Duration::from_millis(20),
        );
        assert_eq!(limits.prune(), 0, "keys whose window passed are forgotten");
    }

    #[test]
    fn conversations_are_limited_per_user() {
        let limits = Limits::new(&settings(3));
        let user = UserId(uuid::Uuid::new_v4());
        limits.conversation(user).expect("first");
        limits.conversation(user).expect("second");
        let refused = limits
            .conversation(user)
            .expect_err("third is over 2 per window");
        assert!(
            refused
                .retry_after_ms
                .is_some_and(|ms| ms > 0 && ms <= 30_000)
        );
        limits
            .conversation(UserId(uuid::Uuid::new_v4()))
            .expect("another user has their own budget");
    }

    #[test]
    fn control_events_allow_a_reconnect_burst_then_refuse() {
        let limits = Limits::new(&settings(3));
        let (sid, person) = (Sid::new(), principal(Role::User));
        for i in 0..CONTROL_BURST {
            limits
                .control(person, sid)
                .unwrap_or_else(|_| panic!("event {i} is within the burst"));
        }
        let refused = limits.control(person, sid).expect_err("past the burst");
        assert!(
            refused
                .retry_after_ms
                .is_some_and(|ms| ms <= 1000 / u64::from(CONTROL_PER_SECOND) + 1)
        );
        limits
            .control(person, Sid::new())
            .expect("another socket has its own budget");
        let coach = principal(Role::Ai);
        assert!(
            (0..2 * CONTROL_BURST).all(|_| limits.control(coach, sid).is_ok()),
            "the coach is exempt"
        );
    }

    #[test]
    fn presence_and_typing_are_counted_per_user_not_per_socket() {
        let limits = Limits::new(&settings(3));
        let (user, conversation) = (
            UserId(uuid::Uuid::new_v4()),
            ConversationId(uuid::Uuid::new_v4()),
        );
        let relayed = (0..2 * TYPING_PER_SECOND)
            .filter(|_| limits.typing(user))
            .count();
        assert_eq!(relayed, TYPING_PER_SECOND as usize);
        let relayed = (0..200)
            .filter(|_| limits.presence(user, conversation))
            .count();
        assert_eq!(relayed, PRESENCE_PER_MINUTE as usize);
        assert!(
            limits.presence(user, ConversationId(uuid::Uuid::new_v4())),
            "per conversation"
        );
    }

    #[test]
    fn a_zero_limit_means_no_limit() {
        let limits = Limits::new(&settings(0));
        let user = UserId(uuid::Uuid::new_v4());
        for _ in 0..1000 {
            limits.message(user).expect("unlimited");
        }
    }
}
