//! Behaviour of the shared memory: optimistic locking, atomic operations under
//! contention, persistence round trips, and refusal of corrupt files.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use agentry::{Durability, Error, SharedMemory, Version};
use proptest::prelude::*;

#[cfg(feature = "redis")]
mod common;

const THREADS: usize = 8;
const ROUNDS: usize = if cfg!(miri) { 10 } else { 2_000 };

// ---------- behaviour: one suite, run on every backend

/// The behaviour every backend must show. Each test calls `fresh()`, which
/// the module invoking the suite defines: an empty store, and whatever must
/// live as long as it (a Redis server). `$rounds` scales the contention
/// loops (a round trip per operation on Redis).
macro_rules! behaviour_suite {
    ($rounds:expr) => {
        #[test]
        fn seed_conflict_flow_refuses_a_stale_version() {
            let (_server, memory) = fresh();
            let v1 = memory.put("task/1", &"queued").unwrap();
            let read = memory.get::<String>("task/1").unwrap().unwrap();
            assert_eq!(read.value, "queued");
            assert_eq!(read.version, v1);

            let v2 = memory.set("task/1", &"running", read.version).unwrap();
            assert!(v2 > v1);

            match memory.set("task/1", &"done", read.version) {
                Err(Error::Conflict {
                    key,
                    expected,
                    actual,
                }) => {
                    assert_eq!(key, "task/1");
                    assert_eq!(expected, v1);
                    assert_eq!(actual, v2);
                }
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert_eq!(
                memory.get::<String>("task/1").unwrap().unwrap().value,
                "running"
            );
        }

        #[test]
        fn set_with_none_creates_only_if_absent() {
            let (_server, memory) = fresh();
            let v = memory.set("k", &1u32, Version::NONE).unwrap();
            assert!(!v.is_none());
            match memory.set("k", &2u32, Version::NONE) {
                Err(Error::Conflict { actual, .. }) => assert_eq!(actual, v),
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert_eq!(memory.get::<u32>("k").unwrap().unwrap().value, 1);
        }

        #[test]
        fn set_on_an_absent_key_with_a_version_conflicts_with_none() {
            let (_server, memory) = fresh();
            match memory.set("k", &1u32, Version::new(5)) {
                Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Version::NONE),
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert!(memory.is_empty());
        }

        #[test]
        fn every_write_gets_a_strictly_greater_version() {
            let (_server, memory) = fresh();
            let mut last = Version::NONE;
            for i in 0..100u32 {
                let v = memory.put(&format!("k{}", i % 7), &i).unwrap();
                assert!(v > last);
                last = v;
            }
            assert_eq!(memory.version(), last);
        }

        #[test]
        fn increments_from_eight_threads_are_exact() {
            let (_server, memory) = fresh();
            thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..$rounds {
                            memory.increment("counter", 1).unwrap();
                        }
                    });
                }
            });
            let total = (THREADS * $rounds) as i64;
            assert_eq!(memory.get::<i64>("counter").unwrap().unwrap().value, total);
            assert_eq!(memory.increment("counter", -total).unwrap(), 0);
        }

        #[test]
        fn increment_overflow_is_an_error_and_leaves_the_counter() {
            let (_server, memory) = fresh();
            memory.increment("c", i64::MAX).unwrap();
            assert!(matches!(
                memory.increment("c", 1),
                Err(Error::InvalidInput(_))
            ));
            assert_eq!(memory.get::<i64>("c").unwrap().unwrap().value, i64::MAX);
        }

        #[test]
        fn compare_and_set_retry_loops_lose_no_update() {
            let (_server, memory) = fresh();
            memory.put("list", &Vec::<u32>::new()).unwrap();
            let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            thread::scope(|s| {
                for t in 0..THREADS as u32 {
                    let memory = memory.clone();
                    let conflicts = Arc::clone(&conflicts);
                    s.spawn(move || {
                        for i in 0..($rounds / 10) as u32 {
                            loop {
                                let mut read = memory.get::<Vec<u32>>("list").unwrap().unwrap();
                                read.value.push(t * 1_000_000 + i);
                                match memory.set("list", &read.value, read.version) {
                                    Ok(_) => break,
                                    Err(e) if e.is_conflict() => {
                                        conflicts
                                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    });
                }
            });
            let mut list = memory.get::<Vec<u32>>("list").unwrap().unwrap().value;
            assert_eq!(list.len(), THREADS * $rounds / 10);
            list.sort_unstable();
            list.dedup();
            assert_eq!(
                list.len(),
                THREADS * $rounds / 10,
                "an update was applied twice"
            );
        }

        #[test]
        fn update_is_atomic_under_contention() {
            let (_server, memory) = fresh();
            thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..$rounds {
                            memory
                                .update("pair", |pair: Option<(u64, u64)>| {
                                    let (a, b) = pair.unwrap_or_default();
                                    assert_eq!(a, b, "update saw a half-applied write");
                                    (a + 1, b + 1)
                                })
                                .unwrap();
                        }
                    });
                }
            });
            let pair = memory.get::<(u64, u64)>("pair").unwrap().unwrap().value;
            assert_eq!(
                pair,
                ((THREADS * $rounds) as u64, (THREADS * $rounds) as u64)
            );
        }

        #[test]
        fn update_returns_the_new_value_and_version() {
            let (_server, memory) = fresh();
            let first = memory
                .update("k", |v: Option<String>| v.unwrap_or_default() + "a")
                .unwrap();
            let second = memory
                .update("k", |v: Option<String>| v.unwrap_or_default() + "b")
                .unwrap();
            assert_eq!(second.value, "ab");
            assert!(second.version > first.version);
            assert_eq!(
                memory.get::<String>("k").unwrap().unwrap().version,
                second.version
            );
        }

        #[test]
        fn update_of_a_value_of_another_type_is_a_codec_error_and_changes_nothing() {
            let (_server, memory) = fresh();
            let v = memory.put("k", &"text").unwrap();
            let result = memory.update("k", |_: Option<u64>| panic!("must not be called"));
            assert!(matches!(result, Err(Error::Codec(_))));
            assert_eq!(memory.get::<String>("k").unwrap().unwrap().version, v);
        }

        #[test]
        fn delete_of_an_absent_key_returns_false() {
            let (_server, memory) = fresh();
            assert!(!memory.delete("nothing").unwrap());
            memory.put("k", &1).unwrap();
            assert!(memory.delete("k").unwrap());
            assert!(!memory.delete("k").unwrap());
            assert!(memory.get::<i32>("k").unwrap().is_none());
            assert!(!memory.contains_key("k"));
        }

        #[test]
        fn a_key_recreated_after_delete_gets_a_fresh_greater_version() {
            let (_server, memory) = fresh();
            let v1 = memory.put("k", &1).unwrap();
            memory.delete("k").unwrap();
            let deleted_at = memory.version();
            assert!(deleted_at > v1);
            let v2 = memory.set("k", &2, Version::NONE).unwrap();
            assert!(v2 > deleted_at);
        }

        #[test]
        fn conditional_delete_conflicts_on_a_stale_version() {
            let (_server, memory) = fresh();
            let v1 = memory.put("k", &1).unwrap();
            let v2 = memory.put("k", &2).unwrap();
            match memory.delete_if("k", v1) {
                Err(Error::Conflict {
                    expected, actual, ..
                }) => {
                    assert_eq!((expected, actual), (v1, v2));
                }
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert!(memory.contains_key("k"));
            assert!(memory.delete_if("k", v2).unwrap());
            assert!(!memory.delete_if("k", Version::NONE).unwrap());
        }

        #[test]
        fn get_as_the_wrong_type_is_a_codec_error() {
            let (_server, memory) = fresh();
            memory.put("name", &"agentry").unwrap();
            memory.put("n", &7u64).unwrap();
            assert!(matches!(memory.get::<u64>("name"), Err(Error::Codec(_))));
            assert!(matches!(memory.get::<String>("n"), Err(Error::Codec(_))));
            assert!(matches!(memory.increment("name", 1), Err(Error::Codec(_))));
        }

        #[test]
        fn len_keys_and_is_empty_follow_the_writes() {
            let (_server, memory) = fresh();
            assert!(memory.is_empty());
            for i in 0..50 {
                memory.put(&format!("k{i}"), &i).unwrap();
            }
            memory.delete("k7").unwrap();
            assert_eq!(memory.len(), 49);
            let mut keys = memory.keys();
            keys.sort();
            assert_eq!(keys.len(), 49);
            assert!(!keys.contains(&"k7".to_owned()));
        }
    };
}

