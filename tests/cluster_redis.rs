//! Orchestrators as nodes of one cluster on Redis (feature `redis`): a task
//! submitted on one node runs on any, results are read from any, strict
//! priority across the cluster, retention of results, configuration checks,
//! a Redis restart mid-run, kill -9 of a node process mid-work with every
//! accepted task finished (its tasks taken over after the visibility
//! timeout), and the nodes' election: one leader, a handover on shutdown,
//! and a SIGSTOPped leader node replaced under a greater epoch, stepping
//! down when resumed; a node resumed after its tasks were taken over not
//! running them again; reclaiming behind many live entries; consumer groups
//! made again; nodes serving different roles; the elected leader putting a
//! dead node's tasks back; cancel across nodes; dependencies across nodes.
//! And the review's findings: eviction in finish order, a cancel on a node
//! whose task was taken over, results stored while the groups are gone, a
//! clean shutdown keeping running tasks, leaders judging nodes by their own
//! timeouts, undecodable entries, dead nodes holding over 100,000 entries,
//! ids after a flush, distinct default node names, and entries read with
//! one that cannot be taken in hand.
//! Multi-process tests re-execute this binary as nodes.
#![cfg(feature = "redis")]

mod common;

use std::collections::{HashMap, HashSet};
use std::env;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AutoscalePolicy, ElectionConfig, Error, LeaderElection, LeaderInfo, Orchestrator,
    OrchestratorBuilder, Output, Priority, RedisConfig, Role, Task, TaskError, TaskStatus,
};
use common::RedisServer;

/// Set in a child: the Redis URL of the cluster it joins.
const CHILD: &str = "AGENTRY_REDIS_NODE_CHILD";
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Generous bound for anything that should take well under a second.
const PATIENCE: Duration = Duration::from_secs(60);
const VISIBILITY: Duration = Duration::from_millis(500);

/// Set in a child: the Redis URL of the cluster it joins as a candidate.
const CANDIDATE: &str = "AGENTRY_REDIS_CANDIDATE_CHILD";
/// Starts every line a candidate child reports.
const MARK: &str = "@node ";

/// A fast election, with a lease long enough for a busy two-core machine.
fn election(name: &str) -> ElectionConfig {
    ElectionConfig::new(name)
        .heartbeat_interval(Duration::from_millis(50))
        .lease_timeout(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(10))
}

/// A node whose agents answer with the node's name after `work`.
fn node(url: &str, name: &str, agents: usize, work: Duration) -> Orchestrator {
    node_builder(url, name, agents, work).build().unwrap()
}

fn node_builder(url: &str, name: &str, agents: usize, work: Duration) -> OrchestratorBuilder {
    let answer = name.to_owned();
    Orchestrator::builder()
        .agents(Role::Researcher, agents, move || {
            let answer = answer.clone();
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                thread::sleep(work);
                Ok(Output::encode(&answer)?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url)
        .node(name)
        .visibility_timeout(VISIBILITY)
}

fn job() -> Task {
    Task::new("job").with_role(Role::Researcher)
}

#[test]
fn tasks_submitted_on_one_node_run_on_every_node_and_results_are_read_anywhere() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 2, Duration::from_millis(5));
    let b = node(&server.url(), "b", 2, Duration::from_millis(5));
    let ids = a.submit_batch((0..200).map(|_| job())).unwrap();
    let mut ran_on = HashSet::new();
    for id in &ids {
        let result = b.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
        ran_on.insert(result.output::<String>().unwrap());
        assert_eq!(a.result(*id).unwrap().id(), *id);
    }
    assert_eq!(ran_on, HashSet::from(["a".to_owned(), "b".to_owned()]));
    let ids: HashSet<_> = ids.into_iter().collect();
    assert_eq!(ids.len(), 200, "cluster-wide ids are unique");
    let nodes = a.cluster_nodes().unwrap();
    let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(nodes.iter().all(|n| n.agents == 2));
    assert_eq!(a.cluster_queued().unwrap().total(), 0);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn queued_counts_the_tasks_no_node_pulled_while_finished_ones_are_deleted() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1, Duration::from_millis(100));
    let ids = a.submit_batch((0..10).map(|_| job())).unwrap();
    // Finished tasks' entries are deleted from the stream, which can leave
    // Redis unable to tell the group's lag: the count must still hold.
    a.wait(ids[0], PATIENCE).unwrap();
    let queued = a.cluster_queued().unwrap().total();
    assert!((1..=9).contains(&queued), "{queued} queued");
    for id in &ids {
        a.wait(*id, PATIENCE).unwrap();
    }
    assert_eq!(a.cluster_queued().unwrap().total(), 0);
    a.shutdown().unwrap();
}

#[test]
fn a_redis_restart_mid_run_loses_no_accepted_task() {
    let mut server = RedisServer::start();
    let a = node(&server.url(), "a", 2, Duration::from_millis(5));
    let b = node(&server.url(), "b", 2, Duration::from_millis(5));
    let ids = a.submit_batch((0..200).map(|_| job())).unwrap();
    for id in &ids[..20] {
        b.wait(*id, PATIENCE).unwrap();
    }
    // SIGKILL and start again: the append-only file (fsynced on every
    // write) brings back the streams, the pending entries and the results.
    server.restart();
    for id in &ids {
        let result = b.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    }
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn critical_tasks_run_before_low_ones_across_the_cluster() {
    let server = RedisServer::start();
    let started = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&started);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let log = Arc::clone(&log);
            move |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                log.lock().unwrap().push(task.priority());
                Ok(Output::empty())
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(server.url())
        .build()
        .unwrap();
    let low = (0..30).map(|_| job().with_priority(Priority::Low));
    let critical = (0..30).map(|_| job().with_priority(Priority::Critical));
    let ids = orchestrator.submit_batch(low.chain(critical)).unwrap();
    for id in ids {
        orchestrator.wait(id, PATIENCE).unwrap();
    }
    let order = started.lock().unwrap().clone();
    let last_critical = order
        .iter()
        .rposition(|p| *p == Priority::Critical)
        .unwrap();
    let lows_before = order[..last_critical]
        .iter()
        .filter(|p| **p == Priority::Low)
        .count();
    // At most the tasks the node held before the batch arrived (two per
    // agent) can come first.
    assert!(
        lows_before <= 2,
        "{lows_before} low tasks ran before a critical one: {order:?}"
    );
    orchestrator.shutdown().unwrap();
}

