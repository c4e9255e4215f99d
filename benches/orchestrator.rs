//! Orchestrator benchmarks, each beside a bare crossbeam baseline in the
//! same group: end-to-end throughput of no-op tasks on 4 agents and of 1 ms
//! tasks on 5, 10 and 20 agents (against a bare worker pool of as many
//! threads), assignment latency from submit to `execute` starting on an idle
//! agent (against a bare thread blocked on `recv`), with 1, 10 and 1,000
//! agents (with 10 and 1,000 also against bare threads given work in turn,
//! each on a channel of its own, as agentry rotates work among equally
//! loaded idle agents), and the time to spawn 10 agents until all are running (against
//! `std::thread::spawn`).
//!
//! The assignment benchmarks also print p50 and p99 of every latency sample
//! measured, and of a second series taken with a pause before each submit, so
//! that the agent (or bare thread) has parked instead of spinning.
//!
//! Run: `cargo bench --bench orchestrator`. The percentiles of the
//! one-agent assignment latency also go to
//! `target/agentry-bench/orchestrator.json` for the targets report.

use std::cell::Cell;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use agentry::{AgentContext, Event, Orchestrator, Output, Role, Task, TaskError};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

#[path = "common/report.rs"]
mod report;

/// How long any single wait may take before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(1);
const MEASUREMENT: Duration = Duration::from_secs(3);
/// Depth of the bare pool's job and result channels.
const POOL_CAPACITY: usize = 1_000;

// Every orchestrator here sets `min_agents` and `max_agents` to its starting
// size: auto-scaling would otherwise grow a busy pool past the bare pool it is
// compared with, or shrink 1,000 idle agents towards the minimum.

fn noop(_: &Task, _: &AgentContext) -> Result<Output, TaskError> {
    Ok(Output::empty())
}

fn sleep_1ms(_: &Task, _: &AgentContext) -> Result<Output, TaskError> {
    thread::sleep(Duration::from_millis(1));
    Ok(Output::empty())
}

/// Blocks until `n` agents have reported that their threads run.
fn wait_for_spawns(orchestrator: &Orchestrator, n: usize) {
    let mut spawned = 0;
    while spawned < n {
        match orchestrator.events().recv_timeout(WAIT) {
            Ok(Event::AgentSpawned { .. }) => spawned += 1,
            Ok(_) => {}
            Err(e) => panic!("{spawned} of {n} agents reported running: {e}"),
        }
    }
}

/// Submits `count` tasks of `kind` in one batch and waits for every result.
fn run_batch(orchestrator: &Orchestrator, kind: &str, count: usize) {
    let ids = orchestrator
        .submit_batch((0..count).map(|_| Task::new(kind)))
        .unwrap();
    for id in ids {
        assert!(orchestrator.wait(id, WAIT).unwrap().is_success());
    }
}

/// The bare baseline: `threads` workers take integers from one bounded
/// channel, run `work` on each and send the answer back on another.
struct BarePool {
    jobs: Option<Sender<u64>>,
    results: Receiver<u64>,
    workers: Vec<JoinHandle<()>>,
}

