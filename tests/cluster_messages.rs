//! Messages between the nodes of a cluster on Redis (feature `redis`):
//! cluster-wide agent ids; a direct message to an agent of another node
//! process and its reply; a broadcast reaching agents on three nodes; topic
//! subscribers on two nodes; a full remote mailbox turning the message into
//! a dead letter on the receiving node; a relay stream at its bound refusing
//! the sender with `Full` (its node frozen with SIGSTOP) and delivering
//! everything once resumed; unknown cluster ids; Redis down. Multi-process
//! tests re-execute this binary as nodes.
#![cfg(feature = "redis")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    Agent, AgentContext, AgentId, AutoscalePolicy, DeadLetterReason, Error, Mailbox, Message,
    MessageKind, Orchestrator, OrchestratorBuilder, Output, RedisConfig, Role, Task, TaskError,
};
use common::RedisServer;
use serde::{Deserialize, Serialize};

/// Set in a child: the Redis URL of the cluster it joins.
const CHILD: &str = "AGENTRY_MESSAGE_NODE_CHILD";
/// Set in a child: its node's relay capacity.
const CHILD_RELAY: &str = "AGENTRY_MESSAGE_NODE_RELAY";
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Generous bound for anything that should take well under a second.
const PATIENCE: Duration = Duration::from_secs(60);
/// Starts the line a child prints once its node is up.
const READY: &str = "@ready";

/// What the test says to the agents.
#[derive(Debug, Serialize, Deserialize)]
enum Ask {
    /// Reply with your node and id.
    Who,
    /// Reply with this text.
    Echo(String),
    /// Subscribe to this topic, then reply.
    Subscribe(String),
}

/// What the agents answer.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Answer {
    Here {
        node: String,
        agent: u64,
    },
    Echo {
        node: String,
        text: String,
    },
    Subscribed {
        agent: u64,
    },
    Heard {
        agent: u64,
        topic: String,
        body: u32,
    },
}

/// An agent that answers every message to its sender.
struct Responder {
    node: String,
}

impl Agent for Responder {
    fn execute(&mut self, _: &Task, _: &AgentContext) -> Result<Output, TaskError> {
        Ok(Output::empty())
    }

    fn on_message(&mut self, message: Message, ctx: &AgentContext) {
        let me = ctx.id();
        let answer = match (message.kind(), message.topic()) {
            (MessageKind::Publication, Some(topic)) => Answer::Heard {
                agent: me.get(),
                topic: topic.to_owned(),
                body: message.body().unwrap(),
            },
            _ => match message.body::<Ask>().unwrap() {
                Ask::Who => Answer::Here {
                    node: self.node.clone(),
                    agent: me.get(),
                },
                Ask::Echo(text) => Answer::Echo {
                    node: self.node.clone(),
                    text,
                },
                Ask::Subscribe(topic) => {
                    ctx.broker().subscribe(me, &topic).unwrap();
                    Answer::Subscribed { agent: me.get() }
                }
            },
        };
        ctx.broker().send(me, message.from(), &answer).unwrap();
    }
}

fn node_builder(redis: impl Into<RedisConfig>, name: &str, agents: usize) -> OrchestratorBuilder {
    let node = name.to_owned();
    Orchestrator::builder()
        .agents(Role::Researcher, agents, move || Responder {
            node: node.clone(),
        })
        .autoscale(AutoscalePolicy::disabled())
        .redis(redis)
        .node(name)
}

fn node(url: &str, name: &str, agents: usize) -> Orchestrator {
    node_builder(url, name, agents).build().unwrap()
}

fn answer(mailbox: &Mailbox) -> Answer {
    mailbox.recv_timeout(PATIENCE).unwrap().body().unwrap()
}

