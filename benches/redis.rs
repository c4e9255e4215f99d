//! The shared memory on Redis (feature `redis`), each operation beside the
//! bare round trip of the `redis` crate doing the nearest raw command on the
//! same server in the same run: `get` beside `HGET`, `put` and `set` (one
//! Lua script each) beside `HSET`, `increment` (lock script + write script)
//! beside `INCR`; on 1 and 4 threads. The server is the bench's own
//! `redis-server` on loopback (AOF with `appendfsync always`, as the tests
//! run it), so figures are round-trip bound.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use agentry::SharedMemory;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

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
    let barrier = Barrier::new(threads);
    let (op, barrier) = (&op, &barrier);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(&mut connection, t, i);
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = memory_ops
}
criterion_main!(benches);
