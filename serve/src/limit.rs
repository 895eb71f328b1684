//! Per-token rate limits: one token bucket per caller (by its token's row id), in memory.
//!
//! A bucket holds at most `burst` requests and refills at `rate_per_minute / 60` requests a
//! second; a request takes one. An empty bucket refuses the request with the time until it
//! holds one again, which the API sends as `Retry-After` with HTTP 429. The buckets start
//! full and are lost on restart (a restart gives every client a full burst again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most before the full ones are dropped (a full bucket is the same as none).
const PRUNE_ABOVE: usize = 4096;

/// One caller's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Requests it holds (fractional while refilling).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// The token buckets of every caller, under one limit.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

/// A request refused by a [`RateLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The sustained rate, in requests per minute.
    pub rate_per_minute: u32,
    /// The burst, in requests.
    pub burst: u32,
    /// How long until the caller's bucket holds a request again.
    pub retry_after: Duration,
}

impl Limited {
    /// [`Limited::retry_after`] in whole seconds, rounded up and at least 1 (the value of a
    /// `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl RateLimiter {
    /// A limiter of `rate_per_minute` requests a minute sustained with bursts of `burst`
    /// (a burst of 0 counts as 1); a rate of 0 limits nothing.
    pub fn new(rate_per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate_per_minute, burst: burst.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether this limiter limits anything.
    pub fn enabled(&self) -> bool {
        self.rate_per_minute > 0
    }

    /// Takes one request from `caller`'s bucket, or says how long until it can.
    pub fn check(&self, caller: i64) -> Result<(), Limited> {
        self.check_at(caller, Instant::now())
    }

    /// [`RateLimiter::check`] at the instant `now` (instants before a bucket's last update
    /// count as that update: time never runs backwards for a bucket).
    pub fn check_at(&self, caller: i64, now: Instant) -> Result<(), Limited> {
        if !self.enabled() {
            return Ok(());
        }
        let per_sec = f64::from(self.rate_per_minute) / 60.0;
        let burst = f64::from(self.burst);
        // A poisoned lock only means another request panicked while holding it; the map
        // itself is always consistent (each update is one assignment).
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = buckets.entry(caller).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / per_sec;
            Err(Limited {
                rate_per_minute: self.rate_per_minute,
                burst: self.burst,
                retry_after: Duration::from_secs_f64(wait.max(0.0)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = RateLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at(1, t0), Ok(()));
        }
        let refused = l.check_at(1, t0).unwrap_err();
        assert_eq!((refused.rate_per_minute, refused.burst), (60, 3));
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        // Another caller has its own bucket.
        assert_eq!(l.check_at(2, t0), Ok(()));
        // One request a second comes back.
        let t1 = t0 + Duration::from_millis(500);
        let refused = l.check_at(1, t1).unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(500), "{refused:?}");
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(l.check_at(1, t0 + Duration::from_secs(1)), Ok(()));
        assert!(l.check_at(1, t0 + Duration::from_secs(1)).is_err());
        // Never more than the burst, however long the caller waited.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check_at(1, later), Ok(()));
        }
        assert!(l.check_at(1, later).is_err());
        // An instant before the last update does not refill (nor panic).
        assert!(l.check_at(1, t0).is_err());
    }

    #[test]
    fn zero_is_unlimited_and_a_zero_burst_is_one() {
        let l = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.check_at(1, t0).is_ok()));
        let l = RateLimiter::new(1, 0);
        assert_eq!(l.check_at(1, t0), Ok(()));
        let refused = l.check_at(1, t0).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 60);
    }

    #[test]
    fn full_buckets_are_pruned() {
        let l = RateLimiter::new(600, 2);
        let t0 = Instant::now();
        for caller in 0..=PRUNE_ABOVE as i64 {
            l.check_at(caller, t0).unwrap();
        }
        // Ten seconds later every bucket is full again: dropped, then one made anew.
        l.check_at(-1, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
    }
}
