//! Rate limits (§6) with `governor`'s GCRA: `limit` per `window` means a burst of `limit`
//! refilling one every `window / limit`, so a client can never exceed `limit` in any window.
//!
//! Keyed state is pruned by [`Limits::prune`] (run periodically by the app), which drops
//! keys whose bucket is full again; a flood of distinct users or IPs therefore costs memory
//! only for those seen within the last window.

use crate::settings::LimitSettings;
use coachwire_shared::error::Failure;
use coachwire_shared::ids::UserId;
use coachwire_shared::metrics::RATE_LIMITED_TOTAL;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Typing indicators per socket: a human types in bursts; ten a second is plenty, and
/// typing is never stored, so the excess is dropped silently.
const TYPING_PER_SECOND: u32 = 10;

/// One keyed limiter, or none when configured off (limit 0).
struct Limiter<K: Hash + Eq + Clone> {
    inner: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(limit: u32, window: Duration) -> Self {
        let quota = NonZeroU32::new(limit).and_then(|burst| {
            Quota::with_period(window / burst.get()).map(|q| q.allow_burst(burst))
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
    typing: Limiter<String>,
    pub trust_proxy: bool,
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
            typing: Limiter::new(TYPING_PER_SECOND, Duration::from_secs(1)),
            trust_proxy: settings.trust_proxy,
        }
    }

    /// A `message` from `user`; the excess is refused with `retryAfterMs`.
    pub fn message(&self, user: UserId) -> Result<(), Failure> {
        self.messages.check(&user).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "message").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A handshake from `ip`.
    pub fn connection(&self, ip: IpAddr) -> Result<(), Failure> {
        self.connections.check(&ip).map_err(|wait| {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "connection").increment(1);
            Failure::rate_limited(retry_after_ms(wait))
        })
    }

    /// A `typing` event from socket `sid`: `false` means drop it.
    pub fn typing(&self, sid: &str) -> bool {
        let allowed = self.typing.check(&sid.to_string()).is_ok();
        if !allowed {
            metrics::counter!(RATE_LIMITED_TOTAL, "kind" => "typing").increment(1);
        }
        allowed
    }

    /// Forgets keys whose buckets have refilled; returns how many keys remain.
    pub fn prune(&self) -> usize {
        self.messages.prune();
        self.connections.prune();
        self.typing.prune();
        self.messages.len() + self.connections.len() + self.typing.len()
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

    fn settings(message_limit: u32) -> LimitSettings {
        LimitSettings {
            message_limit,
            message_window_ms: 60_000,
            connection_limit: 2,
            connection_window_ms: 60_000,
            trust_proxy: false,
        }
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
    fn a_zero_limit_means_no_limit() {
        let limits = Limits::new(&settings(0));
        let user = UserId(uuid::Uuid::new_v4());
        for _ in 0..1000 {
            limits.message(user).expect("unlimited");
        }
    }
}
