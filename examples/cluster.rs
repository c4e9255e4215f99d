//! Two orchestrator processes over one state directory: the leader works
//! through 400 tasks (10 s), you kill it, the standby takes over and finishes them.
//!
//! Run: `cargo run --example cluster` (it forks its own standby; kill the
//! leader with the `kill -9` line it prints). Or run
//! `cargo run --example cluster -- --standby` in a second terminal first,
//! then `cargo run --example cluster` in another: whichever leads does the
//! work. The state lives in `target/cluster-state`.
//!
//! Options: `--tasks N` (default 400; CI runs 20), `--state-dir DIR`
//! (default `target/cluster-state`). The standby it forks gets the same.

use std::env;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use agentry::{
    AgentContext, AutoscalePolicy, ElectionConfig, Orchestrator, Output, Role, Task, TaskError,
};

const USAGE: &str = "usage: cluster [--tasks N] [--state-dir DIR] [--standby]";

struct Options {
    tasks: u64,
    state_dir: PathBuf,
    standby: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        tasks: 400,
        state_dir: PathBuf::from("target/cluster-state"),
        standby: false,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--standby" => options.standby = true,
            "--tasks" => {
                options.tasks = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--tasks needs a number")?;
            }
            "--state-dir" => {
                options.state_dir = args.next().ok_or("--state-dir needs a directory")?.into();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

fn work(task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
    // A run after a takeover may repeat one the old leader began:
    // `attempt()` above 1 says so.
    ctx.memory()
        .increment(&format!("ran/{}", task.id().get()), 1)?;
    thread::sleep(Duration::from_millis(100));
    Ok(Output::encode(&task.attempt())?)
}

fn main() -> agentry::Result<()> {
    let Options {
        tasks,
        state_dir: dir,
        standby,
    } = options().unwrap_or_else(|e| {
        eprintln!("cluster: {e}\n{USAGE}");
        std::process::exit(2)
    });
    let mut child = None;
    if !standby {
        // Our own standby, so one terminal is enough.
        let standby = Command::new(env::current_exe()?)
            .arg("--standby")
            .arg("--tasks")
            .arg(tasks.to_string())
            .arg("--state-dir")
            .arg(&dir)
            .spawn()?;
        child = Some(standby);
    }
    let pid = std::process::id();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 4, || work)
        .autoscale(AutoscalePolicy::disabled())
        .state_dir(&dir)
        .election(
            ElectionConfig::new(format!("pid-{pid}"))
                .heartbeat_interval(Duration::from_millis(200))
                .lease_timeout(Duration::from_secs(1))
                .retry_interval(Duration::from_millis(50)),
        )
        .build()?;
    while !orchestrator.is_leader() {
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("[{pid}] leading; kill me with: kill -9 {pid}");
    let memory = orchestrator.memory();
    let submitted = memory.get::<u64>("submitted")?.map_or(0, |v| v.value);
    if submitted < tasks {
        let batch = (submitted..tasks).map(|_| Task::new("work").with_role(Role::Researcher));
        let ids = orchestrator.submit_batch(batch)?;
        memory.put("submitted", &tasks)?;
        eprintln!("[{pid}] accepted {} tasks", ids.len());
    }
    loop {
        let status = orchestrator.status();
        let (done, all) = (status.totals.finished(), status.totals.submitted);
        eprintln!("[{pid}] finished {done} of the {all} tasks this leader runs");
        if done == all {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let reruns = memory
        .keys()
        .iter()
        .filter(|k| k.starts_with("ran/"))
        .filter(|k| {
            memory
                .get::<i64>(k)
                .ok()
                .flatten()
                .is_some_and(|v| v.value > 1)
        })
        .count();
    eprintln!("[{pid}] all done; {reruns} tasks ran more than once (cut short by a takeover)");
    orchestrator.shutdown()?;
    if let Some(mut child) = child {
        // Our standby would wait forever for a leader to fail: stop it.
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}
