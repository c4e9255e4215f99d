//! An orchestrator that is one node of a cluster on Redis (feature
//! `redis`): tasks go into Redis, and every node's agents pull them.
//!
//! # Layout
//!
//! Under the namespace `ns`:
//!
//! | key | what |
//! | --- | --- |
//! | `ns:tasks:next-id` | the cluster-wide task id counter (`INCRBY`) |
//! | `ns:tasks:0` .. `ns:tasks:3` | one stream per priority, critical first; an entry is a postcard task record; consumer group `agentry` |
//! | `ns:tasks:takeovers` | hash: task id → how often it was reclaimed from a node that stopped answering |
//! | `ns:results` | hash: task id → postcard result |
//! | `ns:results:order` | sorted set of result ids, to evict the oldest past the retention |
//! | `ns:nodes` | hash: node name → its last heartbeat (ms since the Unix epoch) and agent count |
//!
//! # Protocol
//!
//! * **Submit.** Ids come from `INCRBY`, then one `XADD` per task into its
//!   priority's stream; the id is returned once Redis has the entry.
//! * **Pull.** Each node's pump thread keeps its agents fed: while fewer
//!   tasks are in hand than twice its agents, it reads new entries with
//!   `XREADGROUP` from the streams in priority order (strict priority: a
//!   lower stream is read only when the higher ones had nothing), and hands
//!   them to its local distributor under their cluster ids.
//! * **Reclaim.** An entry delivered to a node stays pending until its
//!   result is stored. A live node refreshes its pending entries every third
//!   of the visibility timeout, with a script that `XCLAIM`s to itself
//!   (`JUSTID`) only the entries `XPENDING` still shows as this node's;
//!   entries idle longer than the timeout belong to a node that died or
//!   froze, and any pump takes them over with `XAUTOCLAIM`, counting one
//!   more attempt ([`Task::attempt`](crate::Task::attempt) tells the
//!   agent). So every accepted task runs at least once even if nodes die.
//!   `XAUTOCLAIM` scans on from the cursor its last call returned (one per
//!   stream), so many live entries at the head of the pending list do not
//!   hide a dead node's behind them.
//! * **Taken over while frozen.** A node resumed after a freeze longer than
//!   the visibility timeout finds, at its next refresh, the entries another
//!   node took over (or finished) no longer its own: it does not take them
//!   back, and cancels locally those it has not started (their
//!   cancellation is not stored; they run on the other node). One it had
//!   started runs to its end and its result is stored too: at least once.
//! * **Lost groups.** When a command fails with `NOGROUP` (the database
//!   was flushed, or a Redis without persistence restarted), the pump
//!   creates the consumer groups again; the entries still in the streams
//!   are then delivered anew (a node keeps running those it holds, once).
//! * **Idempotent claims.** Before handing out an entry, the pump checks
//!   whether its result is already stored (a node finished it, then died
//!   before acknowledging): if so it acknowledges the entry instead of
//!   running it again.
//! * **Finish.** Results published by the local distributor go to a
//!   recorder thread, which stores each result, acknowledges and deletes its
//!   entry, and evicts the oldest results past the builder's retention, in
//!   one script per result; the scripts of everything that finished
//!   meanwhile go in one pipeline (one round trip, and one fsync on a server
//!   with `appendfsync always`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use super::{Recorded, Shared};
use crate::cluster::{Pool, RedisConfig, Retry, has_code, unexpected};
use crate::distributor::{Effects, ResultRecord, Task, TaskRecord, TaskResult, TaskStatus};
use crate::error::{Error, Result};
use crate::ids::TaskId;

/// The default [`OrchestratorBuilder::visibility_timeout`](super::OrchestratorBuilder::visibility_timeout): 30 s.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

const GROUP: &str = "agentry";
const RANKS: usize = 4;
/// How long a pump with nothing to do blocks in `XREADGROUP`.
const IDLE_BLOCK: Duration = Duration::from_millis(20);

/// Stores a result, acknowledges and deletes its entry, forgets its
/// takeover count, evicts past the retention. KEYS: results, order, stream,
/// takeovers. ARGV: id, result bytes, group, entry id, retention.
const FINISH: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do redis.call('HDEL', KEYS[1], old[i]) end
end
return 0
";

