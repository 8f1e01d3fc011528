//! Per-worker keep-alive pool of upstream connections, one stack per
//! provider. Never shared between workers, so it needs no lock.

use std::collections::VecDeque;
use std::time::Duration;

use monoio::time::Instant;

use super::stream::UpstreamStream;

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

pub struct Pool {
    by_provider: Vec<VecDeque<Idle>>,
}

impl Pool {
    pub fn new(providers: usize) -> Self {
        Self {
            by_provider: (0..providers).map(|_| VecDeque::new()).collect(),
        }
    }

    /// The most recently used live connection, if any (LIFO keeps the
    /// warmest connections busy and lets the others expire). `now` is a
    /// recent clock reading: the caller has one at hand.
    pub fn take(
        &mut self,
        provider: usize,
        max_age: Duration,
        now: Instant,
    ) -> Option<UpstreamStream> {
        let idle = self.by_provider.get_mut(provider)?;
        while let Some(conn) = idle.pop_back() {
            if now.saturating_duration_since(conn.since) < max_age {
                return Some(conn.stream);
            }
        }
        None
    }

    pub fn put(
        &mut self,
        provider: usize,
        stream: UpstreamStream,
        max_idle: usize,
        max_age: Duration,
        now: Instant,
    ) {
        let Some(idle) = self.by_provider.get_mut(provider) else {
            return;
        };
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= max_age)
        {
            idle.pop_front();
        }
        if idle.len() >= max_idle {
            idle.pop_front();
        }
        if max_idle > 0 {
            idle.push_back(Idle { stream, since: now });
        }
    }

    pub fn idle_count(&self, provider: usize) -> usize {
        self.by_provider.get(provider).map_or(0, VecDeque::len)
    }
}