impl BarePool {
    fn new(threads: usize, work: fn(u64) -> u64) -> BarePool {
        let (jobs, inbox) = bounded::<u64>(POOL_CAPACITY);
        let (outbox, results) = bounded::<u64>(POOL_CAPACITY);
        let workers = (0..threads)
            .map(|_| {
                let (inbox, outbox) = (inbox.clone(), outbox.clone());
                thread::spawn(move || {
                    for n in inbox {
                        if outbox.send(work(n)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        BarePool {
            jobs: Some(jobs),
            results,
            workers,
        }
    }

    /// Runs jobs `0..count` and receives every answer. Sending and receiving
    /// interleave (a full job channel makes the caller take an answer), so
    /// neither bounded channel can deadlock the pool.
    fn run(&self, count: u64) {
        let jobs = self.jobs.as_ref().unwrap();
        let mut received = 0;
        for n in 0..count {
            let mut job = n;
            loop {
                match jobs.try_send(job) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        job = back;
                        self.results.recv().unwrap();
                        received += 1;
                    }
                    Err(TrySendError::Disconnected(_)) => panic!("bare pool stopped"),
                }
            }
        }
        while received < count {
            self.results.recv().unwrap();
            received += 1;
        }
    }
}

impl Drop for BarePool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            worker.join().unwrap();
        }
    }
}

/// End to end, submit to result stored, 10,000 no-op tasks per iteration.
fn noop_throughput(c: &mut Criterion) {
    const AGENTS: usize = 4;
    const TASKS: usize = 10_000;
    let mut group = c.benchmark_group("orchestrator/noop_throughput_4_agents");
    group.throughput(Throughput::Elements(TASKS as u64));

    let pool = BarePool::new(AGENTS, |n| n + 1);
    group.bench_function("bare_crossbeam_pool", |b| b.iter(|| pool.run(TASKS as u64)));
    drop(pool);

    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, AGENTS, || noop)
        .min_agents(AGENTS)
        .max_agents(AGENTS)
        .build()
        .unwrap();
    wait_for_spawns(&orchestrator, AGENTS);
    group.bench_function("agentry", |b| {
        b.iter(|| run_batch(&orchestrator, "noop", TASKS))
    });
    orchestrator.shutdown().unwrap();
    group.finish();
}

/// Tasks that sleep 1 ms, ten per agent per iteration.
///
/// Beside criterion's figures (each side measured for seconds, one after
/// the other), the two sides are timed in alternation, round by round, so a
/// change in the machine's load touches both alike: the medians of those
/// rounds go to the targets report.
fn sleep_throughput(c: &mut Criterion) {
    const ALTERNATING_ROUNDS: usize = 60;
    let mut group = c.benchmark_group("orchestrator/sleep_1ms_throughput");
    group.sample_size(10);
    let mut figures = Vec::new();
    for agents in [5usize, 10, 20] {
        let tasks = agents * 10;
        group.throughput(Throughput::Elements(tasks as u64));

        let pool = BarePool::new(agents, |n| {
            thread::sleep(Duration::from_millis(1));
            n
        });
        group.bench_function(BenchmarkId::new("bare_crossbeam_pool", agents), |b| {
            b.iter(|| pool.run(tasks as u64))
        });

        let orchestrator = Orchestrator::builder()
            .agents(Role::Extractor, agents, || sleep_1ms)
            .min_agents(agents)
            .max_agents(agents)
            .build()
            .unwrap();
        wait_for_spawns(&orchestrator, agents);
        group.bench_function(BenchmarkId::new("agentry", agents), |b| {
            b.iter(|| run_batch(&orchestrator, "sleep", tasks))
        });

        let (mut bare_rounds, mut agentry_rounds) = (Vec::new(), Vec::new());
        for _ in 0..ALTERNATING_ROUNDS {
            let started = Instant::now();
            pool.run(tasks as u64);
            bare_rounds.push(started.elapsed());
            let started = Instant::now();
            run_batch(&orchestrator, "sleep", tasks);
            agentry_rounds.push(started.elapsed());
        }
        let per_second = |rounds: &mut Vec<Duration>| {
            rounds.sort_unstable();
            tasks as f64 / rounds[rounds.len() / 2].as_secs_f64()
        };
        let (bare, agentry) = (
            per_second(&mut bare_rounds),
            per_second(&mut agentry_rounds),
        );
        eprintln!(
            "1 ms tasks, {agents} agents, {ALTERNATING_ROUNDS} alternating rounds (medians): \
             bare {bare:.0}/s, agentry {agentry:.0}/s, {:.1} %",
            agentry / bare * 100.0
        );
        figures.push((format!("bare_{agents}_agents_per_s"), bare));
        figures.push((format!("agentry_{agents}_agents_per_s"), agentry));
        drop(pool);
        orchestrator.shutdown().unwrap();
    }
    group.finish();
    let figures: Vec<(&str, f64)> = figures.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    report::write("orchestrator", &figures);
}

