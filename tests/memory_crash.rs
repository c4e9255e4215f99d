//! Crash tests of the shared memory: a child process (this test binary, run
//! again) writes and acknowledges on stdout, the parent kills it with SIGKILL
//! at a random moment, reopens the store and checks what survived.

use std::collections::HashMap;
use std::env;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentry::{Durability, SharedMemory, Version};

/// Set in the child: the store's path.
const CHILD: &str = "AGENTRY_MEMORY_CRASH_CHILD";
const ROUNDS: u64 = 5;
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

/// A small xorshift generator: enough to pick kill points, and seeded from the
/// clock so every run explores different ones (the seed is in every failure).
struct Random(u64);

impl Random {
    fn new() -> Random {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Random(nanos | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Runs `test` again as a child process writing to `path`.
fn spawn_child(test: &str, path: &Path) -> Child {
    Command::new(env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's acknowledgements, kills it after `kill_after` of them
/// (plus a short random delay so the kill also lands between acks), and
/// returns every acknowledgement it printed before dying.
fn kill_after(mut child: Child, kill_after: u64, delay: Duration) -> Vec<Vec<String>> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(ack) = line.strip_prefix("ack ") {
            acks.push(ack.split(' ').map(str::to_owned).collect());
            if acks.len() as u64 >= kill_after {
                break;
            }
        }
    }
    assert!(
        acks.len() as u64 >= kill_after,
        "the child exited early after {} acks",
        acks.len()
    );
    thread::sleep(delay);
    child.kill().unwrap();
    // Acknowledgements already in the pipe were printed before the kill.
    for line in lines {
        if let Some(ack) = line.unwrap().strip_prefix("ack ") {
            acks.push(ack.split(' ').map(str::to_owned).collect());
        }
    }
    child.wait().unwrap();
    acks
}

fn ack(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack {line}").unwrap();
    out.flush().unwrap();
}

#[test]
fn journal_acknowledged_writes_survive_sigkill() {
    if let Ok(path) = env::var(CHILD) {
        return journal_child(Path::new(&path));
    }
    let mut random = Random::new();
    let seed = random.0;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.snap");
        // Rounds after the first restart over a store that already crashed once.
        for life in 0..2 {
            let child = spawn_child("journal_acknowledged_writes_survive_sigkill", &path);
            let acks = kill_after(
                child,
                20 + random.below(300),
                Duration::from_micros(random.below(3_000)),
            );
            check_journal(
                &path,
                &acks,
                format!("seed {seed}, round {round}, life {life}"),
            );
        }
    }
}

/// Two writer threads: each puts `t{t}/k{i % 10}` = i and increments
/// `count/{t}`, acknowledging each write once it returned; thread 0 also
/// persists now and then, so kills land in rotations and snapshots too.
fn journal_child(path: &Path) {
    let memory = SharedMemory::open_with(path, Durability::Journal).unwrap();
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..2u64 {
            let memory = memory.clone();
            s.spawn(move || {
                let mut i = 0u64;
                while start.elapsed() < CHILD_LIFETIME {
                    let key = format!("t{t}/k{}", i % 10);
                    let version = memory.put(&key, &i).unwrap();
                    ack(format_args!("put {key} {} {i}", version.get()));
                    let count = memory.increment(&format!("count/{t}"), 1).unwrap();
                    ack(format_args!("count count/{t} {count}"));
                    if t == 0 && i % 25 == 24 {
                        memory.persist().unwrap();
                    }
                    i += 1;
                }
            });
        }
    });
}

fn check_journal(path: &Path, acks: &[Vec<String>], context: String) {
    let memory = SharedMemory::open_with(path, Durability::OnPersist)
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let mut latest_put: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut latest_count: HashMap<&str, i64> = HashMap::new();
    for ack in acks {
        match ack.as_slice() {
            [kind, key, version, value] if kind == "put" => {
                latest_put.insert(key, (version.parse().unwrap(), value.parse().unwrap()));
            }
            [kind, key, count] if kind == "count" => {
                latest_count.insert(key, count.parse().unwrap());
            }
            other => panic!("{context}: unexpected ack {other:?}"),
        }
    }
    for (key, (version, value)) in latest_put {
        let stored = memory
            .get::<u64>(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: acknowledged key {key} is missing"));
        assert!(
            stored.version >= Version::new(version),
            "{context}: {key} went back from v{version} to {}",
            stored.version
        );
        assert!(
            stored.value >= value,
            "{context}: {key} went back from {value} to {}",
            stored.value
        );
        if stored.version == Version::new(version) {
            assert_eq!(stored.value, value, "{context}: {key} at v{version}");
        }
    }
    for (key, count) in latest_count {
        let stored = memory.get::<i64>(key).unwrap().map_or(0, |c| c.value);
        assert!(
            stored >= count,
            "{context}: {key} lost increments: {stored} < {count}"
        );
    }
}

/// Keys per generation in the snapshot crash test: enough that a snapshot
/// takes a few milliseconds to write, so kills land inside it.
const SNAPSHOT_KEYS: u64 = 5_000;

#[test]
fn a_kill_during_snapshot_writes_leaves_a_consistent_snapshot() {
    if let Ok(path) = env::var(CHILD) {
        return snapshot_child(Path::new(&path));
    }
    let mut random = Random::new();
    let seed = random.0;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.snap");
        let child = spawn_child(
            "a_kill_during_snapshot_writes_leaves_a_consistent_snapshot",
            &path,
        );
        let acks = kill_after(
            child,
            1 + random.below(4),
            Duration::from_millis(random.below(40)),
        );
        check_snapshot(&path, &acks, format!("seed {seed}, round {round}"));
    }
}

/// Generation after generation: writes every key `k{j}` = (generation, j),
/// then persists and acknowledges the generation.
fn snapshot_child(path: &Path) {
    let memory = SharedMemory::open_with(path, Durability::OnPersist).unwrap();
    let start = Instant::now();
    let mut generation = 0u64;
    while start.elapsed() < CHILD_LIFETIME {
        generation += 1;
        for j in 0..SNAPSHOT_KEYS {
            memory
                .put(&format!("k{j}"), &(generation, j, [0u8; 32]))
                .unwrap();
        }
        memory.persist().unwrap();
        ack(format_args!("persisted {generation}"));
    }
}

/// The snapshot must be one whole generation, at least the last acknowledged
/// one, with versions in the order the child wrote.
fn check_snapshot(path: &Path, acks: &[Vec<String>], context: String) {
    let acknowledged: u64 = acks.last().map_or(0, |ack| ack[1].parse().unwrap());
    let memory = SharedMemory::open_with(path, Durability::OnPersist)
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    assert_eq!(memory.len() as u64, SNAPSHOT_KEYS, "{context}");
    let mut previous = Version::NONE;
    let mut generation = None;
    for j in 0..SNAPSHOT_KEYS {
        let stored = memory
            .get::<(u64, u64, [u8; 32])>(&format!("k{j}"))
            .unwrap()
            .unwrap();
        let (g, key_index, _) = stored.value;
        assert_eq!(key_index, j, "{context}: k{j} holds another key's value");
        assert_eq!(
            *generation.get_or_insert(g),
            g,
            "{context}: k{j} is from another generation"
        );
        assert!(
            stored.version > previous,
            "{context}: versions out of write order at k{j}"
        );
        previous = stored.version;
    }
    let generation = generation.unwrap_or(0);
    assert!(
        generation >= acknowledged,
        "{context}: generation {generation} < acknowledged {acknowledged}"
    );
    assert!(memory.put("after", &0).unwrap() > previous, "{context}");
}
