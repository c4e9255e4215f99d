//! The seed's four roles as agentry agents.
//!
//! * Planner: "collect validated contacts for these sites" becomes one goal
//!   per site, and each site's goal one branch per page:
//!   `validate <- extract <- research` (a parent runs once its child has,
//!   and receives its output).
//! * Researcher: fetches a page through the orchestrator's tab pool; a
//!   page whose content hash matches the last run's is not read again.
//! * Extractor: reads the page (in parallel on large pages) and records in
//!   the skill library which strategies found something.
//! * Validator: validates the page's candidates and merges them into its
//!   organisation's record in the shared memory, with optimistic locking:
//!   several validators write one record, and a lost race is retried.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, Error, FanIn, Goal, Output, Role, SharedMemory, Skill, SkillLibrary,
    SkillOutcome, Step, Task, TaskError, Version,
};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::extract::{self, PageExtraction, Strategy};
use crate::sites::Site;
use crate::validate::{self, OrgContacts, PageFindings};

/// How long a researcher waits for a tab.
const LEASE_TIMEOUT: Duration = Duration::from_secs(20);

/// The description of the root goal.
pub const GOAL: &str = "collect validated contacts for these sites";

/// What the agents share besides the orchestrator: settings and this run's
/// counters.
#[derive(Debug)]
pub struct Crew {
    pub base_url: String,
    pub chaos: f64,
    pub max_attempts: u32,
    pub skills: SkillLibrary,
    pub stats: Stats,
    /// Lines of activity for the view.
    log: Sender<String>,
    chaos_state: AtomicU64,
}

/// This run's counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub pages_fetched: AtomicU64,
    pub pages_reused: AtomicU64,
    pub pages_extracted: AtomicU64,
    pub pages_parallel: AtomicU64,
    pub pages_validated: AtomicU64,
    pub conflicts: AtomicU64,
    pub chaos_panics: AtomicU64,
    pub bytes: AtomicU64,
}

impl Crew {
    pub fn new(
        base_url: String,
        chaos: f64,
        max_attempts: u32,
        skills: SkillLibrary,
        log: Sender<String>,
    ) -> Crew {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Crew {
            base_url,
            chaos,
            max_attempts,
            skills,
            stats: Stats::default(),
            log,
            chaos_state: AtomicU64::new(seed),
        }
    }

    /// Panics on a `chaos` fraction of attempts, as a crashing agent would.
    fn chaos(&self, task: &Task, ctx: &AgentContext) {
        if self.chaos <= 0.0 {
            return;
        }
        // splitmix64 over an atomic counter: every attempt draws its own
        // number, whatever the thread.
        let mut x = self
            .chaos_state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
        if draw < self.chaos {
            self.stats.chaos_panics.fetch_add(1, Ordering::Relaxed);
            panic!(
                "chaos: {} {} dropped `{}` (attempt {})",
                ctx.role(),
                ctx.id(),
                task.kind(),
                task.attempt()
            );
        }
    }
}

/// A page to fetch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PageJob {
    pub org: String,
    pub page: String,
    pub url: String,
}

/// A page fetched: its HTML, or what was read from it last time when its
/// content has not changed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fetched {
    pub hash: u64,
    pub html: Option<String>,
    pub cached: Option<PageExtraction>,
}

/// A page read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Extracted {
    pub extraction: PageExtraction,
    pub reused: bool,
}

/// A page to validate, with the site's pages as they are now (those gone
/// since the last run leave the record).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidateJob {
    pub org: String,
    pub page: String,
    pub pages: Vec<String>,
}

/// What validating a page did.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageReport {
    pub org: String,
    pub page: String,
    pub accepted: usize,
    pub rejected: usize,
    pub reused: bool,
    pub conflicts: u32,
}

/// The last run's reading of a page, by content hash.
#[derive(Debug, Serialize, Deserialize)]
struct PageCache {
    hash: u64,
    extraction: PageExtraction,
}

/// An organisation's record in the shared memory: each page's findings and
/// the contacts merged from them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgRecord {
    pub pages: BTreeMap<String, PageFindings>,
    pub contacts: OrgContacts,
}

pub fn record_key(org: &str) -> String {
    format!("pipeline/contacts/{org}")
}

