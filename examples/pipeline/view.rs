//! What the user sees: a live view redrawn in place on a terminal, plain
//! log lines otherwise, and the summary at the end.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentry::{AgentState, Event, Progress, StatusReport};

use crate::agents::Stats;
use crate::report::Report;

/// `println!` that ignores a closed stdout (`pipeline | head`): nobody
/// reads the rest, and the run should still end cleanly.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stdout(), $($arg)*);
    }};
}

/// `print!` likewise.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        let _ = write!(io::stdout(), $($arg)*);
    }};
}

/// How the run is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn in place (a terminal, without `--quiet`).
    Live,
    /// One line per event.
    Plain,
    /// Nothing until the JSON report.
    Silent,
}

/// Lines of recent activity the live view keeps.
const RECENT: usize = 4;

/// The view's state between frames.
#[derive(Debug)]
pub struct View {
    mode: Mode,
    /// Lines of the last frame, to move back over.
    drawn: usize,
    recent: VecDeque<String>,
    header: String,
}

impl View {
    pub fn new(mode: Mode, header: String) -> View {
        if mode == Mode::Live {
            // Hide the cursor while redrawing.
            say_raw!("\x1b[?25l");
        } else if mode == Mode::Plain {
            say!("{header}");
        }
        View {
            mode,
            drawn: 0,
            recent: VecDeque::new(),
            header,
        }
    }

    /// A line of activity: printed in plain mode, kept among the last few
    /// in the live view.
    pub fn log(&mut self, line: String) {
        match self.mode {
            Mode::Plain => say!("{line}"),
            Mode::Live => {
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(line);
            }
            Mode::Silent => {}
        }
    }

    /// Notes an orchestrator event worth telling.
    pub fn event(&mut self, event: &Event) {
        let line = match event {
            Event::AgentFailed { agent, reason } => format!("{agent} failed: {reason}"),
            Event::AgentReplaced {
                failed,
                replacement,
                role,
            } => format!("{role} {failed} replaced by {replacement}"),
            Event::ScaledUp {
                agent,
                role,
                pool_size,
            } => format!("scaled up: {role} {agent} added ({pool_size} in the pool)"),
            Event::ScaledDown {
                agent,
                role,
                pool_size,
            } => format!("scaled down: {role} {agent} stopped ({pool_size} in the pool)"),
            Event::RestartLimitReached { role, .. } => {
                format!("{role}: too many restarts, the pool is failed")
            }
            _ => return,
        };
        self.log(line);
    }

