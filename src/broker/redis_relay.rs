//! Messages between the nodes of a cluster on Redis (feature `redis`): the
//! [`Remote`] of a cluster node's broker, and the relay thread that delivers
//! what other nodes send.
//!
//! # Layout
//!
//! Under the namespace `ns`:
//!
//! | key | what |
//! | --- | --- |
//! | `ns:relay:next-node` | the node number counter (`INCR` at join; each renewal raises it to at least the node's number) |
//! | `ns:relay:nodes` | sorted set: node number → end of its lease (ms, the server's clock) |
//! | `ns:relay:capacity` | hash: node number → the bound of its relay stream |
//! | `ns:relay:stream:<n>` | node `n`'s relay stream: one entry per message, field `m` = postcard bytes |
//! | `ns:relay:dead:<n>:<ms>` | what node `n`'s stream held when a live node found its lease ended at `<ms>` (server clock) |
//!
//! # Protocol
//!
//! * **Join.** At connect a node takes a fresh number (`INCR`, skipping
//!   any a live node holds), which its agent ids carry in their high bits
//!   ([`AgentId::node`]), and enters the live set with a lease (the
//!   orchestrator's visibility timeout, at least 1 s), renewed every third
//!   of it by the relay thread, which blocks in a read for at most a
//!   quarter of it. A node that stops answering leaves the live set when
//!   its lease ends; a node that shuts down leaves it at once.
//! * **Redis losing its data** (`FLUSHDB`, a restart without persistence)
//!   resets the counter. Each read of the relay thread also checks that
//!   its node is still listed, and a failed read may mean a restart: either
//!   way the node renews at once, which lists it again and raises the
//!   counter past its number. Only a node joining in that gap (one read of
//!   at most 100 ms, plus reconnecting after a restart) can take the
//!   number of a live node.
//! * **Send.** One script checks that the recipient's node is live and that
//!   its stream is below its bound, then `XADD`s the message: a dead node is
//!   [`Error::NotFound`] and a full stream [`Error::Full`], answered in the
//!   same round trip. A live node whose capacity entry is missing (deleted
//!   or evicted; its next renewal writes it again) counts as full, bound 0.
//!   Nothing is trimmed away (no `MAXLEN`): a message is refused, never
//!   dropped silently.
//! * **Fan-out.** One script appends a broadcast or publication to the
//!   stream of every other live node below its bound, and names the full
//!   ones.
//! * **Relay.** Each node's relay thread reads its own stream (`XREAD
//!   BLOCK`), delivers each message into local mailboxes with the broker's
//!   `*_here` methods (which never relay again: a message crosses at most
//!   one hop), and deletes the entries it delivered in the same pipeline as
//!   its next read. The stream's length is thus the node's backlog, which
//!   the bound limits. A mailbox that is full when a message arrives cannot
//!   refuse the sender any more: the message becomes a dead letter here,
//!   reason [`DeadLetterReason::Full`](super::DeadLetterReason::Full).
//! * **Leave.** On shutdown the node leaves the live set (later sends to it
//!   fail with `NotFound`), delivers what its stream still holds, and
//!   deletes the stream.
//! * **Reap.** A node killed outright leaves its unread messages in its
//!   stream. Each renewal, by any live node, also reaps the nodes whose
//!   lease ended: their entries go, and their stream, unless empty, is
//!   renamed to the dead-letter stream `ns:relay:dead:<n>:<ms>` (read it
//!   with `XRANGE`; nothing deletes it) with a warning naming the node and
//!   the count. It may also hold the last messages the node delivered (their
//!   deletion goes with its next read). A node frozen past its lease that
//!   resumes enters the live set again, without those messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::streams::StreamReadReply;
use serde::{Deserialize, Serialize};

use super::{Delivery, Message, MessageBroker, MessageKind, Remote};
use crate::cluster::{Pool, RedisConfig, Retry, unexpected};
use crate::error::{Error, Result};
use crate::ids::{AgentId, Role};