/// Refreshes the entries a node holds, only those the group still shows
/// as pending on that node: an entry another node took over (this one was
/// frozen past the visibility timeout) stays with it. Returns the entries
/// no longer this node's. KEYS: stream. ARGV: group, node, entry ids.
const REFRESH: &str = r"
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #pending == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
";

/// How many `XAUTOCLAIM` pages one claim may scan per stream: each page
/// looks at up to ten times its count of pending entries.
const RECLAIM_PAGES: usize = 16;

/// Where a claimed task's entry is.
#[derive(Clone, Debug)]
struct Entry {
    rank: usize,
    id: String,
    /// The group no longer shows the entry as this node's (another node
    /// took it over): not refreshed any more, and cancelled here unless
    /// it started.
    lost: bool,
}

pub(crate) struct RedisQueue {
    pool: Pool,
    node: String,
    visibility: Duration,
    retention: usize,
    next_id: String,
    streams: [String; RANKS],
    takeovers: String,
    results: String,
    order: String,
    nodes: String,
    /// Tasks this node claimed and has not finished.
    in_hand: Mutex<HashMap<TaskId, Entry>>,
    /// Per stream, where the next `XAUTOCLAIM` scan starts: the live
    /// entries at the head of the pending list do not hide those behind.
    cursors: Mutex<[String; RANKS]>,
}

impl RedisQueue {
    /// Connects and creates the consumer groups (once per cluster).
    ///
    /// # Errors
    ///
    /// As [`Pool::connect`]; [`Error::Backend`] if a group cannot be made.
    pub(crate) fn connect(
        config: RedisConfig,
        node: String,
        visibility: Duration,
        retention: usize,
    ) -> Result<RedisQueue> {
        let pool = Pool::connect(config, None)?;
        let queue = RedisQueue {
            next_id: pool.key("tasks:next-id"),
            streams: std::array::from_fn(|rank| pool.key(&format!("tasks:{rank}"))),
            takeovers: pool.key("tasks:takeovers"),
            results: pool.key("results"),
            order: pool.key("results:order"),
            nodes: pool.key("nodes"),
            pool,
            node,
            visibility,
            retention,
            in_hand: Mutex::new(HashMap::new()),
            cursors: Mutex::new(std::array::from_fn(|_| "0-0".to_owned())),
        };
        queue.create_groups()?;
        Ok(queue)
    }

