//! The response cache's news between workers, on this worker's side: a
//! task takes in what the other workers' shards stored or dropped as it
//! arrives, and a lookup first takes in whatever is still waiting, so an
//! answer stored before a request began is a hit on whichever worker the
//! request reaches.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Worker;

/// Takes in, before a lookup, the news that has not been taken in yet
/// (one atomic read when there is none).
pub fn catch_up(worker: &Worker, now: Instant) {
    worker
        .cache
        .borrow_mut()
        .catch_up(now, |delay| count_shared(worker, delay));
}

/// Takes in the other workers' news as it arrives, until the server stops.
pub async fn serve(worker: Rc<Worker>) {
    loop {
        let Some(arrival) = worker.cache.borrow().on_arrival() else {
            return;
        };
        catch_up(&worker, Instant::now());
        arrival.await;
    }
}

fn count_shared(worker: &Worker, delay: Duration) {
    if let Some(mut metrics) = worker.metrics() {
        metrics.cache_shared(delay);
    }
}