/// The default bound of a node's relay stream
/// ([`OrchestratorBuilder::relay_capacity`](crate::OrchestratorBuilder::relay_capacity)):
/// 10,000 messages not yet delivered by the node.
pub const DEFAULT_RELAY_CAPACITY: usize = 10_000;

/// Most entries the relay thread takes per read.
const BATCH: usize = 512;
/// Longest a relay thread blocks in one read, so it sees `stop` promptly.
const MAX_BLOCK: Duration = Duration::from_millis(100);
/// The shortest relay lease: a shorter visibility timeout would leave a
/// healthy node out of the live set whenever a renewal round trip or a
/// pause of its relay thread runs late (its senders told `NotFound`).
const MIN_LEASE: Duration = Duration::from_secs(1);

/// The server's clock in ms, inside a script.
const NOW: &str = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Takes the next node number no live node holds (the counter may lag
/// behind the live set when Redis lost it), and enters the live set with
/// it unless it is past the largest. KEYS: counter, nodes, capacities.
/// ARGV: lease ms, capacity, largest number. Returns the number.
const JOIN: &str = "
local n
repeat
  n = redis.call('INCR', KEYS[1])
  local lease = redis.call('ZSCORE', KEYS[2], n)
until not lease or tonumber(lease) < now
if n <= tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), n)
  redis.call('HSET', KEYS[3], n, ARGV[2])
end
return n
";

/// Renews the live set, and raises the counter to at least this node's
/// number, so that after Redis lost its data (`FLUSHDB`, a restart without
/// persistence) no node joining later takes it. Then reaps the nodes whose
/// lease ended: their entries go, and what their stream still holds moves
/// to a dead-letter stream `<dead prefix><node>:<now>` (an empty stream is
/// deleted). KEYS: nodes, capacities, counter. ARGV: node, lease ms,
/// capacity, stream prefix, dead prefix. Returns `{node, messages moved}`
/// for each node reaped.
const BEAT: &str = "
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], ARGV[1])
end
local reaped = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  local stream = ARGV[4] .. n
  local left = redis.call('XLEN', stream)
  if left > 0 then
    redis.call('RENAME', stream, ARGV[5] .. n .. ':' .. now)
  else
    redis.call('DEL', stream)
  end
  redis.call('ZREM', KEYS[1], n)
  redis.call('HDEL', KEYS[2], n)
  table.insert(reaped, {tonumber(n), left})
end
return reaped
";

/// Appends one message for a live node below its bound. KEYS: nodes,
/// capacities, stream. ARGV: node, message. Returns a status ([`QUEUED`],
/// [`NOT_LIVE`], [`AT_BOUND`]) and the bound, apart: a missing capacity
/// entry reads as bound 0 (the stream counts as full until the node's next
/// renewal writes the entry again), so the bound alone cannot say queued.
const SEND: &str = "
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) < now then return {-1, 0} end
local bound = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if redis.call('XLEN', KEYS[3]) >= bound then return {1, bound} end
redis.call('XADD', KEYS[3], '*', 'm', ARGV[2])
return {0, 0}
";
/// [`SEND`]'s status: the message is in the stream.
const QUEUED: i64 = 0;
/// [`SEND`]'s status: the node holds no lease.
const NOT_LIVE: i64 = -1;
/// [`SEND`]'s status: the stream is at its bound (`bound` follows).
const AT_BOUND: i64 = 1;

/// Appends one message for every other live node below its bound. KEYS:
/// nodes, capacities. ARGV: this node, stream prefix, message. Returns the
/// number of nodes queued for, then the full ones.
const FAN_OUT: &str = "
local relayed, full = 0, {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if n ~= ARGV[1] then
    local stream = ARGV[2] .. n
    local bound = tonumber(redis.call('HGET', KEYS[2], n) or '0')
    if redis.call('XLEN', stream) >= bound then
      table.insert(full, tonumber(n))
    else
      redis.call('XADD', stream, '*', 'm', ARGV[3])
      relayed = relayed + 1
    end
  end
end
return {relayed, full}
";

/// A message as it travels in a relay stream. `to` is `None` for a
/// fan-out; `role` narrows a broadcast.
#[derive(Serialize)]
struct Outgoing<'a> {
    to: Option<u64>,
    from: u64,
    kind: MessageKind,
    topic: Option<&'a str>,
    role: Option<&'a Role>,
    body: &'a [u8],
}

