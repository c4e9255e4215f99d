//! Shared memory benchmarks, each beside a bare baseline: a plain
//! `parking_lot::RwLock<HashMap<String, Vec<u8>>>` doing the same work
//! (postcard encoding included), uncontended and on two threads; snapshot
//! persist and reload of 100,000 keys; journal write throughput.

#[path = "common/threads.rs"]
mod threads;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use agentry::{Durability, SharedMemory, Version};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::RwLock;

type Baseline = RwLock<HashMap<String, Vec<u8>>>;

const KEYS: usize = 1_000;

fn key(i: usize) -> String {
    format!("agent/{i}/state")
}

fn filled() -> (SharedMemory, Baseline) {
    let memory = SharedMemory::in_memory();
    let mut map = HashMap::new();
    for i in 0..KEYS {
        memory.put(&key(i), &(i as u64)).unwrap();
        map.insert(key(i), postcard::to_stdvec(&(i as u64)).unwrap());
    }
    (memory, RwLock::new(map))
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads at once and
/// returns the wall time, so a figure is the time per operation per thread.
fn on_threads(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    threads::on_threads(threads, iters, |_| (), |(), t, i| op(t, i))
}

fn get(c: &mut Criterion) {
    let (memory, baseline) = filled();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut group = c.benchmark_group("get");
    for threads in [1, 2] {
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    let k = &keys[(i as usize * 7 + t * 131) % KEYS];
                    black_box(memory.get::<u64>(k).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("bare-rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    let k = &keys[(i as usize * 7 + t * 131) % KEYS];
                    let map = baseline.read();
                    let bytes = map.get(k.as_str()).unwrap();
                    black_box(postcard::from_bytes::<u64>(bytes).unwrap());
                })
            })
        });
    }
    group.finish();
}

fn set(c: &mut Criterion) {
    let (memory, baseline) = filled();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut group = c.benchmark_group("set");
    for threads in [1, 2] {
        // Each thread owns its keys, so every `set` succeeds with the version
        // it remembers: the cost of an uncontested compare-and-set.
        let versions: Vec<RwLock<Version>> = (0..KEYS)
            .map(|i| RwLock::new(memory.get::<u64>(&keys[i]).unwrap().unwrap().version))
            .collect();
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    let slot = (i as usize * 2 + t) % KEYS;
                    let mut version = versions[slot].write();
                    *version = memory.set(&keys[slot], &i, *version).unwrap();
                })
            })
        });
        group.bench_function(BenchmarkId::new("bare-rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    let slot = (i as usize * 2 + t) % KEYS;
                    let bytes = postcard::to_stdvec(&i).unwrap();
                    let mut map = baseline.write();
                    *map.get_mut(keys[slot].as_str()).unwrap() = bytes;
                })
            })
        });
    }
    group.finish();
}

fn put(c: &mut Criterion) {
    let (memory, baseline) = filled();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut group = c.benchmark_group("put");
    for threads in [1, 2] {
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    memory.put(&keys[(i as usize * 2 + t) % KEYS], &i).unwrap();
                })
            })
        });
        group.bench_function(BenchmarkId::new("bare-rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, i| {
                    let bytes = postcard::to_stdvec(&i).unwrap();
                    baseline
                        .write()
                        .insert(keys[(i as usize * 2 + t) % KEYS].clone(), bytes);
                })
            })
        });
    }
    group.finish();
}

fn increment(c: &mut Criterion) {
    let memory = SharedMemory::in_memory();
    let baseline: Baseline = RwLock::new(HashMap::new());
    let counters: Vec<String> = (0..2).map(|t| format!("counter/{t}")).collect();
    let mut group = c.benchmark_group("increment");
    for threads in [1, 2] {
        group.bench_function(BenchmarkId::new("agentry", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, _| {
                    black_box(memory.increment(&counters[t], 1).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("bare-rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |t, _| {
                    let mut map = baseline.write();
                    let slot = map.entry(counters[t].clone()).or_default();
                    let value = postcard::from_bytes::<i64>(slot).unwrap_or(0) + 1;
                    *slot = postcard::to_stdvec(&value).unwrap();
                    black_box(value);
                })
            })
        });
    }
    group.finish();
}

const SNAPSHOT_KEYS: usize = 100_000;

fn snapshot(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.snap");
    let memory = SharedMemory::open_with(&path, Durability::OnPersist).unwrap();
    let value = [7u8; 60];
    for i in 0..SNAPSHOT_KEYS {
        memory.put(&format!("key/{i:06}"), &value[..]).unwrap();
    }
    let mut group = c.benchmark_group("snapshot-100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SNAPSHOT_KEYS as u64));
    group.bench_function("persist-fsync", |b| b.iter(|| memory.persist().unwrap()));
    // The floor under a snapshot: writing and fsyncing as many bytes with
    // plain `write`, no encoding, no rename.
    memory.persist().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let bare = dir.path().join("bare");
    group.bench_function("bare-write-fsync", |b| {
        b.iter(|| {
            std::fs::write(&bare, &bytes).unwrap();
            std::fs::File::open(&bare).unwrap().sync_all().unwrap();
        })
    });
    // Dropping 100,000 keys is not part of reloading them.
    group.bench_function("reload", |b| {
        b.iter_with_large_drop(|| {
            let reloaded = SharedMemory::open_with(&path, Durability::OnPersist).unwrap();
            assert_eq!(reloaded.len(), SNAPSHOT_KEYS);
            reloaded
        })
    });
    // The floor under a reload: reading the file and building a map of
    // owned keys and values, single-threaded, without checks.
    group.bench_function("bare-read-hashmap", |b| {
        b.iter_with_large_drop(|| {
            let bytes = std::fs::read(&path).unwrap();
            let entries: Vec<(String, u64, Vec<u8>)> = postcard::from_bytes(&bytes[48..]).unwrap();
            entries
                .into_iter()
                .map(|(key, version, value)| (key, (version, value)))
                .collect::<HashMap<_, _>>()
        })
    });
    group.finish();
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let memory =
        SharedMemory::open_with(dir.path().join("memory.snap"), Durability::Journal).unwrap();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut group = c.benchmark_group("journal-put");
    group.throughput(Throughput::Elements(1));
    for writers in [1, 4] {
        // Each iteration is one write in total, spread over the writers, so
        // the figure is the time per acknowledged (fsynced) write.
        group.bench_function(BenchmarkId::new("agentry", writers), |b| {
            b.iter_custom(|iters| {
                on_threads(writers, iters.div_ceil(writers as u64), |t, i| {
                    memory
                        .put(&keys[(i as usize * writers + t) % KEYS], &i)
                        .unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, get, set, put, increment, snapshot, journal);
criterion_main!(benches);