    /// Creates the consumer group of every stream that has none: at
    /// connect, and again when a command finds a group missing (the
    /// database was flushed, or restarted without persistence). A group
    /// made again delivers every entry left in its stream anew.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if a group cannot be made.
    fn create_groups(&self) -> Result<()> {
        for stream in &self.streams {
            let made: Result<()> = self.pool.run(
                Retry::Once,
                &|| format!("create the consumer group of {stream}"),
                |c| {
                    ::redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(stream)
                        .arg(GROUP)
                        .arg("0")
                        .arg("MKSTREAM")
                        .query(c)
                },
            );
            match made {
                Err(error) if has_code(&error, "BUSYGROUP") => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Gives each task a cluster-wide id and appends it to its priority's
    /// stream; returns the ids in order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a task with dependencies (not supported
    /// across a cluster); [`Error::Codec`]; [`Error::Backend`] if Redis
    /// cannot be reached (then none of the batch is accepted, unless the
    /// reply alone was lost).
    pub(crate) fn enqueue(&self, tasks: Vec<Task>) -> Result<Vec<TaskId>> {
        if let Some(task) = tasks.iter().find(|t| !t.dependencies().is_empty()) {
            return Err(Error::InvalidInput(format!(
                "task {:?} has dependencies, which an orchestrator on redis does not support yet",
                task.kind()
            )));
        }
        let count = tasks.len() as u64;
        if count == 0 {
            return Ok(Vec::new());
        }
        let last: u64 = self
            .pool
            .run(Retry::Never, &|| "allocate task ids".to_owned(), |c| {
                ::redis::cmd("INCRBY")
                    .arg(&self.next_id)
                    .arg(count)
                    .query(c)
            })?;
        // A counter lowered by something else would give ids below zero.
        let first = (last + 1)
            .checked_sub(count)
            .filter(|&first| first > 0)
            .ok_or_else(|| unexpected("allocate task ids", &last.to_string()))?;
        let mut ids = Vec::with_capacity(tasks.len());
        // MULTI/EXEC: a batch is accepted whole or not at all, and no node
        // reads half of it (strict priority holds within a batch).
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (n, mut task) in tasks.into_iter().enumerate() {
            task.id = TaskId::new(first + n as u64);
            ids.push(task.id);
            let record = postcard::to_stdvec(&task.to_record(&[]))?;
            pipe.cmd("XADD")
                .arg(&self.streams[task.priority.rank()])
                .arg("*")
                .arg("task")
                .arg(record)
                .ignore();
        }
        self.pool
            .run(Retry::Never, &|| format!("append {count} tasks"), |c| {
                pipe.query::<()>(c)
            })?;
        Ok(ids)
    }

    /// Claims up to `max` tasks, each priority before the next: with
    /// `reclaim`, first those idle past the visibility timeout (held by a
    /// node that stopped answering), then new ones; if none, waits a little
    /// for new ones on every stream. Reclaimed tasks whose result is already
    /// stored are acknowledged, not returned.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    fn claim(&self, max: usize, reclaim: bool) -> Result<Vec<Task>> {
        let mut claimed = Vec::new();
        match self.claim_into(max, reclaim, &mut claimed) {
            Ok(()) => Ok(claimed),
            // The tasks claimed before the failure are in hand: they must
            // reach the agents, not be dropped with the error.
            Err(error) if !claimed.is_empty() => {
                tracing::warn!(%error, claimed = claimed.len(), "claiming tasks stopped early");
                Ok(claimed)
            }
            Err(error) => Err(error),
        }
    }

    fn claim_into(&self, max: usize, reclaim: bool, claimed: &mut Vec<Task>) -> Result<()> {
        for rank in 0..RANKS {
            if reclaim {
                self.reclaim(rank, max, claimed)?;
            }
            if claimed.len() < max {
                let count = max - claimed.len();
                self.read_new(&self.streams[rank..=rank], count, None, claimed)?;
            }
        }
        if claimed.is_empty() {
            // Nothing anywhere: wait a little for any stream.
            self.read_new(&self.streams, max, Some(IDLE_BLOCK), claimed)?;
        }
        Ok(())
    }

    /// Takes over entries of `rank` idle past the visibility timeout until
    /// `claimed` holds `max`, scanning on from where the last scan stopped
    /// and at most [`RECLAIM_PAGES`] pages.
    fn reclaim(&self, rank: usize, max: usize, claimed: &mut Vec<Task>) -> Result<()> {
        for _ in 0..RECLAIM_PAGES {
            if claimed.len() >= max {
                break;
            }
            let start = self.cursors.lock()[rank].clone();
            let stale: StreamAutoClaimReply =
                self.pool
                    .run(Retry::Never, &|| "reclaim stale tasks".to_owned(), |c| {
                        ::redis::cmd("XAUTOCLAIM")
                            .arg(&self.streams[rank])
                            .arg(GROUP)
                            .arg(&self.node)
                            .arg(millis(self.visibility))
                            .arg(&start)
                            .arg("COUNT")
                            .arg(max - claimed.len())
                            .query(c)
                    })?;
            let wrapped = stale.next_stream_id == "0-0";
            self.cursors.lock()[rank] = stale.next_stream_id;
            for entry in stale.claimed {
                self.admit(rank, entry, true, claimed)?;
            }
            if wrapped {
                break;
            }
        }
        Ok(())
    }

    /// Reads up to `count` entries never delivered from `streams`, waiting
    /// at most `block` for one.
    fn read_new(
        &self,
        streams: &[String],
        count: usize,
        block: Option<Duration>,
        claimed: &mut Vec<Task>,
    ) -> Result<()> {
        let fresh: Option<StreamReadReply> =
            self.pool
                .run(Retry::Never, &|| "read new tasks".to_owned(), |c| {
                    let mut command = ::redis::cmd("XREADGROUP");
                    command
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(&self.node)
                        .arg("COUNT")
                        .arg(count);
                    if let Some(block) = block {
                        command.arg("BLOCK").arg(millis(block));
                    }
                    command
                        .arg("STREAMS")
                        .arg(streams)
                        .arg(vec![">"; streams.len()])
                        .query(c)
                })?;
        for key in fresh.map(|r| r.keys).unwrap_or_default() {
            let rank = self.streams.iter().position(|s| *s == key.key).unwrap_or(0);
            for entry in key.ids {
                self.admit(rank, entry, false, claimed)?;
            }
        }
        Ok(())
    }

    /// Decodes one delivered entry and takes it in hand, unless it was
    /// reclaimed and its result is already stored.
    fn admit(
        &self,
        rank: usize,
        entry: StreamId,
        reclaimed: bool,
        out: &mut Vec<Task>,
    ) -> Result<()> {
        let Some(bytes) = entry.get::<Vec<u8>>("task") else {
            // Deleted under us (finished meanwhile): nothing to run.
            self.acknowledge(rank, &entry.id)?;
            return Ok(());
        };
        let mut record: TaskRecord = match postcard::from_bytes(&bytes) {
            Ok(record) => record,
            Err(error) => {
                // Written by something else (another version?): taking it
                // again at every reclaim would stall the tasks behind it.
                tracing::error!(%error, entry = %entry.id, "dropping a task entry that does not decode");
                return self.acknowledge(rank, &entry.id);
            }
        };
        let id = record.id();
        if let Some(held) = self.in_hand.lock().get_mut(&id) {
            // Ours already (delivered again after the group was made
            // anew, or reclaimed from ourselves after refreshes failed):
            // it runs once here; the entry is the one to acknowledge.
            *held = Entry {
                rank,
                id: entry.id,
                lost: false,
            };
            return Ok(());
        }
        if reclaimed {
            // Only a task delivered before can have been finished already.
            let done: bool = self.pool.run(
                Retry::Once,
                &|| format!("look up the result of {id}"),
                |c| {
                    ::redis::cmd("HEXISTS")
                        .arg(&self.results)
                        .arg(id.get())
                        .query(c)
                },
            )?;
            if done {
                return self.acknowledge(rank, &entry.id);
            }
            let takeovers: u32 =
                self.pool
                    .run(Retry::Never, &|| format!("count a takeover of {id}"), |c| {
                        ::redis::cmd("HINCRBY")
                            .arg(&self.takeovers)
                            .arg(id.get())
                            .arg(1)
                            .query(c)
                    })?;
            for _ in 0..takeovers {
                record.count_takeover();
            }
            tracing::info!(task = %id, takeovers, node = %self.node, "reclaimed a task from a node that stopped answering");
        }
        self.in_hand.lock().insert(
            id,
            Entry {
                rank,
                id: entry.id,
                lost: false,
            },
        );
        out.push(Task::from_record(record));
        Ok(())
    }

    fn acknowledge(&self, rank: usize, entry: &str) -> Result<()> {
        self.pool
            .run(Retry::Once, &|| format!("acknowledge entry {entry}"), |c| {
                ::redis::pipe()
                    .cmd("XACK")
                    .arg(&self.streams[rank])
                    .arg(GROUP)
                    .arg(entry)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&self.streams[rank])
                    .arg(entry)
                    .ignore()
                    .query::<()>(c)
            })
    }

    /// Stores the results of tasks this node claimed and retires their
    /// entries. Results of tasks not in hand (none, in practice) are
    /// ignored, and so is the cancellation of a task another node took
    /// over (it runs there). A result that cannot be stored is logged and
    /// let go of: its entry stays pending, no longer refreshed, so the task
    /// runs again (here or elsewhere) after the visibility timeout.
    fn finish(&self, results: &[TaskResult]) {
        let held: Vec<(&TaskResult, Entry)> = {
            let mut in_hand = self.in_hand.lock();
            results
                .iter()
                .filter_map(|r| {
                    let entry = in_hand.get(&r.id())?;
                    if entry.lost && r.status() == TaskStatus::Cancelled {
                        in_hand.remove(&r.id());
                        return None;
                    }
                    Some((r, entry.clone()))
                })
                .collect()
        };
        if held.is_empty() {
            return;
        }
        if let Err(error) = self.store(&held) {
            tracing::error!(%error, results = held.len(), "storing results in redis failed; those tasks will run again");
        }
        let mut in_hand = self.in_hand.lock();
        for (result, _) in &held {
            in_hand.remove(&result.id());
        }
    }

    /// One pipeline of scripts for the whole batch: one round trip, and on a
    /// server that fsyncs every write, one fsync.
    fn store(&self, held: &[(&TaskResult, Entry)]) -> Result<()> {
        let mut pipe = ::redis::pipe();
        for (result, entry) in held {
            let bytes = postcard::to_stdvec(&ResultRecord::from(*result))?;
            // EVAL rather than EVALSHA: the script text travels each time,
            // but a restarted server (empty script cache) needs no reload.
            pipe.cmd("EVAL")
                .arg(FINISH)
                .arg(4)
                .arg(&self.results)
                .arg(&self.order)
                .arg(&self.streams[entry.rank])
                .arg(&self.takeovers)
                .arg(result.id().get())
                .arg(bytes)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(self.retention)
                .ignore();
        }
        self.pool.run(
            Retry::Once,
            &|| format!("store {} results", held.len()),
            |c| pipe.query::<()>(c),
        )
    }

    /// Resets the idle time of every entry in hand that is still this
    /// node's, so no other node takes them over while this one works on
    /// them, and writes the heartbeat. Returns the tasks whose entries
    /// another node took over (or that were acknowledged meanwhile), marked
    /// lost: the caller cancels them here unless they started.
    fn refresh(&self, agents: usize) -> Result<Vec<TaskId>> {
        let mut by_rank: [Vec<String>; RANKS] = Default::default();
        for entry in self.in_hand.lock().values().filter(|e| !e.lost) {
            by_rank[entry.rank].push(entry.id.clone());
        }
        let ranks: Vec<usize> = (0..RANKS).filter(|&r| !by_rank[r].is_empty()).collect();
        let mut pipe = ::redis::pipe();
        for &rank in &ranks {
            pipe.cmd("EVAL")
                .arg(REFRESH)
                .arg(1)
                .arg(&self.streams[rank])
                .arg(GROUP)
                .arg(&self.node)
                .arg(&by_rank[rank][..]);
        }
        pipe.cmd("HSET")
            .arg(&self.nodes)
            .arg(&self.node)
            .arg(format!("{} {agents}", millis_since_epoch()))
            .ignore();
        // Read-only when nothing changed hands, and harmless to repeat.
        let lost: Vec<Vec<String>> = self.pool.run(
            Retry::Once,
            &|| "refresh the tasks in hand".to_owned(),
            |c| pipe.query(c),
        )?;
        let mut in_hand = self.in_hand.lock();
        let mut ids = Vec::new();
        for (rank, entries) in ranks.into_iter().zip(lost) {
            for (id, held) in in_hand.iter_mut() {
                if held.rank == rank && entries.contains(&held.id) {
                    held.lost = true;
                    ids.push(*id);
                }
            }
        }
        Ok(ids)
    }

    /// After a failed command: when it failed because a consumer group is
    /// missing, makes the groups again, so the next pull succeeds.
    fn recover(&self, error: &Error) {
        if has_code(error, "NOGROUP") {
            tracing::warn!(
                "the task streams lost their consumer groups (flushed, or a redis without persistence restarted); creating them again"
            );
            if let Err(error) = self.create_groups() {
                tracing::warn!(%error, "creating the consumer groups again failed");
            }
        }
    }

    /// The stored result of a task, run by any node.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached; [`Error::Codec`] for
    /// a result this version cannot read.
    pub(crate) fn result(&self, id: TaskId) -> Result<Option<TaskResult>> {
        let bytes: Option<Vec<u8>> =
            self.pool
                .run(Retry::Once, &|| format!("read the result of {id}"), |c| {
                    ::redis::cmd("HGET")
                        .arg(&self.results)
                        .arg(id.get())
                        .query(c)
                })?;
        bytes
            .map(|b| Ok(TaskResult::from(postcard::from_bytes::<ResultRecord>(&b)?)))
            .transpose()
    }

    /// Tasks waiting in the cluster's streams (not yet delivered to a
    /// node), by priority rank.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    pub(crate) fn depths(&self) -> Result<[usize; RANKS]> {
        let mut depths = [0; RANKS];
        for (rank, stream) in self.streams.iter().enumerate() {
            let groups: Vec<HashMap<String, ::redis::Value>> = self.pool.run(
                Retry::Once,
                &|| format!("read the depth of {stream}"),
                |c| ::redis::cmd("XINFO").arg("GROUPS").arg(stream).query(c),
            )?;
            let group = groups
                .iter()
                .find(|g| matches!(g.get("name"), Some(::redis::Value::BulkString(n)) if n == GROUP.as_bytes()))
                .ok_or_else(|| unexpected("read a stream's depth", "no consumer group"))?;
            let count = |field: &str| match group.get(field) {
                Some(::redis::Value::Int(n)) => usize::try_from(*n).ok(),
                _ => None,
            };
            depths[rank] = match count("lag") {
                Some(lag) => lag,
                // Redis cannot tell the lag once entries were deleted from
                // the middle of the stream (finished tasks are). Every entry
                // left is either delivered and pending, or not delivered.
                None => {
                    let pending = count("pending")
                        .ok_or_else(|| unexpected("read a stream's depth", "no pending count"))?;
                    let length: usize = self.pool.run(
                        Retry::Once,
                        &|| format!("read the length of {stream}"),
                        |c| ::redis::cmd("XLEN").arg(stream).query(c),
                    )?;
                    length.saturating_sub(pending)
                }
            };
        }
        Ok(depths)
    }

