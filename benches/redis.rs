//! The shared memory on Redis (feature `redis`), each operation beside the
//! bare round trip of the `redis` crate doing the nearest raw command on the
//! same server in the same run: `get` beside `HGET`, `put` and `set` (one
//! Lua script each) beside `HSET`, `increment` (lock script + write script)
//! beside `INCR`; on 1 and 4 threads. The server is the bench's own
//! `redis-server` on loopback (AOF with `appendfsync always`, as the tests
//! run it), so figures are round-trip bound (writes: fsync bound).
//!
//! `redis-cluster-noop`: no-op tasks through a cluster of 2 nodes x 4
//! agents on that server (submitted in batches of 1,000 on one node, each
//! result waited for on the other), in tasks per second. After it, the same
//! run prints `redis-benchmark` figures for the commands one task needs
//! (`XADD` batched, `XREADGROUP` per claim of several, then per task
//! `HEXISTS`, one `EVALSHA` storing the result, one `HGET` by the waiter),
//! with 8 clients like the 8 agents, so the two can be compared.
//!
//! `redis-message-round-trip`: a message from a mailbox on one node to a
//! mailbox on another and the reply back (two relay hops: a script that
//! checks and `XADD`s, the receiving node's relay thread woken in `XREAD
//! BLOCK`), beside the same exchange done bare with the `redis` crate: an
//! echo thread in `XREAD BLOCK` on one stream answering with `XADD` on
//! another.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/threads.rs"]
mod threads;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AutoscalePolicy, Orchestrator, Output, Role, SharedMemory, Task, TaskError,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const KEYS: usize = 1_000;

fn key(i: usize) -> String {
    format!("agent/{i}/state")
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads, each
/// with its own raw connection, and returns the wall time.
fn on_threads(
    threads: usize,
    iters: u64,
    url: &str,
    op: impl Fn(&mut redis::Connection, usize, u64) + Sync,
) -> Duration {
    threads::on_threads(
        threads,
        iters,
        |_| redis::Client::open(url).unwrap().get_connection().unwrap(),
        op,
    )
}

fn memory_ops(c: &mut Criterion) {
    let server = common::RedisServer::start();
    let url = server.url();
    let memory = SharedMemory::redis(url.as_str()).unwrap();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let raw_keys: Vec<String> = (0..KEYS).map(|i| format!("raw/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        memory.put(k, &(i as u64)).unwrap();
    }
    let pick = |t: usize, i: u64| (i as usize * 7 + t * 131) % KEYS;
    let encoded = postcard::to_stdvec(&7u64).unwrap();
    {
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        for k in &raw_keys {
            redis::cmd("HSET")
                .arg("raw")
                .arg(k)
                .arg(&encoded[..])
                .query::<()>(&mut raw)
                .unwrap();
        }
    }

    for threads in [1, 4] {
        let mut group = c.benchmark_group("redis-get");
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |_, t, i| {
                    black_box(memory.get::<u64>(&keys[pick(t, i)]).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("raw-hget", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |c, t, i| {
                    let bytes: Vec<u8> = redis::cmd("HGET")
                        .arg("raw")
                        .arg(&raw_keys[pick(t, i)])
                        .query(c)
                        .unwrap();
                    black_box(postcard::from_bytes::<u64>(&bytes).unwrap());
                })
            })
        });
        group.finish();

        let mut group = c.benchmark_group("redis-write");
        group.bench_function(BenchmarkId::new("agentry-put", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |_, t, i| {
                    black_box(memory.put(&keys[pick(t, i)], &i).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("agentry-set", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |_, t, _| {
                    // Each thread owns its key, so the version it holds is current.
                    let k = format!("own/{t}");
                    let current = memory.version_of(&k);
                    black_box(memory.set(&k, &1u64, current).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("raw-hset", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |c, t, _| {
                    redis::cmd("HSET")
                        .arg("raw")
                        .arg(&raw_keys[t])
                        .arg(&encoded[..])
                        .query::<()>(c)
                        .unwrap();
                })
            })
        });
        group.finish();

        let mut group = c.benchmark_group("redis-increment");
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |_, t, _| {
                    black_box(memory.increment(&format!("counter/{t}"), 1).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("raw-incr", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &url, |c, t, _| {
                    let n: i64 = redis::cmd("INCR")
                        .arg(format!("raw-counter/{t}"))
                        .query(c)
                        .unwrap();
                    black_box(n);
                })
            })
        });
        group.finish();
    }
    drop(server);
}

fn node(url: &str, name: &str) -> Orchestrator {
    Orchestrator::builder()
        .agents(Role::Researcher, 4, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url)
        .node(name)
        .build()
        .unwrap()
}

fn cluster_noop(c: &mut Criterion) {
    let server = common::RedisServer::start();
    let url = server.url();
    let submitter = node(&url, "a");
    let waiter = node(&url, "b");
    const BATCH: u64 = 1_000;
    let mut group = c.benchmark_group("redis-cluster-noop");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("2-nodes-x-4-agents", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let tasks = (0..BATCH).map(|_| Task::new("noop").with_role(Role::Researcher));
                let ids = submitter.submit_batch(tasks).unwrap();
                for id in ids {
                    waiter.wait(id, Duration::from_secs(60)).unwrap();
                }
            }
            start.elapsed()
        })
    });
    group.finish();
    drop((submitter, waiter));

    // The server's own figures for the commands a task needs, same run.
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("redis-benchmark")
            .args(["-p", port, "-q", "-n", "20000", "-c", "8"])
            .args(args)
            .output()
            .expect("redis-benchmark is installed with redis-server");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `-q` redraws its progress with carriage returns; keep the result.
        for line in text.lines().flat_map(|l| l.rsplit('\r').next()) {
            if !line.trim().is_empty() {
                println!("redis-benchmark {}", line.trim());
            }
        }
    };
    run(&["-t", "hset,incr"]);
    run(&["XADD", "s", "*", "task", "x"]);
    run(&["HEXISTS", "h", "f"]);
    run(&["HGET", "h", "f"]);
    run(&[
        "EVAL",
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[1]) redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1]) return 0",
        "2",
        "h",
        "z",
        "1",
    ]);
    drop(server);
}