#[test]
fn results_past_the_retention_are_evicted_oldest_first() {
    let server = RedisServer::start();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(RedisConfig::new(server.url()).namespace("retained"))
        .result_retention(5)
        .build()
        .unwrap();
    let ids = orchestrator.submit_batch((0..20).map(|_| job())).unwrap();
    for id in &ids {
        orchestrator.wait(*id, PATIENCE).unwrap();
    }
    // A second node sees only what Redis keeps.
    let reader = Orchestrator::builder()
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(RedisConfig::new(server.url()).namespace("retained"))
        .node("reader")
        .build()
        .unwrap();
    let kept: Vec<_> = ids
        .iter()
        .filter(|id| reader.result(**id).is_some())
        .collect();
    assert_eq!(kept, ids[15..].iter().collect::<Vec<_>>());
    orchestrator.shutdown().unwrap();
    reader.shutdown().unwrap();
}

#[test]
fn bad_cluster_configurations_are_refused() {
    let worker =
        || |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) };
    let base = || Orchestrator::builder().agents(Role::Researcher, 1, worker);
    let dir = tempfile::tempdir().unwrap();
    for (what, built) in [
        ("node without redis", base().node("a").build()),
        (
            "redis with a state directory",
            base()
                .redis("redis://127.0.0.1:1/")
                .state_dir(dir.path())
                .build(),
        ),
        (
            "empty node name",
            base().redis("redis://127.0.0.1:1/").node("").build(),
        ),
        (
            "tiny visibility timeout",
            base()
                .redis("redis://127.0.0.1:1/")
                .visibility_timeout(Duration::from_millis(1))
                .build(),
        ),
    ] {
        assert!(
            matches!(built, Err(Error::InvalidConfig(_))),
            "{what}: {built:?}"
        );
    }
    let unreachable = base()
        .redis(RedisConfig::new("redis://127.0.0.1:1/").timeout(Duration::from_millis(100)))
        .build();
    assert!(
        matches!(unreachable, Err(Error::Backend { .. })),
        "{unreachable:?}"
    );
    let server = RedisServer::start();
    let orchestrator = base().redis(server.url()).build().unwrap();
    let dependent = job().after(agentry::TaskId::new(1));
    assert!(matches!(
        orchestrator.submit(dependent),
        Err(Error::NotFound { .. })
    ));
    orchestrator.shutdown().unwrap();
}

#[test]
fn nodes_given_an_election_elect_one_leader_and_hand_over_on_shutdown() {
    let server = RedisServer::start();
    let url = server.url();
    let mut nodes: Vec<Orchestrator> = (0..3)
        .map(|n| {
            let name = format!("n{n}");
            node_builder(&url, &name, 1, Duration::ZERO)
                .election(election(&name))
                .build()
                .unwrap()
        })
        .collect();
    let leader = wait_for_leader(&url, None);
    let leading = |nodes: &[Orchestrator]| nodes.iter().filter(|n| n.is_leader()).count();
    let deadline = Instant::now() + PATIENCE;
    while leading(&nodes) != 1 {
        assert!(Instant::now() < deadline, "never exactly one leader");
        thread::sleep(Duration::from_millis(5));
    }
    let index: usize = leader.instance_id[1..].parse().unwrap();
    assert!(nodes[index].is_leader());
    nodes.remove(index).shutdown().unwrap();
    let next = wait_for_leader(&url, Some(leader.epoch));
    assert_ne!(next.instance_id, leader.instance_id);
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// The leader the cluster's election names, once there is one with an
/// epoch above `after`.
fn wait_for_leader(url: &str, after: Option<u64>) -> LeaderInfo {
    let observer = LeaderElection::redis(url, election("observer")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(info) = observer.leader().unwrap() {
            if after.is_none_or(|e| info.epoch > e) {
                return info;
            }
        }
        assert!(Instant::now() < deadline, "no new leader");
        thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ multi process

/// A candidate child's body: a node with an election, reporting on stdout
/// when it starts and stops leading.
#[test]
fn child_candidate_node() {
    let Ok(url) = env::var(CANDIDATE) else {
        return;
    };
    let name = format!("pid-{}", std::process::id());
    let orchestrator = node_builder(&url, &name, 1, Duration::ZERO)
        .election(election(&name))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut leading = false;
    while started.elapsed() < CHILD_LIFETIME {
        if orchestrator.is_leader() != leading {
            leading = !leading;
            println!("{MARK}{}", if leading { "leading" } else { "following" });
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Child processes, resumed and killed on drop, even when a test fails.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // A stopped child must run again to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn a_frozen_leader_node_is_replaced_under_a_greater_epoch_and_steps_down() {
    let server = RedisServer::start();
    let url = server.url();
    let (lines_tx, lines) = mpsc::channel::<(u32, String)>();
    let _children = Children(
        (0..3)
            .map(|_| {
                let mut child = Command::new(env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "child_candidate_node",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CANDIDATE, &url)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let (pid, stdout) = (child.id(), child.stdout.take().unwrap());
                let lines_tx = lines_tx.clone();
                thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if let Some(at) = line.find(MARK) {
                            let _ = lines_tx.send((pid, line[at + MARK.len()..].to_owned()));
                        }
                    }
                });
                child
            })
            .collect(),
    );
    let first = wait_for_leader(&url, None);
    // Freeze it only once it knows it leads, so that stepping down shows.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (pid, what) = lines.recv_timeout(left).expect("the leader never said so");
        if pid == first.pid && what == "leading" {
            break;
        }
    }
    signal("STOP", first.pid);
    let second = wait_for_leader(&url, Some(first.epoch));
    assert_ne!(second.pid, first.pid);
    signal("CONT", first.pid);
    let deadline = Instant::now() + PATIENCE;
    let mut stepped_down = false;
    while !stepped_down {
        let left = deadline.saturating_duration_since(Instant::now());
        let (pid, what) = lines
            .recv_timeout(left)
            .expect("the resumed leader never stepped down");
        stepped_down = pid == first.pid && what == "following";
    }
}

/// The child's body: a node with two agents, until killed. Each task takes
/// `CHILD_WORK` milliseconds (20 unless set).
#[test]
fn child_node() {
    let Ok(url) = env::var(CHILD) else {
        return;
    };
    let work = env::var(CHILD_WORK).map_or(20, |ms| ms.parse().unwrap());
    let name = format!("child-{}", std::process::id());
    let orchestrator = match env::var(CHILD_SPEC) {
        Err(_) => node(&url, &name, 2, Duration::from_millis(work)),
        // `role` or `role+capability`: a node of that one spec.
        Ok(spec) => {
            let mut parts = spec.split('+');
            let role = Role::Custom(parts.next().unwrap().to_owned());
            let spec = parts.fold(
                agentry::AgentSpec::new(role).count(2),
                |spec, capability| spec.capability(capability),
            );
            let answer = name.clone();
            Orchestrator::builder()
                .agents_with(spec, move || {
                    let answer = answer.clone();
                    move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                        Ok(Output::encode(&answer)?)
                    }
                })
                .autoscale(AutoscalePolicy::disabled())
                .redis(url.as_str())
                .node(name.as_str())
                .visibility_timeout(VISIBILITY)
                .build()
                .unwrap()
        }
    };
    thread::sleep(CHILD_LIFETIME);
    drop(orchestrator);
}

