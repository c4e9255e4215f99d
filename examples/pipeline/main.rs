//! The seed's four agents doing real work: collect validated contacts from
//! the web pages of a few dozen fictional organisations.
//!
//! The example serves the pages in `examples/pipeline/sites` on 127.0.0.1
//! itself; a planner agent splits the job into a plan per site and page,
//! researchers fetch the pages through a shared tab pool, extractors read
//! them (in parallel for large pages, recording what worked in a skill
//! library), and validators check, normalise and de-duplicate what was
//! found and merge it into each organisation's record in the shared memory,
//! with optimistic locking. The memory is persisted in a state directory: a
//! second run reuses the pages that did not change.
//!
//! Run: `cargo run --release --example pipeline` (`-- --help` for options;
//! `--chaos 0.2` to watch agents being replaced). The tabs fetch over HTTP;
//! built with `--features chrome`, they are headless Chromium tabs.
//! `answers.json` holds the contacts the bundled pages hold;
//! `tests/pipeline.rs` checks the run finds exactly those.

mod agents;
mod cli;
mod extract;
mod html;
mod report;
mod server;
mod sites;
mod validate;
mod view;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agentry::tabs::TabPool;
use agentry::{
    AgentContext, AutoscalePolicy, Durability, Error, Event, HealthConfig, Orchestrator, Plan,
    Role, SharedMemory, SkillLibrary, Step, Task,
};

use crate::agents::{Crew, OrgRecord, PageReport};
use crate::cli::{Browser, Command, Options};
use crate::report::{AgentsReport, Report, SiteReport, SkillReport, TabsReport, Totals};
use crate::server::Server;
use crate::sites::Site;
use crate::view::{Mode, View};