fn cache_key(org: &str, page: &str) -> String {
    format!("pipeline/pages/{org}/{page}")
}

type Reply = Result<Output, TaskError>;

/// The planner: splits the root goal by site, and a site's goal by page.
pub fn planner(crew: &Crew, task: &Task, ctx: &AgentContext) -> Reply {
    crew.chaos(task, ctx);
    let goal = Goal::from_task(task)?;
    let attempts = crew.max_attempts;
    if goal.depth() == 0 {
        let sites: Vec<Site> = goal.input()?;
        let steps = sites
            .iter()
            .map(|site| {
                Step::goal(
                    site.org.as_str(),
                    format!("collect validated contacts at {}", site.org),
                )
                .with_max_attempts(attempts)
                .with_input(site)
            })
            .collect::<agentry::Result<Vec<_>>>()?;
        return Ok(Goal::decomposition(&steps)?);
    }
    let site: Site = goal.input()?;
    let mut steps = Vec::new();
    for page in &site.pages {
        let job = PageJob {
            org: site.org.clone(),
            page: page.clone(),
            url: format!("{}/{}{}", crew.base_url, site.prefix, page).replace(' ', "%20"),
        };
        let research = Step::task("research", "fetch-page")
            .with_role(Role::Researcher)
            .with_max_attempts(attempts)
            .with_input(&job)?;
        let extract = Step::task("extract", "extract-contacts")
            .with_role(Role::Extractor)
            .with_max_attempts(attempts)
            .with_input(&job)?
            .child(research);
        let validate = Step::task(page.replace('/', "|"), "validate-contacts")
            .with_role(Role::Validator)
            .with_max_attempts(attempts)
            .with_input(&ValidateJob {
                org: site.org.clone(),
                page: page.clone(),
                pages: site.pages.clone(),
            })?
            .child(extract);
        steps.push(validate);
    }
    Ok(Goal::decomposition(&steps)?)
}

/// The researcher: one page through a leased tab.
pub fn researcher(crew: &Crew, task: &Task, ctx: &AgentContext) -> Reply {
    crew.chaos(task, ctx);
    let job: PageJob = task.input()?;
    let html = fetch(ctx, &job.url)?;
    let hash = content_hash(&html);
    crew.stats.pages_fetched.fetch_add(1, Ordering::Relaxed);
    crew.stats
        .bytes
        .fetch_add(html.len() as u64, Ordering::Relaxed);
    // A cache entry that no longer decodes (an older format) is no cache.
    let cached = ctx
        .memory()
        .get::<PageCache>(&cache_key(&job.org, &job.page))
        .ok()
        .flatten()
        .filter(|c| c.value.hash == hash)
        .map(|c| c.value.extraction);
    let fetched = match cached {
        Some(extraction) => Fetched {
            hash,
            html: None,
            cached: Some(extraction),
        },
        None => Fetched {
            hash,
            html: Some(html),
            cached: None,
        },
    };
    Ok(Output::encode(&fetched)?)
}

/// Fetches `url` in a tab leased from the orchestrator's pool; the lease
/// gives the tab back when it drops.
fn fetch(ctx: &AgentContext, url: &str) -> Result<String, TaskError> {
    let pool = ctx
        .tabs()
        .ok_or_else(|| TaskError::fatal("the orchestrator has no tab pool"))?;
    let mut tab = pool.lease_for(url, LEASE_TIMEOUT)?;
    tab.navigate(url)?;
    Ok(tab.html()?)
}

/// The extractor: reads one page, and records what worked.
pub fn extractor(crew: &Crew, task: &Task, ctx: &AgentContext) -> Reply {
    crew.chaos(task, ctx);
    let fan_in = FanIn::from_task(task)?;
    let job: PageJob = fan_in.input()?;
    let fetched: Fetched = only(fan_in.decode_all()?)?;
    if let Some(extraction) = fetched.cached {
        crew.stats.pages_reused.fetch_add(1, Ordering::Relaxed);
        return Ok(Output::encode(&Extracted {
            extraction,
            reused: true,
        })?);
    }
    let html = fetched.html.unwrap_or_default();
    let started = Instant::now();
    let extraction = extract::extract(&html, Some(ctx.parallel()))?;
    let elapsed = started.elapsed();
    crew.stats.pages_extracted.fetch_add(1, Ordering::Relaxed);
    if extraction.parallel {
        crew.stats.pages_parallel.fetch_add(1, Ordering::Relaxed);
    }
    for &strategy in extraction.strategies.keys() {
        crew.skills
            .learn(skill(strategy), SkillOutcome::Succeeded(elapsed))?;
    }
    ctx.memory().put(
        &cache_key(&job.org, &job.page),
        &PageCache {
            hash: fetched.hash,
            extraction: extraction.clone(),
        },
    )?;
    Ok(Output::encode(&Extracted {
        extraction,
        reused: false,
    })?)
}

