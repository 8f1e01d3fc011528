//! The drain signal: set once from the signal thread, observed by one worker.
//! Each worker has its own so that waiting on it never touches another
//! core's memory on the request path.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;

#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    event: Event,
}

impl Drain {
    pub fn start(&self) {
        self.draining.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Completes once draining has started.
    pub async fn wait(&self) {
        loop {
            if self.is_draining() {
                return;
            }
            let listener = self.event.listen();
            if self.is_draining() {
                return;
            }
            listener.await;
        }
    }
}
