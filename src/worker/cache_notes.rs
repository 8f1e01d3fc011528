//! The response cache's news between workers, on this worker's side: a
//! task takes in what the other workers' shards stored or dropped as it
//! arrives, and a lookup first takes in whatever is still waiting, so an
//! answer stored before a request began is a hit on whichever worker the
//! request reaches.

use std::rc::Rc;
use std::time::Duration;

use super::Worker;

/// How long the intake task lets news gather after it took some in, before
/// it listens again: a burst of stores on other workers wakes this one
/// about once a millisecond, not once a store (a lookup takes in what is
/// waiting itself, so no hit waits for this).
const GATHER: Duration = Duration::from_millis(1);

/// Takes in, before a lookup, the news that has not been taken in yet
/// (one atomic read when there is none).
pub fn catch_up(worker: &Worker) {
    worker
        .cache
        .borrow_mut()
        .catch_up(|delay| count_shared(worker, delay));
}

/// Takes in the other workers' news as it arrives, until the server stops.
pub async fn serve(worker: Rc<Worker>) {
    loop {
        let Some(arrival) = worker.cache.borrow().on_arrival() else {
            return;
        };
        catch_up(&worker);
        arrival.await;
        catch_up(&worker);
        monoio::time::sleep(GATHER).await;
    }
}

fn count_shared(worker: &Worker, delay: Duration) {
    if let Some(mut metrics) = worker.metrics() {
        metrics.cache_shared(delay);
    }
}