mod in_process {
    use super::*;

    fn fresh() -> ((), SharedMemory) {
        ((), SharedMemory::in_memory())
    }

    behaviour_suite!(ROUNDS);
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use crate::common::RedisServer;
    use agentry::RedisConfig;

    fn fresh() -> (RedisServer, SharedMemory) {
        let server = RedisServer::start();
        let memory = SharedMemory::redis(server.url()).unwrap();
        (server, memory)
    }

    behaviour_suite!(ROUNDS / 10);

    // What only a shared, remote store can show.

    #[test]
    fn handles_in_different_connections_are_one_store() {
        let (server, a) = fresh();
        let b = SharedMemory::redis(server.url()).unwrap();
        let v = a.put("k", &"from a").unwrap();
        let read = b.get::<String>("k").unwrap().unwrap();
        assert_eq!((read.value.as_str(), read.version), ("from a", v));
        assert!(b.put("other", &1).unwrap() > v);
        assert_eq!(a.version(), b.version());
    }

    #[test]
    fn namespaces_on_one_server_do_not_share_keys() {
        let (server, default) = fresh();
        let other = SharedMemory::redis(RedisConfig::new(server.url()).namespace("other")).unwrap();
        default.put("k", &1).unwrap();
        assert!(!other.contains_key("k"));
        assert!(other.is_empty());
    }

