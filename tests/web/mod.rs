//! A tiny web server on 127.0.0.1 for the tab backends' tests: static
//! pages, a page whose content a script builds, pages that never finish,
//! and cookies.
//!
//! | path | answer |
//! | --- | --- |
//! | `/static/N` | a static page titled `Static N` |
//! | `/script` | a page whose `#out` element a script fills with "built by script" |
//! | `/hang` | headers and half a page, then nothing (until the server stops or 30 s pass) |
//! | `/silent` | nothing at all, not even headers (as long) |
//! | `/cookie/set/V` | sets the cookie `visitor=V` |
//! | `/cookie/show` | `visitor=V`, or `visitor=none` without the cookie |
//! | anything else | 404 |

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a hanging answer hangs at most, so that the server always ends.
const HANG_AT_MOST: Duration = Duration::from_secs(30);

/// The text the script of `/script` writes; it is not in the page's source.
pub const SCRIPT_BUILT: &str = "built by script";

pub struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let stopping = Arc::clone(&stopping);
                thread::spawn(move || serve(stream, &stopping));
            }
        });
        TestServer { addr, stop }
    }

    /// The url of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut cookie = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("cookie") {
                        cookie = value
                            .split(';')
                            .filter_map(|c| c.trim().strip_prefix("visitor="))
                            .next()
                            .map(str::to_owned);
                    }
                }
            }
        }
    }
    let mut stream = &stream;
    let page = |title: &str, body: &str| {
        format!(
            "<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"
        )
    };
    let (status, extra, body) = if let Some(n) = path.strip_prefix("/static/") {
        (
            "200 OK",
            String::new(),
            page(&format!("Static {n}"), &format!("<h1>Static page {n}</h1>")),
        )
    } else if path == "/script" {
        let script = "document.getElementById('out').textContent = 'built by ' + 'script';";
        (
            "200 OK",
            String::new(),
            page(
                "Script",
                &format!("<div id=\"out\">empty</div><script>{script}</script>"),
            ),
        )
    } else if path == "/hang" {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html><body>loading"
        );
        let _ = stream.flush();
        hang(stop);
        return;
    } else if path == "/silent" {
        hang(stop);
        return;
    } else if let Some(value) = path.strip_prefix("/cookie/set/") {
        (
            "200 OK",
            format!("Set-Cookie: visitor={value}; Path=/\r\n"),
            page("Cookie", &format!("set {value}")),
        )
    } else if path == "/cookie/show" {
        let shown = format!("visitor={}", cookie.as_deref().unwrap_or("none"));
        ("200 OK", String::new(), page("Cookie", &shown))
    } else {
        (
            "404 Not Found",
            String::new(),
            page("Missing", "no such page"),
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// Holds the connection open, saying nothing, until the server stops.
fn hang(stop: &AtomicBool) {
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < HANG_AT_MOST {
        thread::sleep(Duration::from_millis(20));
    }
}
