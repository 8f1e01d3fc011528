//! Per-worker keep-alive pool of upstream connections, one stack per
//! provider of the provider table and one per origin of the registered
//! model deployments (which come and go, so they are keyed by where the
//! connections lead, never by a position that could be reused). Never shared
//! between workers, so it needs no lock.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use monoio::time::Instant;

use super::stream::UpstreamStream;

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

/// Which stack of idle connections.
#[derive(Debug, Clone)]
pub enum Slot {
    /// A provider of the provider table, by index.
    Provider(usize),
    /// A model deployment's upstream, as `scheme://host:port`.
    Origin(Rc<str>),
}

pub struct Pool {
    by_provider: Vec<VecDeque<Idle>>,
    by_origin: HashMap<Rc<str>, VecDeque<Idle>>,
}

impl Pool {
    pub fn new(providers: usize) -> Self {
        Self {
            by_provider: (0..providers).map(|_| VecDeque::new()).collect(),
            by_origin: HashMap::new(),
        }
    }

    fn stack(&mut self, slot: &Slot) -> Option<&mut VecDeque<Idle>> {
        match slot {
            Slot::Provider(index) => self.by_provider.get_mut(*index),
            Slot::Origin(origin) => Some(self.by_origin.entry(origin.clone()).or_default()),
        }
    }

    /// The most recently used live connection, if any (LIFO keeps the
    /// warmest connections busy and lets the others expire). `now` is a
    /// recent clock reading: the caller has one at hand.
    pub fn take(&mut self, slot: &Slot, max_age: Duration, now: Instant) -> Option<UpstreamStream> {
        let idle = self.stack(slot)?;
        while let Some(conn) = idle.pop_back() {
            if now.saturating_duration_since(conn.since) < max_age {
                return Some(conn.stream);
            }
        }
        None
    }

    pub fn put(
        &mut self,
        slot: &Slot,
        stream: UpstreamStream,
        max_idle: usize,
        max_age: Duration,
        now: Instant,
    ) {
        let Some(idle) = self.stack(slot) else {
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