    #[test]
    fn a_deposed_handle_is_fenced_off_on_every_write() {
        let (server, deposed) = fresh();
        deposed.fence(1).unwrap();
        deposed.put("before", &1).unwrap();
        let leader = SharedMemory::redis(server.url()).unwrap();
        assert_eq!(leader.epoch(), 1, "a new handle adopts the store's epoch");
        assert!(matches!(
            leader.fence(0),
            Err(Error::NotLeader {
                epoch: Some(0),
                current: Some(1),
                ..
            })
        ));
        leader.fence(2).unwrap();
        let refused = |result: Result<(), Error>| {
            assert!(
                matches!(
                    result,
                    Err(Error::NotLeader {
                        epoch: Some(1),
                        current: Some(2),
                        ..
                    })
                ),
                "{result:?}"
            );
        };
        refused(deposed.put("late", &1).map(drop));
        refused(deposed.set("before", &2, Version::NONE).map(drop));
        refused(deposed.increment("n", 1).map(drop));
        refused(
            deposed
                .update("before", |v: Option<i32>| v.unwrap_or(0))
                .map(drop),
        );
        refused(deposed.delete("before").map(drop));
        refused(deposed.persist());
        leader.put("mine", &2).unwrap();
        leader.persist().unwrap();
        let mut keys = leader.keys();
        keys.sort();
        assert_eq!(keys, ["before", "mine"]);
    }

    #[test]
    fn a_dead_server_is_a_backend_error_and_a_restarted_one_is_found_again() {
        let mut server = RedisServer::start();
        let config = RedisConfig::new(server.url()).timeout(std::time::Duration::from_secs(1));
        let memory = SharedMemory::redis(config).unwrap();
        let v = memory.put("kept", &"acknowledged").unwrap();
        server.restart();
        // The pooled connection died with the old server: a read is retried
        // on a fresh connection, and the AOF brought the write back.
        let read = memory.get::<String>("kept").unwrap().unwrap();
        assert_eq!((read.value.as_str(), read.version), ("acknowledged", v));
        assert!(memory.put("after", &1).unwrap() > v);

        let url = server.url();
        drop(server);
        let quick = SharedMemory::redis(
            RedisConfig::new(url).timeout(std::time::Duration::from_millis(300)),
        );
        assert!(matches!(quick, Err(Error::Backend { .. })), "{quick:?}");
        match memory.put("lost", &1) {
            Err(e @ Error::Backend { .. }) => assert!(e.to_string().contains("\"lost\""), "{e}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
        assert!(matches!(
            memory.get::<i32>("kept"),
            Err(Error::Backend { .. })
        ));
        assert_eq!(memory.len(), 0, "an infallible read answers as if empty");
    }

    #[test]
    fn bad_configurations_are_refused() {
        for config in [
            RedisConfig::new("not a url"),
            RedisConfig::new("redis://127.0.0.1:1/").namespace(""),
            RedisConfig::new("redis://127.0.0.1:1/").timeout(std::time::Duration::ZERO),
        ] {
            assert!(
                matches!(
                    SharedMemory::redis(config.clone()),
                    Err(Error::InvalidConfig(_))
                ),
                "{config:?}"
            );
        }
    }
}

// ---------- persistence

fn reopen(path: &Path, durability: Durability) -> SharedMemory {
    SharedMemory::open_with(path, durability).unwrap()
}

#[test]
fn persist_and_reopen_restores_thousands_of_keys_with_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.snap");
    let mut expected = HashMap::new();
    {
        let memory = reopen(&path, Durability::OnPersist);
        for i in 0..5_000u32 {
            let key = format!("key/{i}");
            let v = memory.put(&key, &(i, format!("value {i}"))).unwrap();
            expected.insert(key, (i, v));
        }
        for i in (0..5_000u32).step_by(7) {
            memory.delete(&format!("key/{i}")).unwrap();
            expected.remove(&format!("key/{i}"));
        }
        memory.persist().unwrap();
    }
    let memory = reopen(&path, Durability::OnPersist);
    assert_eq!(memory.len(), expected.len());
    let mut greatest = Version::NONE;
    for (key, (i, version)) in &expected {
        let read = memory.get::<(u32, String)>(key).unwrap().unwrap();
        assert_eq!(read.value, (*i, format!("value {i}")));
        assert_eq!(read.version, *version);
        greatest = greatest.max(*version);
    }
    let next = memory.put("new", &0).unwrap();
    assert!(next > greatest);
    assert!(next > memory.get::<u32>("new").map(|_| greatest).unwrap());
}

#[test]
fn versions_after_reopen_exceed_deletes_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let global = {
        let memory = reopen(&path, Durability::OnPersist);
        memory.put("a", &1).unwrap();
        memory.put("b", &1).unwrap();
        memory.delete("b").unwrap();
        memory.version()
    };
    let memory = reopen(&path, Durability::OnPersist);
    assert_eq!(memory.version(), global);
    assert!(memory.put("b", &2).unwrap() > global);
}

