//! A `redis-server` of the test's own: started on 127.0.0.1 on a free port
//! with a temporary directory (AOF on, no RDB snapshots), stopped on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const STARTUP: Duration = Duration::from_secs(20);

/// A running `redis-server`, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    // Read by `restart`, which not every test binary calls.
    #[allow(dead_code)]
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    ///
    /// Panics, failing the test, if `redis-server` is not installed: these
    /// tests must run wherever the `redis` feature is tested.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        // Another process may take the port between our probe and the
        // server's bind; a server that exits at once is retried elsewhere.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(dir.path(), port);
            if wait_ready(&mut child, port) {
                return RedisServer { child, port, dir };
            }
            stop(&mut child);
        }
        panic!(
            "redis-server did not start on 127.0.0.1 (its log is redis.log in {})",
            dir.keep().display()
        );
    }

    /// The server's process id, to signal it.
    #[allow(dead_code)] // not every test binary signals its server
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL to give agentry.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server with SIGKILL (unacknowledged AOF data may be lost,
    /// as in a crash) and starts it again on the same port and directory,
    /// replaying the append-only file.
    #[allow(dead_code)] // not every test binary restarts its server
    pub fn restart(&mut self) {
        stop(&mut self.child);
        let deadline = Instant::now() + STARTUP;
        loop {
            self.child = spawn(self.dir.path(), self.port);
            if wait_ready(&mut self.child, self.port) {
                return;
            }
            stop(&mut self.child);
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the server answers PING, polling until it does, it exits, or the
/// startup time runs out.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if ping(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

fn spawn(dir: &Path, port: u16) -> Child {
    let spawned = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--logfile", "redis.log", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "redis-server is not installed, and the redis feature's tests need it: \
             install it with `apt-get install redis-server`"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    listener.local_addr().expect("probe address").port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
