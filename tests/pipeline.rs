//! The pipeline example end to end, as a child process: the contacts it
//! finds on the bundled pages against `examples/pipeline/answers.json`
//! (precision and recall 100%), also when a fifth of the attempts panic;
//! reuse of the state directory by a second run; refused options.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A run takes well under a second once built; the first one may build it.
const TIMEOUT: Duration = Duration::from_secs(300);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the example with `args`, killing it after [`TIMEOUT`].
fn pipeline(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO"));
    command.args(["run", "--quiet", "--example", "pipeline"]);
    // The features of this test, so that its build is reused.
    let features: Vec<&str> = [
        ("chrome", cfg!(feature = "chrome")),
        ("redis", cfg!(feature = "redis")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    // Cargo gives a test its package's variables (CARGO_MANIFEST_DIR, ...);
    // a build script that watches one (ring's does) would see a change and
    // rebuild, here and again in the next outer build. The child gets the
    // environment the outer cargo had.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR") {
            command.env_remove(&*name);
        }
    }
    let mut child = command
        .arg("--")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo runs");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("the pipeline did not finish within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

/// Runs the example with `--json` and returns its report; its researchers
/// fetch over HTTP unless `args` say otherwise (Chromium takes seconds
/// where HTTP takes milliseconds).
fn report(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    if !args.contains(&"--browser") {
        all.extend(["--browser", "http"]);
    }
    all.extend_from_slice(args);
    let run = pipeline(&all);
    assert_eq!(run.code, Some(0), "the pipeline failed:\n{}", run.stderr);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{}", run.stdout))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn values(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["value"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every fact of a site's contacts as one comparable line: a person (name,
/// role, e-mails, phones), an e-mail, a phone, an address, a refusal and
/// its reason.
fn facts(site: &Value, from_report: bool) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    for p in site["people"].as_array().into_iter().flatten() {
        let mut emails = strings(&p["emails"]);
        let mut phones = strings(&p["phones"]);
        emails.sort();
        phones.sort();
        facts.insert(format!(
            "person {} | {} | {} | {}",
            p["name"].as_str().unwrap_or_default(),
            p["role"].as_str().unwrap_or("-"),
            emails.join(" "),
            phones.join(" ")
        ));
    }
    for kind in ["emails", "phones", "addresses"] {
        let found = if from_report {
            values(&site[kind])
        } else {
            strings(&site[kind])
        };
        facts.extend(found.into_iter().map(|v| format!("{kind} {v}")));
    }
    for r in site["rejected"].as_array().into_iter().flatten() {
        facts.insert(format!(
            "rejected {} ({})",
            r["value"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or_default()
        ));
    }
    facts
}

/// Precision and recall of the report against the answers, 100% each, or
/// a panic listing what was missed and what was found wrongly.
fn assert_matches_answers(report: &Value) {
    let answers: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline/answers.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let answers = answers.as_object().unwrap();
    let sites = report["sites"].as_object().expect("sites in the report");
    assert_eq!(
        sites.keys().collect::<Vec<_>>(),
        answers.keys().collect::<Vec<_>>(),
        "the sites visited"
    );
    let (mut expected, mut found) = (BTreeSet::new(), BTreeSet::new());
    for (org, answer) in answers {
        expected.extend(
            facts(answer, false)
                .into_iter()
                .map(|f| format!("{org}: {f}")),
        );
        found.extend(
            facts(&sites[org], true)
                .into_iter()
                .map(|f| format!("{org}: {f}")),
        );
    }
    let right = expected.intersection(&found).count() as f64;
    let precision = right / found.len() as f64;
    let recall = right / expected.len() as f64;
    let missed: Vec<_> = expected.difference(&found).collect();
    let wrong: Vec<_> = found.difference(&expected).collect();
    assert!(
        precision == 1.0 && recall == 1.0,
        "precision {precision:.3}, recall {recall:.3}\nmissed: {missed:#?}\nfound wrongly: {wrong:#?}"
    );
    assert!(
        expected.len() > 80,
        "the answers hold {} facts",
        expected.len()
    );
}

fn total(report: &Value, name: &str) -> u64 {
    report["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{name}"))
}

#[test]
fn finds_exactly_the_contacts_of_the_bundled_pages_and_reuses_them_on_a_second_run() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let first = report(&["--state-dir", dir]);
    assert_matches_answers(&first);
    assert_eq!(total(&first, "pages"), 32);
    assert_eq!(total(&first, "pages_reused"), 0);
    assert_eq!(total(&first, "pages_extracted"), 32);
    assert!(
        total(&first, "pages_parallel") >= 1,
        "the staff directory is read in parallel"
    );
    assert!(state.path().join("memory.snapshot").is_file());
    assert_eq!(
        first["tabs"]["leases"], 32,
        "every page through a leased tab"
    );

    let second = report(&["--state-dir", dir]);
    assert_matches_answers(&second);
    assert_eq!(total(&second, "pages_reused"), 32);
    assert_eq!(total(&second, "sites_reused"), 8);
    assert_eq!(total(&second, "pages_extracted"), 0);
}

