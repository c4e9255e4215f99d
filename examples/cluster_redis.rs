//! Three node processes sharing one Redis: each runs its own orchestrator
//! with four local agents over a shared memory on Redis, where agents claim
//! jobs with versioned writes; one node, elected on Redis, writes the
//! cluster's progress report, fenced by its epoch. Kill any node with
//! `kill -9` (each prints its pid): the others take over its claimed jobs
//! after their lease and finish, and if it led, another leads under a
//! greater epoch.
//!
//! Run a server (`redis-server --appendonly yes`), then
//! `cargo run --features redis --example cluster_redis -- [redis://127.0.0.1:6379/]`.
//! It starts the three nodes as child processes of its own; on several
//! hosts, run `... -- URL --node NAME` on each instead.

use std::env;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentry::{
    AgentContext, AutoscalePolicy, ElectionConfig, LeaderElection, Orchestrator, Output,
    RedisConfig, Role, SharedMemory, Task, TaskError, Version,
};

const JOBS: u32 = 200;
/// A claim older than this belongs to a dead node: another may take the job.
const CLAIM_LEASE: Duration = Duration::from_secs(2);

/// A job's record in the shared memory: who claimed it, when, and whether
/// it is done.
type Claim = (u32, u64, bool);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One agent's task: claim the first job nobody holds (a versioned `set`,
/// so two nodes never both win it; a claim whose node died is taken over
/// after its lease), do it, mark it done.
fn work(_task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
    let memory = ctx.memory();
    let me = std::process::id();
    for job in 1..=JOBS {
        let key = format!("job/{job}");
        let expected = match memory.get::<Claim>(&key)? {
            None => Version::NONE,
            Some(claim)
                if !claim.value.2 && now_ms() - claim.value.1 > CLAIM_LEASE.as_millis() as u64 =>
            {
                claim.version
            }
            Some(_) => continue,
        };
        let Ok(claimed) = memory.set(&key, &(me, now_ms(), false), expected) else {
            continue; // another agent got there first
        };
        thread::sleep(Duration::from_millis(50));
        if memory.set(&key, &(me, now_ms(), true), claimed).is_ok() {
            memory.increment("finished", 1)?;
        }
        return Ok(Output::encode(&job)?);
    }
    Ok(Output::encode(&0u32)?)
}

fn node(url: &str, name: &str) -> agentry::Result<()> {
    let pid = std::process::id();
    // Two namespaces: the work every node writes, and the report only the
    // leader writes, fenced (a fenced store refuses writers of older epochs).
    let work_memory = SharedMemory::redis(RedisConfig::new(url).namespace("example-work"))?;
    let report = SharedMemory::redis(RedisConfig::new(url).namespace("example-report"))?;
    let election = LeaderElection::redis(
        RedisConfig::new(url).namespace("example-report"),
        ElectionConfig::new(name)
            .heartbeat_interval(Duration::from_millis(200))
            .lease_timeout(Duration::from_secs(1))
            .retry_interval(Duration::from_millis(50)),
    )?
    .start()?;
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 4, || work)
        .autoscale(AutoscalePolicy::disabled())
        .memory(work_memory.clone())
        .build()?;
    eprintln!("[{name}] running as pid {pid}; stop it with: kill -9 {pid}");

    let mut fenced = None;
    loop {
        let finished = work_memory.get::<i64>("finished")?.map_or(0, |v| v.value);
        if finished >= i64::from(JOBS) {
            break;
        }
        // Keep every local agent busy while jobs remain.
        if orchestrator.status().queued() < 4 {
            let tasks = (0..8).map(|_| Task::new("job").with_role(Role::Researcher));
            orchestrator.submit_batch(tasks)?;
        }
        match election.epoch() {
            Some(epoch) => {
                if fenced != Some(epoch) {
                    report.fence(epoch)?;
                    fenced = Some(epoch);
                    eprintln!("[{name}] leading under epoch {epoch}");
                }
                report.put("progress", &format!("{finished}/{JOBS} by {name}"))?;
            }
            None => fenced = None,
        }
        thread::sleep(Duration::from_millis(100));
    }
    if let Some(progress) = report.get::<String>("progress")? {
        eprintln!("[{name}] done; last report: {}", progress.value);
    }
    orchestrator.shutdown()
}

fn main() -> agentry::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let url = args
        .iter()
        .find(|a| a.starts_with("redis://"))
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    if let Some(at) = args.iter().position(|a| a == "--node") {
        let name = args.get(at + 1).map_or("node", String::as_str);
        return node(&url, name);
    }
    // A fresh run: clear the records of a previous one.
    let work = SharedMemory::redis(RedisConfig::new(url.as_str()).namespace("example-work"))?;
    for key in work.keys() {
        work.delete(&key)?;
    }
    let mut nodes: Vec<Child> = (1..=3)
        .map(|n| {
            Command::new(env::current_exe()?)
                .args([url.as_str(), "--node", &format!("node-{n}")])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for node in &mut nodes {
        node.wait()?;
    }
    let finished = work.get::<i64>("finished")?.map_or(0, |v| v.value);
    println!("{finished} of {JOBS} jobs finished");
    Ok(())
}