/// [`Outgoing`], read back.
#[derive(Deserialize)]
struct Incoming {
    to: Option<u64>,
    from: u64,
    kind: MessageKind,
    topic: Option<String>,
    role: Option<Role>,
    body: Vec<u8>,
}

/// One node's end of the relay: sends to the other nodes, and reads its
/// own stream (in [`spawn_relay`]).
pub(crate) struct RedisRelay {
    pool: Pool,
    node: u32,
    capacity: usize,
    lease: Duration,
    nodes: String,
    capacities: String,
    counter: String,
    prefix: String,
    dead: String,
    stream: String,
    beat: Script,
    send: Script,
    fan_out: Script,
}

impl RedisRelay {
    /// Takes a node number and enters the live set for `lease` (at least
    /// [`MIN_LEASE`]); the stream holds at most `capacity` undelivered
    /// messages.
    ///
    /// # Errors
    ///
    /// As [`Pool::connect`]; [`Error::InvalidConfig`] for a capacity of 0
    /// or when the cluster has handed out every node number;
    /// [`Error::Backend`] if Redis fails.
    pub(crate) fn connect(
        config: RedisConfig,
        lease: Duration,
        capacity: usize,
    ) -> Result<RedisRelay> {
        if capacity == 0 {
            return Err(Error::InvalidConfig(
                "the relay capacity must be at least 1".into(),
            ));
        }
        let pool = Pool::connect(config, None)?;
        let counter = pool.key("relay:next-node");
        let nodes = pool.key("relay:nodes");
        let capacities = pool.key("relay:capacity");
        let lease = lease.max(MIN_LEASE);
        let join = Script::new(&format!("{NOW}{JOIN}"));
        let node: u64 = pool.run(Retry::Never, &|| "join the relay".to_owned(), |c| {
            join.key(&counter)
                .key(&nodes)
                .key(&capacities)
                .arg(millis(lease))
                .arg(capacity)
                .arg(AgentId::MAX_NODE)
                .invoke(c)
        })?;
        let node = u32::try_from(node)
            .ok()
            .filter(|&n| n <= AgentId::MAX_NODE)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "node number {node} is past the largest an agent id holds ({}): \
                     reset {counter}, or use another namespace",
                    AgentId::MAX_NODE
                ))
            })?;
        let prefix = pool.key("relay:stream:");
        Ok(RedisRelay {
            dead: pool.key("relay:dead:"),
            nodes,
            capacities,
            counter,
            stream: format!("{prefix}{node}"),
            prefix,
            pool,
            node,
            capacity,
            lease,
            beat: Script::new(&format!("{NOW}{BEAT}")),
            send: Script::new(&format!("{NOW}{SEND}")),
            fan_out: Script::new(&format!("{NOW}{FAN_OUT}")),
        })
    }

    /// Renews the live set and reaps the nodes whose lease ended (see
    /// [`BEAT`]), logging the messages they left undelivered.
    fn renew(&self) -> Result<()> {
        let reaped: Vec<(u32, u64)> =
            self.pool
                .run(Retry::Once, &|| "renew the relay lease".to_owned(), |c| {
                    self.beat
                        .key(&self.nodes)
                        .key(&self.capacities)
                        .key(&self.counter)
                        .arg(self.node)
                        .arg(millis(self.lease))
                        .arg(self.capacity)
                        .arg(&self.prefix)
                        .arg(&self.dead)
                        .invoke(c)
                })?;
        for (node, messages) in reaped.into_iter().filter(|&(_, m)| m > 0) {
            tracing::warn!(
                node,
                messages,
                record = %format!("{}{node}:*", self.dead),
                "a node's relay lease ended with messages in its stream; moved to a dead-letter stream"
            );
        }
        Ok(())
    }

    /// Leaves the live set: sends to this node are refused from now on.
    fn leave(&self) -> Result<()> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZREM")
            .arg(&self.nodes)
            .arg(self.node)
            .ignore()
            .cmd("HDEL")
            .arg(&self.capacities)
            .arg(self.node)
            .ignore();
        self.pool
            .run(Retry::Once, &|| "leave the relay".to_owned(), |c| {
                pipe.query::<()>(c)
            })
    }

    /// Deletes the entries delivered (`done`), then reads what follows
    /// `last`, waiting at most `block` for something to arrive (not at all
    /// without one). Also says whether this node is in the live set, which
    /// it leaves only by `leave` unless Redis lost its data.
    fn read(
        &self,
        done: &[String],
        last: &str,
        block: Option<Duration>,
    ) -> Result<(bool, StreamReadReply)> {
        let mut pipe = ::redis::pipe();
        if !done.is_empty() {
            pipe.cmd("XDEL").arg(&self.stream).arg(done).ignore();
        }
        pipe.cmd("ZSCORE").arg(&self.nodes).arg(self.node);
        let read = pipe.cmd("XREAD").arg("COUNT").arg(BATCH);
        if let Some(block) = block {
            // At least 1 ms: `BLOCK 0` would wait forever.
            read.arg("BLOCK")
                .arg(block.as_millis().clamp(1, u128::from(u32::MAX)) as u64);
        }
        read.arg("STREAMS").arg(&self.stream).arg(last);
        let (lease, read): (Option<f64>, Option<StreamReadReply>) = self.pool.run(
            Retry::Once,
            &|| format!("read the relay stream {}", self.stream),
            |c| pipe.query(c),
        )?;
        Ok((lease.is_some(), read.unwrap_or_default()))
    }

    fn delete_stream(&self) -> Result<()> {
        self.pool
            .run(Retry::Once, &|| "delete the relay stream".to_owned(), |c| {
                ::redis::cmd("DEL").arg(&self.stream).query(c)
            })
    }
}