#[test]
fn dropping_the_last_handle_writes_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    for durability in [Durability::OnPersist, Durability::default()] {
        let memory = reopen(&path, durability);
        let clone = memory.clone();
        let v = memory.put("k", &durability.to_owned_string()).unwrap();
        drop(memory);
        drop(clone);
        let read = reopen(&path, Durability::OnPersist)
            .get::<String>("k")
            .unwrap()
            .unwrap();
        assert_eq!(read.version, v);
    }
}

trait Name {
    fn to_owned_string(&self) -> String;
}

impl Name for Durability {
    fn to_owned_string(&self) -> String {
        format!("{self:?}")
    }
}

#[test]
fn periodic_mode_snapshots_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let memory = reopen(
        &path,
        Durability::Periodic(std::time::Duration::from_millis(10)),
    );
    let v = memory.put("k", &1).unwrap();
    // Generous: the thread needs one period and one snapshot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let on_disk = fs::read(&path).ok().filter(|bytes| bytes.len() > 48);
        if on_disk.is_some() {
            // A snapshot exists; read it through a copy so this store keeps the file.
            let copy = dir.path().join("copy");
            fs::copy(&path, &copy).unwrap();
            let read = reopen(&copy, Durability::OnPersist)
                .get::<i32>("k")
                .unwrap();
            if read.map(|r| r.version) == Some(v) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic snapshot within 10 s"
        );
        thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn journal_mode_restores_writes_without_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let versions = {
        let memory = reopen(&path, Durability::Journal);
        let a = memory.put("a", &"one").unwrap();
        memory.persist().unwrap();
        let b = memory.put("b", &"two").unwrap();
        memory.delete("a").unwrap();
        let c = memory.increment("c", 5).unwrap();
        assert_eq!(c, 5);
        // Simulate a crash: leak the handle so no final snapshot is written.
        std::mem::forget(memory);
        (a, b)
    };
    let memory = reopen(&path, Durability::Journal);
    assert!(!memory.contains_key("a"));
    assert_eq!(
        memory.get::<String>("b").unwrap().unwrap().version,
        versions.1
    );
    assert_eq!(memory.get::<i64>("c").unwrap().unwrap().value, 5);
    assert!(memory.put("d", &0).unwrap() > versions.1);
}

#[test]
fn journal_writes_from_many_threads_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    {
        let memory = reopen(&path, Durability::Journal);
        thread::scope(|s| {
            for t in 0..4 {
                let memory = memory.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        memory.put(&format!("t{t}/{i}"), &i).unwrap();
                        memory.increment("total", 1).unwrap();
                    }
                });
            }
            // A snapshot in the middle must not lose journal records.
            s.spawn(|| memory.persist().unwrap());
        });
        std::mem::forget(memory);
    }
    let memory = reopen(&path, Durability::OnPersist);
    assert_eq!(memory.len(), 4 * 50 + 1);
    assert_eq!(memory.get::<i64>("total").unwrap().unwrap().value, 200);
}

