//! A cluster of orchestrator nodes on one Redis: this process submits 600
//! tasks through a node of its own, three node processes (four agents
//! each) pull them, critical first, and the results come back from Redis
//! whichever node ran them. The nodes elect a leader on Redis, which prints
//! the cluster's status, and each node greets the submitter's mailbox
//! through the broker, across processes. Kill any node with `kill -9` (each prints its pid):
//! its tasks are taken over by the others after the visibility timeout (2 s
//! here), and if it led, another node leads under a greater epoch.
//!
//! Run a server (`redis-server --appendonly yes`), then
//! `cargo run --features redis --example cluster_redis -- [redis://127.0.0.1:6379/]`.
//! On several hosts, run `... -- URL --node NAME --namespace NS` on each,
//! and submit from any of them.

use std::collections::BTreeMap;
use std::env;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AgentId, AutoscalePolicy, ElectionConfig, Orchestrator, OrchestratorBuilder,
    Output, Priority, RedisConfig, Role, SharedMemory, Task, TaskError,
};

const TASKS: usize = 600;

fn node(redis: &RedisConfig, name: &str, agents: usize) -> OrchestratorBuilder {
    let answer = name.to_owned();
    Orchestrator::builder()
        .agents(Role::Researcher, agents, move || {
            let answer = answer.clone();
            move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                thread::sleep(Duration::from_millis(100));
                Ok(Output::encode(&answer)?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(redis.clone())
        .node(name)
        .visibility_timeout(Duration::from_secs(2))
}

/// A node process: runs until the submitter says the work is done.
fn run_node(redis: &RedisConfig, name: &str) -> agentry::Result<()> {
    // The node processes elect a leader among themselves, on Redis.
    let orchestrator = node(redis, name, 4)
        .election(
            ElectionConfig::new(name)
                .heartbeat_interval(Duration::from_millis(200))
                .lease_timeout(Duration::from_secs(1))
                .retry_interval(Duration::from_millis(50)),
        )
        .build()?;
    let flags = SharedMemory::redis(redis.clone())?;
    eprintln!(
        "[{name}] pulling tasks as pid {pid}; stop it with: kill -9 {pid}",
        pid = std::process::id()
    );
    let mut last_report = Instant::now() - Duration::from_secs(1);
    let mut greeted = false;
    while !flags.contains_key("done") {
        // A message to another process's mailbox: the broker relays it
        // through Redis to the node its id belongs to.
        if let (false, Some(inbox)) = (greeted, flags.get::<u64>("inbox")?) {
            let me = AgentId::on_node(orchestrator.broker().node(), 0);
            let hello = format!("hello from {name}");
            orchestrator
                .broker()
                .send(me, AgentId::new(inbox.value), &hello)?;
            greeted = true;
        }
        if orchestrator.is_leader() && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let nodes: Vec<String> = orchestrator
                .cluster_nodes()?
                .into_iter()
                .map(|n| format!("{} ({} agents)", n.name, n.agents))
                .collect();
            let queued = orchestrator.cluster_queued()?.total();
            eprintln!(
                "[{name}, leader] nodes: {}; queued: {queued}",
                nodes.join(", ")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    orchestrator.shutdown()
}

fn main() -> agentry::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|at| args.get(at + 1).cloned())
    };
    let url = args
        .iter()
        .find(|a| a.starts_with("redis://"))
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    // A namespace per run, so an earlier run's tasks and results stay apart.
    let namespace =
        value("--namespace").unwrap_or_else(|| format!("example-{}", std::process::id()));
    let redis = RedisConfig::new(url.as_str()).namespace(namespace.as_str());
    if let Some(name) = value("--node") {
        return run_node(&redis, &name);
    }

    let mut nodes: Vec<Child> = (1..=3)
        .map(|n| {
            Command::new(env::current_exe()?)
                .args([url.as_str(), "--namespace", namespace.as_str()])
                .args(["--node", &format!("node-{n}")])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let submitter = node(&redis, "submitter", 1).build()?;
    let tasks = (0..TASKS).map(|i| {
        let priority = if i % 10 == 0 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        Task::new("job")
            .with_role(Role::Researcher)
            .with_priority(priority)
    });
    let ids = submitter.submit_batch(tasks)?;
    let inbox = submitter.mailbox()?;
    SharedMemory::redis(redis.clone())?.put("inbox", &inbox.id().get())?;
    let mut by_node = BTreeMap::new();
    let mut taken_over = 0;
    for id in ids {
        let result = submitter.wait(id, Duration::from_secs(120))?;
        *by_node.entry(result.output::<String>()?).or_insert(0) += 1;
        if result.attempts() > 1 {
            taken_over += 1;
        }
    }
    println!(
        "{TASKS} tasks finished; by node: {by_node:?}; taken over from a dead node: {taken_over}"
    );
    // A node killed early may never have said hello: wait a while, not forever.
    let greeted = Instant::now();
    for _ in 0..nodes.len() {
        let Ok(hello) =
            inbox.recv_timeout(Duration::from_secs(10).saturating_sub(greeted.elapsed()))
        else {
            break;
        };
        println!("{} (node {})", hello.body::<String>()?, hello.from().node());
    }
    SharedMemory::redis(redis)?.put("done", &true)?;
    for node in &mut nodes {
        node.wait()?;
    }
    submitter.shutdown()
}