/// Every latency sample of one benchmark, less those taken during criterion's
/// warm-up (the calls that begin within the warm-up time of the first call).
#[derive(Default)]
struct Samples {
    first_call: Option<Instant>,
    kept: Vec<Duration>,
}

impl Samples {
    /// Whether samples of a call beginning now are measurement, not warm-up.
    fn keep_now(&mut self) -> bool {
        let now = Instant::now();
        now.duration_since(*self.first_call.get_or_insert(now)) >= WARM_UP
    }
}

/// Prints p50 and p99 of `samples` under `label` and returns them (none
/// without samples).
fn report(label: &str, samples: &mut [Duration]) -> Option<(Duration, Duration)> {
    if samples.is_empty() {
        eprintln!("{label:<48} no samples");
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{label:<48} p50 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  ({} samples)",
        at(0.50),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1],
        samples.len()
    );
    Some((at(0.50), at(0.99)))
}

/// An orchestrator of `agents` agents whose `execute` first sends the
/// instant it started, and the receiver of those instants.
fn probed_orchestrator(agents: usize) -> (Orchestrator, Receiver<Instant>) {
    let (started_tx, started) = bounded::<Instant>(1);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, agents, move || {
            let started_tx = started_tx.clone();
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                let now = Instant::now();
                let _ = started_tx.send(now);
                Ok(Output::empty())
            }
        })
        .min_agents(agents)
        .max_agents(agents)
        .build()
        .unwrap();
    wait_for_spawns(&orchestrator, agents);
    (orchestrator, started)
}

/// One assignment: submit, receive the start instant, wait for the result so
/// the agent is idle again. Returns submit-to-start.
fn agentry_assignment(orchestrator: &Orchestrator, started: &Receiver<Instant>) -> Duration {
    let task = Task::new("probe");
    let submitted = Instant::now();
    let id = orchestrator.submit(task).unwrap();
    let start = started.recv_timeout(WAIT).unwrap();
    orchestrator.wait(id, WAIT).unwrap();
    start.saturating_duration_since(submitted)
}

/// `threads` bare threads blocked on one shared channel; each sends back
/// the instant its `recv` returned.
struct BareWaiters {
    jobs: Option<Sender<()>>,
    started: Receiver<Instant>,
    threads: Vec<JoinHandle<()>>,
}