/// A strategy as a skill of the library.
fn skill(strategy: Strategy) -> Skill {
    Skill::new(strategy.name(), "extract-contacts").with_description(strategy.description())
}

/// The validator: validates one page and merges it into its organisation's
/// record.
pub fn validator(crew: &Crew, task: &Task, ctx: &AgentContext) -> Reply {
    crew.chaos(task, ctx);
    let fan_in = FanIn::from_task(task)?;
    let job: ValidateJob = fan_in.input()?;
    let extracted: Extracted = only(fan_in.decode_all()?)?;
    let findings = validate::validate_page(&extracted.extraction);
    if !extracted.reused {
        // What a strategy found that is no contact counts against it.
        for r in &findings.rejected {
            crew.skills
                .learn(skill(r.strategy), SkillOutcome::Failed(Duration::ZERO))?;
        }
    }
    let report = PageReport {
        org: job.org.clone(),
        page: job.page.clone(),
        accepted: findings.people.len()
            + findings.emails.len()
            + findings.phones.len()
            + findings.addresses.len(),
        rejected: findings.rejected.len(),
        reused: extracted.reused,
        conflicts: merge_into(ctx.memory(), &job, findings, &crew.stats)?,
    };
    crew.stats.pages_validated.fetch_add(1, Ordering::Relaxed);
    // The view may have gone: the line is then of no use.
    let _ = crew.log.send(format!(
        "{} validated {}/{}: {} found, {} rejected{}{}",
        ctx.id(),
        report.org,
        report.page,
        report.accepted,
        report.rejected,
        if report.reused {
            ", unchanged since the last run"
        } else {
            ""
        },
        match report.conflicts {
            0 => String::new(),
            n => format!(", {n} merge conflicts retried"),
        }
    ));
    Ok(Output::encode(&report)?)
}

/// Merges one page's findings into its organisation's record: read, merge,
/// write if the version is still the one read; on a conflict (another
/// validator wrote first), again from the new version. Returns the
/// conflicts met.
fn merge_into(
    memory: &SharedMemory,
    job: &ValidateJob,
    findings: PageFindings,
    stats: &Stats,
) -> Result<u32, TaskError> {
    let key = record_key(&job.org);
    let mut conflicts = 0;
    loop {
        let (mut record, version) = match memory.get::<OrgRecord>(&key) {
            Ok(Some(v)) => (v.value, v.version),
            Ok(None) => (OrgRecord::default(), Version::NONE),
            Err(Error::Codec(_)) => {
                // A record of an older format: start it again.
                memory.delete(&key)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let before = record.pages.len();
        record.pages.retain(|page, _| job.pages.contains(page));
        let pruned = record.pages.len() != before;
        if !pruned && record.pages.get(&job.page) == Some(&findings) {
            return Ok(conflicts);
        }
        record.pages.insert(job.page.clone(), findings.clone());
        record.contacts = validate::merge(&record.pages);
        match memory.set(&key, &record, version) {
            Ok(_) => return Ok(conflicts),
            Err(Error::Conflict { .. }) => {
                conflicts += 1;
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The one child output of a step with one child.
fn only<T>(mut outputs: Vec<T>) -> Result<T, TaskError> {
    match (outputs.pop(), outputs.is_empty()) {
        (Some(output), true) => Ok(output),
        _ => Err(TaskError::fatal("expected exactly one child step")),
    }
}

/// FNV-1a: a stable content hash (std's hasher may change between
/// releases, and the hash is stored).
pub fn content_hash(text: &str) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(text.as_bytes());
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