/// Asks every agent of the cluster who it is: agent id → node name.
fn census(
    mailbox: &Mailbox,
    broker: &agentry::MessageBroker,
    agents: usize,
) -> BTreeMap<AgentId, String> {
    broker.broadcast(mailbox.id(), &Ask::Who).unwrap();
    (0..agents)
        .map(|_| match answer(mailbox) {
            Answer::Here { node, agent } => (AgentId::new(agent), node),
            other => panic!("expected a census answer, got {other:?}"),
        })
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ child nodes

/// The child's body: a node with two responding agents, until killed.
#[test]
fn child_message_node() {
    let Ok(url) = env::var(CHILD) else {
        return;
    };
    let name = format!("child-{}", std::process::id());
    let mut builder = node_builder(url.as_str(), &name, 2);
    if let Ok(capacity) = env::var(CHILD_RELAY) {
        builder = builder.relay_capacity(capacity.parse().unwrap());
    }
    let orchestrator = builder.build().unwrap();
    println!("{READY} {}", orchestrator.broker().node());
    thread::sleep(CHILD_LIFETIME);
    drop(orchestrator);
}

/// Child node processes, resumed and killed on drop, even when a test fails.
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

/// Starts `n` child nodes (with `relay` as their relay capacity, if given)
/// and waits until each is up; returns them and their node numbers.
fn children(url: &str, n: usize, relay: Option<usize>) -> (Children, Vec<u32>) {
    let (ready_tx, ready) = mpsc::channel();
    let children = Children(
        (0..n)
            .map(|_| {
                let mut command = Command::new(env::current_exe().unwrap());
                command
                    .args([
                        "--exact",
                        "child_message_node",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD, url)
                    .stdout(Stdio::piped());
                if let Some(relay) = relay {
                    command.env(CHILD_RELAY, relay.to_string());
                }
                let mut child = command.spawn().unwrap();
                let stdout = child.stdout.take().unwrap();
                let ready_tx = ready_tx.clone();
                thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if let Some(at) = line.find(READY) {
                            let node: u32 = line[at + READY.len()..].trim().parse().unwrap();
                            let _ = ready_tx.send(node);
                        }
                    }
                });
                child
            })
            .collect(),
    );
    let nodes = (0..n)
        .map(|_| {
            ready
                .recv_timeout(PATIENCE)
                .expect("a child node never came up")
        })
        .collect();
    (children, nodes)
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Whether every thread of process `pid` is stopped (Linux: state `T` in
/// `/proc/<pid>/task/*/stat`). `kill -STOP` returns once the signal is
/// queued: the process's threads stop one by one as each is next scheduled,
/// and until then its relay thread may still read and delete entries.
fn stopped(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap())
        // The state follows the command name, which may hold `)`.
        .all(|stat| stat.rsplit_once(") ").unwrap().1.starts_with('T'))
}

// ------------------------------------------------------------------ tests

#[test]
fn agent_ids_carry_their_node_number_and_are_unique_across_the_cluster() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 3);
    let b = node(&server.url(), "b", 3);
    let (na, nb) = (a.broker().node(), b.broker().node());
    assert!(na > 0 && nb > 0 && na != nb, "node numbers {na}, {nb}");
    let ids =
        |o: &Orchestrator| -> Vec<AgentId> { o.status().agents().iter().map(|s| s.id).collect() };
    assert!(ids(&a).iter().all(|id| id.node() == na));
    assert!(ids(&b).iter().all(|id| id.node() == nb));
    let all: BTreeSet<AgentId> = ids(&a).into_iter().chain(ids(&b)).collect();
    assert_eq!(all.len(), 6);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_direct_message_reaches_an_agent_of_another_node_process_and_the_reply_comes_back() {
    let server = RedisServer::start();
    let url = server.url();
    let (_children, nodes) = children(&url, 1, None);
    let parent = node(&url, "parent", 1);
    let inbox = parent.mailbox().unwrap();
    assert_eq!(inbox.id().node(), parent.broker().node());
    let census = census(&inbox, parent.broker(), 3);
    let remote: Vec<AgentId> = census
        .keys()
        .copied()
        .filter(|id| id.node() == nodes[0])
        .collect();
    assert_eq!(remote.len(), 2, "{census:?}");
    for (n, &to) in remote.iter().enumerate() {
        let text = format!("hello {n}");
        parent
            .broker()
            .send(inbox.id(), to, &Ask::Echo(text.clone()))
            .unwrap();
        let reply = inbox.recv_timeout(PATIENCE).unwrap();
        assert_eq!(reply.from(), to);
        assert_eq!(reply.kind(), MessageKind::Direct);
        assert_eq!(
            reply.body::<Answer>().unwrap(),
            Answer::Echo {
                node: census[&to].clone(),
                text
            }
        );
    }
    parent.shutdown().unwrap();
}

