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
//! | `ns:tasks:<lane>:0` .. `ns:tasks:<lane>:3` | per lane, one stream per priority, critical first; an entry is a postcard task record; consumer group `agentry` |
//! | `ns:tasks:lanes` | hash: lane name → postcard lane (role or none, required capabilities), every lane a task was sent to or a node serves |
//! | `ns:nodes:specs` | hash: node name → postcard list of its agent specs (role, capabilities) |
//! | `ns:tasks:takeovers` | hash: task id → how often it was reclaimed from a node that stopped answering |
//! | `ns:tasks:index` | hash: task id → `entry-id stream` of its entry, while it has one |
//! | `ns:tasks:cancel-requests` | hash: task id → the node asked to cancel it |
//! | `ns:tasks:cancels:<node>` | set: ids of tasks that node holds and is asked to cancel |
//! | `ns:tasks:cancel-answers` | hash: task id → `started`, a holder's refusal |
//! | `ns:tasks:outcomes` | hash: task id → `ok`, or why it did not succeed (`failed: ...`), for its dependents; evicted with its result |
//! | `ns:tasks:waiting`, `:waiting:count`, `:waiting:stream` | hashes: task id → the record, the count of unmet dependencies and the stream of a task waiting for its dependencies |
//! | `ns:tasks:dependents:<id>` | set: the waiting tasks that depend on task `id` |
//! | `ns:results` | hash: task id → postcard result |
//! | `ns:results:order` | sorted set of result ids scored by when they were stored, to evict the oldest past the retention |
//! | `ns:results:seq` | the counter that orders stored results (`INCR`) |
//! | `ns:nodes` | hash: node name → its last heartbeat (ms since the Unix epoch, on the Redis server's clock), agent count and the heartbeat age (ms) after which it may be declared dead |
//! | `ns:nodes:dying` | hash: node declared dead → when (server ms) and how many of its tasks are back so far; `done <count>` once all are, until the leader has reported it |
//!
//! # Protocol
//!
//! * **Lanes.** A task's lane is what it needs of an agent: its role (or
//!   any role) and its required capabilities, named `role+cap+cap` (`*` for
//!   any role). Each node serves the lanes some spec of its own covers, and
//!   reads only their streams: a task never reaches a node that cannot run
//!   it. A node lists the lanes at connect, whenever its pump is idle and
//!   their number changed, and at every refresh; it creates the consumer
//!   groups of the lanes it starts serving.
//! * **Submit.** A task whose lane no spec of this node serves is accepted
//!   only if a spec of a live node (a heartbeat within this node's
//!   visibility timeout, specs from `ns:nodes:specs`) serves it; else
//!   [`Error::NoAgentForTask`]. Ids come from `INCRBY`, then, in one
//!   `MULTI`, the lane is recorded (`HSETNX`) and one script per task
//!   appends it to its lane's stream of its priority (`XADD`, the task id
//!   in field `id`) and indexes the entry under the task id; the ids are
//!   returned once Redis has the entries.
//! * **Pull.** Each node's pump thread keeps its agents fed: while fewer
//!   tasks are in hand than twice its agents, it reads new entries with
//!   `XREADGROUP` from its lanes' streams in priority order (strict
//!   priority across all its lanes: a lower stream is read only when the
//!   higher ones of every lane had nothing), and hands them to its local
//!   distributor under their cluster ids.
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
//!   Nothing fences the hand-out meanwhile: its agents resume before the
//!   pump's refresh and may start some of those tasks, which then run on
//!   both nodes.
//! * **Heartbeats and the leader.** Every node writes its heartbeat every
//!   twelfth of its visibility timeout, with a script that reads the
//!   server's clock (`TIME`), so hosts' clocks need not agree, and its
//!   specs and their lanes with it. Without an
//!   election, that is all: dead nodes' tasks come back through
//!   `XAUTOCLAIM`. With an election on Redis, the leader's pump, at each of
//!   its heartbeats, declares dead every other node whose heartbeat is
//!   three heartbeats and one command timeout old, by the leader's
//!   timeouts and by the node's own (written in its heartbeat row, so a
//!   node with a longer visibility timeout is judged by its own). A script
//!   re-checks the age and declares the node dead: deletes its rows in
//!   `ns:nodes` and `ns:nodes:specs` and records it in `ns:nodes:dying`.
//!   Then, a thousand entries per call of the script (so that no call
//!   holds the server for long), each of its pending entries in every lane
//!   gets a copy at the end of its stream (its `takeovers` field counting
//!   the attempt) and the old one is acknowledged and deleted; the call
//!   that finds none left deletes the node's consumers that hold nothing
//!   and marks the record done, and the leader emits [`Event::NodeDead`],
//!   then deletes the record (a reply lost on the way is answered again by
//!   the next call). A node holding more than a quarter of a heartbeat
//!   interval can move is continued at the leader's next heartbeat, or by
//!   the next leader. Only entries idle since the
//!   declaration move: a node declared dead while only frozen finds the
//!   entries already moved gone when it resumes, as after a takeover,
//!   keeps those it reads or refreshes from then on, and its next
//!   heartbeat lists it again. `XAUTOCLAIM` stays as the backstop (an
//!   entry a live node let go of, a cluster without an election).
//! * **Lost groups.** When a command fails with `NOGROUP` (the database
//!   was flushed, or a Redis without persistence restarted), the pump
//!   creates the consumer groups again; the entries still in the streams
//!   are then delivered anew (a node keeps running those it holds, once).
//!   Each heartbeat raises `ns:tasks:next-id` to at least the highest task
//!   id its node holds, so a counter that restarted gives new tasks no id
//!   of a task still running; a task submitted between the flush and the
//!   holders' next heartbeats may still collide with one (not fenced).
//! * **Idempotent claims.** Before handing out an entry, the pump checks
//!   whether its result is already stored (a node finished it, then died
//!   before acknowledging): if so it acknowledges the entry instead of
//!   running it again.
//! * **Dependencies.** A task with dependencies is submitted by a script
//!   that looks up each one's outcome: all `ok`, it is appended at once;
//!   one not `ok`, it gets a failed result naming that dependency
//!   (`dependency task-N failed: ...`) without running; else it waits in
//!   `ns:tasks:waiting`, listed in the dependents of each unmet one. The
//!   script that stores a result (or a cancellation) also settles the
//!   dependents, in the same atomic step: a success counts down their unmet
//!   dependencies and appends those left with none to their streams; a
//!   failure, cancellation or timeout fails them at once, naming it, and
//!   their own dependents in turn. A dependency unknown to the cluster (no
//!   outcome, entry or waiting record) is [`Error::NotFound`] at submit.
//! * **Cancel.** `cancel` on any node, the holder included (only the group
//!   knows whether a node that was frozen still holds a task), runs one
//!   script that finds the entry through the index:
//!   not delivered yet, it is deleted and the Cancelled result stored at
//!   once; delivered, the task id goes into the holder's cancel set and the
//!   requests hash. Every holder's pump takes its cancel set every 10 ms
//!   and cancels those tasks locally unless they started (the result then
//!   says Cancelled), answering `started` for the others and withdrawing
//!   their requests; the caller waits for either, at most twice its
//!   visibility timeout. A node that reclaims a task whose request still
//!   stands (its holder died first) stores it as cancelled instead of
//!   running it.
//! * **Finish.** Results published by the local distributor go to a
//!   recorder thread, which stores each result, acknowledges and deletes its
//!   entry, and evicts the oldest results past the builder's retention, in
//!   one script per result; the scripts of everything that finished
//!   meanwhile go in one pipeline (one round trip, and one fsync on a server
//!   with `appendfsync always`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use super::{Event, Recorded, Shared};
use crate::cluster::{Pool, RedisConfig, Retry, has_code, unexpected};
use crate::distributor::{Effects, ResultRecord, Task, TaskRecord, TaskResult, TaskStatus};
use crate::error::{Error, Missing, Result};
use crate::ids::{Role, TaskId};
use serde::{Deserialize, Serialize};