impl Remote for RedisRelay {
    fn node(&self) -> u32 {
        self.node
    }

    fn send(&self, to: AgentId, message: &Message) -> Result<()> {
        let bytes = encode(Some(to), message, None)?;
        let stream = format!("{}{}", self.prefix, to.node());
        let (status, bound): (i64, i64) =
            self.pool
                .run(Retry::Never, &|| format!("relay a message to {to}"), |c| {
                    self.send
                        .key(&self.nodes)
                        .key(&self.capacities)
                        .key(&stream)
                        .arg(to.node())
                        .arg(&bytes[..])
                        .invoke(c)
                })?;
        let unexpected = || unexpected("relay a message", &format!("[{status}, {bound}]"));
        match status {
            QUEUED => Ok(()),
            NOT_LIVE => Err(Error::unknown_agent(to)),
            AT_BOUND => Err(Error::Full {
                agent: to,
                capacity: usize::try_from(bound).map_err(|_| unexpected())?,
            }),
            _ => Err(unexpected()),
        }
    }

    fn fan_out(&self, message: &Message, role: Option<&Role>) -> Result<(usize, Vec<u32>)> {
        let bytes = encode(None, message, role)?;
        self.pool.run(
            Retry::Never,
            &|| format!("relay a {:?} message to the other nodes", message.kind()),
            |c| {
                self.fan_out
                    .key(&self.nodes)
                    .key(&self.capacities)
                    .arg(self.node)
                    .arg(&self.prefix)
                    .arg(&bytes[..])
                    .invoke(c)
            },
        )
    }
}