#[test]
fn a_broadcast_reaches_the_agents_of_three_nodes() {
    let server = RedisServer::start();
    let url = server.url();
    let (_children, nodes) = children(&url, 2, None);
    let parent = node(&url, "parent", 1);
    let inbox = parent.mailbox().unwrap();
    let delivery = parent.broker().broadcast(inbox.id(), &Ask::Who).unwrap();
    // Here: the parent's one agent; the two child nodes get one copy each.
    assert_eq!(delivery.reached(), 1);
    assert_eq!(delivery.relayed(), 2);
    assert!(delivery.is_complete());
    let mut by_node: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..5 {
        match answer(&inbox) {
            Answer::Here { agent, .. } => {
                *by_node.entry(AgentId::new(agent).node()).or_default() += 1
            }
            other => panic!("{other:?}"),
        }
    }
    let expected: BTreeMap<u32, usize> =
        [(parent.broker().node(), 1), (nodes[0], 2), (nodes[1], 2)]
            .into_iter()
            .collect();
    assert_eq!(by_node, expected);
    // Nothing more: each agent got exactly one copy.
    assert!(matches!(
        inbox.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    parent.shutdown().unwrap();
}

#[test]
fn a_publication_reaches_subscribers_on_two_nodes() {
    let server = RedisServer::start();
    let url = server.url();
    let (_children, nodes) = children(&url, 2, None);
    let parent = node(&url, "parent", 1);
    let inbox = parent.mailbox().unwrap();
    let census = census(&inbox, parent.broker(), 5);
    // One subscriber on each child node; none here.
    let subscribers: Vec<AgentId> = nodes
        .iter()
        .map(|&n| *census.keys().find(|id| id.node() == n).unwrap())
        .collect();
    for &agent in &subscribers {
        parent
            .broker()
            .send(inbox.id(), agent, &Ask::Subscribe("prices".into()))
            .unwrap();
        assert_eq!(answer(&inbox), Answer::Subscribed { agent: agent.get() });
    }
    let delivery = parent
        .broker()
        .publish(inbox.id(), "prices", &42u32)
        .unwrap();
    assert_eq!(delivery.reached(), 0);
    assert_eq!(delivery.relayed(), 2);
    let heard: BTreeSet<Answer> = (0..2).map(|_| answer(&inbox)).collect();
    let expected: BTreeSet<Answer> = subscribers
        .iter()
        .map(|agent| Answer::Heard {
            agent: agent.get(),
            topic: "prices".into(),
            body: 42,
        })
        .collect();
    assert_eq!(heard, expected);
    assert!(matches!(
        inbox.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    parent.shutdown().unwrap();
}

#[test]
fn a_full_remote_mailbox_turns_the_message_into_a_dead_letter_on_the_receiver() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1);
    let b = node_builder(server.url(), "b", 1)
        .mailbox_capacity(2)
        .build()
        .unwrap();
    // A mailbox nobody reads on node b, two deep.
    let unread = b.mailbox().unwrap();
    for n in 0..5u32 {
        // The sender cannot know that b's mailbox is full.
        a.broker().send(AgentId::new(1), unread.id(), &n).unwrap();
    }
    wait_until("b records the overflow", || {
        b.broker().stats().dead_lettered == 3
    });
    let letters = b.broker().dead_letters();
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Full && l.to == unread.id())
    );
    let dead: Vec<u32> = letters.iter().map(|l| l.message.body().unwrap()).collect();
    let queued: Vec<u32> = unread.drain().iter().map(|m| m.body().unwrap()).collect();
    // Nothing lost: two delivered, three recorded, in order.
    assert_eq!(queued, [0, 1]);
    assert_eq!(dead, [2, 3, 4]);
    assert_eq!(
        b.broker().mailbox_stats(unread.id()).unwrap().refused_full,
        3
    );
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_node_whose_relay_stream_is_at_its_bound_refuses_senders_and_delivers_all_once_resumed() {
    let server = RedisServer::start();
    let url = server.url();
    let (children, nodes) = children(&url, 1, Some(3));
    let parent = node(&url, "parent", 1);
    let inbox = parent.mailbox().unwrap();
    let census = census(&inbox, parent.broker(), 3);
    let to = *census.keys().find(|id| id.node() == nodes[0]).unwrap();
    // Freeze the child once its relay has deleted the census entry (as its
    // next read begins), so its stream is empty.
    let stream = format!("agentry:relay:stream:{}", nodes[0]);
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    wait_until("the child's relay stream is empty", || {
        redis::cmd("XLEN")
            .arg(&stream)
            .query::<usize>(&mut redis)
            .unwrap()
            == 0
    });
    signal("STOP", children.0[0].id());
    wait_until("the child has stopped", || stopped(children.0[0].id()));
    for n in 0..3 {
        parent
            .broker()
            .send(inbox.id(), to, &Ask::Echo(format!("{n}")))
            .unwrap();
    }
    let refused = parent.broker().send(inbox.id(), to, &Ask::Echo("3".into()));
    assert!(
        matches!(refused, Err(Error::Full { agent, capacity: 3 }) if agent == to),
        "{refused:?}"
    );
    let timed_out = parent.broker().send_timeout(
        inbox.id(),
        to,
        &Ask::Echo("3".into()),
        Duration::from_millis(20),
    );
    assert!(
        matches!(timed_out, Err(Error::Full { .. })),
        "{timed_out:?}"
    );
    // A fan-out names the full node and keeps a dead letter for it.
    let delivery = parent.broker().broadcast(inbox.id(), &Ask::Who).unwrap();
    assert_eq!(delivery.relay_full(), [nodes[0]]);
    assert_eq!(delivery.relayed(), 0);
    assert!(!delivery.is_complete());
    let letter = parent
        .broker()
        .dead_letters()
        .into_iter()
        .find(|l| l.reason == DeadLetterReason::RelayFull)
        .unwrap();
    assert_eq!(letter.to, AgentId::on_node(nodes[0], 0));
    // The parent's own agent answered the broadcast.
    assert!(matches!(answer(&inbox), Answer::Here { .. }));
    signal("CONT", children.0[0].id());
    let mut echoed: Vec<String> = (0..3)
        .map(|_| match answer(&inbox) {
            Answer::Echo { text, .. } => text,
            other => panic!("{other:?}"),
        })
        .collect();
    echoed.sort();
    assert_eq!(echoed, ["0", "1", "2"]);
    parent.shutdown().unwrap();
}

#[test]
fn an_id_of_no_live_node_is_not_found() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1);
    let b = node(&server.url(), "b", 1);
    let from = AgentId::new(1);
    let gone = b.mailbox().unwrap().id();
    for to in [
        AgentId::on_node(AgentId::MAX_NODE, 1),
        AgentId::on_node(a.broker().node(), 999),
        AgentId::new(5),
    ] {
        let sent = a.broker().send(from, to, &"hi");
        assert!(
            matches!(&sent, Err(Error::NotFound { .. })),
            "{to}: {sent:?}"
        );
    }
    // A node that shut down has left: its ids are unknown at once.
    b.shutdown().unwrap();
    let sent = a.broker().send(from, gone, &"hi");
    assert!(matches!(sent, Err(Error::NotFound { .. })), "{sent:?}");
    let letters = a.broker().dead_letters();
    assert_eq!(letters.len(), 4);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::UnknownRecipient)
    );
    a.shutdown().unwrap();
}