fn snapshot_with_keys(path: &Path) {
    let memory = reopen(path, Durability::OnPersist);
    for i in 0..100 {
        memory.put(&format!("k{i}"), &vec![i as u8; 20]).unwrap();
    }
    memory.persist().unwrap();
}

fn corrupt_reason(path: &Path) -> String {
    match SharedMemory::open_with(path, Durability::OnPersist) {
        Err(Error::CorruptSnapshot {
            path: reported,
            reason,
        }) => {
            assert_eq!(reported, path);
            reason
        }
        other => panic!("expected a corrupt snapshot error, got {other:?}"),
    }
}

#[test]
fn a_garbage_snapshot_is_refused_as_not_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    fs::write(&path, b"this is certainly not a snapshot, just some text").unwrap();
    assert!(corrupt_reason(&path).contains("bad magic"));
}

#[test]
fn a_truncated_snapshot_is_refused_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    snapshot_with_keys(&path);
    let bytes = fs::read(&path).unwrap();
    for len in [20, bytes.len() / 2, bytes.len() - 1] {
        fs::write(&path, &bytes[..len]).unwrap();
        assert!(corrupt_reason(&path).contains("truncated"), "length {len}");
    }
    fs::write(&path, b"").unwrap();
    assert!(corrupt_reason(&path).contains("empty"));
}

#[test]
fn a_foreign_file_is_refused_by_its_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    snapshot_with_keys(&path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"SQLite f");
    fs::write(&path, &bytes).unwrap();
    assert!(corrupt_reason(&path).contains("bad magic"));
}

#[test]
fn a_snapshot_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    snapshot_with_keys(&path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(corrupt_reason(&path).contains("format version 2"));
}

#[test]
fn a_snapshot_with_a_bad_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    snapshot_with_keys(&path);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    assert!(corrupt_reason(&path).contains("payload checksum"));
    bytes[last] ^= 0x55;
    bytes[20] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    assert!(corrupt_reason(&path).contains("header checksum"));
}

fn journal_file(path: &Path) -> std::path::PathBuf {
    let mut journals: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".journal."))
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    journals.pop().unwrap()
}

/// Writes three journaled keys and crashes (no final snapshot).
fn crashed_journal(path: &Path) -> Vec<Version> {
    let memory = reopen(path, Durability::Journal);
    let versions = (0..3)
        .map(|i| memory.put(&format!("k{i}"), &[i as u8; 16]).unwrap())
        .collect();
    std::mem::forget(memory);
    versions
}

#[test]
fn a_torn_last_journal_record_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let versions = crashed_journal(&path);
    let journal = journal_file(&path);
    let bytes = fs::read(&journal).unwrap();
    fs::write(&journal, &bytes[..bytes.len() - 5]).unwrap();
    let memory = reopen(&path, Durability::Journal);
    assert_eq!(memory.len(), 2);
    assert_eq!(
        memory.get::<[u8; 16]>("k1").unwrap().unwrap().version,
        versions[1]
    );
    assert!(!memory.contains_key("k2"));
    assert!(memory.put("k2", &[0u8; 16]).unwrap() > versions[1]);
}

#[test]
fn a_bad_journal_record_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    crashed_journal(&path);
    let journal = journal_file(&path);
    let mut bytes = fs::read(&journal).unwrap();
    // The header is 24 bytes and each record 8 + payload; hit the first payload.
    bytes[24 + 8 + 2] ^= 0xff;
    fs::write(&journal, &bytes).unwrap();
    match SharedMemory::open_with(&path, Durability::Journal) {
        Err(Error::CorruptJournal { offset, reason, .. }) => {
            assert_eq!(offset, 24);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a corrupt journal error, got {other:?}"),
    }
}