impl std::fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRelay")
            .field("node", &self.node)
            .field("stream", &self.stream)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// `duration` in whole ms, as a script argument.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn encode(to: Option<AgentId>, message: &Message, role: Option<&Role>) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(&Outgoing {
        to: to.map(AgentId::get),
        from: message.from().get(),
        kind: message.kind(),
        topic: message.topic(),
        role,
        body: message.body_bytes(),
    })?)
}

/// Delivers one relayed message into this node's mailboxes.
fn deliver(broker: &MessageBroker, incoming: Incoming) {
    let from = AgentId::new(incoming.from);
    let body: Arc<[u8]> = incoming.body.into();
    let topic: Option<Arc<str>> = incoming.topic.map(Arc::from);
    let mut ignored = Delivery::default();
    match (incoming.to, incoming.kind, topic) {
        (Some(to), kind, topic) => {
            broker.deliver_here(AgentId::new(to), Message::shared(from, kind, topic, body));
        }
        (None, MessageKind::Publication, Some(topic)) => {
            broker.publish_here(from, topic, body, &mut ignored);
        }
        (None, _, _) => broker.fan_out_here(from, incoming.role.as_ref(), body, &mut ignored),
    }
}

/// The relay thread: renews the node's lease and delivers what its stream
/// receives until `stop` is set; then leaves the live set and delivers what
/// is left.
pub(crate) fn spawn_relay(
    relay: Arc<RedisRelay>,
    broker: MessageBroker,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-redis-relay".into())
        .spawn(move || {
            // Short enough for the renewal, due every third of the lease,
            // to come well before the lease ends.
            let block = MAX_BLOCK
                .min(relay.pool.config().command_timeout() / 2)
                .min(relay.lease / 4);
            let mut last = "0-0".to_owned();
            let mut done: Vec<String> = Vec::new();
            let mut renewed = Instant::now();
            let mut renew_now = false;
            // Whether anything was read, and whether this node is listed.
            let mut relay_once = |block: Option<Duration>| -> Result<(bool, bool)> {
                let (listed, read) = relay.read(&done, &last, block)?;
                done.clear();
                let mut any = false;
                for entry in read.keys.into_iter().flat_map(|key| key.ids) {
                    any = true;
                    match entry.get::<Vec<u8>>("m").map(|m| postcard::from_bytes(&m)) {
                        Some(Ok(incoming)) => deliver(&broker, incoming),
                        _ => tracing::warn!(entry = %entry.id, "skipping a relay entry agentry cannot read"),
                    }
                    last.clone_from(&entry.id);
                    done.push(entry.id);
                }
                Ok((any, listed))
            };
            while !stop.load(Ordering::Acquire) {
                if renew_now || renewed.elapsed() >= relay.lease / 3 {
                    match relay.renew() {
                        Ok(()) => (renewed, renew_now) = (Instant::now(), false),
                        Err(error) => tracing::warn!(%error, "renewing the relay lease failed"),
                    }
                }
                match relay_once(Some(block)) {
                    // Redis lost this node's entry (and likely the node
                    // counter): enter again at once, before a joining node
                    // can take this number.
                    Ok((_, false)) => renew_now = true,
                    Ok((_, true)) => {}
                    Err(error) => {
                        tracing::warn!(%error, "reading the relay stream failed; retrying");
                        // Redis may have restarted empty.
                        renew_now = true;
                        thread::sleep(block);
                    }
                }
            }
            // Nothing can be queued for this node once it has left: what is
            // in the stream then is all there will be.
            if let Err(error) = relay.leave() {
                tracing::warn!(%error, "leaving the relay failed");
                return;
            }
            loop {
                match relay_once(None) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => break,
                    Err(error) => {
                        tracing::warn!(%error, "delivering the last relayed messages failed");
                        return;
                    }
                }
            }
            if let Err(error) = relay.delete_stream() {
                tracing::warn!(%error, "deleting the relay stream failed");
            }
        })?;
    Ok(thread)
}
