//! The final report: what `--json` prints and the summary shows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::validate::OrgContacts;

#[derive(Debug, Serialize)]
pub struct Report {
    pub sites: BTreeMap<String, SiteReport>,
    pub totals: Totals,
    pub agents: AgentsReport,
    pub skills: Vec<SkillReport>,
    /// The researchers' tab pool.
    pub tabs: TabsReport,
    pub elapsed_ms: u64,
    pub pages_per_second: f64,
    pub tasks_per_second: f64,
    pub state_dir: String,
    pub memory_file: String,
}

#[derive(Debug, Serialize)]
pub struct SiteReport {
    pub pages: usize,
    /// Pages unchanged since the last run with this state directory: not
    /// read again.
    pub pages_reused: usize,
    #[serde(flatten)]
    pub contacts: OrgContacts,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub sites: usize,
    pub pages: usize,
    pub pages_fetched: u64,
    pub bytes_fetched: u64,
    pub pages_reused: u64,
    pub pages_extracted: u64,
    pub pages_parallel: u64,
    pub sites_reused: usize,
    pub contacts: usize,
    pub rejected: usize,
    pub conflicts: u64,
    pub chaos_panics: u64,
    pub tasks: u64,
    pub retried: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentsReport {
    pub per_role: usize,
    pub spawned: u64,
    pub replaced: u64,
    pub scaled_up: u64,
    pub scaled_down: u64,
}

#[derive(Debug, Serialize)]
pub struct SkillReport {
    pub name: String,
    pub uses: u64,
    pub successes: u64,
    pub success_rate: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct TabsReport {
    /// `http` or `chromium`.
    pub browser: &'static str,
    pub max_tabs: usize,
    pub opened: u64,
    pub leases: u64,
    pub recycled: u64,
    pub timeouts: u64,
}
