//! Four researcher agents share two browser tabs to visit a handful of
//! pages, printing which agent held which tab when.
//!
//! The pages are served by the example itself on 127.0.0.1; one of them
//! builds its content with a script. By default the tabs are HTTP sessions,
//! which see the page as the server sent it; with `--features chrome` they
//! are tabs of the system's headless Chromium (`apt-get install chromium`),
//! which runs the script.
//!
//! Run with `cargo run --example tabs` or
//! `cargo run --features chrome --example tabs`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use agentry::tabs::TabPool;
use agentry::{AgentContext, AutoscalePolicy, Orchestrator, Output, Role, Task, TaskError};

const PAGES: [&str; 6] = ["team", "about", "press", "pricing", "blog", "careers"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = serve_pages()?;
    let (pool, backend) = tab_pool()?;
    println!(
        "four agents, two {backend} tabs, {} pages on {base}",
        PAGES.len()
    );

    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 4, || visit)
        .autoscale(AutoscalePolicy::disabled())
        .tab_pool(pool)
        .build()?;
    let ids = orchestrator.submit_batch(PAGES.iter().map(|page| {
        Task::new("visit")
            .with_role(Role::Researcher)
            .with_input(&format!("{base}/{page}"))
            .expect("a url encodes")
    }))?;
    for (page, id) in PAGES.iter().zip(ids) {
        let result = orchestrator.wait(id, Duration::from_secs(60))?;
        match result.output::<String>() {
            Ok(heading) => println!("{page:>8}: {heading}"),
            Err(_) => println!("{page:>8}: failed: {:?}", result.error()),
        }
    }
    println!("\n{}", orchestrator.status());
    orchestrator.shutdown()?;
    Ok(())
}

/// An agent: leases a tab for the page's site, reads the page's heading.
fn visit(task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
    let url: String = task.input()?;
    let tabs = ctx.tabs().ok_or_else(|| TaskError::fatal("no tab pool"))?;
    let mut tab = tabs.lease_for(&url, Duration::from_secs(30))?;
    let path = url.rsplit('/').next().unwrap_or_default();
    println!(
        "[{:>6}] {} holds {} for /{path}",
        since_start(),
        ctx.id(),
        tab.tab_id()
    );
    tab.navigate(&url)?;
    let html = tab.html()?;
    let heading = between(&html, "<h1 id=\"heading\">", "</h1>")
        .unwrap_or("(none)")
        .to_owned();
    // Hold the tab a moment, as real work would, so that the agents take turns.
    thread::sleep(Duration::from_millis(50));
    println!(
        "[{:>6}] {} gives back {}",
        since_start(),
        ctx.id(),
        tab.tab_id()
    );
    Ok(Output::encode(&heading)?)
}

#[cfg(not(feature = "chrome"))]
fn tab_pool() -> agentry::Result<(TabPool, &'static str)> {
    let pool = TabPool::builder(agentry::tabs::HttpBrowser::new())
        .max_tabs(2)
        .build()?;
    Ok((pool, "HTTP"))
}

#[cfg(feature = "chrome")]
fn tab_pool() -> agentry::Result<(TabPool, &'static str)> {
    let chrome = agentry::tabs::ChromeBrowser::launch()?;
    Ok((TabPool::builder(chrome).max_tabs(2).build()?, "Chromium"))
}

fn since_start() -> String {
    static START: OnceLock<Instant> = OnceLock::new();
    format!(
        "{}ms",
        START.get_or_init(Instant::now).elapsed().as_millis()
    )
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// Serves the pages on 127.0.0.1 from a thread; returns the base url. The
/// `blog` page's heading is written by a script: only a real browser sees it.
fn serve_pages() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    since_start();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || answer(stream));
        }
    });
    Ok(base)
}

fn answer(stream: TcpStream) {
    let mut request = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // The rest of the request head is not needed.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let page = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let body = if page == "blog" {
        "<h1 id=\"heading\">(written by a script)</h1><script>\
         document.getElementById('heading').textContent = 'Blog: ' + 3 + ' new posts';</script>"
            .to_owned()
    } else {
        format!("<h1 id=\"heading\">Acme {page}</h1>")
    };
    let html = format!(
        "<!DOCTYPE html><html><head><title>{page}</title></head><body>{body}</body></html>"
    );
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
        html.len()
    );
}
