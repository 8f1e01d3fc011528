//! Cold-path messages to every worker: a job runs on each worker's own
//! thread, against its own state, and its result comes back to the caller.
//! This is how a `/metrics` scrape sums per-worker counters and a cache
//! purge reaches every shard, without sharing any of that state.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::Worker;

/// A job run on one worker's thread.
type Job = Box<dyn FnOnce(&Worker) + Send>;

/// How long a caller waits for the workers' answers; a worker that has
/// stopped (the server is draining) never answers.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The way in to every worker of a server, shared by all of them.
pub struct Control {
    workers: Vec<flume::Sender<Job>>,
}

/// One receiving end per worker, handed to the worker at start.
pub type Inbox = flume::Receiver<Job>;

impl Control {
    pub fn new(workers: usize) -> (Arc<Self>, Vec<Inbox>) {
        let (senders, inboxes) = (0..workers).map(|_| flume::unbounded()).unzip();
        (Arc::new(Self { workers: senders }), inboxes)
    }

    /// Runs `job` on every worker and returns what each answered (in no
    /// particular order); workers that do not answer in time are left out.
    pub async fn on_each<T, F>(&self, job: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(&Worker) -> T + Send + Sync + 'static,
    {
        let job = Arc::new(job);
        let (reply, answers) = flume::bounded(self.workers.len());
        let mut asked = 0;
        for worker in &self.workers {
            let (job, reply) = (job.clone(), reply.clone());
            let sent = worker.send(Box::new(move |w: &Worker| {
                let _ = reply.try_send(job(w));
            }));
            asked += usize::from(sent.is_ok());
        }
        drop(reply);
        let mut results = Vec::with_capacity(asked);
        let deadline = monoio::time::Instant::now() + REPLY_TIMEOUT;
        while results.len() < asked {
            match monoio::time::timeout_at(deadline, answers.recv_async()).await {
                Ok(Ok(result)) => results.push(result),
                _ => break,
            }
        }
        results
    }
}

/// Runs the jobs sent to this worker, until the server stops.
pub async fn serve_inbox(worker: Rc<Worker>, inbox: Inbox) {
    while let Ok(job) = inbox.recv_async().await {
        job(&worker);
    }
}
