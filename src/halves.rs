//! Taking a big pass over rows in two halves on two cores: the one threshold
//! and the one way of running the halves, for the scan's sort and merge.

/// From this many rows on, a pass that can take its rows in two halves does so
/// on two threads, where there are two cores (the scan's readers are done by
/// then, so the second core is idle); `usize::MAX` (never) on one core. Below
/// it, starting a thread saves less than it costs.
pub fn split_from() -> usize {
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if two_cores { 32_768 } else { usize::MAX }
}

/// `first()` here and `second()` on a thread of its own, at once.
pub fn in_parallel<A, B: Send>(
    first: impl FnOnce() -> A,
    second: impl FnOnce() -> B + Send,
) -> (A, B) {
    std::thread::scope(|s| {
        let second = std::thread::Builder::new()
            .name("paystar-sync-2".into())
            .spawn_scoped(s, second)
            .expect("cannot start a second thread");
        let a = first();
        let b = second
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}
