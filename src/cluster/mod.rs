//! Beyond one host: what the Redis backends of the shared memory and the
//! election share (cargo feature `redis`).
//!
//! [`RedisConfig`] names the server and the namespace every key lives
//! under; [`Pool`] keeps a few synchronous connections to it. The `redis`
//! crate is used through its blocking API only: no async runtime.
//!
//! # Connection loss
//!
//! A command that fails on the connection (refused, reset, timed out)
//! drops that connection and every idle one (after a server restart they
//! are all dead) and returns [`Error::Backend`]. The next command connects
//! afresh, retrying with exponential backoff (10 ms doubling to 500 ms)
//! until the configured timeout. Reads are retried once on a fresh
//! connection; writes are not, because a write whose reply was lost may have
//! been applied, and applying it twice (an increment, a versioned write)
//! would be wrong. Nothing here panics on a dead server.

use std::fmt;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ErrorKind, RedisError, RedisResult};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The default [`RedisConfig::namespace`].
pub const DEFAULT_REDIS_NAMESPACE: &str = "agentry";
/// The default [`RedisConfig::timeout`]: 5 s.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many idle connections are kept per store.
const MAX_IDLE: usize = 16;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Where a Redis-backed [`SharedMemory`](crate::SharedMemory) or
/// [`LeaderElection`](crate::LeaderElection) keeps its state: the server's
/// URL, a namespace prefixed to every key, and how long a command may take.
///
/// Every constructor that takes a `RedisConfig` also takes a plain URL
/// (`&str` or `String`), which means the default namespace and timeout.
///
/// ```
/// use agentry::RedisConfig;
/// use std::time::Duration;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/0")
///     .namespace("billing")
///     .timeout(Duration::from_secs(2));
/// assert_eq!(config.namespace_prefix(), "billing");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    url: String,
    namespace: String,
    timeout: Duration,
}

impl RedisConfig {
    /// The server at `url` (`redis://host:port/db`, see the `redis` crate),
    /// with namespace `agentry` and a 5 s timeout.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            namespace: DEFAULT_REDIS_NAMESPACE.to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }

    /// The prefix of every key (default `agentry`): stores and elections
    /// under different namespaces on one server never see each other's keys.
    /// Must not be empty.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long one command may wait for its reply, and how long a dead
    /// server is retried (with backoff) before an operation fails with
    /// [`Error::Backend`] (default 5 s). Must be above zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The namespace.
    pub fn namespace_prefix(&self) -> &str {
        &self.namespace
    }

    /// The timeout of one command.
    pub fn command_timeout(&self) -> Duration {
        self.timeout
    }
}

impl From<&str> for RedisConfig {
    fn from(url: &str) -> RedisConfig {
        RedisConfig::new(url)
    }
}

impl From<String> for RedisConfig {
    fn from(url: String) -> RedisConfig {
        RedisConfig::new(url)
    }
}

impl From<&String> for RedisConfig {
    fn from(url: &String) -> RedisConfig {
        RedisConfig::new(url.as_str())
    }
}

/// Whether a failed command can be repeated safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A read: repeat it once on a fresh connection.
    Once,
    /// A write: its outcome is unknown when the reply is lost; never repeat.
    Never,
}