#[test]
fn redis_down_is_a_backend_error_for_remote_sends_and_fan_outs_and_local_sends_still_work() {
    let server = RedisServer::start();
    let redis = RedisConfig::new(server.url()).timeout(Duration::from_millis(300));
    let a = node_builder(redis.clone(), "a", 1).build().unwrap();
    let b = node_builder(redis, "b", 1).build().unwrap();
    let local = a.mailbox().unwrap();
    let remote = b.mailbox().unwrap();
    drop(server);
    let sent = a.broker().send(local.id(), remote.id(), &"hi");
    assert!(matches!(sent, Err(Error::Backend { .. })), "{sent:?}");
    let published = a.broker().publish(local.id(), "news", &1u8);
    assert!(
        matches!(published, Err(Error::Backend { .. })),
        "{published:?}"
    );
    let broadcast = a.broker().broadcast(local.id(), &1u8);
    assert!(
        matches!(broadcast, Err(Error::Backend { .. })),
        "{broadcast:?}"
    );
    // A local send never touches Redis.
    let me = a.mailbox().unwrap();
    a.broker().send(local.id(), me.id(), &"still here").unwrap();
    assert_eq!(me.recv().unwrap().body::<String>().unwrap(), "still here");
    drop(a);
    drop(b);
}

#[test]
fn a_live_node_whose_capacity_entry_is_gone_refuses_with_full_and_queues_nothing() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1);
    let b = node(&server.url(), "b", 1);
    let inbox = b.mailbox().unwrap();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // As if evicted: b's lease stays, its bound is gone until b renews
    // (a third of the default 30 s visibility timeout from now).
    redis::cmd("HDEL")
        .arg("agentry:relay:capacity")
        .arg(b.broker().node())
        .query::<()>(&mut redis)
        .unwrap();
    let sent = a.broker().send(AgentId::new(1), inbox.id(), &"hi");
    assert!(
        matches!(sent, Err(Error::Full { agent, capacity: 0 }) if agent == inbox.id()),
        "{sent:?}"
    );
    let queued: usize = redis::cmd("XLEN")
        .arg(format!("agentry:relay:stream:{}", b.broker().node()))
        .query(&mut redis)
        .unwrap();
    assert_eq!(queued, 0);
    // A fan-out counts b as full and keeps a dead letter for it.
    let delivery = a.broker().broadcast(AgentId::new(1), &"all").unwrap();
    assert_eq!(delivery.relay_full(), [b.broker().node()]);
    assert!(matches!(
        inbox.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_node_with_a_short_visibility_timeout_stays_live_while_its_relay_waits_for_messages() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1);
    let b = node_builder(server.url(), "b", 1)
        .visibility_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let inbox = b.mailbox().unwrap();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // The relay lease has a floor well above the shortest visibility
    // timeout (100 ms), which is also as long as a relay read may block.
    let (lease_end, time): (f64, (u64, u64)) = redis::pipe()
        .cmd("ZSCORE")
        .arg("agentry:relay:nodes")
        .arg(b.broker().node())
        .cmd("TIME")
        .query(&mut redis)
        .unwrap();
    let now = (time.0 * 1000 + time.1 / 1000) as f64;
    assert!(lease_end - now > 500.0, "lease ends {lease_end}, now {now}");
    // Sends after pauses longer than b's relay blocks in a read (so it
    // waits for messages, idle) all reach b.
    for n in 0..10u32 {
        thread::sleep(Duration::from_millis(150));
        a.broker().send(AgentId::new(1), inbox.id(), &n).unwrap();
    }
    let got: Vec<u32> = (0..10)
        .map(|_| inbox.recv_timeout(PATIENCE).unwrap().body().unwrap())
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<u32>>());
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_joining_node_never_takes_the_number_of_a_live_node_after_redis_lost_the_counter() {
    let server = RedisServer::start();
    let a = node(&server.url(), "a", 1);
    let b = node(&server.url(), "b", 1);
    let mut numbers = vec![a.broker().node(), b.broker().node()];
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let listed = |redis: &mut redis::Connection, n: u32| -> bool {
        redis::cmd("ZSCORE")
            .arg("agentry:relay:nodes")
            .arg(n)
            .query::<Option<f64>>(redis)
            .unwrap()
            .is_some()
    };
    // Everything gone, as after a restart without persistence: a and b
    // enter again on their own (well before their renewal is due, a third
    // of the default 30 s), and raise the counter past their numbers.
    redis::cmd("FLUSHDB").query::<()>(&mut redis).unwrap();
    wait_until("a and b are listed again", || {
        listed(&mut redis, numbers[0]) && listed(&mut redis, numbers[1])
    });
    let c = node(&server.url(), "c", 1);
    assert!(
        !numbers.contains(&c.broker().node()),
        "c took {} of {numbers:?}",
        c.broker().node()
    );
    numbers.push(c.broker().node());
    // Only the counter gone: a joining node skips the numbers live nodes hold.
    redis::cmd("DEL")
        .arg("agentry:relay:next-node")
        .query::<()>(&mut redis)
        .unwrap();
    let d = node(&server.url(), "d", 1);
    assert!(
        !numbers.contains(&d.broker().node()),
        "d took {} of {numbers:?}",
        d.broker().node()
    );
    // Messages reach the right node.
    let inbox = c.mailbox().unwrap();
    a.broker().send(AgentId::new(1), inbox.id(), &7u32).unwrap();
    assert_eq!(
        inbox.recv_timeout(PATIENCE).unwrap().body::<u32>().unwrap(),
        7
    );
    for node in [a, b, c, d] {
        node.shutdown().unwrap();
    }
}

