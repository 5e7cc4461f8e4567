//! Token-bucket rate limits, kept per key and per IP address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// One bucket: refills at `per_sec`, holds at most `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets for many keys under one limit. Buckets that are full again are
/// equivalent to fresh ones and are pruned, so memory follows recent activity
/// only.
pub(crate) struct RateLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token for `key`; false when the bucket is empty.
    pub(crate) fn allow(&self, key: K, now: Instant) -> bool {
        let burst = f64::from(self.limit.burst.max(1));
        let per_sec = f64::from(self.limit.per_sec);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled completely.
    pub(crate) fn prune(&self, now: Instant) {
        let burst = f64::from(self.limit.burst.max(1));
        let per_sec = f64::from(self.limit.per_sec);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
            bucket.tokens + elapsed * per_sec < burst
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_sec: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| limiter.allow("a", t0)).count(), 5);
        // Another key has its own bucket.
        assert!(limiter.allow("b", t0));
        // 10 per second: one more token after 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.allow("a", t1));
        assert!(!limiter.allow("a", t1));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::new(RateLimit::per_second(10));
        let t0 = Instant::now();
        limiter.allow(1, t0);
        limiter.prune(t0);
        assert_eq!(limiter.tracked(), 1);
        limiter.prune(t0 + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 0);
    }
}

/// Open connections per IP address, each held by an [`IpSlot`].
pub(crate) struct IpConnections {
    limit: usize,
    counts: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Told whenever a slot is released, for [`IpConnections::acquire`].
    released: tokio::sync::Notify,
}

/// One connection's claim on its IP address's share; released on drop.
pub(crate) struct IpSlot {
    owner: std::sync::Arc<IpConnections>,
    ip: std::net::IpAddr,
}

impl IpConnections {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for `ip`, or `None` when it already holds `limit`.
    pub(crate) fn try_acquire(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// A slot for `ip`, waiting for one to be released until `deadline`.
    pub(crate) async fn acquire(
        self: &std::sync::Arc<Self>,
        ip: std::net::IpAddr,
        deadline: tokio::time::Instant,
    ) -> Option<IpSlot> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(slot) = self.try_acquire(ip) {
                return Some(slot);
            }
            tokio::time::timeout_at(deadline, released).await.ok()?;
        }
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
        drop(counts);
        self.owner.released.notify_waiters();
    }
}

#[cfg(test)]
mod ip_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn slots_per_ip_are_bounded_and_released_on_drop() {
        let ips = Arc::new(IpConnections::new(2));
        let a: std::net::IpAddr = [127, 0, 0, 1].into();
        let b: std::net::IpAddr = [127, 0, 0, 2].into();
        let first = ips.try_acquire(a).unwrap();
        let _second = ips.try_acquire(a).unwrap();
        assert!(ips.try_acquire(a).is_none());
        assert!(ips.try_acquire(b).is_some());
        drop(first);
        assert!(ips.try_acquire(a).is_some());
    }

    #[tokio::test]
    async fn a_waiting_socket_gets_the_next_released_slot_or_gives_up_at_its_deadline() {
        let ips = Arc::new(IpConnections::new(1));
        let a: std::net::IpAddr = [127, 0, 0, 1].into();
        let held = ips.try_acquire(a).unwrap();
        let later = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
        // Nobody releases: it gives up at the deadline.
        assert!(ips.acquire(a, later).await.is_none());
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let waiting = tokio::spawn({
            let ips = ips.clone();
            async move { ips.acquire(a, later).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            waiting.await.unwrap(),
            "the released slot went to the waiter"
        );
    }
}
