//! Command-line options.

use std::path::PathBuf;

pub const USAGE: &str = "\
Collect validated contacts from a folder of web pages with four kinds of
agents: a planner, researchers, extractors and validators.

Usage: cargo run --release --example pipeline -- [OPTIONS]

Options:
  --sites DIR      the pages to visit: one folder per organisation, holding
                   its .html pages (default: the bundled examples/pipeline/sites)
  --agents N       agents per role, 1 to 16 (default 2)
  --state-dir DIR  where the results persist; a later run with the same
                   folder reuses what it knows (default: agentry-pipeline in
                   the system's temporary folder)
  --browser NAME   how researchers fetch pages: http, or chromium (a headless
                   Chromium; builds with --features chrome only). Default:
                   chromium when built with --features chrome, http otherwise
  --chaos P        make a fraction P of attempts panic, 0 to 0.5, to watch
                   agents being replaced and tasks retried (default 0)
  --quiet          plain log lines instead of the live view
  --json           print only a machine-readable report at the end
  -h, --help       print this help
";

/// What the user asked for.
#[derive(Debug)]
pub struct Options {
    pub sites: PathBuf,
    pub agents: usize,
    pub state_dir: PathBuf,
    pub chaos: f64,
    pub browser: Browser,
    pub quiet: bool,
    pub json: bool,
}

/// The backend of the researchers' tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    Http,
    #[cfg(feature = "chrome")]
    Chromium,
}

impl Default for Browser {
    #[cfg(feature = "chrome")]
    fn default() -> Browser {
        Browser::Chromium
    }

    #[cfg(not(feature = "chrome"))]
    fn default() -> Browser {
        Browser::Http
    }
}

impl Browser {
    pub fn name(self) -> &'static str {
        match self {
            Browser::Http => "http",
            #[cfg(feature = "chrome")]
            Browser::Chromium => "chromium",
        }
    }
}

#[derive(Debug)]
pub enum Command {
    Run(Options),
    Help,
}

/// Parses the arguments after the program's name.
///
/// # Errors
/// A message saying which option is wrong and why.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options {
        sites: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline/sites"),
        agents: 2,
        state_dir: std::env::temp_dir().join("agentry-pipeline"),
        chaos: 0.0,
        browser: Browser::default(),
        quiet: false,
        json: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--name=value` and `--name value` are both accepted.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value: {what}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quiet" => options.quiet = true,
            "--json" => options.json = true,
            "--sites" => options.sites = PathBuf::from(value("a folder of pages")?),
            "--state-dir" => options.state_dir = PathBuf::from(value("a folder")?),
            "--agents" => {
                let v = value("a number from 1 to 16")?;
                options.agents = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| format!("--agents takes a number from 1 to 16, not {v:?}"))?;
            }
            "--browser" => {
                options.browser = match value("http or chromium")?.as_str() {
                    "http" => Browser::Http,
                    #[cfg(feature = "chrome")]
                    "chromium" => Browser::Chromium,
                    #[cfg(not(feature = "chrome"))]
                    "chromium" => {
                        return Err(
                            "--browser chromium needs a build with --features chrome".into()
                        );
                    }
                    other => {
                        return Err(format!("--browser takes http or chromium, not {other:?}"));
                    }
                }
            }
            "--chaos" => {
                let v = value("a fraction from 0 to 0.5")?;
                options.chaos = v
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=0.5).contains(p))
                    .ok_or_else(|| format!("--chaos takes a fraction from 0 to 0.5, not {v:?}"))?;
            }
            _ => return Err(format!("unknown option {arg:?}")),
        }
        if inline.is_some() && matches!(name.as_str(), "--quiet" | "--json") {
            return Err(format!("{name} takes no value"));
        }
    }
    Ok(Command::Run(options))
}