/// A few connections to one server, all under one namespace.
pub(crate) struct Pool {
    client: Client,
    config: RedisConfig,
    /// How long one command, or reconnecting, may take once connected: the
    /// configured timeout, or less for a user that must not wait that long.
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Checks the configuration and opens a first connection (allowing it
    /// the configured timeout), so that a wrong URL or a dead server is
    /// reported here rather than at the first operation. Later commands and
    /// reconnections take at most `timeout` (if shorter than the
    /// configured one).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL the `redis` crate cannot parse, an
    /// empty namespace or a zero timeout; [`Error::Backend`] if the server
    /// cannot be reached within the timeout.
    pub(crate) fn connect(config: RedisConfig, timeout: Option<Duration>) -> Result<Pool> {
        if config.namespace.is_empty() {
            return Err(Error::InvalidConfig(
                "the redis namespace must not be empty".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the redis timeout must be above zero".into(),
            ));
        }
        let client = Client::open(config.url.as_str()).map_err(|e| {
            Error::InvalidConfig(format!("redis url {:?} is not valid: {e}", config.url))
        })?;
        let pool = Pool {
            client,
            timeout: timeout.map_or(config.timeout, |t| t.min(config.timeout)),
            config,
            idle: Mutex::new(Vec::new()),
        };
        let first = pool.open_within(pool.config.timeout, &|| "connect".to_owned())?;
        pool.idle.lock().push(first);
        Ok(pool)
    }

    /// `namespace:suffix`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.namespace)
    }

    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Runs `command` on a pooled connection. `operation` names it in
    /// errors (built only on failure).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if no connection can be had within the timeout, or
    /// the command fails (see the module documentation for what is retried).
    pub(crate) fn run<T>(
        &self,
        retry: Retry,
        operation: &dyn Fn() -> String,
        mut command: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut attempts = match retry {
            Retry::Once => 2,
            Retry::Never => 1,
        };
        loop {
            attempts -= 1;
            // Popped apart from the match, so the pool's lock is not held
            // while a new connection is opened.
            let popped = self.idle.lock().pop();
            let mut connection = match popped {
                Some(connection) => connection,
                None => self.open_within(self.timeout, operation)?,
            };
            match command(&mut connection) {
                Ok(value) => {
                    let mut idle = self.idle.lock();
                    if idle.len() < MAX_IDLE {
                        idle.push(connection);
                    }
                    return Ok(value);
                }
                Err(e) if is_server_error(&e) => {
                    self.idle.lock().push(connection);
                    return Err(backend(operation, &e));
                }
                Err(e) => {
                    // A lost connection usually means the server went away:
                    // the idle ones are dead too.
                    self.idle.lock().clear();
                    if attempts == 0 {
                        return Err(backend(operation, &e));
                    }
                    tracing::debug!(error = %e, "redis connection lost; retrying a read");
                }
            }
        }
    }

    /// Connects, retrying with exponential backoff for at most `patience`.
    fn open_within(
        &self,
        patience: Duration,
        operation: &dyn Fn() -> String,
    ) -> Result<Connection> {
        let deadline = crate::clock::deadline_after(patience);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self
                .client
                .get_connection_with_timeout(remaining.max(FIRST_BACKOFF))
                .and_then(|connection| {
                    connection.set_read_timeout(Some(self.timeout))?;
                    connection.set_write_timeout(Some(self.timeout))?;
                    Ok(connection)
                });
            match attempt {
                Ok(connection) => return Ok(connection),
                Err(e) if crate::clock::deadline_after(backoff) < deadline => {
                    tracing::debug!(error = %e, ?backoff, url = %self.config.url, "redis unreachable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(backend(operation, &e)),
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("url", &self.config.url)
            .field("namespace", &self.config.namespace)
            .finish()
    }
}

/// An error the server sent: the connection itself is fine.
fn is_server_error(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// The reason of a server error starts with the server's error code
/// (`NOGROUP: ...`), whatever the `redis` crate's `Display` makes of it
/// (it quotes some codes and wraps pipeline errors), so [`has_code`] can
/// tell errors apart.
fn backend(operation: &dyn Fn() -> String, e: &RedisError) -> Error {
    let code = e.code().map(str::to_owned).or_else(|| {
        e.clone()
            .into_server_errors()
            .and_then(|errors| errors.first().map(|(_, error)| error.code().to_owned()))
    });
    Error::Backend {
        operation: format!("redis {}", operation()),
        reason: match code {
            Some(code) => format!("{code}: {e}"),
            None => e.to_string(),
        },
    }
}

/// Whether `error` is the server's error `code` (`NOGROUP`, `BUSYGROUP`).
pub(crate) fn has_code(error: &Error, code: &str) -> bool {
    matches!(error, Error::Backend { reason, .. }
        if reason.strip_prefix(code).is_some_and(|rest| rest.starts_with(':')))
}

/// An [`Error::Backend`] for a reply that does not have the expected shape
/// (a key of this namespace written by something else).
pub(crate) fn unexpected(operation: &str, reply: &str) -> Error {
    Error::Backend {
        operation: format!("redis {operation}"),
        reason: format!("unexpected reply {reply:?}"),
    }
}