#[test]
fn a_live_node_moves_what_a_node_whose_lease_ended_left_unread_to_a_dead_letter_stream() {
    let server = RedisServer::start();
    // A 1 s lease: a renews, and reaps, every third of a second.
    let a = node_builder(server.url(), "a", 1)
        .visibility_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // What a node killed with messages unread leaves once its lease ended;
    // and one that left nothing but an emptied stream.
    let (full, empty) = (AgentId::MAX_NODE, AgentId::MAX_NODE - 1);
    let mut pipe = redis::pipe();
    for n in [full, empty] {
        pipe.cmd("ZADD")
            .arg("agentry:relay:nodes")
            .arg(1)
            .arg(n)
            .cmd("HSET")
            .arg("agentry:relay:capacity")
            .arg(n)
            .arg(10);
    }
    for body in ["x", "y", "z"] {
        pipe.cmd("XADD")
            .arg(format!("agentry:relay:stream:{full}"))
            .arg("*")
            .arg("m")
            .arg(body);
    }
    let emptied: String = redis::cmd("XADD")
        .arg(format!("agentry:relay:stream:{empty}"))
        .arg("*")
        .arg("m")
        .arg("gone")
        .query(&mut redis)
        .unwrap();
    pipe.cmd("XDEL")
        .arg(format!("agentry:relay:stream:{empty}"))
        .arg(&emptied);
    pipe.query::<()>(&mut redis).unwrap();
    let dead = |redis: &mut redis::Connection| -> Vec<String> {
        redis::cmd("KEYS")
            .arg("agentry:relay:dead:*")
            .query(redis)
            .unwrap()
    };
    wait_until("a reaps the ended leases", || dead(&mut redis).len() == 1);
    let record = dead(&mut redis).remove(0);
    assert!(
        record.starts_with(&format!("agentry:relay:dead:{full}:")),
        "{record}"
    );
    let moved: Vec<redis::streams::StreamId> = redis::cmd("XRANGE")
        .arg(&record)
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut redis)
        .unwrap()
        .ids;
    let bodies: Vec<String> = moved.iter().map(|e| e.get("m").unwrap()).collect();
    assert_eq!(bodies, ["x", "y", "z"]);
    for n in [full, empty] {
        let (listed, bound, stream): (Option<f64>, Option<u64>, bool) = redis::pipe()
            .cmd("ZSCORE")
            .arg("agentry:relay:nodes")
            .arg(n)
            .cmd("HGET")
            .arg("agentry:relay:capacity")
            .arg(n)
            .cmd("EXISTS")
            .arg(format!("agentry:relay:stream:{n}"))
            .query(&mut redis)
            .unwrap();
        assert_eq!((listed, bound, stream), (None, None, false), "node {n}");
    }
    // a itself stays live.
    let inbox = a.mailbox().unwrap();
    let b = node(&server.url(), "b", 1);
    b.broker().send(AgentId::new(1), inbox.id(), &1u8).unwrap();
    assert_eq!(
        inbox.recv_timeout(PATIENCE).unwrap().body::<u8>().unwrap(),
        1
    );
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
