//! Leader election: one leader at a time among threads and processes,
//! takeover after kill -9 and after a freeze (SIGSTOP) under a greater epoch,
//! resignation, configuration checks, damaged files, and fencing of the
//! shared memory. Multi-process tests re-execute this binary as candidates.
//! The behaviour suite runs on both backends: a directory, and (with the
//! `redis` feature) a Redis server of the test's own.

use std::collections::HashSet;
use std::env;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agentry::{ElectionConfig, ElectionEvent, Error, LeaderElection, LeaderInfo, SharedMemory};

#[cfg(feature = "redis")]
mod common;

/// Set in a child: where it stands for election (see [`Venue::address`]).
const CHILD: &str = "AGENTRY_ELECTION_CHILD";
/// Starts every line a child reports (the test harness writes on the same
/// stdout, not always ending its lines).
const MARK: &str = "@election ";
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// Generous bound for anything that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// A leader process starved of the processor for a whole lease is deposed,
/// rightly, and the tests would read that as two leaders: the lease is long
/// enough that a loaded two-core machine running the suite's processes in
/// parallel does not starve one that long.
const HEARTBEAT: Duration = Duration::from_millis(50);
const LEASE: Duration = Duration::from_millis(250);

/// A Redis election renews with a round trip (a fsynced write) that a
/// loaded two-core machine can stretch past 20 ms, and a Redis command
/// waits at most one heartbeat: its tests run on a slower clock.
#[cfg(feature = "redis")]
const REDIS_HEARTBEAT: Duration = Duration::from_millis(100);
#[cfg(feature = "redis")]
const REDIS_LEASE: Duration = Duration::from_millis(500);

fn timed(name: &str, heartbeat: Duration, lease: Duration) -> ElectionConfig {
    ElectionConfig::new(name)
        .heartbeat_interval(heartbeat)
        .lease_timeout(lease)
        .retry_interval(heartbeat / 4)
}

fn fast(name: &str) -> ElectionConfig {
    timed(name, HEARTBEAT, LEASE)
}

/// The configuration the suite uses at `address` (see [`Venue::address`]).
fn fast_at(address: &str, name: &str) -> ElectionConfig {
    #[cfg(feature = "redis")]
    if address.starts_with("redis:") {
        return timed(name, REDIS_HEARTBEAT, REDIS_LEASE);
    }
    let _ = address;
    fast(name)
}

// ---------------------------------------------------------------- in process

#[test]
fn unsafe_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ms = Duration::from_millis;
    for config in [
        fast("a").lease_timeout(HEARTBEAT * 3 - ms(1)),
        fast("a").retry_interval(HEARTBEAT),
        fast("a").heartbeat_interval(Duration::ZERO),
        fast("a").retry_interval(Duration::ZERO),
        ElectionConfig::new("a").lease_timeout(Duration::from_secs(29)),
    ] {
        match LeaderElection::new(dir.path(), config.clone()) {
            Err(Error::InvalidConfig(why)) => assert!(!why.is_empty()),
            other => panic!("{config:?} gave {other:?}"),
        }
    }
    LeaderElection::new(dir.path(), fast("a").lease_timeout(HEARTBEAT * 3)).unwrap();
    LeaderElection::new(dir.path(), ElectionConfig::new("defaults")).unwrap();
}

#[test]
fn a_directory_that_cannot_be_created_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let under_a_file = file.join("election");
    match LeaderElection::new(&under_a_file, fast("a")) {
        Err(Error::Io(e)) => assert!(
            e.to_string().contains(&under_a_file.display().to_string()),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("state").join("election");
    let election = LeaderElection::new(&nested, fast("a")).unwrap();
    assert!(nested.is_dir());
    assert!(election.try_acquire().unwrap().is_some());
}

#[test]
fn a_garbage_heartbeat_record_does_not_stop_an_election() {
    let dir = tempfile::tempdir().unwrap();
    let a = LeaderElection::new(dir.path(), fast("a")).unwrap();
    let epoch = a.try_acquire().unwrap().unwrap().epoch();
    std::fs::write(dir.path().join("leader"), b"\x00garbage\xff").unwrap();
    assert_eq!(LeaderElection::leader_info(dir.path()).unwrap(), None);

    let leadership = a.try_acquire().unwrap().expect("a damaged record is stale");
    assert!(leadership.epoch() > epoch);
    drop(leadership);

    // Every file of the directory but the epoch damaged, then a background
    // candidate.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "epoch" {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let handle = LeaderElection::new(dir.path(), fast("b"))
        .unwrap()
        .start()
        .unwrap();
    assert!(handle.wait_until_leader(PATIENCE));
    assert!(handle.epoch().unwrap() > epoch + 1);
}

fn wait_for(
    events: &crossbeam_channel::Receiver<ElectionEvent>,
    want: impl Fn(&ElectionEvent) -> bool,
) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while let Ok(event) = events.recv_deadline(deadline) {
        if want(&event) {
            return true;
        }
    }
    false
}

