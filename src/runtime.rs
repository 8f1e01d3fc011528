//! Worker threads: one monoio runtime each (io_uring, or the epoll driver
//! where io_uring is unavailable), optionally pinned to a core.

use std::future::Future;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use monoio::blocking::DefaultThreadPool;

/// The I/O driver every worker of this process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    /// io_uring when the kernel offers everything monoio needs; the
    /// environment variable `MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll.
    pub fn detect() -> Self {
        if monoio::utils::detect_uring() {
            Driver::IoUring
        } else {
            tracing::warn!("io_uring is unavailable here; using the epoll driver");
            Driver::Epoll
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Starts `count` worker threads named `{name}-{i}`, each running
/// `make(i)` to completion on its own runtime. Returns once every runtime
/// is built, or with the first worker's startup error.
pub fn spawn_workers<F, Fut>(
    name: &str,
    count: usize,
    pin_cores: bool,
    driver: Driver,
    make: F,
) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Slow, blocking work (DNS lookups) runs here, never on a worker.
    let blocking_pool = DefaultThreadPool::new(2);
    let (started_tx, started_rx) = mpsc::channel::<io::Result<()>>();
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let make = make.clone();
        let started = started_tx.clone();
        let pool = blocking_pool.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                if pin_cores && let Err(error) = monoio::utils::bind_to_cpu_set([index % cores]) {
                    tracing::warn!(worker = index, %error, "could not pin worker to a core");
                }
                let future = make(index);
                match driver {
                    Driver::IoUring => match build_uring_runtime(pool) {
                        Ok(mut runtime) => {
                            let _ = started.send(Ok(()));
                            runtime.block_on(future);
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                        }
                    },
                    Driver::Epoll => {
                        match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                            .enable_timer()
                            .attach_thread_pool(Box::new(pool))
                            .build()
                        {
                            Ok(mut runtime) => {
                                let _ = started.send(Ok(()));
                                runtime.block_on(future);
                            }
                            Err(error) => {
                                let _ = started.send(Err(error));
                            }
                        }
                    }
                }
            })?;
        handles.push(handle);
    }
    drop(started_tx);
    for _ in 0..count {
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(io::Error::other("a worker thread exited during startup")),
        }
    }
    Ok(handles)
}

/// Ring set-ups, cheapest first. With DEFER_TASKRUN (Linux 6.1, with
/// SINGLE_ISSUER: each ring belongs to one worker thread) completions are
/// processed when the worker waits for them instead of interrupting it
/// while it runs; COOP_TASKRUN (5.19) at least avoids the interrupt. Older
/// kernels refuse the flags, and the next set-up is tried.
const RING_SETUPS: [&str; 3] = ["defer-taskrun", "coop-taskrun", "default"];

fn ring_builder(setup: &str) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    match setup {
        "defer-taskrun" => {
            builder
                .setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
        "coop-taskrun" => {
            builder.setup_coop_taskrun();
        }
        _ => {}
    }
    builder
}

fn build_uring_runtime(
    pool: DefaultThreadPool,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut last_error = None;
    for setup in RING_SETUPS {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(ring_builder(setup))
            .enable_timer()
            .attach_thread_pool(Box::new(pool.clone()))
            .build()
        {
            Ok(runtime) => return Ok(runtime),
            Err(error) => {
                tracing::debug!(setup, %error, "io_uring set-up refused; trying the next");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no io_uring set-up to try")))
}