/// The run gives up after this long (it takes a few seconds).
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            let _ = write!(std::io::stdout(), "{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("pipeline: {message}\nRun with --help to see the options.");
            return ExitCode::from(2);
        }
    };
    let sites = match sites::discover(&options.sites) {
        Ok(sites) => sites,
        Err(message) => {
            eprintln!("pipeline: --sites: {message}");
            return ExitCode::from(2);
        }
    };
    quiet_chaos_panics();
    match run(&options, &sites) {
        Ok(report) => {
            if options.json {
                match serde_json::to_string_pretty(&report) {
                    // A closed stdout only means nobody reads the report.
                    Ok(json) => {
                        let _ = writeln!(std::io::stdout(), "{json}");
                    }
                    Err(e) => {
                        eprintln!("pipeline: cannot write the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                view::print_summary(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Panics thrown on purpose by `--chaos` are expected: the orchestrator
/// reports them as events; printing them too would scroll the view away.
fn quiet_chaos_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with("chaos:") {
            default(info);
        }
    }));
}

/// The researchers' tab pool, of `browser`'s tabs.
fn tab_pool(browser: Browser, max_tabs: usize) -> agentry::Result<TabPool> {
    let builder = match browser {
        Browser::Http => TabPool::builder(agentry::tabs::HttpBrowser::new()),
        #[cfg(feature = "chrome")]
        Browser::Chromium => TabPool::builder(agentry::tabs::ChromeBrowser::launch()?),
    };
    // Every organisation is served from one local server: one host, so the
    // per-site limit caps how many tabs load from it at once.
    builder.max_tabs(max_tabs).per_site_limit(max_tabs).build()
}

/// Attempts per step: enough that, with a fraction `chaos` of attempts
/// panicking, all `steps` succeed but for a one-in-a-million chance.
fn attempts_for(chaos: f64, steps: usize) -> u32 {
    if chaos <= 0.0 {
        return 3;
    }
    let needed = (1e-6 / steps as f64).ln() / chaos.ln();
    (needed.ceil() as u32).clamp(3, 60)
}

fn run(options: &Options, sites: &[Site]) -> Result<Report, Box<dyn std::error::Error>> {
    let started = Instant::now();
    std::fs::create_dir_all(&options.state_dir)?;
    // One run at a time per state directory: its memory has one writer.
    let mut lock = fslock::LockFile::open(&options.state_dir.join("pipeline.lock"))?;
    if !lock.try_lock()? {
        return Err(format!(
            "another pipeline run is using the state directory {}",
            options.state_dir.display()
        )
        .into());
    }
    let memory_file = options.state_dir.join("memory.snapshot");
    let memory = SharedMemory::open_with(&memory_file, Durability::OnPersist)?;
    let skills = SkillLibrary::in_shared_memory(memory.clone(), "pipeline/skills");
    let server = Server::start(&options.sites)?;
    let pages: usize = sites.iter().map(|s| s.pages.len()).sum();
    let steps = 1 + sites.len() + 3 * pages;
    let (log, activity) = crossbeam_channel::unbounded();
    let crew = Arc::new(Crew::new(
        server.url(),
        options.chaos,
        attempts_for(options.chaos, steps),
        skills.clone(),
        log,
    ));
    let n = options.agents;
    type Work = fn(&Crew, &Task, &AgentContext) -> Result<agentry::Output, agentry::TaskError>;
    let tabs = tab_pool(options.browser, 2 * n)?;
    let mut builder = Orchestrator::builder()
        .tab_pool(tabs)
        .memory(memory.clone())
        .min_agents(n)
        .max_agents(2 * n)
        .autoscale(AutoscalePolicy::default().scale_up_when_queue_exceeds(8))
        .health(
            HealthConfig::default()
                .check_interval(Duration::from_millis(20))
                .max_restarts(100_000, Duration::from_secs(10)),
        );
    let roles: [(Role, Work); 4] = [
        (Role::Planner, agents::planner),
        (Role::Researcher, agents::researcher),
        (Role::Extractor, agents::extractor),
        (Role::Validator, agents::validator),
    ];
    for (role, work) in roles {
        let crew = Arc::clone(&crew);
        builder = builder.agents(role, n, move || {
            let crew = Arc::clone(&crew);
            move |task: &Task, ctx: &AgentContext| work(&crew, task, ctx)
        });
    }
    let orchestrator = builder.build()?;

    let mode = if options.json {
        Mode::Silent
    } else if options.quiet || !std::io::stdout().is_terminal() {
        Mode::Plain
    } else {
        Mode::Live
    };
    let mut view = View::new(
        mode,
        format!(
            "agentry pipeline | {} sites, {pages} pages at {} | {} tabs",
            sites.len(),
            server.url(),
            options.browser.name()
        ),
    );
    let goal = Step::goal("contacts", agents::GOAL)
        .with_input(sites)?
        .with_max_attempts(crew.max_attempts);
    let mut plan = Plan::new(goal).submit(&orchestrator)?;
    view.frame(
        &orchestrator.status(),
        &plan.progress(),
        &crew.stats,
        started.elapsed(),
    );
    let mut spawned = 0;
    let tree = loop {
        let done = plan.wait_timeout(Duration::from_millis(50));
        for event in orchestrator.events().try_iter() {
            if matches!(event, Event::AgentSpawned { .. }) {
                spawned += 1;
            }
            view.event(&event);
        }
        for line in activity.try_iter() {
            view.log(line);
        }
        match done {
            Ok(tree) => break tree,
            Err(Error::Timeout) if started.elapsed() < GIVE_UP_AFTER => {}
            Err(e) => return Err(e.into()),
        }
        view.frame(
            &orchestrator.status(),
            &plan.progress(),
            &crew.stats,
            started.elapsed(),
        );
    };
    view.frame(
        &orchestrator.status(),
        &plan.progress(),
        &crew.stats,
        started.elapsed(),
    );
    view.finish();
    if !tree.is_success() {
        return Err(format!(
            "the plan failed: {}",
            failure(&tree).unwrap_or("no reason given".into())
        )
        .into());
    }
    let elapsed = started.elapsed();
    let status = orchestrator.status();
    memory.persist()?;

    let mut report_sites = BTreeMap::new();
    let mut totals = Totals {
        sites: sites.len(),
        pages,
        ..Totals::default()
    };
    for site in sites {
        let record = memory
            .get::<OrgRecord>(&agents::record_key(&site.org))?
            .map(|v| v.value)
            .unwrap_or_default();
        let reused = tree
            .find(&format!("contacts/{}", site.org))
            .map(|s| {
                s.children()
                    .iter()
                    .filter_map(|v| v.output::<PageReport>().ok())
                    .filter(|r| r.reused)
                    .count()
            })
            .unwrap_or(0);
        totals.contacts += record.contacts.count();
        totals.rejected += record.contacts.rejected.len();
        if reused == site.pages.len() {
            totals.sites_reused += 1;
        }
        report_sites.insert(
            site.org.clone(),
            SiteReport {
                pages: site.pages.len(),
                pages_reused: reused,
                contacts: record.contacts,
            },
        );
    }
    let stats = &crew.stats;
    totals.pages_fetched = stats.pages_fetched.load(Ordering::Relaxed);
    totals.bytes_fetched = stats.bytes.load(Ordering::Relaxed);
    totals.pages_reused = stats.pages_reused.load(Ordering::Relaxed);
    totals.pages_extracted = stats.pages_extracted.load(Ordering::Relaxed);
    totals.pages_parallel = stats.pages_parallel.load(Ordering::Relaxed);
    totals.conflicts = stats.conflicts.load(Ordering::Relaxed);
    totals.chaos_panics = stats.chaos_panics.load(Ordering::Relaxed);
    totals.tasks = status.totals.succeeded;
    totals.retried = status.totals.retried;
    let agents = AgentsReport {
        per_role: n,
        spawned,
        replaced: status.pools.iter().map(|p| p.restarts).sum(),
        scaled_up: status.pools.iter().map(|p| p.scaled_up).sum(),
        scaled_down: status.pools.iter().map(|p| p.scaled_down).sum(),
    };
    let skills = skills
        .skills()?
        .into_iter()
        .map(|s| SkillReport {
            name: s.name().to_owned(),
            uses: s.stats().uses(),
            successes: s.stats().successes(),
            success_rate: s.stats().success_rate(),
        })
        .collect();
    let tabs = status
        .tabs
        .as_ref()
        .map_or_else(TabsReport::default, |t| TabsReport {
            browser: options.browser.name(),
            max_tabs: t.max_tabs,
            opened: t.opened,
            leases: t.leases,
            recycled: t.recycled,
            timeouts: t.timeouts,
        });
    let secs = elapsed.as_secs_f64().max(1e-6);
    let report = Report {
        sites: report_sites,
        elapsed_ms: elapsed.as_millis() as u64,
        pages_per_second: pages as f64 / secs,
        tasks_per_second: totals.tasks as f64 / secs,
        totals,
        agents,
        skills,
        tabs,
        state_dir: options.state_dir.display().to_string(),
        memory_file: memory_file.display().to_string(),
    };
    orchestrator.shutdown()?;
    drop(server);
    Ok(report)
}

/// The deepest error in a failed tree.
fn failure(tree: &agentry::StepResult) -> Option<String> {
    tree.children()
        .iter()
        .find_map(failure)
        .or_else(|| tree.error().map(str::to_owned))
}