// ------------------------------------------------------------ multi process

/// The child's body: stands in the election and reports on stdout, one line
/// per fact: `elected E`, `demoted E`, `acting E` (a confirmed leader's
/// action, at most every few milliseconds).
#[test]
fn child_candidate() {
    let Ok(address) = env::var(CHILD) else {
        return;
    };
    let name = format!("pid-{}", std::process::id());
    let handle = Venue::candidate_at(&address, fast_at(&address, &name))
        .start()
        .unwrap();
    let started = Instant::now();
    let mut last_act = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        match handle.events().recv_timeout(Duration::from_millis(2)) {
            Ok(ElectionEvent::Elected { epoch }) => println!("{MARK}elected {epoch}"),
            Ok(ElectionEvent::Demoted { epoch }) => println!("{MARK}demoted {epoch}"),
            Ok(ElectionEvent::LeaderChanged { .. }) | Err(_) => {}
        }
        if last_act.elapsed() >= Duration::from_millis(5) {
            if let Ok(epoch) = handle.confirm() {
                println!("{MARK}acting {epoch}");
                last_act = Instant::now();
            }
        }
    }
}

/// A line from a child: (child number, pid, what, epoch).
type Line = (usize, u32, String, u64);

struct Candidates {
    venue: Venue,
    children: Vec<Option<Child>>,
    lines: mpsc::Receiver<Line>,
    send: mpsc::Sender<Line>,
}

impl Candidates {
    fn new(venue: Venue) -> Candidates {
        let (send, lines) = mpsc::channel();
        Candidates {
            venue,
            children: Vec::new(),
            lines,
            send,
        }
    }

    fn spawn(&mut self) -> usize {
        let index = self.children.len();
        let mut child = spawn_child(&self.venue.address());
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let send = self.send.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Some(at) = line.find(MARK) else { continue };
                let mut words = line[at + MARK.len()..].split(' ');
                if let (Some(what), Some(Ok(epoch))) =
                    (words.next(), words.next().map(str::parse::<u64>))
                {
                    if send.send((index, pid, what.to_owned(), epoch)).is_err() {
                        return;
                    }
                }
            }
        });
        self.children.push(Some(child));
        index
    }

    fn pid(&self, index: usize) -> u32 {
        self.children[index].as_ref().unwrap().id()
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The next `elected` line, passing over the others (returned too).
    fn next_elected(&self) -> (Line, Vec<Line>) {
        let deadline = Instant::now() + PATIENCE;
        let mut passed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                let tail = &passed[passed.len().saturating_sub(10)..];
                panic!("no election within {PATIENCE:?}; last lines {tail:?}")
            });
            if line.2 == "elected" {
                return (line, passed);
            }
            passed.push(line);
        }
    }
}

impl Drop for Candidates {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            if let Some(pid) = self.children[index].as_ref().map(Child::id) {
                // A stopped child must run again to die of SIGKILL promptly.
                signal("CONT", pid);
            }
            self.kill(index);
        }
    }
}

