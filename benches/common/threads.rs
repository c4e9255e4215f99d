//! Running one operation on several threads at once, for the benches that
//! measure contention.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `op(&mut state, thread, i)` `iters` times on each of `threads`
/// threads at once, each with its own state made by `state(thread)` before
/// the start, and returns the slowest thread's time, so a figure is the time
/// per operation per thread.
pub fn on_threads<S: Send>(
    threads: usize,
    iters: u64,
    state: impl Fn(usize) -> S,
    op: impl Fn(&mut S, usize, u64) + Sync,
) -> Duration {
    let barrier = Barrier::new(threads);
    let (op, barrier) = (&op, &barrier);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mut state = state(t);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(&mut state, t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap_or_default()
    })
}