// ---------- model-based property test

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Set(u8, u16, bool),
    Get(u8),
    Delete(u8),
    DeleteIf(u8, bool),
    Increment(u8, i16),
    Reopen,
    /// A crash: the handle is leaked, so nothing is written at drop. Only
    /// Journal mode promises to lose nothing then; other modes reopen cleanly.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
        (key.clone(), any::<u16>(), any::<bool>()).prop_map(|(k, v, f)| Op::Set(k, v, f)),
        key.clone().prop_map(Op::Get),
        key.clone().prop_map(Op::Delete),
        (key.clone(), any::<bool>()).prop_map(|(k, f)| Op::DeleteIf(k, f)),
        (key, any::<i16>()).prop_map(|(k, d)| Op::Increment(k, d)),
        Just(Op::Reopen),
        Just(Op::Crash),
    ]
}

/// The model: each key's value (all values are i64 so increment applies to
/// any key) and version, plus the global counter.
#[derive(Default)]
struct Model {
    keys: HashMap<String, (i64, Version)>,
    clock: u64,
}

impl Model {
    fn tick(&mut self) -> Version {
        self.clock += 1;
        Version::new(self.clock)
    }

    fn version(&self, key: &str) -> Version {
        self.keys.get(key).map_or(Version::NONE, |(_, v)| *v)
    }
}

fn run_model(ops: Vec<Op>, durability: Option<Durability>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let open = || match durability {
        Some(d) => SharedMemory::open_with(&path, d).unwrap(),
        None => SharedMemory::in_memory(),
    };
    let mut memory = open();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                let key = format!("k{k}");
                let version = memory.put(&key, &i64::from(v)).unwrap();
                prop_assert_eq!(version, model.tick());
                model.keys.insert(key, (i64::from(v), version));
            }
            Op::Set(k, v, fresh) => {
                let key = format!("k{k}");
                let current = model.version(&key);
                let expected = if fresh {
                    current
                } else {
                    Version::new(current.get() + 1)
                };
                match memory.set(&key, &i64::from(v), expected) {
                    Ok(version) => {
                        prop_assert!(fresh);
                        prop_assert_eq!(version, model.tick());
                        model.keys.insert(key, (i64::from(v), version));
                    }
                    Err(Error::Conflict { actual, .. }) => {
                        prop_assert!(!fresh);
                        prop_assert_eq!(actual, current);
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Op::Get(k) => {
                let key = format!("k{k}");
                let got = memory
                    .get::<i64>(&key)
                    .unwrap()
                    .map(|r| (r.value, r.version));
                prop_assert_eq!(got, model.keys.get(&key).copied());
            }
            Op::Delete(k) => {
                let key = format!("k{k}");
                let present = memory.delete(&key).unwrap();
                prop_assert_eq!(present, model.keys.remove(&key).is_some());
                if present {
                    model.tick();
                }
            }
            Op::DeleteIf(k, fresh) => {
                let key = format!("k{k}");
                let current = model.version(&key);
                let expected = if fresh {
                    current
                } else {
                    Version::new(current.get() + 1)
                };
                match memory.delete_if(&key, expected) {
                    Ok(removed) => {
                        prop_assert!(fresh);
                        prop_assert_eq!(removed, !current.is_none());
                        if removed {
                            model.keys.remove(&key);
                            model.tick();
                        }
                    }
                    Err(Error::Conflict { actual, .. }) => {
                        prop_assert!(!fresh);
                        prop_assert_eq!(actual, current);
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Op::Increment(k, delta) => {
                let key = format!("k{k}");
                let value = memory.increment(&key, i64::from(delta)).unwrap();
                let expected = model.keys.get(&key).map_or(0, |(v, _)| *v) + i64::from(delta);
                prop_assert_eq!(value, expected);
                let version = model.tick();
                model.keys.insert(key, (value, version));
            }
            Op::Reopen => {
                if durability.is_some() {
                    drop(memory);
                    memory = open();
                }
            }
            Op::Crash => match durability {
                Some(Durability::Journal) => {
                    std::mem::forget(memory);
                    memory = open();
                }
                Some(_) => {
                    drop(memory);
                    memory = open();
                }
                None => {}
            },
        }
        prop_assert_eq!(memory.len(), model.keys.len());
        prop_assert_eq!(memory.version(), Version::new(model.clock));
    }
    Ok(())
}

proptest! {
    #[test]
    fn in_memory_store_behaves_like_a_hashmap(ops in proptest::collection::vec(op(), 1..80)) {
        run_model(ops, None)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn persisted_store_behaves_like_a_hashmap_across_reopens(
        ops in proptest::collection::vec(op(), 1..60),
        journal in any::<bool>(),
    ) {
        let durability = if journal { Durability::Journal } else { Durability::OnPersist };
        run_model(ops, Some(durability))?;
    }
}