    /// The nodes that wrote a heartbeat: name, last heartbeat, agents.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    pub(crate) fn nodes(&self) -> Result<Vec<(String, SystemTime, usize)>> {
        let raw: HashMap<String, String> =
            self.pool
                .run(Retry::Once, &|| "read the nodes".to_owned(), |c| {
                    ::redis::cmd("HGETALL").arg(&self.nodes).query(c)
                })?;
        let mut nodes: Vec<_> = raw
            .into_iter()
            .filter_map(|(name, value)| {
                let (at, agents) = value.split_once(' ')?;
                let at = UNIX_EPOCH + Duration::from_millis(at.parse().ok()?);
                Some((name, at, agents.parse().ok()?))
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(nodes)
    }
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("node", &self.node)
            .field("namespace", &self.pool.config().namespace_prefix())
            .finish()
    }
}

/// The pump: keeps this node's agents fed from the cluster's streams and
/// refreshes what it holds. Ends when `stop` is set.
pub(crate) fn spawn_pump(
    shared: Arc<Shared>,
    queue: Arc<RedisQueue>,
    agents: usize,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-redis-pump".into())
        .spawn(move || {
            // Twice the agents in hand: each agent has its next task ready.
            let target = agents.max(1) * 2;
            // `None`: never refreshed, so due at once.
            let mut refreshed: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                // Refreshing and reclaiming run every third of the
                // visibility timeout; plain reads in between.
                let due = refreshed.is_none_or(|at| at.elapsed() >= queue.visibility / 3);
                if due {
                    match queue.refresh(agents) {
                        Ok(lost) => {
                            refreshed = Some(Instant::now());
                            drop_lost(&shared, &lost);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "refreshing the tasks in hand failed");
                            queue.recover(&error);
                        }
                    }
                }
                let room = target.saturating_sub(queue.in_hand.lock().len());
                if room == 0 {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                match queue.claim(room, due) {
                    Ok(tasks) if tasks.is_empty() => {}
                    Ok(tasks) => {
                        let mut fx = Effects::default();
                        shared.distributor.lock().admit_claimed(tasks, &mut fx);
                        shared.apply(&mut fx);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "pulling tasks from redis failed; retrying");
                        queue.recover(&error);
                        thread::sleep(IDLE_BLOCK);
                    }
                }
            }
        })?;
    Ok(thread)
}