impl BareWaiters {
    fn new(threads: usize) -> BareWaiters {
        let (jobs, inbox) = bounded::<()>(POOL_CAPACITY);
        let (started_tx, started) = bounded::<Instant>(1);
        let threads = (0..threads)
            .map(|_| {
                let (inbox, started_tx) = (inbox.clone(), started_tx.clone());
                thread::spawn(move || {
                    while inbox.recv().is_ok() {
                        if started_tx.send(Instant::now()).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        BareWaiters {
            jobs: Some(jobs),
            started,
            threads,
        }
    }

    fn assignment(&self) -> Duration {
        let submitted = Instant::now();
        self.jobs.as_ref().unwrap().send(()).unwrap();
        let start = self.started.recv_timeout(WAIT).unwrap();
        start.saturating_duration_since(submitted)
    }
}

impl Drop for BareWaiters {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

/// `threads` bare threads, each blocked on a channel of its own, given
/// work in turn as agentry rotates it among equally loaded idle agents: each
/// assignment wakes the thread idle longest, as an agentry assignment does.
struct BareRoundRobin {
    inboxes: Vec<Sender<()>>,
    next: Cell<usize>,
    started: Receiver<Instant>,
    done: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl BareRoundRobin {
    fn new(threads: usize) -> BareRoundRobin {
        let (started_tx, started) = bounded::<Instant>(1);
        let (done_tx, done) = bounded::<()>(1);
        let (inboxes, threads) = (0..threads)
            .map(|_| {
                let (inbox_tx, inbox) = bounded::<()>(POOL_CAPACITY);
                let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
                let thread = thread::spawn(move || {
                    while inbox.recv().is_ok() {
                        if started_tx.send(Instant::now()).is_err() || done_tx.send(()).is_err() {
                            break;
                        }
                    }
                });
                (inbox_tx, thread)
            })
            .unzip();
        BareRoundRobin {
            inboxes,
            next: Cell::new(0),
            started,
            done,
            threads,
        }
    }

    /// One assignment to the next thread in turn; waits until it is idle
    /// again, as `agentry_assignment` waits for the result.
    fn assignment(&self) -> Duration {
        let turn = self.next.get();
        self.next.set((turn + 1) % self.inboxes.len());
        let submitted = Instant::now();
        self.inboxes[turn].send(()).unwrap();
        let start = self.started.recv_timeout(WAIT).unwrap();
        self.done.recv_timeout(WAIT).unwrap();
        start.saturating_duration_since(submitted)
    }
}

impl Drop for BareRoundRobin {
    fn drop(&mut self) {
        self.inboxes.clear();
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

/// Runs `once` `iters` times and sums what it returns, keeping each sample.
fn summed(iters: u64, samples: &mut Samples, mut once: impl FnMut() -> Duration) -> Duration {
    let keep = samples.keep_now();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let latency = once();
        total += latency;
        if keep {
            samples.kept.push(latency);
        }
    }
    total
}

/// Submit to `execute` starting, on an idle agent; back to back, and with a
/// pause before each submit.
fn assignment_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("orchestrator/assignment_latency");
    let mut bare_samples = Samples::default();
    let waiters = BareWaiters::new(1);
    group.bench_function("bare_crossbeam", |b| {
        b.iter_custom(|iters| summed(iters, &mut bare_samples, || waiters.assignment()))
    });
    let mut agentry_samples = Samples::default();
    let (orchestrator, started) = probed_orchestrator(1);
    group.bench_function("agentry", |b| {
        b.iter_custom(|iters| {
            summed(iters, &mut agentry_samples, || {
                agentry_assignment(&orchestrator, &started)
            })
        })
    });
    group.finish();
    eprintln!("\nassignment latency, back to back (warm-up excluded):");
    let bare = report("bare_crossbeam (1 thread)", &mut bare_samples.kept);
    let agentry = report("agentry (1 agent)", &mut agentry_samples.kept);
    // Without samples (a filter skipped the group, or `cargo test --benches`)
    // the figures of an earlier run stay.
    if let (Some(bare), Some(agentry)) = (bare, agentry) {
        let ns = |d: Duration| d.as_nanos() as f64;
        report::write(
            "orchestrator",
            &[
                ("assignment_bare_p50_ns", ns(bare.0)),
                ("assignment_bare_p99_ns", ns(bare.1)),
                ("assignment_agentry_p50_ns", ns(agentry.0)),
                ("assignment_agentry_p99_ns", ns(agentry.1)),
            ],
        );
    }
    parked_probe("bare_crossbeam (1 thread)", || waiters.assignment());
    parked_probe("agentry (1 agent)", || {
        agentry_assignment(&orchestrator, &started)
    });
    drop(waiters);
    orchestrator.shutdown().unwrap();

    let mut group = c.benchmark_group("orchestrator/assignment_latency_agents");
    let mut printed = Vec::new();
    for agents in [10usize, 1_000] {
        let mut bare_samples = Samples::default();
        let waiters = BareWaiters::new(agents);
        group.bench_function(BenchmarkId::new("bare_crossbeam", agents), |b| {
            b.iter_custom(|iters| summed(iters, &mut bare_samples, || waiters.assignment()))
        });
        let bare_parked = parked_samples(|| waiters.assignment());
        drop(waiters);
        let mut round_robin_samples = Samples::default();
        let round_robin = BareRoundRobin::new(agents);
        group.bench_function(BenchmarkId::new("bare_round_robin", agents), |b| {
            b.iter_custom(|iters| {
                summed(iters, &mut round_robin_samples, || round_robin.assignment())
            })
        });
        drop(round_robin);
        let mut agentry_samples = Samples::default();
        let (orchestrator, started) = probed_orchestrator(agents);
        group.bench_function(BenchmarkId::new("agentry", agents), |b| {
            b.iter_custom(|iters| {
                summed(iters, &mut agentry_samples, || {
                    agentry_assignment(&orchestrator, &started)
                })
            })
        });
        let parked = parked_samples(|| agentry_assignment(&orchestrator, &started));
        orchestrator.shutdown().unwrap();
        printed.push((
            agents,
            bare_samples,
            bare_parked,
            round_robin_samples,
            agentry_samples,
            parked,
        ));
    }
    group.finish();
    eprintln!("\nassignment latency by pool size, back to back (warm-up excluded):");
    for (agents, mut bare, mut bare_parked, mut round_robin, mut agentry, mut parked) in printed {
        report(
            &format!("bare_crossbeam ({agents} threads)"),
            &mut bare.kept,
        );
        report(
            &format!("bare_crossbeam ({agents} threads), parked"),
            &mut bare_parked,
        );
        report(
            &format!("bare_round_robin ({agents} threads)"),
            &mut round_robin.kept,
        );
        report(&format!("agentry ({agents} agents)"), &mut agentry.kept);
        report(&format!("agentry ({agents} agents), parked"), &mut parked);
    }
}

/// Samples taken with a pause before each submit, long enough for an idle
/// agent to stop polling its mailbox and park (the runner polls for 50 µs
/// at most).
fn parked_samples(mut once: impl FnMut() -> Duration) -> Vec<Duration> {
    const SAMPLES: usize = 2_000;
    const PAUSE: Duration = Duration::from_micros(500);
    (0..SAMPLES)
        .map(|_| {
            thread::sleep(PAUSE);
            once()
        })
        .collect()
}

fn parked_probe(label: &str, once: impl FnMut() -> Duration) {
    report(&format!("{label}, parked"), &mut parked_samples(once));
}

/// From the start of `build()` until all 10 agents run, beside spawning 10
/// bare threads until each has signalled that it runs.
fn spawn(c: &mut Criterion) {
    const AGENTS: usize = 10;
    let mut group = c.benchmark_group("orchestrator/spawn");
    group.bench_function(BenchmarkId::new("bare_thread_spawn", AGENTS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (stop_tx, stop) = bounded::<()>(1);
                let (running_tx, running) = bounded::<()>(AGENTS);
                let start = Instant::now();
                let threads: Vec<_> = (0..AGENTS)
                    .map(|_| {
                        let (stop, running_tx) = (stop.clone(), running_tx.clone());
                        thread::spawn(move || {
                            running_tx.send(()).unwrap();
                            let _ = stop.recv();
                        })
                    })
                    .collect();
                for _ in 0..AGENTS {
                    running.recv_timeout(WAIT).unwrap();
                }
                total += start.elapsed();
                drop(stop_tx);
                for thread in threads {
                    thread.join().unwrap();
                }
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("agentry", AGENTS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let orchestrator = Orchestrator::builder()
                    .agents(Role::Extractor, AGENTS, || noop)
                    .min_agents(AGENTS)
                    .max_agents(AGENTS)
                    .build()
                    .unwrap();
                wait_for_spawns(&orchestrator, AGENTS);
                total += start.elapsed();
                orchestrator.shutdown().unwrap();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(MEASUREMENT).warm_up_time(WARM_UP);
    targets = noop_throughput, sleep_throughput, assignment_latency, spawn
}
criterion_main!(benches);