fn spawn_child(address: &str) -> Child {
    Command::new(env::current_exe().unwrap())
        .args([
            "--exact",
            "child_candidate",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, address)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

// ------------------------------------------------------- the two backends

/// Where an election is held in a test.
enum Venue {
    Dir(tempfile::TempDir),
    #[cfg(feature = "redis")]
    Redis(common::RedisServer),
}

impl Venue {
    /// A candidate in this election.
    fn candidate(&self, config: ElectionConfig) -> agentry::Result<LeaderElection> {
        match self {
            Venue::Dir(dir) => LeaderElection::new(dir.path(), config),
            #[cfg(feature = "redis")]
            Venue::Redis(server) => LeaderElection::redis(server.url(), config),
        }
    }

    /// The leader its heartbeat record names.
    fn leader(&self) -> Option<LeaderInfo> {
        self.candidate(fast_at(&self.address(), "observer"))
            .unwrap()
            .leader()
            .unwrap()
    }

    /// A shared memory handle the leaders fence.
    fn memory(&self) -> SharedMemory {
        match self {
            Venue::Dir(dir) => SharedMemory::open(dir.path().join("memory.snap")).unwrap(),
            #[cfg(feature = "redis")]
            Venue::Redis(server) => SharedMemory::redis(server.url()).unwrap(),
        }
    }

    /// What a child process is told: `dir:PATH` or `redis:URL`.
    fn address(&self) -> String {
        match self {
            Venue::Dir(dir) => format!("dir:{}", dir.path().display()),
            #[cfg(feature = "redis")]
            Venue::Redis(server) => format!("redis:{}", server.url()),
        }
    }

    /// A candidate at an [`address`](Self::address), in a child.
    fn candidate_at(address: &str, config: ElectionConfig) -> LeaderElection {
        match address.split_once(':') {
            Some(("dir", path)) => LeaderElection::new(Path::new(path), config).unwrap(),
            #[cfg(feature = "redis")]
            Some(("redis", url)) => LeaderElection::redis(url, config).unwrap(),
            _ => panic!("unknown election address {address:?}"),
        }
    }
}

/// The behaviour every backend must show. Each test calls `venue()`, which
/// the module invoking the suite defines.
macro_rules! election_suite {
    () => {
        #[test]
        fn only_one_candidate_acquires_even_within_one_process() {
            let venue = venue();
            // Nothing here waits for a lease to end: one that a loaded
            // machine cannot outlast between two steps.
            let a = venue.candidate(timed("a", HEARTBEAT, PATIENCE)).unwrap();
            let b = venue.candidate(timed("b", HEARTBEAT, PATIENCE)).unwrap();
            let first = a.try_acquire().unwrap().expect("free directory");
            assert!(a.try_acquire().unwrap().is_none(), "same candidate again");
            assert!(b.try_acquire().unwrap().is_none(), "another candidate");
            let info = venue.leader().unwrap();
            assert_eq!(info.instance_id, "a");
            assert_eq!(info.pid, std::process::id());
            assert_eq!(info.epoch, first.epoch());
            assert_eq!(first.info(), info);

            let epoch = first.epoch();
            drop(first);
            assert_eq!(venue.leader(), None);
            let second = b.try_acquire().unwrap().expect("released on drop");
            assert_eq!(second.epoch(), epoch + 1);
            second.resign().unwrap();
            assert_eq!(a.try_acquire().unwrap().unwrap().epoch(), epoch + 2);
        }

        #[test]
        fn the_epoch_survives_every_candidate() {
            let venue = venue();
            let mut last = 0;
            for round in 0..5 {
                let election = venue.candidate(fast(&format!("c{round}"))).unwrap();
                let leadership = election.try_acquire().unwrap().unwrap();
                assert!(leadership.epoch() > last);
                last = leadership.epoch();
            }
        }

        #[test]
        fn a_started_candidate_leads_and_renews() {
            let venue = venue();
            let handle = venue.candidate(fast("solo"))
                .unwrap()
                .start()
                .unwrap();
            assert!(handle.wait_until_leader(PATIENCE));
            let epoch = handle.epoch().unwrap();
            assert_eq!(
                handle.events().recv_timeout(PATIENCE).unwrap(),
                ElectionEvent::Elected { epoch }
            );
            let first = venue.leader().unwrap();
            thread::sleep(HEARTBEAT * 5);
            let later = venue.leader().unwrap();
            assert!(later.heartbeat > first.heartbeat, "heartbeats are renewed");
            assert_eq!(handle.confirm().unwrap(), epoch);
            assert_eq!(handle.leader().unwrap().instance_id, "solo");
            handle.resign().unwrap();
            assert!(!handle.is_leader());
            assert!(matches!(
                handle.confirm(),
                Err(Error::NotLeader { epoch: None, .. })
            ));
            assert!(!handle.wait_until_leader(Duration::from_millis(1)));
        }

        #[test]
        fn resigning_hands_over_to_a_follower() {
            let venue = venue();
            let first = venue.candidate(fast("first"))
                .unwrap()
                .start()
                .unwrap();
            assert!(first.wait_until_leader(PATIENCE));
            let epoch = first.epoch().unwrap();
            let second = venue.candidate(fast("second"))
                .unwrap()
                .start()
                .unwrap();
            // The follower sees the leader.
            let seen = wait_for(
                second.events(),
                |e| matches!(e, ElectionEvent::LeaderChanged { leader: Some(l) } if l.instance_id == "first"),
            );
            assert!(seen, "the follower announces the leader");
            assert!(!second.is_leader());

            first.resign().unwrap();
            assert!(second.wait_until_leader(PATIENCE));
            assert!(second.epoch().unwrap() > epoch);
            let events: Vec<_> = first.events().iter().collect();
            assert!(
                events.contains(&ElectionEvent::Demoted { epoch }),
                "{events:?}"
            );
            first.resign().unwrap();
        }

        #[test]
        fn a_leader_that_stops_renewing_is_deposed_and_refused() {
            let venue = venue();
            // A leader that holds the lock but never renews: a frozen process, as
            // far as the others can tell.
            let frozen = venue.candidate(fast("frozen")).unwrap();
            // The lease runs from the election on, whatever the backend.
            let started = Instant::now();
            let mut stale = frozen.try_acquire().unwrap().unwrap();
            let stale_memory = venue.memory();
            stale_memory.fence(stale.epoch()).unwrap();

            let follower = venue.candidate(fast("follower"))
                .unwrap()
                .start()
                .unwrap();
            assert!(follower.wait_until_leader(PATIENCE));
            assert!(
                started.elapsed() >= LEASE,
                "took over before the lease expired"
            );
            let epoch = follower.epoch().unwrap();
            assert!(epoch > stale.epoch());

            venue.memory().fence(epoch).unwrap();
            // The file store refuses the deposed leader's snapshot, the Redis store
            // the write itself.
            let late = stale_memory
                .put("late", &1)
                .and_then(|_| stale_memory.persist());
            assert!(
                matches!(late, Err(Error::NotLeader { current: Some(c), .. }) if c == epoch),
                "{late:?}"
            );

            let refused = Error::NotLeader {
                epoch: Some(stale.epoch()),
                current: Some(epoch),
                leader: None,
            }
            .to_string();
            assert_eq!(stale.confirm().unwrap_err().to_string(), refused);
            assert_eq!(stale.renew().unwrap_err().to_string(), refused);
            // Releasing the deposed guard leaves the new leader's record alone, and
            // the new leader picks up the lock.
            drop(stale);
            assert_eq!(
                venue.leader().unwrap().epoch,
                epoch
            );
            thread::sleep(HEARTBEAT * 3);
            assert_eq!(follower.confirm().unwrap(), epoch);
        }

        #[test]
        fn processes_elect_one_leader_and_replace_it_after_kill_9() {
            let mut candidates = Candidates::new(venue());
            for _ in 0..3 {
                candidates.spawn();
            }
            let mut epochs = HashSet::new();
            let mut last_epoch = 0;
            let rounds = 20;
            for round in 0..rounds {
                let ((leader, pid, _, epoch), passed) = candidates.next_elected();
                assert!(
                    epoch > last_epoch,
                    "round {round}: epoch {epoch} after {last_epoch}"
                );
                assert!(epochs.insert(epoch), "epoch {epoch} elected twice");
                // Nothing acted under another epoch since the previous leader died.
                // The new leader may act before its `elected` line: its
                // handle confirms as soon as the election is won, and the
                // event reaches the child's loop a moment later.
                for (from, _, what, e) in &passed {
                    assert!(
                        what != "acting" || *e == last_epoch || (*e == epoch && *from == leader),
                        "round {round}: child {from} {what} {e} while {epoch} was next"
                    );
                }
                assert_eq!(pid, candidates.pid(leader));
                last_epoch = epoch;
                // Let the leader act a little, so a second leader would show.
                let until = Instant::now() + Duration::from_millis(30);
                while let Ok(line) = candidates
                    .lines
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    assert!(
                        line.2 == "acting" && line.0 == leader && line.3 == epoch,
                        "round {round}: {line:?} while {leader} leads under {epoch}"
                    );
                }
                candidates.kill(leader);
                candidates.spawn();
            }
        }

        #[test]
        fn a_frozen_leader_is_deposed_and_steps_down_when_it_runs_again() {
            let mut candidates = Candidates::new(venue());
            let first = candidates.spawn();
            let ((leader, _, _, epoch), _) = candidates.next_elected();
            assert_eq!(leader, first);
            let follower = candidates.spawn();
            // Let the follower watch the leader's heartbeat before the freeze.
            thread::sleep(LEASE);

            signal("STOP", candidates.pid(leader));
            let stopped = Instant::now();
            let ((new_leader, _, _, new_epoch), _) = candidates.next_elected();
            let took = stopped.elapsed();
            assert_eq!(new_leader, follower);
            assert!(new_epoch > epoch);
            // The lease runs from the last heartbeat seen, at most one heartbeat
            // interval before the freeze.
            assert!(
                took >= LEASE - HEARTBEAT,
                "took over after {took:?}, before the lease"
            );

            signal("CONT", candidates.pid(leader));
            let deadline = Instant::now() + PATIENCE;
            let mut demoted = false;
            let mut settle = None;
            loop {
                let until = settle.unwrap_or(deadline);
                let Ok((from, _, what, e)) = candidates
                    .lines
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                else {
                    break;
                };
                if from == leader {
                    match what.as_str() {
                        "demoted" => {
                            assert_eq!(e, epoch);
                            demoted = true;
                            // Watch a while longer for any further action.
                            settle = Some(Instant::now() + LEASE * 3);
                        }
                        // Lines written before the freeze may still be in the pipe,
                        // but nothing after the demotion.
                        "acting" if !demoted && e == epoch => {}
                        _ => panic!("the deposed leader said {what} {e}"),
                    }
                } else {
                    assert_eq!((what.as_str(), e), ("acting", new_epoch));
                }
            }
            assert!(demoted, "the deposed leader never reported Demoted");
        }
    };
}

mod on_files {
    use super::*;

    fn venue() -> Venue {
        Venue::Dir(tempfile::tempdir().unwrap())
    }

    election_suite!();
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;

    // The suite's clock, slower on Redis (these shadow the glob import).
    const HEARTBEAT: Duration = REDIS_HEARTBEAT;
    const LEASE: Duration = REDIS_LEASE;

    fn fast(name: &str) -> ElectionConfig {
        timed(name, HEARTBEAT, LEASE)
    }

    fn venue() -> Venue {
        Venue::Redis(common::RedisServer::start())
    }

    election_suite!();

    // What only a remote election can show.

    #[test]
    fn a_leader_cut_off_from_redis_steps_down_and_leads_again_under_a_greater_epoch() {
        let server = common::RedisServer::start();
        let handle = LeaderElection::redis(server.url(), fast("a"))
            .unwrap()
            .start()
            .unwrap();
        assert!(handle.wait_until_leader(PATIENCE));
        let epoch = handle.epoch().unwrap();
        // A frozen server looks like a network partition: every command
        // times out.
        signal("STOP", server.pid());
        let demoted = wait_for(handle.events(), |e| *e == ElectionEvent::Demoted { epoch });
        assert!(!handle.is_leader());
        assert!(matches!(
            handle.confirm(),
            Err(Error::NotLeader { epoch: None, .. })
        ));
        signal("CONT", server.pid());
        assert!(demoted, "the cut-off leader never stepped down");
        // Its lease ran out on the server meanwhile: the next election is new.
        assert!(handle.wait_until_leader(PATIENCE));
        assert!(handle.epoch().unwrap() > epoch);
    }

    #[test]
    fn the_epoch_survives_a_redis_restart() {
        let mut server = common::RedisServer::start();
        let a = LeaderElection::redis(server.url(), fast("a")).unwrap();
        let first = a.try_acquire().unwrap().unwrap().epoch();
        server.restart();
        let b = LeaderElection::redis(server.url(), fast("b")).unwrap();
        let second = b.try_acquire().unwrap().unwrap();
        assert!(second.epoch() > first, "an epoch was handed out twice");
    }

    #[test]
    fn an_unreachable_server_is_a_backend_error() {
        let url = common::RedisServer::start().url();
        let quick = agentry::RedisConfig::new(url).timeout(Duration::from_millis(200));
        assert!(matches!(
            LeaderElection::redis(quick, fast("a")),
            Err(Error::Backend { .. })
        ));
    }
}