/// Cancels here the tasks another node took over, unless they started (a
/// started one finishes here too, and its result is stored: at least once).
fn drop_lost(shared: &Shared, lost: &[TaskId]) {
    if lost.is_empty() {
        return;
    }
    let mut fx = Effects::default();
    let mut distributor = shared.distributor.lock();
    for &id in lost {
        // Only a task finished meanwhile is not live: nothing to drop.
        if let Ok(true) = distributor.cancel(id, "taken over by another node", &mut fx) {
            tracing::info!(task = %id, "another node took over a task this node held; not running it here");
        }
    }
    drop(distributor);
    shared.apply(&mut fx);
}

/// Stores the results the local distributor publishes.
pub(crate) fn spawn_recorder(
    queue: Arc<RedisQueue>,
    inbox: Receiver<Recorded>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-redis-recorder".into())
        .spawn(move || {
            while let Ok(first) = inbox.recv() {
                let mut stop = false;
                let mut results = Vec::new();
                for message in std::iter::once(first).chain(inbox.try_iter()) {
                    match message {
                        Recorded::Finished { results: r, .. } => results.extend(r),
                        Recorded::Stop => stop = true,
                    }
                }
                queue.finish(&results);
                if stop {
                    return;
                }
            }
        })?;
    Ok(thread)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}