#[test]
fn a_fifth_of_the_attempts_panicking_changes_nothing_in_the_results() {
    let state = tempfile::tempdir().unwrap();
    let report = report(&[
        "--chaos",
        "0.2",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert_matches_answers(&report);
    // Over a hundred attempts at 0.2: some panicked, and their agents were
    // replaced.
    assert!(total(&report, "chaos_panics") > 0);
    assert!(report["agents"]["replaced"].as_u64().unwrap() > 0);
    assert!(total(&report, "retried") >= total(&report, "chaos_panics"));
}

#[cfg(feature = "chrome")]
#[test]
fn chromium_rendered_pages_yield_the_same_contacts() {
    let state = tempfile::tempdir().unwrap();
    let report = report(&[
        "--browser",
        "chromium",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(report["tabs"]["browser"], "chromium");
    assert_matches_answers(&report);
}

#[test]
fn a_changed_page_is_read_again_and_a_removed_one_leaves_the_record() {
    let sites = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let acme = sites.path().join("acme");
    std::fs::create_dir(&acme).unwrap();
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline/sites/acme-robotics");
    for page in ["index.html", "contact.html", "careers.html"] {
        std::fs::copy(source.join(page), acme.join(page)).unwrap();
    }
    let args = |s: &str| {
        report(&[
            "--sites",
            sites.path().to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
            "--agents",
            s,
        ])
    };
    let first = args("1");
    assert!(
        values(&first["sites"]["acme"]["emails"]).contains(&"jobs@acme-robotics.example".into())
    );

    let contact = std::fs::read_to_string(acme.join("contact.html")).unwrap();
    std::fs::write(
        acme.join("contact.html"),
        contact.replace(
            "sales@acme-robotics.example",
            "orders@acme-robotics.example",
        ),
    )
    .unwrap();
    std::fs::remove_file(acme.join("careers.html")).unwrap();
    let second = args("3");
    assert_eq!(total(&second, "pages_reused"), 1, "index.html is unchanged");
    assert_eq!(total(&second, "pages_extracted"), 1, "contact.html changed");
    let emails = values(&second["sites"]["acme"]["emails"]);
    assert_eq!(
        emails,
        ["info@acme-robotics.example", "orders@acme-robotics.example"],
        "the new address replaces the old, and the removed page's is gone"
    );
}

#[test]
fn bad_options_are_refused_with_exit_code_2() {
    for args in [
        &["--bogus"][..],
        &["--agents", "0"],
        &["--agents"],
        &["--chaos", "2"],
        &["--browser", "lynx"],
        &["--sites", "/nonexistent/agentry-pipeline-sites"],
    ] {
        let run = pipeline(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("pipeline: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let help = pipeline(&["--help"]);
    assert_eq!(help.code, Some(0));
    for option in [
        "--sites",
        "--agents",
        "--state-dir",
        "--chaos",
        "--quiet",
        "--json",
    ] {
        assert!(help.stdout.contains(option), "--help explains {option}");
    }
}