/// Set in a child: the one spec its node serves (`role` or
/// `role+capability`), instead of two researchers.
const CHILD_SPEC: &str = "AGENTRY_REDIS_CHILD_SPEC";

fn spawn_child_serving(url: &str, spec: &str) -> Child {
    Command::new(env::current_exe().unwrap())
        .args(["--exact", "child_node", "--nocapture", "--test-threads=1"])
        .env(CHILD, url)
        .env(CHILD_SPEC, spec)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn each_node_pulls_only_the_roles_and_capabilities_it_serves() {
    let server = RedisServer::start();
    let url = server.url();
    let children = Children(vec![
        spawn_child_serving(&url, "reader"),
        spawn_child_serving(&url, "parser+pdf"),
    ]);
    let reader = format!("child-{}", children.0[0].id());
    let pdf_parser = format!("child-{}", children.0[1].id());
    // The submitting node serves `parser` without `pdf`, and `checker`.
    let answer = |name: &'static str| {
        move || {
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                Ok(Output::encode(name)?)
            }
        }
    };
    let role = |name: &str| Role::Custom(name.to_owned());
    let parent = Orchestrator::builder()
        .agents(role("parser"), 1, answer("parent"))
        .agents(role("checker"), 1, answer("parent"))
        .autoscale(AutoscalePolicy::disabled())
        .redis(url.as_str())
        .node("parent")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    wait_until("both child nodes joined", || {
        parent.cluster_nodes().unwrap().len() == 3
    });
    let task = |r: &str| Task::new("job").with_role(role(r));
    let reads = parent
        .submit_batch((0..20).map(|_| task("reader")))
        .unwrap();
    let pdfs = parent
        .submit_batch((0..20).map(|_| task("parser").requires("pdf")))
        .unwrap();
    let checks = parent
        .submit_batch((0..5).map(|_| task("checker")))
        .unwrap();
    let expect = |ids: &[agentry::TaskId], on: &str| {
        for id in ids {
            let result = parent.wait(*id, PATIENCE).unwrap();
            assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
            assert_eq!(result.output::<String>().unwrap(), on, "{result:?}");
        }
    };
    expect(&reads, &reader);
    expect(&pdfs, &pdf_parser);
    expect(&checks, "parent");
    // Plain parser tasks may run on either parser node.
    for id in parent
        .submit_batch((0..10).map(|_| task("parser")))
        .unwrap()
    {
        let on = parent
            .wait(id, PATIENCE)
            .unwrap()
            .output::<String>()
            .unwrap();
        assert!(on == "parent" || on == pdf_parser, "{on}");
    }
    // No live node serves these.
    for refused in [
        task("planner"),
        task("reader").requires("pdf"),
        Task::new("anyone").requires("ocr"),
    ] {
        let submitted = parent.submit(refused);
        assert!(
            matches!(submitted, Err(Error::NoAgentForTask { .. })),
            "{submitted:?}"
        );
    }
    drop(children);
    parent.shutdown().unwrap();
}

/// Set in a child: how long its tasks take, in milliseconds.
const CHILD_WORK: &str = "AGENTRY_REDIS_CHILD_WORK_MS";

fn spawn_child(url: &str) -> Child {
    spawn_child_working(url, Duration::from_millis(20))
}