fn message_round_trip(c: &mut Criterion) {
    let server = common::RedisServer::start();
    let url = server.url();
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    let (here, there) = (a.mailbox().unwrap(), b.mailbox().unwrap());
    let raw = |url: &str| redis::Client::open(url).unwrap().get_connection().unwrap();
    let stop = AtomicBool::new(false);
    let mut group = c.benchmark_group("redis-message-round-trip");
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(message) = there.recv_timeout(Duration::from_millis(50)) {
                    b.broker()
                        .send(there.id(), message.from(), &message.body::<u64>().unwrap())
                        .unwrap();
                }
            }
        });
        s.spawn(|| {
            let mut connection = raw(&url);
            let mut last = "0-0".to_owned();
            while !stop.load(Ordering::Relaxed) {
                let read: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(50)
                    .arg("STREAMS")
                    .arg("ping")
                    .arg(&last)
                    .query(&mut connection)
                    .unwrap();
                for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    let body: Vec<u8> = entry.get("m").unwrap();
                    redis::cmd("XADD")
                        .arg("pong")
                        .arg("*")
                        .arg("m")
                        .arg(body)
                        .query::<()>(&mut connection)
                        .unwrap();
                    last = entry.id;
                }
            }
        });
        group.bench_function("agentry-cross-node", |bench| {
            bench.iter(|| {
                a.broker().send(here.id(), there.id(), &7u64).unwrap();
                black_box(here.recv_timeout(Duration::from_secs(10)).unwrap());
            })
        });
        let mut connection = raw(&url);
        let mut last = "0-0".to_owned();
        group.bench_function("raw-xadd-xread", |bench| {
            bench.iter(|| {
                redis::cmd("XADD")
                    .arg("ping")
                    .arg("*")
                    .arg("m")
                    .arg(&postcard::to_stdvec(&7u64).unwrap()[..])
                    .query::<()>(&mut connection)
                    .unwrap();
                let read: redis::streams::StreamReadReply = redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(10_000)
                    .arg("STREAMS")
                    .arg("pong")
                    .arg(&last)
                    .query(&mut connection)
                    .unwrap();
                let entry = read.keys.into_iter().flat_map(|k| k.ids).last().unwrap();
                last = entry.id;
            })
        });
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
    drop((a, b));
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = memory_ops, cluster_noop, message_round_trip
}
criterion_main!(benches);
