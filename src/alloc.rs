//! The allocator every binary and test of the crate uses: mimalloc, fast for
//! the many small short-lived allocations of a proxy, with per-thread heaps
//! that match the thread-per-core workers.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the calling thread's freed memory back to the system. mimalloc
/// purges free pages only from inside later allocator calls, so a worker
/// that has gone quiet (thousands of parked idle connections, say) would
/// otherwise keep its peak footprint; workers call this on their
/// once-a-second tick. It costs microseconds when there is nothing to give.
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; `false` asks for the cheap
    // collection (no forced purge of pages still in use by other threads).
    unsafe { libmimalloc_sys::mi_collect(false) }
}