fn spawn_child_working(url: &str, work: Duration) -> Child {
    Command::new(env::current_exe().unwrap())
        .args(["--exact", "child_node", "--nocapture", "--test-threads=1"])
        .env(CHILD, url)
        .env(CHILD_WORK, work.as_millis().to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// A plain connection to the test's server, to look at and tamper with
/// the cluster's keys.
fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// The consumers holding pending entries of the normal-priority stream.
fn pending_by_consumer(url: &str) -> Vec<(String, usize)> {
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg("agentry:tasks:researcher:2")
        .arg("agentry")
        .query(&mut raw(url))
        .unwrap();
    match reply {
        redis::streams::StreamPendingReply::Data(data) => data
            .consumers
            .into_iter()
            .map(|c| (c.name, c.pending))
            .collect(),
        _ => Vec::new(),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Set in a child: the Redis URL of the cluster it joins as the frozen node.
const FROZEN: &str = "AGENTRY_REDIS_FROZEN_CHILD";

/// The frozen node's body: node `frozen`, one agent, which counts each
/// task it starts under `probe:ran:<id>:frozen`. It submits tasks `first`
/// and `second` (ids 1 and 2 on a fresh server) and pulls both; `first`
/// waits for `probe:go`, then submits `last`.
#[test]
fn child_frozen_node() {
    let Ok(url) = env::var(FROZEN) else {
        return;
    };
    let probe = url.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let probe = probe.clone();
            move |task: &Task, ctx: &AgentContext| -> Result<Output, TaskError> {
                let mut probe = raw(&probe);
                let _: i64 = redis::cmd("INCR")
                    .arg(format!("probe:ran:{}:frozen", task.id().get()))
                    .query(&mut probe)
                    .unwrap();
                if task.kind() == "first" {
                    while !redis::cmd("EXISTS")
                        .arg("probe:go")
                        .query::<bool>(&mut probe)
                        .unwrap()
                    {
                        thread::sleep(Duration::from_millis(5));
                    }
                    ctx.submit(Task::new("last").with_role(Role::Researcher))?;
                }
                Ok(Output::encode("frozen")?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url.as_str())
        .node("frozen")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    orchestrator
        .submit_batch(["first", "second"].map(|kind| Task::new(kind).with_role(Role::Researcher)))
        .unwrap();
    thread::sleep(CHILD_LIFETIME);
    drop(orchestrator);
}

/// The heartbeat node `name` last wrote, in ms since the Unix epoch.
fn heartbeat_of(url: &str, name: &str) -> u64 {
    let value: Option<String> = redis::cmd("HGET")
        .arg("agentry:nodes")
        .arg(name)
        .query(&mut raw(url))
        .unwrap();
    value.map_or(0, |v| v.split(' ').next().unwrap().parse().unwrap())
}

fn millis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_node_resumed_after_its_tasks_were_taken_over_does_not_run_them_again() {
    let server = RedisServer::start();
    let url = server.url();
    let children = Children(vec![
        Command::new(env::current_exe().unwrap())
            .args([
                "--exact",
                "child_frozen_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FROZEN, &url)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    ]);
    let ran = |id: u64, on: &str| -> Option<i64> {
        redis::cmd("GET")
            .arg(format!("probe:ran:{id}:{on}"))
            .query(&mut raw(&url))
            .unwrap()
    };
    // The frozen node holds both tasks and runs `first`.
    wait_until("the node started its first task", || {
        ran(1, "frozen").is_some()
    });
    wait_until("the node holds both tasks", || {
        pending_by_consumer(&url) == [("frozen".to_owned(), 2)]
    });
    let pid = children.0[0].id();
    signal("STOP", pid);
    // Another node takes both over after the visibility timeout.
    let taker = node(&url, "taker", 1, Duration::ZERO);
    for id in [1, 2] {
        let result = taker.wait(agentry::TaskId::new(id), PATIENCE).unwrap();
        assert_eq!(result.output::<String>().unwrap(), "taker");
        assert_eq!(result.attempts(), 2, "{result:?}");
    }
    taker.shutdown().unwrap();
    let resumed = millis_now();
    signal("CONT", pid);
    // Two heartbeats after the resumption: its first refresh since is over.
    wait_until("a refresh after the resumption", || {
        heartbeat_of(&url, "frozen") > resumed
    });
    let first = heartbeat_of(&url, "frozen");
    wait_until("a second refresh", || heartbeat_of(&url, "frozen") > first);
    let _: () = redis::cmd("SET")
        .arg("probe:go")
        .arg(1)
        .query(&mut raw(&url))
        .unwrap();
    // `last` queues behind whatever the node still held: once it ran,
    // `second` would have run before it.
    wait_until("the resumed node ran its next task", || {
        ran(3, "frozen").is_some()
    });
    assert_eq!(
        ran(2, "frozen"),
        None,
        "the resumed node ran a task taken over"
    );
    drop(children);
}

#[test]
fn live_entries_at_the_head_do_not_hide_a_dead_node_s_entries() {
    let server = RedisServer::start();
    let url = server.url();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = Arc::clone(&release);
    // Twelve agents that wait for the release: 24 live entries pending at
    // the head, more than one XAUTOCLAIM call scans for a small count.
    let busy = Orchestrator::builder()
        .agents(Role::Researcher, 12, move || {
            let held = Arc::clone(&held);
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                while !held.load(std::sync::atomic::Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(Output::encode("busy")?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url.as_str())
        .node("busy")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    let live = busy.submit_batch((0..24).map(|_| job())).unwrap();
    wait_until("the busy node holds 24 tasks", || {
        pending_by_consumer(&url) == [("busy".to_owned(), 24)]
    });
    let mut children = Children(vec![spawn_child_working(&url, CHILD_LIFETIME)]);
    let dead_name = format!("child-{}", children.0[0].id());
    let behind = busy.submit_batch((0..2).map(|_| job())).unwrap();
    wait_until("the child holds the two tasks behind", || {
        pending_by_consumer(&url).contains(&(dead_name.clone(), 2))
    });
    let mut dead = children.0.remove(0);
    dead.kill().unwrap();
    dead.wait().unwrap();
    let taker = node(&url, "taker", 1, Duration::ZERO);
    for id in &behind {
        let result = taker.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.output::<String>().unwrap(), "taker", "{result:?}");
    }
    release.store(true, std::sync::atomic::Ordering::Release);
    for id in &live {
        busy.wait(*id, PATIENCE).unwrap();
    }
    busy.shutdown().unwrap();
    taker.shutdown().unwrap();
}

#[test]
fn the_elected_leader_puts_a_dead_node_s_tasks_back_without_waiting_for_the_visibility_timeout() {
    let server = RedisServer::start();
    let url = server.url();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = Arc::clone(&release);
    // Long enough that no node reclaims by the visibility timeout first:
    // the leader declares a node dead after a quarter of it.
    let visibility = Duration::from_secs(8);
    let leader = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let held = Arc::clone(&held);
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                while !held.load(std::sync::atomic::Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(Output::encode("leader")?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url.as_str())
        .node("leader")
        .visibility_timeout(visibility)
        .election(election("leader"))
        .build()
        .unwrap();
    wait_until("the node leads", || leader.is_leader());
    let mut children = Children(vec![spawn_child_working(&url, CHILD_LIFETIME)]);
    let victim = format!("child-{}", children.0[0].id());
    wait_until("the child joined", || {
        leader.cluster_nodes().unwrap().len() == 2
    });
    // The leader holds two (its agent waits), the child four.
    let ids = leader.submit_batch((0..6).map(|_| job())).unwrap();
    wait_until("the child holds four tasks", || {
        pending_by_consumer(&url).contains(&(victim.clone(), 4))
    });
    let mut dead = children.0.remove(0);
    dead.kill().unwrap();
    dead.wait().unwrap();
    assert_eq!(await_dead(&leader, &[victim.as_str()])[&victim], 4);
    let names: Vec<String> = leader
        .cluster_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["leader"]);
    release.store(true, std::sync::atomic::Ordering::Release);
    let mut second_attempts = 0;
    for id in &ids {
        let result = leader.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
        assert_eq!(result.output::<String>().unwrap(), "leader");
        if result.attempts() == 2 {
            second_attempts += 1;
        }
    }
    assert_eq!(second_attempts, 4);
    leader.shutdown().unwrap();
}

#[test]
fn any_node_cancels_a_queued_task_or_one_another_node_holds_but_not_a_started_one() {
    let server = RedisServer::start();
    let url = server.url();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = Arc::clone(&release);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ran);
    // One agent that waits for the release: the holder runs one task and
    // holds the next; the rest stay queued in Redis.
    let holder = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let (held, log) = (Arc::clone(&held), Arc::clone(&log));
            move |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                log.lock().unwrap().push(task.id());
                while !held.load(std::sync::atomic::Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(Output::empty())
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url.as_str())
        .node("holder")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    // The other node serves another role: it pulls none of these.
    let other = Orchestrator::builder()
        .agents(Role::Validator, 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(url.as_str())
        .node("other")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    let ids = other.submit_batch((0..4).map(|_| job())).unwrap();
    wait_until("the holder runs the first task", || {
        ran.lock().unwrap().len() == 1
    });
    wait_until("the holder holds two tasks", || {
        pending_by_consumer(&url) == [("holder".to_owned(), 2)]
    });
    // The holder pulled the first two, in order, and runs one of them.
    let running = ran.lock().unwrap()[0];
    let in_hand = if running == ids[0] { ids[1] } else { ids[0] };
    let queued = ids[3];
    assert!(other.cancel(queued).unwrap(), "a task no node pulled");
    assert!(other.cancel(in_hand).unwrap(), "a task held, not started");
    assert!(!other.cancel(running).unwrap(), "a started task");
    assert!(matches!(
        other.cancel(agentry::TaskId::new(1_000)),
        Err(Error::NotFound { .. })
    ));
    release.store(true, std::sync::atomic::Ordering::Release);
    for id in &ids {
        let result = other.wait(*id, PATIENCE).unwrap();
        let expected = if *id == queued || *id == in_hand {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Succeeded
        };
        assert_eq!(result.status(), expected, "{result:?}");
    }
    let ran = ran.lock().unwrap().clone();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(!ran.contains(&queued) && !ran.contains(&in_hand), "{ran:?}");
    assert!(!other.cancel(running).unwrap(), "a finished task");
    holder.shutdown().unwrap();
    other.shutdown().unwrap();
}

#[test]
fn a_cancel_request_to_a_frozen_holder_is_honoured_by_the_node_that_takes_the_task_over() {
    let server = RedisServer::start();
    let url = server.url();
    // The caller serves another role and waits long for an answer.
    let caller = Orchestrator::builder()
        .agents(Role::Validator, 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(url.as_str())
        .node("caller")
        .visibility_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // The holder's two agents never finish: it holds all four tasks.
    let children = Children(vec![spawn_child_working(&url, CHILD_LIFETIME)]);
    let holder = format!("child-{}", children.0[0].id());
    wait_until("the holder joined", || {
        caller
            .cluster_nodes()
            .unwrap()
            .iter()
            .any(|n| n.name == holder)
    });
    let ids = caller.submit_batch((0..4).map(|_| job())).unwrap();
    wait_until("the holder holds the four tasks", || {
        pending_by_consumer(&url) == [(holder.clone(), 4)]
    });
    signal("STOP", children.0[0].id());
    let cancelled = ids[3];
    let cancelling = thread::scope(|scope| {
        let cancelling = scope.spawn(|| caller.cancel(cancelled));
        wait_until("the request is recorded", || {
            redis::cmd("HEXISTS")
                .arg("agentry:tasks:cancel-requests")
                .arg(cancelled.get())
                .query::<bool>(&mut raw(&url))
                .unwrap()
        });
        // Only now a node that can take the tasks over.
        let taker = node(&url, "taker", 1, Duration::ZERO);
        let answer = cancelling.join().unwrap();
        (answer, taker)
    });
    let (answer, taker) = cancelling;
    assert!(answer.unwrap(), "the task will not run");
    for id in &ids {
        let result = caller.wait(*id, PATIENCE).unwrap();
        if *id == cancelled {
            assert_eq!(result.status(), TaskStatus::Cancelled, "{result:?}");
        } else {
            assert_eq!(result.output::<String>().unwrap(), "taker", "{result:?}");
        }
    }
    drop(children);
    taker.shutdown().unwrap();
    caller.shutdown().unwrap();
}

#[test]
fn a_dependent_waits_in_redis_and_fails_when_its_dependency_is_cancelled_on_another_node() {
    let server = RedisServer::start();
    let url = server.url();
    // Nobody serves `later` yet: tasks of it stay queued in Redis.
    let submitter = Orchestrator::builder()
        .agents(Role::Validator, 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(url.as_str())
        .node("submitter")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    let worker = node(&url, "worker", 2, Duration::ZERO);
    let later = || Task::new("later").with_role(Role::Custom("later".into()));
    let spare = Orchestrator::builder()
        .agents(Role::Custom("later".into()), 1, || {
            |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
        })
        .redis(url.as_str())
        .node("spare")
        .visibility_timeout(VISIBILITY)
        .build()
        .unwrap();
    // Shut down once listed: its role stays registered as live for a
    // while, and its task waits in Redis.
    wait_until("the spare node wrote its heartbeat", || {
        submitter
            .cluster_nodes()
            .unwrap()
            .iter()
            .any(|n| n.name == "spare")
    });
    spare.shutdown().unwrap();
    let first = submitter.submit(later()).unwrap();
    let second = submitter.submit(job().after(first)).unwrap();
    let third = submitter.submit(job().after(second)).unwrap();
    let independent = submitter.submit(job()).unwrap();
    assert!(submitter.wait(independent, PATIENCE).unwrap().is_success());
    assert!(
        submitter.result(second).is_none(),
        "waits for its dependency"
    );
    // A waiting task is cancelled where it waits.
    let waiting = submitter.submit(job().after(first)).unwrap();
    assert!(submitter.cancel(waiting).unwrap());
    let result = submitter.wait(waiting, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Cancelled, "{result:?}");
    assert!(submitter.cancel(first).unwrap());
    let failed = submitter.wait(third, PATIENCE).unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed, "{failed:?}");
    let reason = failed.error().unwrap();
    assert!(reason.contains(&second.to_string()), "{reason}");
    assert!(reason.contains(&first.to_string()), "{reason}");
    assert!(reason.contains("was cancelled"), "{reason}");
    // A dependency that succeeded releases its dependent.
    let done = submitter.submit(job()).unwrap();
    let after = submitter
        .submit(job().after(done).after(independent))
        .unwrap();
    assert!(submitter.wait(after, PATIENCE).unwrap().is_success());
    submitter.shutdown().unwrap();
    worker.shutdown().unwrap();
}

#[test]
fn consumer_groups_destroyed_mid_run_are_made_again_and_every_task_finishes() {
    let server = RedisServer::start();
    let url = server.url();
    let a = node(&url, "a", 2, Duration::from_millis(5));
    let ids = a.submit_batch((0..100).map(|_| job())).unwrap();
    for id in &ids[..10] {
        a.wait(*id, PATIENCE).unwrap();
    }
    let mut connection = raw(&url);
    for rank in 0..4 {
        let _: i64 = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(format!("agentry:tasks:researcher:{rank}"))
            .arg("agentry")
            .query(&mut connection)
            .unwrap();
    }
    let more = a.submit_batch((0..10).map(|_| job())).unwrap();
    for id in ids.iter().chain(&more) {
        let result = a.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    }
    a.shutdown().unwrap();
}

#[test]
fn a_node_killed_mid_work_loses_no_accepted_task() {
    let server = RedisServer::start();
    let url = server.url();
    let mut children = Children((0..3).map(|_| spawn_child(&url)).collect());
    // The parent submits and waits through a node of its own, one agent.
    let parent = node(&url, "parent", 1, Duration::from_millis(20));
    let deadline = Instant::now() + PATIENCE;
    while parent.cluster_nodes().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "the child nodes never joined");
        thread::sleep(Duration::from_millis(10));
    }
    let ids = parent.submit_batch((0..400).map(|_| job())).unwrap();
    // Kill one child once the cluster is well into the work.
    for id in &ids[..40] {
        parent.wait(*id, PATIENCE).unwrap();
    }
    let victim = children.0.remove(0);
    let victim_name = format!("child-{}", victim.id());
    let mut victim = victim;
    victim.kill().unwrap();
    victim.wait().unwrap();

    let mut taken_over = 0;
    for id in &ids {
        let result = parent.wait(*id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
        if result.attempts() > 1 {
            taken_over += 1;
            assert_ne!(result.output::<String>().unwrap(), victim_name);
        }
    }
    assert!(
        taken_over > 0,
        "the killed node held no task: the test proved nothing"
    );
    drop(children);
    parent.shutdown().unwrap();
}

/// Node `a` (one agent, a 60 s visibility timeout) running a `long` task
/// held at its gate and holding a second task it has claimed but cannot
/// start; returns the node, the gate, and the two tasks.
fn running_one_holding_one(
    url: &str,
) -> (
    Orchestrator,
    Arc<std::sync::atomic::AtomicBool>,
    agentry::TaskId,
    agentry::TaskId,
) {
    let (a, release, started) = gated_node(url, "a", 1, Duration::from_secs(60), 100);
    let slow = a.submit(long()).unwrap();
    let held = a.submit(job()).unwrap();
    wait_until("the node runs one task and holds the other", || {
        started.lock().unwrap().contains(&slow) && pending_by_consumer(url) == [("a".to_owned(), 2)]
    });
    (a, release, slow, held)
}

/// A node of `agents` agents whose tasks of kind `long` wait for the
/// returned release; every task started is logged, in order.
fn gated_node(
    url: &str,
    name: &str,
    agents: usize,
    visibility: Duration,
    retention: usize,
) -> (
    Orchestrator,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Mutex<Vec<agentry::TaskId>>>,
) {
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::new(Mutex::new(Vec::new()));
    let (gate, log) = (Arc::clone(&release), Arc::clone(&started));
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, agents, move || {
            let (gate, log) = (Arc::clone(&gate), Arc::clone(&log));
            move |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                log.lock().unwrap().push(task.id());
                while task.kind() == "long" && !gate.load(std::sync::atomic::Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(Output::empty())
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(url)
        .node(name)
        .visibility_timeout(visibility)
        .result_retention(retention)
        .build()
        .unwrap();
    (orchestrator, release, started)
}

fn long() -> Task {
    Task::new("long").with_role(Role::Researcher)
}

#[test]
fn a_long_task_s_result_is_kept_past_the_retention_of_results_stored_before_it() {
    let server = RedisServer::start();
    let (a, release, started) = gated_node(&server.url(), "a", 2, VISIBILITY, 2);
    let slow = a.submit(long()).unwrap();
    wait_until("the long task starts", || {
        started.lock().unwrap().contains(&slow)
    });
    // Later ids, finished first: the retention counts in finish order.
    // One agent is free: they run and are stored in order.
    let quick = a.submit_batch((0..3).map(|_| job())).unwrap();
    a.wait(quick[2], PATIENCE).unwrap();
    release.store(true, std::sync::atomic::Ordering::Release);
    let result = a.wait(slow, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    let kept: Vec<bool> = quick.iter().map(|id| a.result(*id).is_some()).collect();
    assert_eq!(kept, [false, false, true], "the oldest stored are evicted");
    a.shutdown().unwrap();
}

#[test]
fn a_result_stored_while_the_groups_are_gone_still_settles_its_dependents() {
    let server = RedisServer::start();
    let url = server.url();
    // A long visibility timeout: no refresh re-creates the groups early.
    let (a, release, slow, filler) = running_one_holding_one(&url);
    // Its hands full, the pump sends no command that would find the groups
    // missing before the long task's result is stored.
    let mut connection = raw(&url);
    for rank in 0..4 {
        let _: i64 = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(format!("agentry:tasks:researcher:{rank}"))
            .arg("agentry")
            .query(&mut connection)
            .unwrap();
    }
    let dependent = a.submit(job().after(slow)).unwrap();
    release.store(true, std::sync::atomic::Ordering::Release);
    for id in [slow, filler, dependent] {
        let result = a.wait(id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    }
    a.shutdown().unwrap();
}

#[test]
fn a_cancel_on_a_node_whose_task_another_node_took_over_asks_the_new_holder() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, release, slow, held) = running_one_holding_one(&url);
    // Node `b` takes `held` over, as after `a` froze past the visibility
    // timeout; `a` has not refreshed since, and `b` has started it.
    let mut connection = raw(&url);
    let at: String = redis::cmd("HGET")
        .arg("agentry:tasks:index")
        .arg(held.get())
        .query(&mut connection)
        .unwrap();
    let (entry, stream) = at.split_once(' ').unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg("agentry")
        .arg("b")
        .arg(0)
        .arg(entry)
        .arg("JUSTID")
        .query(&mut connection)
        .unwrap();
    let answer = thread::spawn(move || {
        wait_until("the cancel request reaches b", || {
            redis::cmd("SISMEMBER")
                .arg("agentry:tasks:cancels:b")
                .arg(held.get())
                .query(&mut connection)
                .unwrap()
        });
        let _: () = redis::cmd("HSET")
            .arg("agentry:tasks:cancel-answers")
            .arg(held.get())
            .arg("started")
            .query(&mut connection)
            .unwrap();
    });
    assert!(!a.cancel(held).unwrap(), "b runs it: not cancelled");
    answer.join().unwrap();
    release.store(true, std::sync::atomic::Ordering::Release);
    a.wait(slow, PATIENCE).unwrap();
    a.shutdown().unwrap();
}

#[test]
fn a_node_shutting_down_keeps_its_running_task_its_own_until_it_ends() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, release, _) = gated_node(&url, "a", 1, VISIBILITY, 100);
    let slow = a.submit(long()).unwrap();
    wait_until("a holds the long task", || {
        pending_by_consumer(&url) == [("a".to_owned(), 1)]
    });
    let (b, release_b, on_b) = gated_node(&url, "b", 1, VISIBILITY, 100);
    release_b.store(true, std::sync::atomic::Ordering::Release);
    let began = millis_now();
    let stopping = thread::spawn(move || a.shutdown());
    // Twice the visibility timeout into the shutdown, `a` still beats.
    wait_until("a beats on while its task runs", || {
        heartbeat_of(&url, "a") > began + 2 * VISIBILITY.as_millis() as u64
    });
    release.store(true, std::sync::atomic::Ordering::Release);
    stopping.join().unwrap().unwrap();
    let result = b.wait(slow, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    assert!(!on_b.lock().unwrap().contains(&slow), "ran twice");
    b.shutdown().unwrap();
}

#[test]
fn a_leader_with_a_shorter_visibility_timeout_does_not_declare_a_live_node_dead() {
    let server = RedisServer::start();
    let url = server.url();
    let quick = || RedisConfig::new(url.as_str()).timeout(Duration::from_millis(100));
    // The leader would call a node dead after 200 ms of silence; the
    // worker beats every 667 ms and is dead only after 2.1 s of silence.
    let leader = node_builder(&url, "leader", 1, Duration::ZERO)
        .redis(quick())
        .visibility_timeout(Duration::from_millis(400))
        .election(election("leader"))
        .build()
        .unwrap();
    wait_until("the node leads", || leader.is_leader());
    let worker = node_builder(&url, "worker", 1, Duration::ZERO)
        .redis(quick())
        .visibility_timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    wait_until("the worker beats", || heartbeat_of(&url, "worker") > 0);
    let first = heartbeat_of(&url, "worker");
    wait_until("the worker beats three times more", || {
        heartbeat_of(&url, "worker") >= first + 2_000
    });
    let dead: Vec<_> = leader
        .events()
        .try_iter()
        .filter(|e| matches!(e, agentry::Event::NodeDead { .. }))
        .collect();
    assert!(dead.is_empty(), "{dead:?}");
    worker.shutdown().unwrap();
    leader.shutdown().unwrap();
}

#[test]
fn a_task_entry_that_does_not_decode_fails_its_task_and_its_dependents() {
    let server = RedisServer::start();
    let url = server.url();
    let a = node(&url, "a", 1, Duration::ZERO);
    let mut connection = raw(&url);
    // An entry only another version could read, added as a submit does.
    let id: u64 = redis::cmd("INCR")
        .arg("agentry:tasks:next-id")
        .query(&mut connection)
        .unwrap();
    let stream = "agentry:tasks:researcher:2";
    let entry: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("task")
        .arg(&[0xFF_u8; 3][..])
        .arg("id")
        .arg(id)
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("agentry:tasks:index")
        .arg(id)
        .arg(format!("{entry} {stream}"))
        .query(&mut connection)
        .unwrap();
    let bad = agentry::TaskId::new(id);
    let result = a.wait(bad, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Failed, "{result:?}");
    assert!(
        result.error().unwrap().contains("does not decode"),
        "{result:?}"
    );
    let dependent = a.submit(job().after(bad)).unwrap();
    let result = a.wait(dependent, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Failed, "{result:?}");
    a.shutdown().unwrap();
}

/// The normal-priority stream of lane `ghost`, which no node serves.
const GHOST_STREAM: &str = "agentry:tasks:ghost:2";

/// An elected leader node, and a connection to its server on which lane
/// `ghost` (no node serves it, so only the leader's reaping moves its
/// entries) and its consumer group exist.
fn leader_beside_a_ghost_lane(server: &RedisServer) -> (Orchestrator, redis::Connection) {
    let url = server.url();
    let leader = node_builder(&url, "leader", 1, Duration::ZERO)
        .election(election("leader"))
        .build()
        .unwrap();
    wait_until("the node leads", || leader.is_leader());
    let mut connection = raw(&url);
    let _: () = redis::cmd("HSET")
        .arg("agentry:tasks:lanes")
        .arg("ghost")
        .arg("not a lane any node serves")
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(GHOST_STREAM)
        .arg("agentry")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut connection)
        .unwrap();
    (leader, connection)
}

#[test]
fn the_leader_puts_back_every_task_of_a_dead_node_holding_more_than_100_000() {
    let server = RedisServer::start();
    let (leader, mut connection) = leader_beside_a_ghost_lane(&server);
    // 100,001 entries of the lane a silent node holds.
    let stream = GHOST_STREAM;
    let held = 100_001;
    let mut pipe = redis::pipe();
    for _ in 0..held {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("id")
            .arg(0)
            .ignore();
    }
    let _: () = pipe.query(&mut connection).unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("agentry")
        .arg("ghost")
        .arg("COUNT")
        .arg(held)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("agentry:nodes")
        .arg("ghost")
        .arg("1 1")
        .query(&mut connection)
        .unwrap();
    assert_eq!(await_dead(&leader, &["ghost"])["ghost"], held);
    // Put back over many calls and pump passes, each entry once.
    let length: usize = redis::cmd("XLEN")
        .arg(stream)
        .query(&mut connection)
        .unwrap();
    assert_eq!(length, held);
    assert!(ghost_consumers(&mut connection, stream).is_empty());
    await_no_dying_record(&mut connection);
    leader.shutdown().unwrap();
}

/// Waits until the leader has deleted every record of a node being
/// declared dead (it does once it has reported the node).
fn await_no_dying_record(connection: &mut redis::Connection) {
    wait_until("the dying records are deleted", || {
        let dying: usize = redis::cmd("HLEN")
            .arg("agentry:nodes:dying")
            .query(connection)
            .unwrap();
        dying == 0
    });
}

/// Waits for a `NodeDead` event about each of `nodes`; returns how many
/// tasks each held.
fn await_dead(leader: &Orchestrator, nodes: &[&str]) -> HashMap<String, usize> {
    let mut dead = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while dead.len() < nodes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = leader
            .events()
            .recv_timeout(left)
            .expect("no NodeDead event");
        if let agentry::Event::NodeDead { node, requeued } = event {
            if nodes.contains(&node.as_str()) {
                assert!(dead.insert(node, requeued).is_none(), "reported twice");
            }
        }
    }
    dead
}

#[test]
fn a_finished_record_whose_report_was_lost_is_reported_and_a_garbled_one_is_finished() {
    let server = RedisServer::start();
    let (leader, mut connection) = leader_beside_a_ghost_lane(&server);
    // "lost": all its tasks were put back, and the leader stopped before
    // reporting it. "garbled": a record no leader wrote.
    let _: () = redis::cmd("HSET")
        .arg("agentry:nodes:dying")
        .arg("lost")
        .arg("done 7")
        .arg("garbled")
        .arg("not a record")
        .query(&mut connection)
        .unwrap();
    let dead = await_dead(&leader, &["lost", "garbled"]);
    assert_eq!(dead["lost"], 7);
    assert_eq!(dead["garbled"], 0);
    await_no_dying_record(&mut connection);
    leader.shutdown().unwrap();
}

/// The consumers named `ghost` in the group of `stream`, with their
/// pending counts.
fn ghost_consumers(connection: &mut redis::Connection, stream: &str) -> Vec<usize> {
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg("agentry")
        .query(connection)
        .unwrap();
    reply
        .consumers
        .iter()
        .filter(|c| c.name == "ghost")
        .map(|c| c.pending)
        .collect()
}

#[test]
fn a_dead_node_is_finished_from_its_record_and_keeps_what_it_read_after_the_declaration() {
    let server = RedisServer::start();
    let (leader, mut connection) = leader_beside_a_ghost_lane(&server);
    let stream = GHOST_STREAM;
    let read_one = |connection: &mut redis::Connection, id: u64| -> String {
        let entry: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("id")
            .arg(id)
            .query(connection)
            .unwrap();
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("agentry")
            .arg("ghost")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query(connection)
            .unwrap();
        entry
    };
    let before = read_one(&mut connection, 900_001);
    // A node declared dead between its two reads, by a leader that stopped
    // before putting anything back: the record the next leader goes on from.
    thread::sleep(Duration::from_millis(20));
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut connection).unwrap();
    let declared = seconds * 1000 + micros / 1000;
    thread::sleep(Duration::from_millis(20));
    let after = read_one(&mut connection, 900_002);
    let _: () = redis::cmd("HSET")
        .arg("agentry:nodes:dying")
        .arg("ghost")
        .arg(format!("{declared} 0"))
        .query(&mut connection)
        .unwrap();

    assert_eq!(await_dead(&leader, &["ghost"])["ghost"], 1);
    // The entry read before the declaration is back for any node (a new
    // entry counting the takeover); the one read after it is still the
    // node's, so its consumer stays.
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    let ids: Vec<&str> = entries.ids.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&before.as_str()), "{ids:?}");
    assert_eq!(ids[0], after);
    let copy = &entries.ids[1];
    assert_eq!(copy.get::<u64>("id"), Some(900_001));
    assert_eq!(copy.get::<u32>("takeovers"), Some(1));
    assert_eq!(ghost_consumers(&mut connection, stream), vec![1]);
    await_no_dying_record(&mut connection);
    leader.shutdown().unwrap();
}

#[test]
fn after_a_flush_new_tasks_do_not_take_the_ids_of_tasks_still_running() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, release, started) = gated_node(&url, "a", 1, VISIBILITY, 100);
    a.submit_batch((0..4).map(|_| job())).unwrap();
    let slow = a.submit(long()).unwrap();
    wait_until("the long task starts", || {
        started.lock().unwrap().contains(&slow)
    });
    let _: () = redis::cmd("FLUSHDB").query(&mut raw(&url)).unwrap();
    wait_until("the id counter is raised past the running task", || {
        redis::cmd("GET")
            .arg("agentry:tasks:next-id")
            .query::<Option<u64>>(&mut raw(&url))
            .unwrap()
            .is_some_and(|last| last >= slow.get())
    });
    let fresh = a.submit(job()).unwrap();
    assert!(fresh > slow, "{fresh} after {slow}");
    release.store(true, std::sync::atomic::Ordering::Release);
    let result = a.wait(fresh, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    a.shutdown().unwrap();
}

#[test]
fn nodes_without_a_name_in_one_process_get_distinct_default_names() {
    let server = RedisServer::start();
    let url = server.url();
    let unnamed = || {
        Orchestrator::builder()
            .agents(Role::Researcher, 1, || {
                |_: &Task, _: &AgentContext| -> Result<Output, TaskError> { Ok(Output::empty()) }
            })
            .redis(url.as_str())
            .visibility_timeout(VISIBILITY)
            .build()
            .unwrap()
    };
    let (a, b) = (unnamed(), unnamed());
    wait_until("both nodes beat", || a.cluster_nodes().unwrap().len() == 2);
    let names: Vec<String> = a
        .cluster_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.contains(&format!("-pid-{}-", std::process::id()))),
        "{names:?}"
    );
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn an_entry_that_cannot_be_taken_in_hand_does_not_strand_those_read_with_it() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, release, _) = gated_node(&url, "a", 2, VISIBILITY, 100);
    // Both agents run a long task, two more are in hand: nothing is read.
    let held = a.submit_batch((0..4).map(|_| long())).unwrap();
    wait_until("the node holds four tasks", || {
        pending_by_consumer(&url) == [("a".to_owned(), 4)]
    });
    let [p, q] = a.submit_batch([job(), job()]).unwrap()[..] else {
        unreachable!()
    };
    // Take `p` and `q` out of the stream, to put them back below.
    let mut connection = raw(&url);
    let stream = "agentry:tasks:researcher:2";
    let mut records = Vec::new();
    for id in [p, q] {
        let at: String = redis::cmd("HGET")
            .arg("agentry:tasks:index")
            .arg(id.get())
            .query(&mut connection)
            .unwrap();
        let entry = at.split_once(' ').unwrap().0.to_owned();
        let found: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&entry)
            .arg(&entry)
            .query(&mut connection)
            .unwrap();
        records.push(found.ids[0].get::<Vec<u8>>("task").unwrap());
        let _: () = redis::cmd("XDEL")
            .arg(stream)
            .arg(&entry)
            .query(&mut connection)
            .unwrap();
    }
    // Two tasks in hand are cancelled: the node has room for two, and waits.
    let _: () = redis::cmd("SADD")
        .arg("agentry:tasks:cancels:a")
        .arg(held[2].get())
        .arg(held[3].get())
        .query(&mut connection)
        .unwrap();
    wait_until("the cancelled tasks are let go of", || {
        pending_by_consumer(&url) == [("a".to_owned(), 2)]
    });
    // At once, so that one read delivers both: `p` as put back by a leader
    // (taking it in hand looks up its result, which fails: the results key
    // has the wrong type), `q` behind it.
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("SET")
        .arg("agentry:results")
        .arg("not a hash")
        .ignore();
    for (id, record, requeued) in [(p, &records[0], true), (q, &records[1], false)] {
        let add = pipe.cmd("XADD");
        add.arg(stream)
            .arg("*")
            .arg("task")
            .arg(record)
            .arg("id")
            .arg(id.get());
        if requeued {
            add.arg("takeovers").arg(1);
        }
        add.ignore();
    }
    let _: () = pipe.query(&mut connection).unwrap();
    wait_until("the node read both entries", || {
        pending_by_consumer(&url) == [("a".to_owned(), 4)]
    });
    let _: () = redis::cmd("DEL")
        .arg("agentry:results")
        .query(&mut connection)
        .unwrap();
    release.store(true, std::sync::atomic::Ordering::Release);
    let result = a.wait(q, PATIENCE).unwrap();
    assert_eq!(result.status(), TaskStatus::Succeeded, "{result:?}");
    assert_eq!(result.attempts(), 1, "q was left to a takeover: {result:?}");
    a.wait(p, PATIENCE).unwrap();
    a.shutdown().unwrap();
}
