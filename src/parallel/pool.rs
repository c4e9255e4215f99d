//! The data-parallel pool agents share: one rayon pool per orchestrator.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Data-parallel helpers on the orchestrator's one rayon thread pool.
///
/// Agents reach it through
/// [`AgentContext::parallel`](crate::AgentContext::parallel), so however
/// many agents split their work, the machine runs at most
/// [`threads`](Self::threads) data-parallel threads: nobody builds a pool of
/// their own and the cores are not oversubscribed. Its size is set by
/// [`OrchestratorBuilder::parallelism`](crate::OrchestratorBuilder::parallelism)
/// (default: one thread per core). The threads start on first use, so an
/// orchestrator whose agents never split work pays nothing for the pool.
///
/// A panic inside a closure is caught: the call returns
/// [`Error::Panicked`] and the pool stays usable, so the task that asked for
/// the work fails cleanly (`?` turns the error into a retryable
/// [`TaskError`](crate::TaskError)).
///
/// ```
/// use agentry::{AgentContext, Orchestrator, Output, Role, Task, TaskError};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .parallelism(2)
///     .agents(Role::Extractor, 1, || {
///         |task: &Task, ctx: &AgentContext| -> Result<Output, TaskError> {
///             let pages: Vec<String> = task.input()?;
///             let pool = ctx.parallel();
///             let lengths = pool.map(&pages, |page| page.len())?;
///             let total = pool.map_reduce(&lengths, |n| *n, || 0, |a, b| a + b)?;
///             Ok(Output::encode(&(lengths, total))?)
///         }
///     })
///     .build()?;
/// let pages = vec!["ab".to_string(), "abcd".to_string()];
/// let id = orchestrator.submit(Task::new("measure").with_input(&pages)?)?;
/// let (lengths, total): (Vec<usize>, usize) =
///     orchestrator.wait(id, Duration::from_secs(10))?.output()?;
/// assert_eq!((lengths, total), (vec![2, 4], 6));
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone)]
pub struct ParallelPool {
    inner: Arc<Inner>,
}

struct Inner {
    threads: usize,
    /// Built on first use; a build failure is kept and reported by every
    /// call rather than retried on each.
    pool: OnceLock<std::result::Result<rayon::ThreadPool, String>>,
}

impl ParallelPool {
    /// A pool of `threads` threads, started on first use; 0 means one per
    /// core.
    pub(crate) fn new(threads: usize) -> ParallelPool {
        // Asking the system for its cores reads cgroup files, which costs
        // more than the rest of building an orchestrator: once per process.
        static CORES: OnceLock<usize> = OnceLock::new();
        let threads = if threads == 0 {
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        } else {
            threads
        };
        ParallelPool {
            inner: Arc::new(Inner {
                threads,
                pool: OnceLock::new(),
            }),
        }
    }

    /// How many threads the pool runs.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Runs `op` inside the pool, so rayon's parallel iterators and
    /// `rayon::join` in it use the pool's threads, and returns its value.
    ///
    /// # Errors
    /// [`Error::Panicked`] when `op` (or any closure it ran in parallel)
    /// panicked; [`Error::Io`] when the pool's threads could not be started.
    pub fn install<R, F>(&self, op: F) -> Result<R>
    where
        R: Send,
        F: FnOnce() -> R + Send,
    {
        let pool = self
            .inner
            .pool
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.inner.threads)
                    .thread_name(|i| format!("agentry-parallel-{i}"))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Io(std::io::Error::other(e.clone())))?;
        // Unwind safety: on a panic the caller receives an error and every
        // value the closures touched is theirs to discard; rayon itself waits
        // for the other jobs before resuming the panic here, so no job
        // outlives the call and the pool's threads keep serving.
        panic::catch_unwind(AssertUnwindSafe(|| pool.install(op)))
            .map_err(|payload| Error::Panicked(panic_message(payload.as_ref())))
    }

    /// Applies `f` to every item in parallel; the results are in the items'
    /// order.
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn map<T, R, F>(&self, items: &[T], f: F) -> Result<Vec<R>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync + Send,
    {
        self.install(|| items.par_iter().map(f).collect())
    }

    /// Calls `f` on every item in parallel.
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn for_each<T, F>(&self, items: &[T], f: F) -> Result<()>
    where
        T: Sync,
        F: Fn(&T) + Sync + Send,
    {
        self.install(|| items.par_iter().for_each(f))
    }

    /// Maps every item with `map` and combines the values with `reduce`,
    /// in parallel. `identity` makes the neutral value (`0` for a sum) and
    /// `reduce` must be associative, since the grouping depends on how the
    /// work was split.
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn map_reduce<T, R, M, I, Re>(
        &self,
        items: &[T],
        map: M,
        identity: I,
        reduce: Re,
    ) -> Result<R>
    where
        T: Sync,
        R: Send,
        M: Fn(&T) -> R + Sync + Send,
        I: Fn() -> R + Sync + Send,
        Re: Fn(R, R) -> R + Sync + Send,
    {
        self.install(|| items.par_iter().map(map).reduce(identity, reduce))
    }
}

impl fmt::Debug for ParallelPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelPool")
            .field("threads", &self.inner.threads)
            .field("started", &self.inner.pool.get().is_some())
            .finish()
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_means_one_per_core() {
        assert!(ParallelPool::new(0).threads() >= 1);
        assert_eq!(ParallelPool::new(3).threads(), 3);
    }

    #[test]
    fn the_pool_starts_on_first_use() {
        let pool = ParallelPool::new(2);
        assert!(format!("{pool:?}").contains("started: false"));
        assert_eq!(pool.map(&[1, 2, 3], |x| x * 2).unwrap(), [2, 4, 6]);
        assert!(format!("{pool:?}").contains("started: true"));
    }
}