    /// Redraws the live view.
    pub fn frame(
        &mut self,
        status: &StatusReport,
        progress: &Progress,
        stats: &Stats,
        elapsed: Duration,
    ) {
        if self.mode != Mode::Live {
            return;
        }
        let mut out = String::new();
        out.push_str(&format!("\x1b[1m{}\x1b[0m\n", clip(&self.header)));
        out.push_str(&format!(
            "{:<10} {:<11} {:<5} {:>6} {:>8} {:>9}\n",
            "AGENT", "ROLE", "STATE", "TASKS", "SUCCESS", "AVG TIME"
        ));
        for a in status.agents() {
            let (state, colour) = match a.state {
                AgentState::Busy => ("BUSY", "\x1b[33m"),
                AgentState::Idle => ("IDLE", "\x1b[32m"),
                AgentState::Error => ("ERROR", "\x1b[31m"),
                _ => ("STOP", "\x1b[2m"),
            };
            out.push_str(&format!(
                "{:<10} {:<11} {colour}{:<5}\x1b[0m {:>6} {:>7.1}% {:>9}\n",
                a.id.to_string(),
                a.role.to_string(),
                state,
                a.tasks,
                a.success_rate * 100.0,
                short(a.mean_time)
            ));
        }
        let pools: Vec<String> = status
            .pools
            .iter()
            .map(|p| format!("{} {}", p.role, p.queued))
            .collect();
        out.push_str(&clip(&format!("queued: {}", pools.join(", "))));
        out.push_str(&format!(
            "\nrunning {}, waiting on dependencies {}\n",
            status.running, status.waiting_on_dependencies
        ));
        out.push_str(&format!(
            "pages: {} fetched, {} reused, {} validated | conflicts {} | chaos panics {}\n",
            stats.pages_fetched.load(Ordering::Relaxed),
            stats.pages_reused.load(Ordering::Relaxed),
            stats.pages_validated.load(Ordering::Relaxed),
            stats.conflicts.load(Ordering::Relaxed),
            stats.chaos_panics.load(Ordering::Relaxed),
        ));
        if let Some(t) = &status.tabs {
            out.push_str(&format!(
                "tabs: {} open of {}, {} leased, {} agents waiting, {} recycled\n",
                t.open, t.max_tabs, t.leased, t.waiting, t.recycled
            ));
        }
        out.push_str(&progress_bar(progress.done(), progress.total(), elapsed));
        out.push('\n');
        for i in 0..RECENT {
            out.push_str(&format!(
                "\x1b[2m{}\x1b[0m\n",
                self.recent.get(i).map_or(String::new(), |l| clip(l))
            ));
        }
        let lines = out.lines().count();
        let mut stdout = io::stdout().lock();
        if self.drawn > 0 {
            // Back to the first line of the last frame, and clear below.
            let _ = write!(stdout, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
        self.drawn = lines;
    }

    /// Ends the live view (the last frame stays on screen).
    pub fn finish(&mut self) {
        if self.mode == Mode::Live {
            say_raw!("\x1b[?25h");
            let _ = io::stdout().flush();
            // The view stays as drawn; nothing more to restore.
            self.mode = Mode::Silent;
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A line cut to fit an 80-column terminal: a wrapped line would break the
/// count of lines to redraw.
fn clip(line: &str) -> String {
    const WIDTH: usize = 79;
    if line.chars().count() <= WIDTH {
        return line.to_owned();
    }
    let mut clipped: String = line.chars().take(WIDTH - 1).collect();
    clipped.push('…');
    clipped
}

fn progress_bar(done: usize, total: usize, elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let total = total.max(1);
    let filled = (done * WIDTH / total).min(WIDTH);
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let eta = if done >= total || rate <= 0.0 {
        "-".to_owned()
    } else {
        format!("{:.1}s", (total - done) as f64 / rate)
    };
    format!(
        "[{}{}] {done}/{total} steps  {rate:.0} steps/s  ETA {eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

fn short(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// The summary for people.
pub fn print_summary(report: &Report) {
    say!("");
    say!(
        "{:<20} {:>5} {:>6} {:>6} {:>6} {:>6} {:>9} {:>8}",
        "SITE",
        "PAGES",
        "REUSED",
        "PEOPLE",
        "EMAILS",
        "PHONES",
        "ADDRESSES",
        "REJECTED"
    );
    for (org, site) in &report.sites {
        let c = &site.contacts;
        say!(
            "{:<20} {:>5} {:>6} {:>6} {:>6} {:>6} {:>9} {:>8}",
            org,
            site.pages,
            site.pages_reused,
            c.people.len(),
            c.emails.len(),
            c.phones.len(),
            c.addresses.len(),
            c.rejected.len()
        );
    }
    let t = &report.totals;
    say!(
        "{:<20} {:>5} {:>6}   {} contacts (people with their e-mails and phones, e-mails, phones, addresses)",
        "total",
        t.pages,
        t.pages_reused,
        t.contacts
    );
    let failures: Vec<_> = report
        .sites
        .iter()
        .flat_map(|(org, s)| s.contacts.rejected.iter().map(move |r| (org, r)))
        .collect();
    if !failures.is_empty() {
        say!("\nValidation failures:");
        for (org, r) in failures {
            say!(
                "  {org}/{}: {} ({})",
                r.pages.join(", "),
                r.message,
                r.reason
            );
        }
    }
    say!(
        "\nThroughput: {} pages ({} KiB) in {:.2}s ({:.0} pages/s, {:.0} tasks/s); pages read in parallel: {}; merge conflicts retried: {}.",
        t.pages,
        t.bytes_fetched / 1024,
        report.elapsed_ms as f64 / 1e3,
        report.pages_per_second,
        report.tasks_per_second,
        t.pages_parallel,
        t.conflicts
    );
    let a = &report.agents;
    say!(
        "Agents: {} spawned ({} per role at start), {} replaced after a failure, {} added by auto-scaling; {} chaos panics, {} attempts retried.",
        a.spawned,
        a.per_role,
        a.replaced,
        a.scaled_up,
        t.chaos_panics,
        t.retried
    );
    let tabs = &report.tabs;
    say!(
        "Tabs ({}): {} leases over {} tabs opened (at most {}), {} recycled, {} lease timeouts.",
        tabs.browser,
        tabs.leases,
        tabs.opened,
        tabs.max_tabs,
        tabs.recycled,
        tabs.timeouts
    );
    if !report.skills.is_empty() {
        let skills: Vec<String> = report
            .skills
            .iter()
            .map(|s| format!("{} {}/{}", s.name, s.successes, s.uses))
            .collect();
        say!(
            "Skills (successes/uses; a candidate the validators refused is a failed use): {}",
            skills.join(", ")
        );
    }
    say!(
        "Results: {} (shared memory keys pipeline/contacts/<site>); run again with --state-dir {} to reuse them.",
        report.memory_file,
        report.state_dir
    );
}