/// The default [`OrchestratorBuilder::visibility_timeout`](super::OrchestratorBuilder::visibility_timeout): 30 s.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

const GROUP: &str = "agentry";
const RANKS: usize = 4;
/// The most entries of a dead node one call of [`REAP`] puts back: a few
/// milliseconds of the server's time.
const REAP_CHUNK: usize = 1_000;
/// How long a pump with nothing to do blocks in `XREADGROUP`.
const IDLE_BLOCK: Duration = Duration::from_millis(20);

/// Lua shared by the scripts that end a task: `P`, the key prefix
/// (`ns:`), is the script's last argument. `settle` releases the tasks
/// waiting on a finished one (into their streams once every dependency
/// succeeded) or fails them at once, naming it, and their own dependents
/// in turn. A dependency's outcome is `ok` or why it did not succeed
/// (`failed: ...`, `was cancelled: ...`, `timed out: ...`). `failed_record`
/// encodes a failed result as postcard does (pinned by a unit test):
/// id, no output, the reason, agent 0, 0 ns, 0 attempts, `Failed`.
macro_rules! settle_lua {
    () => {
        r"
local P = ARGV[#ARGV]
local function varint(n)
  local out = {}
  repeat
    local byte = n % 128
    n = math.floor(n / 128)
    if n > 0 then byte = byte + 128 end
    out[#out + 1] = string.char(byte)
  until n == 0
  return table.concat(out)
end
local function ordered(id)
  redis.call('ZADD', P .. 'results:order', redis.call('INCR', P .. 'results:seq'), id)
end
local function store_failed(id, reason)
  redis.call('HSET', P .. 'results', id,
    varint(tonumber(id)) .. string.char(0, 1) .. varint(#reason) .. reason .. string.char(0, 0, 0, 3))
  ordered(id)
  redis.call('HSET', P .. 'tasks:outcomes', id, 'failed: ' .. reason)
end
local function unwait(id)
  redis.call('HDEL', P .. 'tasks:waiting', id)
  redis.call('HDEL', P .. 'tasks:waiting:count', id)
  redis.call('HDEL', P .. 'tasks:waiting:stream', id)
end
local function settle(id, outcome)
  local key = P .. 'tasks:dependents:' .. id
  local dependents = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  for _, d in ipairs(dependents) do
    if redis.call('HEXISTS', P .. 'tasks:waiting', d) == 1 then
      if outcome == 'ok' then
        if redis.call('HINCRBY', P .. 'tasks:waiting:count', d, -1) <= 0 then
          local record = redis.call('HGET', P .. 'tasks:waiting', d)
          local stream = redis.call('HGET', P .. 'tasks:waiting:stream', d)
          unwait(d)
          local entry = redis.call('XADD', stream, '*', 'task', record, 'id', d)
          redis.call('HSET', P .. 'tasks:index', d, entry .. ' ' .. stream)
        end
      else
        unwait(d)
        local reason = 'dependency task-' .. id .. ' ' .. outcome
        store_failed(d, reason)
        settle(d, 'failed: ' .. reason)
      end
    end
  end
end
local function evict(retention)
  local order = P .. 'results:order'
  local excess = redis.call('ZCARD', order) - retention
  if excess > 0 then
    local old = redis.call('ZPOPMIN', order, excess)
    for i = 1, #old, 2 do
      redis.call('HDEL', P .. 'results', old[i])
      redis.call('HDEL', P .. 'tasks:outcomes', old[i])
    end
  end
end
"
    };
}

/// Appends a task to its stream and indexes its entry under its id.
/// KEYS: stream, index. ARGV: task record, task id.
const APPEND: &str = r"
local entry = redis.call('XADD', KEYS[1], '*', 'task', ARGV[1], 'id', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], entry .. ' ' .. KEYS[1])
return 0
";

/// Submits a task with dependencies: appended (as [`APPEND`]) if every
/// one succeeded; failed at once, naming the first that did not (or is
/// unknown); else parked in `ns:tasks:waiting` with its count of unmet
/// dependencies and its stream, and listed in each unmet one's dependents.
/// KEYS: stream, index. ARGV: task record, task id, dependency ids
/// (distinct), prefix.
const APPEND_AFTER: &str = concat!(
    settle_lua!(),
    r"
local unmet = 0
for i = 3, #ARGV - 1 do
  local dep = ARGV[i]
  local outcome = redis.call('HGET', P .. 'tasks:outcomes', dep)
  if not outcome then
    if redis.call('HEXISTS', KEYS[2], dep) == 0 and redis.call('HEXISTS', P .. 'tasks:waiting', dep) == 0 then
      store_failed(ARGV[2], 'dependency task-' .. dep .. ' is unknown (its result was evicted)')
      return 0
    end
    redis.call('SADD', P .. 'tasks:dependents:' .. dep, ARGV[2])
    unmet = unmet + 1
  elseif outcome ~= 'ok' then
    store_failed(ARGV[2], 'dependency task-' .. dep .. ' ' .. outcome)
    return 0
  end
end
if unmet == 0 then
  local entry = redis.call('XADD', KEYS[1], '*', 'task', ARGV[1], 'id', ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], entry .. ' ' .. KEYS[1])
else
  redis.call('HSET', P .. 'tasks:waiting', ARGV[2], ARGV[1])
  redis.call('HSET', P .. 'tasks:waiting:count', ARGV[2], unmet)
  redis.call('HSET', P .. 'tasks:waiting:stream', ARGV[2], KEYS[1])
end
return 0
"
);

/// Stores a result and its outcome (ordered by when it was stored, not by
/// task id, so a long task's result is not the first evicted),
/// acknowledges and deletes its entry,
/// forgets its takeover count, its index row and any cancel request,
/// settles its dependents, evicts past the retention. KEYS: results,
/// order, stream, takeovers, index, cancel requests. ARGV: id, result
/// bytes, group, entry id, retention, outcome, prefix.
const FINISH: &str = concat!(
    settle_lua!(),
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
ordered(ARGV[1])
-- A group or stream lost to a flush fails neither (XACK answers 0).
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
redis.call('HSET', P .. 'tasks:outcomes', ARGV[1], ARGV[6])
settle(ARGV[1], ARGV[6])
evict(tonumber(ARGV[5]))
return 0
"
);

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

/// Writes a node's heartbeat on the server's clock, so that hosts whose
/// clocks disagree still judge ages alike, with the age (ms) after which
/// the node itself may be declared dead. Raises the task id counter to at
/// least the highest id the node holds: after a flush, or a restart without
/// persistence, new tasks must not take the ids of tasks still running.
/// KEYS: nodes, task id counter. ARGV: node, agents, that age, highest id
/// held (0 if none).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[4]) then
  redis.call('SET', KEYS[2], ARGV[4])
end
return 0
";

/// Declares a node dead if its heartbeat (server clock) is at least
/// `ARGV[2]` ms old, and at least the age its own row names (a node with a
/// longer visibility timeout than the leader's beats less often), then puts
/// its pending entries back at the end of their streams for any node, at
/// most `ARGV[4]` per call so that no call holds the server for long.
///
/// The declaration deletes the node's rows in the nodes and specs hashes
/// and records it in the dying hash (`declared-ms moved-so-far`); the calls
/// that follow, by this leader or the next, continue from that record.
/// Each entry put back is a new entry whose `takeovers` field counts the
/// attempt, the old one acknowledged and deleted; the index follows the
/// entries. Only entries idle since the declaration move: one the node
/// read or refreshed after it (it was only frozen, and runs again) stays
/// its own. The call that finds nothing left to move deletes the node's
/// consumers that hold nothing and marks the record `done moved`: the
/// leader deletes it once it has emitted the event, so a reply lost on the
/// way loses no event (the next call answers `done` again).
///
/// Returns `{moved, done}`: the entries put back so far and 1 once all
/// are, or `{-1, 0}` if the node is neither dead nor dying. KEYS: nodes,
/// specs, index, dying, then every task stream. ARGV: node, threshold ms,
/// group, most entries to move.
const REAP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local declared, moved
local dying = redis.call('HGET', KEYS[4], ARGV[1])
if dying then
  local finished = string.match(dying, '^done (%d+)$')
  if finished then return {tonumber(finished), 1} end
  local at, count = string.match(dying, '^(%d+) (%d+)$')
  -- A record not of this form is taken as a declaration made now.
  declared, moved = tonumber(at) or now, tonumber(count) or 0
else
  local beat = redis.call('HGET', KEYS[1], ARGV[1])
  if not beat then return {-1, 0} end
  local at = tonumber(string.match(beat, '^(%d+)'))
  local threshold = math.max(tonumber(ARGV[2]), tonumber(string.match(beat, '^%d+ %d+ (%d+)')) or 0)
  if at and now - at < threshold then return {-1, 0} end
  declared, moved = now, 0
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local left = tonumber(ARGV[4])
for i = 5, #KEYS do
  if left == 0 then break end
  local pending = redis.pcall('XPENDING', KEYS[i], ARGV[3], 'IDLE', now - declared, '-', '+', left, ARGV[1])
  if type(pending) == 'table' and not pending.err then
    for _, p in ipairs(pending) do
      local found = redis.call('XRANGE', KEYS[i], p[1], p[1])
      if #found == 1 then
        local fields, takeovers, id = {}, 1, nil
        local old = found[1][2]
        for j = 1, #old, 2 do
          if old[j] == 'takeovers' then
            takeovers = tonumber(old[j + 1]) + 1
          else
            if old[j] == 'id' then id = old[j + 1] end
            fields[#fields + 1] = old[j]
            fields[#fields + 1] = old[j + 1]
          end
        end
        fields[#fields + 1] = 'takeovers'
        fields[#fields + 1] = tostring(takeovers)
        local entry = redis.call('XADD', KEYS[i], '*', unpack(fields))
        if id then redis.call('HSET', KEYS[3], id, entry .. ' ' .. KEYS[i]) end
        moved = moved + 1
      end
      redis.call('XACK', KEYS[i], ARGV[3], p[1])
      redis.call('XDEL', KEYS[i], p[1])
    end
    left = left - #pending
  end
end
if left == 0 then
  redis.call('HSET', KEYS[4], ARGV[1], string.format('%.0f %.0f', declared, moved))
  return {moved, 0}
end
-- Every stream gave less than asked: nothing idle is left. DELCONSUMER
-- would drop what a consumer still holds, so only empty ones go.
for i = 5, #KEYS do
  local rest = redis.pcall('XPENDING', KEYS[i], ARGV[3], '-', '+', 1, ARGV[1])
  if type(rest) == 'table' and not rest.err and #rest == 0 then
    redis.pcall('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[3], ARGV[1])
  end
end
redis.call('HSET', KEYS[4], ARGV[1], string.format('done %.0f', moved))
return {moved, 1}
";

/// Cancels a task wherever it is. A result stored: `finished`. Waiting
/// for dependencies, or an entry no node took yet: removed, the Cancelled
/// result stored, its dependents settled: `cancelled`. An entry a node
/// holds: the request recorded (the task id in that node's cancel set and
/// in the requests hash): `held`. Neither: `unknown`. The entry's stream
/// is read from the index row. KEYS: results, order, index, requests.
/// ARGV: id, result bytes, group, retention, prefix of the nodes' cancel
/// sets, outcome, prefix.
const CANCEL: &str = concat!(
    settle_lua!(),
    r"
local function cancelled()
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  ordered(ARGV[1])
  redis.call('HSET', P .. 'tasks:outcomes', ARGV[1], ARGV[6])
  settle(ARGV[1], ARGV[6])
  evict(tonumber(ARGV[4]))
  return 'cancelled'
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'finished' end
if redis.call('HEXISTS', P .. 'tasks:waiting', ARGV[1]) == 1 then
  unwait(ARGV[1])
  return cancelled()
end
local at = redis.call('HGET', KEYS[3], ARGV[1])
if not at then return 'unknown' end
local space = string.find(at, ' ', 1, true)
local entry, stream = string.sub(at, 1, space - 1), string.sub(at, space + 1)
local pending = redis.pcall('XPENDING', stream, ARGV[3], entry, entry, 1)
if type(pending) == 'table' and not pending.err and #pending == 1 then
  redis.call('HSET', KEYS[4], ARGV[1], pending[1][2])
  redis.call('SADD', ARGV[5] .. pending[1][2], ARGV[1])
  return 'held'
end
redis.call('XDEL', stream, entry)
redis.call('HDEL', KEYS[3], ARGV[1])
return cancelled()
"
);

/// How often a pump looks for cancel requests for the tasks it holds.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// The reason of a result cancelled by [`RedisQueue::cancel`].
const CANCELLED: &str = "cancelled by the application";

/// How many `XAUTOCLAIM` pages one claim may scan per stream: each page
/// looks at up to ten times its count of pending entries.
const RECLAIM_PAGES: usize = 16;

/// What a task needs of an agent: a role (any, if none) and capabilities
/// (sorted, without repeats). The tasks of one lane share its streams, and
/// a node reads only the lanes some spec of its own serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lane {
    role: Option<Role>,
    capabilities: Vec<String>,
}

impl Lane {
    fn of(task: &Task) -> Lane {
        let mut capabilities = task.capabilities().to_vec();
        capabilities.sort_unstable();
        capabilities.dedup();
        Lane {
            role: task.role().cloned(),
            capabilities,
        }
    }

    /// The lane's own spec: its role, no capabilities required.
    fn of_spec(role: &Role) -> Lane {
        Lane {
            role: Some(role.clone()),
            capabilities: Vec::new(),
        }
    }

    /// `role+cap+cap`, `*` for any role; `%`, `:`, `+` and `*` in names
    /// escaped so two lanes never share a name.
    fn name(&self) -> String {
        let escape = |name: &str| {
            name.replace('%', "%25")
                .replace(':', "%3A")
                .replace('+', "%2B")
                .replace('*', "%2A")
        };
        let mut name = self
            .role
            .as_ref()
            .map_or("*".to_owned(), |r| escape(r.name()));
        for capability in &self.capabilities {
            name.push('+');
            name.push_str(&escape(capability));
        }
        name
    }

    fn served_by(&self, specs: &[(Role, Vec<String>)]) -> bool {
        specs.iter().any(|(role, capabilities)| {
            self.role.as_ref().is_none_or(|r| r == role)
                && self.capabilities.iter().all(|c| capabilities.contains(c))
        })
    }
}

/// The lanes this node reads: per lane its streams, critical first; and
/// how many lanes the cluster had when they were listed.
#[derive(Default)]
struct Served {
    streams: Arc<Vec<[String; RANKS]>>,
    listed: usize,
}

/// Where a claimed task's entry is.
#[derive(Clone, Debug)]
struct Entry {
    stream: String,
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
    /// Hash: lane name → postcard [`Lane`], every lane a task was sent to.
    lanes: String,
    /// Hash: node → postcard of its specs (role, capabilities).
    node_specs: String,
    /// This node's agent specs.
    specs: Vec<(Role, Vec<String>)>,
    /// Hash: task id → `entry-id stream` of its entry, while it has one.
    index: String,
    /// Hash: task id → the node asked to cancel it (it holds the task).
    requests: String,
    /// Set: the ids of tasks this node holds and is asked to cancel.
    cancels: String,
    /// Hash: task id → `started`, a holder's answer to a cancel request it
    /// could not honour.
    answers: String,
    served: Mutex<Served>,
    takeovers: String,
    results: String,
    order: String,
    nodes: String,
    /// Hash: node declared dead → `declared-ms moved-so-far`, until all its
    /// entries are put back.
    dying: String,
    /// Tasks this node claimed and has not finished.
    in_hand: Mutex<HashMap<TaskId, Entry>>,
    /// Tasks cancelled here because another node took them over: their
    /// Cancelled result is not stored. Out of `in_hand` at once, so that a
    /// copy put back by the leader is taken as a new task, not bound to
    /// the cancelled one.
    dropped: Mutex<HashSet<TaskId>>,
    /// Per stream, where the next `XAUTOCLAIM` scan starts: the live
    /// entries at the head of the pending list do not hide those behind.
    cursors: Mutex<HashMap<String, String>>,
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
        specs: Vec<(Role, Vec<String>)>,
        visibility: Duration,
        retention: usize,
    ) -> Result<RedisQueue> {
        let pool = Pool::connect(config, None)?;
        let queue = RedisQueue {
            next_id: pool.key("tasks:next-id"),
            lanes: pool.key("tasks:lanes"),
            node_specs: pool.key("nodes:specs"),
            specs,
            index: pool.key("tasks:index"),
            requests: pool.key("tasks:cancel-requests"),
            cancels: pool.key(&format!("tasks:cancels:{node}")),
            answers: pool.key("tasks:cancel-answers"),
            served: Mutex::new(Served::default()),
            takeovers: pool.key("tasks:takeovers"),
            results: pool.key("results"),
            order: pool.key("results:order"),
            nodes: pool.key("nodes"),
            dying: pool.key("nodes:dying"),
            pool,
            node,
            visibility,
            retention,
            in_hand: Mutex::new(HashMap::new()),
            dropped: Mutex::new(HashSet::new()),
            cursors: Mutex::new(HashMap::new()),
        };
        queue.register()?;
        queue.discover(true)?;
        Ok(queue)
    }

    /// The stream of `lane` for priority `rank`.
    fn stream(&self, lane: &str, rank: usize) -> String {
        self.pool.key(&format!("tasks:{lane}:{rank}"))
    }

    /// Writes this node's specs and their lanes (again after a flush), so
    /// that other nodes accept tasks for them and their streams exist.
    fn register(&self) -> Result<()> {
        let mut pipe = ::redis::pipe();
        self.register_into(&mut pipe)?;
        self.pool.run(
            Retry::Once,
            &|| "register the node's agent specs".to_owned(),
            |c| pipe.query::<()>(c),
        )
    }

    fn register_into(&self, pipe: &mut ::redis::Pipeline) -> Result<()> {
        pipe.cmd("HSET")
            .arg(&self.node_specs)
            .arg(&self.node)
            .arg(postcard::to_stdvec(&self.specs)?)
            .ignore();
        for (role, _) in &self.specs {
            let lane = Lane::of_spec(role);
            pipe.cmd("HSETNX")
                .arg(&self.lanes)
                .arg(lane.name())
                .arg(postcard::to_stdvec(&lane)?)
                .ignore();
        }
        Ok(())
    }

    /// Lists the cluster's lanes again when their number changed (or
    /// `always`), and reads from now on those this node's specs serve,
    /// creating their consumer groups if new.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    fn discover(&self, always: bool) -> Result<()> {
        let listed: usize =
            self.pool
                .run(Retry::Once, &|| "count the task lanes".to_owned(), |c| {
                    ::redis::cmd("HLEN").arg(&self.lanes).query(c)
                })?;
        if !always && listed == self.served.lock().listed {
            return Ok(());
        }
        let raw: HashMap<String, Vec<u8>> =
            self.pool
                .run(Retry::Once, &|| "list the task lanes".to_owned(), |c| {
                    ::redis::cmd("HGETALL").arg(&self.lanes).query(c)
                })?;
        let mut names: Vec<String> = raw
            .into_iter()
            .filter(|(_, bytes)| {
                postcard::from_bytes::<Lane>(bytes).is_ok_and(|lane| lane.served_by(&self.specs))
            })
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        let streams: Vec<[String; RANKS]> = names
            .iter()
            .map(|name| std::array::from_fn(|rank| self.stream(name, rank)))
            .collect();
        let known = Arc::clone(&self.served.lock().streams);
        let new: Vec<&String> = streams
            .iter()
            .flatten()
            .filter(|s| always || !known.iter().flatten().any(|k| k == *s))
            .collect();
        self.create_groups(new)?;
        *self.served.lock() = Served {
            streams: Arc::new(streams),
            listed,
        };
        Ok(())
    }

    /// Creates the consumer group of every stream given that has none: when
    /// a lane is first served, and again when a command finds a group
    /// missing (the database was flushed, or restarted without
    /// persistence). A group made again delivers every entry left in its
    /// stream anew.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if a group cannot be made.
    fn create_groups<'a>(&self, streams: impl IntoIterator<Item = &'a String>) -> Result<()> {
        for stream in streams {
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

    /// Gives each task a cluster-wide id and appends it to its lane's
    /// stream of its priority (or parks it until its dependencies
    /// succeed); returns the ids in order.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a dependency the cluster does not know;
    /// [`Error::NoAgentForTask`] for a task no live node serves;
    /// [`Error::Codec`]; [`Error::Backend`] if Redis
    /// cannot be reached (then none of the batch is accepted, unless the
    /// reply alone was lost).
    pub(crate) fn enqueue(&self, tasks: Vec<Task>) -> Result<Vec<TaskId>> {
        self.check_dependencies(&tasks)?;
        let count = tasks.len() as u64;
        if count == 0 {
            return Ok(Vec::new());
        }
        let lanes: Vec<Lane> = tasks.iter().map(Lane::of).collect();
        self.check_served(&tasks, &lanes)?;
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
        let mut named: Vec<&Lane> = Vec::new();
        for (n, (mut task, lane)) in tasks.into_iter().zip(&lanes).enumerate() {
            task.id = TaskId::new(first + n as u64);
            ids.push(task.id);
            let record = postcard::to_stdvec(&task.to_record(&[]))?;
            let name = lane.name();
            if !named.contains(&lane) {
                named.push(lane);
                pipe.cmd("HSETNX")
                    .arg(&self.lanes)
                    .arg(&name)
                    .arg(postcard::to_stdvec(lane)?)
                    .ignore();
            }
            let mut dependencies: Vec<u64> = task.dependencies().iter().map(|d| d.get()).collect();
            dependencies.sort_unstable();
            dependencies.dedup();
            let script = pipe.cmd("EVAL");
            script
                .arg(if dependencies.is_empty() {
                    APPEND
                } else {
                    APPEND_AFTER
                })
                .arg(2)
                .arg(self.stream(&name, task.priority.rank()))
                .arg(&self.index)
                .arg(record)
                .arg(task.id.get());
            if !dependencies.is_empty() {
                script.arg(dependencies).arg(self.pool.key(""));
            }
            script.ignore();
        }
        self.pool
            .run(Retry::Never, &|| format!("append {count} tasks"), |c| {
                pipe.query::<()>(c)
            })?;
        Ok(ids)
    }

    /// Refuses the batch if a task depends on a task the cluster does not
    /// know: no outcome stored (evicted, or never submitted), no entry, not
    /// waiting.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the first unknown dependency;
    /// [`Error::Backend`] if Redis cannot be reached.
    fn check_dependencies(&self, tasks: &[Task]) -> Result<()> {
        let mut dependencies: Vec<TaskId> = tasks
            .iter()
            .flat_map(|t| t.dependencies().iter().copied())
            .collect();
        if dependencies.is_empty() {
            return Ok(());
        }
        dependencies.sort_unstable();
        dependencies.dedup();
        let mut pipe = ::redis::pipe();
        for dependency in &dependencies {
            for hash in [
                self.pool.key("tasks:outcomes"),
                self.index.clone(),
                self.pool.key("tasks:waiting"),
            ] {
                pipe.cmd("HEXISTS").arg(hash).arg(dependency.get());
            }
        }
        let known: Vec<bool> = self.pool.run(
            Retry::Once,
            &|| "look up the dependencies".to_owned(),
            |c| pipe.query(c),
        )?;
        match dependencies
            .iter()
            .zip(known.chunks(3))
            .find(|(_, found)| !found.iter().any(|f| *f))
        {
            Some((dependency, _)) => Err(Error::NotFound {
                what: Missing::Task(*dependency),
            }),
            None => Ok(()),
        }
    }

    /// Refuses the batch if a task's lane is served neither by a spec of
    /// this node nor by one of a live node (a heartbeat within the
    /// visibility timeout).
    ///
    /// # Errors
    ///
    /// [`Error::NoAgentForTask`] for the first task nobody serves;
    /// [`Error::Backend`] if Redis cannot be reached.
    fn check_served(&self, tasks: &[Task], lanes: &[Lane]) -> Result<()> {
        let mut cluster: Option<Vec<(Role, Vec<String>)>> = None;
        for (task, lane) in tasks.iter().zip(lanes) {
            if lane.served_by(&self.specs) {
                continue;
            }
            let cluster = match &mut cluster {
                Some(specs) => specs,
                None => cluster.insert(self.live_specs()?),
            };
            if !lane.served_by(cluster) {
                return Err(Error::NoAgentForTask {
                    kind: task.kind().to_owned(),
                    role: lane.role.clone(),
                    capabilities: lane.capabilities.clone(),
                    reason: "no live node of the redis cluster has an agent spec with that role and those capabilities".into(),
                });
            }
        }
        Ok(())
    }

    /// The specs of every node whose heartbeat is within the visibility
    /// timeout.
    fn live_specs(&self) -> Result<Vec<(Role, Vec<String>)>> {
        let specs: HashMap<String, Vec<u8>> = self.pool.run(
            Retry::Once,
            &|| "read the nodes' agent specs".to_owned(),
            |c| ::redis::cmd("HGETALL").arg(&self.node_specs).query(c),
        )?;
        let now = self.server_now()?;
        let live: Vec<String> = self
            .nodes()?
            .into_iter()
            .filter(|(_, at, _)| {
                now.duration_since(*at)
                    .is_ok_and(|age| age <= self.visibility)
                    || *at > now
            })
            .map(|(name, _, _)| name)
            .collect();
        Ok(specs
            .into_iter()
            .filter(|(node, _)| live.contains(node))
            .filter_map(|(_, bytes)| postcard::from_bytes::<Vec<(Role, Vec<String>)>>(&bytes).ok())
            .flatten()
            .collect())
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
        let lanes = Arc::clone(&self.served.lock().streams);
        for rank in 0..RANKS {
            for lane in lanes.iter() {
                let stream = &lane[rank];
                if reclaim {
                    self.reclaim(stream, max, claimed)?;
                }
                if claimed.len() < max {
                    let count = max - claimed.len();
                    self.read_new(std::slice::from_ref(stream), count, None, claimed)?;
                }
            }
        }
        if claimed.is_empty() {
            // Nothing anywhere: wait a little for any stream, then look
            // for lanes new in the cluster.
            let all: Vec<String> = (0..RANKS)
                .flat_map(|rank| lanes.iter().map(move |lane| lane[rank].clone()))
                .collect();
            if all.is_empty() {
                thread::sleep(IDLE_BLOCK);
            } else {
                self.read_new(&all, max, Some(IDLE_BLOCK), claimed)?;
            }
            if claimed.is_empty() {
                self.discover(false)?;
            }
        }
        Ok(())
    }

    /// Takes over entries of `stream` idle past the visibility timeout
    /// until `claimed` holds `max`, scanning on from where the last scan
    /// stopped and at most [`RECLAIM_PAGES`] pages.
    fn reclaim(&self, stream: &str, max: usize, claimed: &mut Vec<Task>) -> Result<()> {
        for _ in 0..RECLAIM_PAGES {
            if claimed.len() >= max {
                break;
            }
            let start = self
                .cursors
                .lock()
                .get(stream)
                .cloned()
                .unwrap_or_else(|| "0-0".to_owned());
            let stale: StreamAutoClaimReply =
                self.pool
                    .run(Retry::Never, &|| "reclaim stale tasks".to_owned(), |c| {
                        ::redis::cmd("XAUTOCLAIM")
                            .arg(stream)
                            .arg(GROUP)
                            .arg(&self.node)
                            .arg(millis(self.visibility))
                            .arg(&start)
                            .arg("COUNT")
                            .arg(max - claimed.len())
                            .query(c)
                    })?;
            let wrapped = stale.next_stream_id == "0-0";
            self.cursors
                .lock()
                .insert(stream.to_owned(), stale.next_stream_id);
            self.admit_all(
                stale.claimed.into_iter().map(|e| (stream, e)),
                true,
                claimed,
            )?;
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
        let keys = fresh.map(|r| r.keys).unwrap_or_default();
        let entries = keys
            .iter()
            .flat_map(|key| key.ids.iter().map(move |e| (key.key.as_str(), e.clone())));
        self.admit_all(entries, false, claimed)
    }

    /// Admits every entry delivered to this node: one that fails (Redis
    /// not answering its look-ups) does not leave those after it pending
    /// here untracked, unrefreshed and unrun until the visibility timeout.
    /// Returns the first error once all were tried.
    fn admit_all<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, StreamId)>,
        reclaimed: bool,
        out: &mut Vec<Task>,
    ) -> Result<()> {
        let mut failed = None;
        for (stream, entry) in entries {
            if let Err(error) = self.admit(stream, entry, reclaimed, out) {
                tracing::warn!(%error, "taking a delivered task in hand failed; it comes back after the visibility timeout");
                failed.get_or_insert(error);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Decodes one delivered entry and takes it in hand, unless it was
    /// reclaimed and its result is already stored.
    fn admit(
        &self,
        stream: &str,
        entry: StreamId,
        reclaimed: bool,
        out: &mut Vec<Task>,
    ) -> Result<()> {
        let Some(bytes) = entry.get::<Vec<u8>>("task") else {
            // Deleted under us (finished meanwhile): nothing to run.
            self.acknowledge(stream, &entry.id)?;
            return Ok(());
        };
        let mut record: TaskRecord = match postcard::from_bytes(&bytes) {
            Ok(record) => record,
            Err(error) => {
                // Written by something else (another version?): taking it
                // again at every reclaim would stall the tasks behind it.
                tracing::error!(%error, entry = %entry.id, "a task entry does not decode: failing its task");
                let Some(id) = entry.get::<u64>("id").filter(|&id| id > 0) else {
                    return self.acknowledge(stream, &entry.id);
                };
                // Its waiters and dependents learn why, as from any failure.
                let failed = TaskResult::failed(
                    TaskId::new(id),
                    TaskStatus::Failed,
                    format!("its entry in redis does not decode: {error}"),
                    0,
                );
                let held = Entry {
                    stream: stream.to_owned(),
                    id: entry.id,
                    lost: false,
                };
                return self.store(&[(&failed, held)]);
            }
        };
        let id = record.id();
        if let Some(held) = self.in_hand.lock().get_mut(&id) {
            // Ours already (delivered again after the group was made
            // anew, or reclaimed from ourselves after refreshes failed):
            // it runs once here; the entry is the one to acknowledge.
            *held = Entry {
                stream: stream.to_owned(),
                id: entry.id,
                lost: false,
            };
            return Ok(());
        }
        // Put back by the cluster's leader from a node declared dead: a
        // reclaim too, counted in the entry itself.
        let requeued: u32 = entry.get("takeovers").unwrap_or(0);
        if reclaimed || requeued > 0 {
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
                return self.acknowledge(stream, &entry.id);
            }
            // Its holder died or froze before it honoured a cancel.
            let requested: bool = self.pool.run(
                Retry::Once,
                &|| format!("look up a cancel request for {id}"),
                |c| {
                    ::redis::cmd("HEXISTS")
                        .arg(&self.requests)
                        .arg(id.get())
                        .query(c)
                },
            )?;
            if requested {
                let cancelled =
                    TaskResult::failed(id, TaskStatus::Cancelled, CANCELLED.to_owned(), 0);
                let held = Entry {
                    stream: stream.to_owned(),
                    id: entry.id,
                    lost: false,
                };
                return self.store(&[(&cancelled, held)]);
            }
        }
        if reclaimed {
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
        for _ in 0..requeued {
            record.count_takeover();
        }
        self.in_hand.lock().insert(
            id,
            Entry {
                stream: stream.to_owned(),
                id: entry.id,
                lost: false,
            },
        );
        out.push(Task::from_record(record));
        Ok(())
    }

    fn acknowledge(&self, stream: &str, entry: &str) -> Result<()> {
        self.pool
            .run(Retry::Once, &|| format!("acknowledge entry {entry}"), |c| {
                ::redis::pipe()
                    .cmd("XACK")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(entry)
                    .ignore()
                    .cmd("XDEL")
                    .arg(stream)
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
            let mut dropped = self.dropped.lock();
            let in_hand = self.in_hand.lock();
            results
                .iter()
                .filter_map(|r| {
                    if r.status() == TaskStatus::Cancelled && dropped.remove(&r.id()) {
                        return None;
                    }
                    Some((r, in_hand.get(&r.id())?.clone()))
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
                .arg(6)
                .arg(&self.results)
                .arg(&self.order)
                .arg(&entry.stream)
                .arg(&self.takeovers)
                .arg(&self.index)
                .arg(&self.requests)
                .arg(result.id().get())
                .arg(bytes)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(self.retention)
                .arg(outcome(result))
                .arg(self.pool.key(""))
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
    /// them. Returns the tasks whose entries
    /// another node took over (or that were acknowledged meanwhile), marked
    /// lost: the caller cancels them here unless they started.
    /// Entries of the tasks in `skip` are not refreshed (a shutting-down
    /// node's tasks it will not run).
    fn refresh(&self, skip: &HashSet<TaskId>) -> Result<Vec<TaskId>> {
        let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
        for (_, entry) in self
            .in_hand
            .lock()
            .iter()
            .filter(|(id, e)| !e.lost && !skip.contains(id))
        {
            by_stream
                .entry(entry.stream.clone())
                .or_default()
                .push(entry.id.clone());
        }
        let by_stream: Vec<(String, Vec<String>)> = by_stream.into_iter().collect();
        if by_stream.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for (stream, ids) in &by_stream {
            pipe.cmd("EVAL")
                .arg(REFRESH)
                .arg(1)
                .arg(stream)
                .arg(GROUP)
                .arg(&self.node)
                .arg(&ids[..]);
        }
        // Read-only when nothing changed hands, and harmless to repeat.
        let lost: Vec<Vec<String>> = self.pool.run(
            Retry::Once,
            &|| "refresh the tasks in hand".to_owned(),
            |c| pipe.query(c),
        )?;
        let mut in_hand = self.in_hand.lock();
        let mut ids = Vec::new();
        for ((stream, _), entries) in by_stream.iter().zip(lost) {
            for (id, held) in in_hand.iter_mut() {
                if held.stream == *stream && entries.contains(&held.id) {
                    held.lost = true;
                    ids.push(*id);
                }
            }
        }
        Ok(ids)
    }

    /// Cancels any task of the cluster, for `Orchestrator::cancel`: at
    /// once if no node took it yet; else asks its holder (this node too,
    /// through its own cancel set), which cancels
    /// it unless it started, and waits for the outcome, at most twice the
    /// visibility timeout (a holder that died meanwhile leaves the request
    /// to the node that takes its tasks over).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an id the cluster never gave out;
    /// [`Error::Timeout`] when no outcome came in time (the request stays:
    /// the task does not start on a node that takes it over);
    /// [`Error::Backend`] if Redis cannot be reached.
    pub(crate) fn cancel(&self, id: TaskId) -> Result<bool> {
        let cancelled = TaskResult::failed(id, TaskStatus::Cancelled, CANCELLED.to_owned(), 0);
        let bytes = postcard::to_stdvec(&ResultRecord::from(&cancelled))?;
        let outcome: String =
            self.pool
                .run(Retry::Never, &|| format!("cancel task {id}"), |c| {
                    ::redis::cmd("EVAL")
                        .arg(CANCEL)
                        .arg(4)
                        .arg(&self.results)
                        .arg(&self.order)
                        .arg(&self.index)
                        .arg(&self.requests)
                        .arg(id.get())
                        .arg(&bytes)
                        .arg(GROUP)
                        .arg(self.retention)
                        .arg(self.pool.key("tasks:cancels:"))
                        .arg(outcome(&cancelled))
                        .arg(self.pool.key(""))
                        .query(c)
                })?;
        match outcome.as_str() {
            "cancelled" => Ok(true),
            "finished" => Ok(false),
            "held" => self.await_cancel(id),
            _ => {
                // Never given out, or finished and its result evicted.
                let issued: Option<u64> = self.pool.run(
                    Retry::Once,
                    &|| "read the task id counter".to_owned(),
                    |c| ::redis::cmd("GET").arg(&self.next_id).query(c),
                )?;
                if issued.is_some_and(|last| id.get() <= last) {
                    Ok(false)
                } else {
                    Err(Error::NotFound {
                        what: Missing::Task(id),
                    })
                }
            }
        }
    }

    /// Waits for the holder's answer to a cancel request: a stored result
    /// (cancelled or not), or its word that the task started.
    fn await_cancel(&self, id: TaskId) -> Result<bool> {
        let deadline = crate::clock::deadline_after(cancel_patience(self.visibility));
        loop {
            if let Some(result) = self.result(id)? {
                return Ok(result.status() == TaskStatus::Cancelled);
            }
            let answered: i64 = self.pool.run(
                Retry::Never,
                &|| format!("read the cancel answer for {id}"),
                |c| {
                    ::redis::cmd("HDEL")
                        .arg(&self.answers)
                        .arg(id.get())
                        .query(c)
                },
            )?;
            if answered > 0 {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The holder's side: takes the cancel requests for tasks this node
    /// holds. Those it cannot cancel (started) are answered, and their
    /// requests withdrawn so that a takeover still runs them.
    fn take_cancel_requests(&self) -> Result<Vec<TaskId>> {
        let ids: Vec<u64> =
            self.pool
                .run(Retry::Never, &|| "take cancel requests".to_owned(), |c| {
                    ::redis::cmd("SPOP").arg(&self.cancels).arg(100).query(c)
                })?;
        Ok(ids.into_iter().map(TaskId::new).collect())
    }

    fn refuse_cancel(&self, ids: &[TaskId]) -> Result<()> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.cmd("HDEL").arg(&self.requests).arg(id.get()).ignore();
            pipe.cmd("HSET")
                .arg(&self.answers)
                .arg(id.get())
                .arg("started")
                .ignore();
        }
        self.pool
            .run(Retry::Never, &|| "answer cancel requests".to_owned(), |c| {
                pipe.query::<()>(c)
            })
    }

    /// Writes this node's heartbeat.
    /// Its specs and lanes go with it: written again after a leader
    /// declared this node dead (it was only frozen) or the database was
    /// flushed; and the task id counter is raised past the tasks it holds.
    fn heartbeat(&self, agents: usize) -> Result<()> {
        let mut pipe = ::redis::pipe();
        let highest = self
            .in_hand
            .lock()
            .keys()
            .map(|id| id.get())
            .max()
            .unwrap_or(0);
        pipe.cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(2)
            .arg(&self.nodes)
            .arg(&self.next_id)
            .arg(&self.node)
            .arg(agents)
            .arg(millis(self.dead_after()))
            .arg(highest)
            .ignore();
        self.register_into(&mut pipe)?;
        self.pool
            .run(Retry::Once, &|| "write the heartbeat".to_owned(), |c| {
                pipe.query::<()>(c)
            })
    }

    /// The leader's duty: declares dead every other node whose heartbeat
    /// is [`dead_after`] old and puts its tasks back for any node, calling
    /// `on_dead` with the node and how many tasks it held once all are back.
    /// A node holding many tasks takes several calls of the script
    /// ([`REAP_CHUNK`] entries each): after a quarter of a heartbeat
    /// interval, or once `stopped`, the rest is left to the next heartbeat,
    /// so the pump goes on feeding its agents meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached. The nodes reported
    /// before the error stay reported; one interrupted is continued by the
    /// next call, from its record in Redis.
    fn reap_dead(
        &self,
        stopped: &dyn Fn() -> bool,
        mut on_dead: impl FnMut(String, usize),
    ) -> Result<()> {
        let until = crate::clock::deadline_after(heartbeat_interval(self.visibility) / 4);
        let now = self.server_now()?;
        let threshold = self.dead_after();
        let mut doomed: Vec<String> =
            self.pool
                .run(Retry::Once, &|| "read the dying nodes".to_owned(), |c| {
                    ::redis::cmd("HKEYS").arg(&self.dying).query(c)
                })?;
        doomed.extend(
            self.beats()?
                .into_iter()
                .filter(|(_, at, _, own)| {
                    now.duration_since(*at)
                        .is_ok_and(|age| age >= threshold.max(*own))
                })
                .map(|(name, ..)| name),
        );
        // This node, declared dead while frozen by a leader before it, is
        // alive: whoever leads after it finishes that record.
        doomed.retain(|name| *name != self.node);
        doomed.sort_unstable();
        doomed.dedup();
        if doomed.is_empty() {
            return Ok(());
        }
        let lanes: Vec<String> =
            self.pool
                .run(Retry::Once, &|| "list the task lanes".to_owned(), |c| {
                    ::redis::cmd("HKEYS").arg(&self.lanes).query(c)
                })?;
        let streams: Vec<String> = lanes
            .iter()
            .flat_map(|lane| (0..RANKS).map(move |rank| self.stream(lane, rank)))
            .collect();
        for node in doomed {
            loop {
                if stopped() {
                    return Ok(());
                }
                let (moved, done): (i64, i64) =
                    self.pool
                        .run(Retry::Never, &|| format!("declare node {node} dead"), |c| {
                            ::redis::cmd("EVAL")
                                .arg(REAP)
                                .arg(4 + streams.len())
                                .arg(&self.nodes)
                                .arg(&self.node_specs)
                                .arg(&self.index)
                                .arg(&self.dying)
                                .arg(&streams)
                                .arg(&node)
                                .arg(millis(threshold))
                                .arg(GROUP)
                                .arg(REAP_CHUNK)
                                .query(c)
                        })?;
                // Negative: the node is alive after all, or already gone.
                let Ok(moved) = usize::try_from(moved) else {
                    break;
                };
                if done == 1 {
                    tracing::warn!(%node, requeued = moved, "a node stopped writing its heartbeat: declared dead, its tasks put back");
                    on_dead(node.clone(), moved);
                    // Deleted once reported: a call whose reply was lost
                    // finds the record and reports it at the next try.
                    self.pool
                        .run(Retry::Once, &|| format!("forget dead node {node}"), |c| {
                            ::redis::cmd("HDEL")
                                .arg(&self.dying)
                                .arg(&node)
                                .query::<()>(c)
                        })?;
                    break;
                }
                if Instant::now() >= until {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// How old this node's heartbeat must be before a leader declares it
    /// dead: [`dead_after`] of its visibility and command timeouts.
    fn dead_after(&self) -> Duration {
        dead_after(self.visibility, self.pool.config().command_timeout())
    }

    /// The Redis server's clock.
    fn server_now(&self) -> Result<SystemTime> {
        let (seconds, micros): (u64, u64) =
            self.pool
                .run(Retry::Once, &|| "read the server's clock".to_owned(), |c| {
                    ::redis::cmd("TIME").query(c)
                })?;
        Ok(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros))
    }

    /// After a failed command: when it failed because a consumer group is
    /// missing, makes the groups again, so the next pull succeeds.
    fn recover(&self, error: &Error) {
        if has_code(error, "NOGROUP") {
            tracing::warn!(
                "the task streams lost their consumer groups (flushed, or a redis without persistence restarted); creating them again"
            );
            let streams = Arc::clone(&self.served.lock().streams);
            if let Err(error) = self.create_groups(streams.iter().flatten()) {
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
    /// node), by priority rank, over every lane.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    pub(crate) fn depths(&self) -> Result<[usize; RANKS]> {
        let names: Vec<String> =
            self.pool
                .run(Retry::Once, &|| "list the task lanes".to_owned(), |c| {
                    ::redis::cmd("HKEYS").arg(&self.lanes).query(c)
                })?;
        let mut depths = [0; RANKS];
        for name in &names {
            for (rank, depth) in depths.iter_mut().enumerate() {
                *depth += self.depth(&self.stream(name, rank))?;
            }
        }
        Ok(depths)
    }

    /// Entries of one stream not yet delivered to a node.
    fn depth(&self, stream: &str) -> Result<usize> {
        let length: usize = self.pool.run(
            Retry::Once,
            &|| format!("read the length of {stream}"),
            |c| ::redis::cmd("XLEN").arg(stream).query(c),
        )?;
        if length == 0 {
            return Ok(0);
        }
        let groups: Vec<HashMap<String, ::redis::Value>> = self.pool.run(
            Retry::Once,
            &|| format!("read the depth of {stream}"),
            |c| ::redis::cmd("XINFO").arg("GROUPS").arg(stream).query(c),
        )?;
        let Some(group) = groups.iter().find(
            |g| matches!(g.get("name"), Some(::redis::Value::BulkString(n)) if n == GROUP.as_bytes()),
        ) else {
            // No node has served this lane yet: nothing was delivered.
            return Ok(length);
        };
        let count = |field: &str| match group.get(field) {
            Some(::redis::Value::Int(n)) => usize::try_from(*n).ok(),
            _ => None,
        };
        Ok(match count("lag") {
            Some(lag) => lag,
            // Redis cannot tell the lag once entries were deleted from the
            // middle of the stream (finished tasks are). Every entry left is
            // either delivered and pending, or not delivered.
            None => {
                let pending = count("pending")
                    .ok_or_else(|| unexpected("read a stream's depth", "no pending count"))?;
                length.saturating_sub(pending)
            }
        })
    }

    /// The nodes that wrote a heartbeat: name, last heartbeat, agents.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if Redis cannot be reached.
    pub(crate) fn nodes(&self) -> Result<Vec<(String, SystemTime, usize)>> {
        Ok(self
            .beats()?
            .into_iter()
            .map(|(name, at, agents, _)| (name, at, agents))
            .collect())
    }

    /// The nodes that wrote a heartbeat: name, last heartbeat, agents, and
    /// the age after which the node may be declared dead (zero if its row
    /// does not say).
    fn beats(&self) -> Result<Vec<(String, SystemTime, usize, Duration)>> {
        let raw: HashMap<String, String> =
            self.pool
                .run(Retry::Once, &|| "read the nodes".to_owned(), |c| {
                    ::redis::cmd("HGETALL").arg(&self.nodes).query(c)
                })?;
        let mut nodes: Vec<_> = raw
            .into_iter()
            .filter_map(|(name, value)| {
                let mut fields = value.split(' ');
                let at = UNIX_EPOCH + Duration::from_millis(fields.next()?.parse().ok()?);
                let agents = fields.next()?.parse().ok()?;
                let own = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                Some((name, at, agents, Duration::from_millis(own)))
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

/// What the orchestrator tells its pump at shutdown.
#[derive(Debug, Default)]
pub(crate) struct PumpControl {
    /// Claim no more tasks, but go on writing heartbeats, refreshing the
    /// tasks still running and answering cancel requests, so that no node
    /// takes over a task this one is finishing.
    pub(crate) drain: AtomicBool,
    /// End the pump.
    pub(crate) stop: AtomicBool,
}

/// The pump: keeps this node's agents fed from the cluster's streams and
/// refreshes what it holds. Ends when `control.stop` is set.
pub(crate) fn spawn_pump(
    shared: Arc<Shared>,
    queue: Arc<RedisQueue>,
    agents: usize,
    control: Arc<PumpControl>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-redis-pump".into())
        .spawn(move || {
            // Twice the agents in hand: each agent has its next task ready.
            let target = agents.max(1) * 2;
            // `None`: never refreshed, so due at once.
            let mut refreshed: Option<Instant> = None;
            let mut beaten: Option<Instant> = None;
            let mut polled = Instant::now();
            while !control.stop.load(Ordering::Acquire) {
                let draining = control.drain.load(Ordering::Acquire);
                if polled.elapsed() >= CANCEL_POLL {
                    polled = Instant::now();
                    honour_cancels(&shared, &queue);
                }
                // Each step may wait a command timeout on a dead server:
                // a stop asked meanwhile ends the pass before the next.
                let stopped = || control.stop.load(Ordering::Acquire);
                if stopped() {
                    break;
                }
                if beaten.is_none_or(|at| at.elapsed() >= heartbeat_interval(queue.visibility)) {
                    beaten = Some(Instant::now());
                    if let Err(error) = queue.heartbeat(agents) {
                        tracing::warn!(%error, "writing the heartbeat failed");
                    }
                    let leading = shared.election.as_ref().is_some_and(|e| e.is_leader());
                    if leading {
                        let reaped = queue.reap_dead(&stopped, |node, requeued| {
                            shared.emit(Event::NodeDead { node, requeued });
                        });
                        if let Err(error) = reaped {
                            tracing::warn!(%error, "looking for dead nodes failed");
                        }
                    }
                }
                // Refreshing and reclaiming run every third of the
                // visibility timeout; plain reads in between.
                if stopped() {
                    break;
                }
                let due = refreshed.is_none_or(|at| at.elapsed() >= queue.visibility / 3);
                if due {
                    // Draining: the tasks the distributor let go of at
                    // close (never started) are left to other nodes.
                    let mut skip = HashSet::new();
                    if draining {
                        let held: Vec<TaskId> = queue.in_hand.lock().keys().copied().collect();
                        let distributor = shared.distributor.lock();
                        skip.extend(held.into_iter().filter(|id| !distributor.is_live(*id)));
                    }
                    match queue.refresh(&skip) {
                        Ok(lost) => {
                            refreshed = Some(Instant::now());
                            drop_lost(&shared, &queue, &lost);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "refreshing the tasks in hand failed");
                            queue.recover(&error);
                        }
                    }
                    // A busy pump is never idle: it looks for new lanes here.
                    if let Err(error) = queue.discover(false) {
                        tracing::warn!(%error, "listing the task lanes failed");
                    }
                }
                if stopped() {
                    break;
                }
                let room = target.saturating_sub(queue.in_hand.lock().len());
                if room == 0 || draining {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                match queue.claim(room, due) {
                    Ok(tasks) if tasks.is_empty() => {}
                    Ok(tasks) => {
                        let mut fx = Effects::default();
                        let mut distributor = shared.distributor.lock();
                        // Under the lock `close` takes: claimed after the
                        // drain began, they are left unrefreshed, for
                        // another node.
                        if !control.drain.load(Ordering::Acquire) {
                            distributor.admit_claimed(tasks, &mut fx);
                        }
                        drop(distributor);
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

/// Cancels the tasks other nodes asked this one to cancel, unless they
/// started; answers for those that did.
fn honour_cancels(shared: &Shared, queue: &RedisQueue) {
    let ids = match queue.take_cancel_requests() {
        Ok(ids) if ids.is_empty() => return,
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "reading cancel requests failed");
            return;
        }
    };
    let mut fx = Effects::default();
    let mut refused = Vec::new();
    {
        let mut distributor = shared.distributor.lock();
        for id in ids {
            if !matches!(distributor.cancel(id, CANCELLED, &mut fx), Ok(true)) {
                refused.push(id);
            }
        }
    }
    shared.apply(&mut fx);
    if !refused.is_empty() {
        if let Err(error) = queue.refuse_cancel(&refused) {
            tracing::warn!(%error, "answering cancel requests failed");
        }
    }
}

/// Cancels here the tasks another node took over, unless they started (a
/// started one finishes here too, and its result is stored: at least once).
fn drop_lost(shared: &Shared, queue: &RedisQueue, lost: &[TaskId]) {
    if lost.is_empty() {
        return;
    }
    let mut fx = Effects::default();
    let mut distributor = shared.distributor.lock();
    for &id in lost {
        // Only a task finished meanwhile is not live: nothing to drop.
        if let Ok(true) = distributor.cancel(id, "taken over by another node", &mut fx) {
            // Before its result reaches the recorder (`fx` is applied
            // below): the recorder then ignores it.
            queue.dropped.lock().insert(id);
            queue.in_hand.lock().remove(&id);
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

/// How a finished task counts for its dependents: `ok`, or why it did not
/// succeed, as the in-process distributor words it.
fn outcome(result: &TaskResult) -> String {
    let how = match result.status() {
        TaskStatus::Succeeded => return "ok".to_owned(),
        TaskStatus::Cancelled => "was cancelled",
        TaskStatus::TimedOut => "timed out",
        _ => "failed",
    };
    match result.error() {
        Some(error) => format!("{how}: {error}"),
        None => how.to_owned(),
    }
}

/// How long a cancel waits for the holder's answer: twice the visibility
/// timeout, saturating (the builder accepts any timeout above its floor).
fn cancel_patience(visibility: Duration) -> Duration {
    visibility.saturating_mul(2)
}

/// How often a node writes its heartbeat: a twelfth of the visibility
/// timeout.
fn heartbeat_interval(visibility: Duration) -> Duration {
    visibility / 12
}

/// How old a heartbeat makes the cluster's leader declare its node dead:
/// three heartbeats missed (a quarter of the visibility timeout) and one
/// command timeout more, since the pump that writes heartbeats may wait
/// that long on one command.
fn dead_after(visibility: Duration, command_timeout: Duration) -> Duration {
    heartbeat_interval(visibility)
        .saturating_mul(3)
        .saturating_add(command_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts write a dependent's failed result by hand
    /// (`failed_record` in [`settle_lua`]): this pins the layout they
    /// assume.
    #[test]
    fn a_failed_result_encodes_as_the_scripts_write_it() {
        let result = TaskResult::failed(TaskId::new(300), TaskStatus::Failed, "why".into(), 0);
        let bytes = postcard::to_stdvec(&ResultRecord::from(&result)).unwrap();
        assert_eq!(bytes, [0xAC, 0x02, 0, 1, 3, b'w', b'h', b'y', 0, 0, 0, 3]);
    }

    #[test]
    fn a_huge_visibility_timeout_does_not_overflow_the_cancel_wait() {
        assert_eq!(cancel_patience(Duration::MAX), Duration::MAX);
        assert_eq!(
            cancel_patience(Duration::from_secs(3)),
            Duration::from_secs(6)
        );
    }
}
