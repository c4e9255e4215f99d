//! Skill library: ranked lookup, learning and retirement, running steps, persistence in a file or in shared memory, corrupt files.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentry::{
    Durability, Error, Output, SharedMemory, Skill, SkillLibrary, SkillOutcome, SkillRunError,
    SkillStep, TaskError,
};

const MS: Duration = Duration::from_millis(5);

fn skill(name: &str) -> Skill {
    Skill::new(name, "extract").with_step(SkillStep::new("noop"))
}

fn learn_times(library: &SkillLibrary, recipe: &Skill, successes: usize, failures: usize) {
    for _ in 0..successes {
        library
            .learn(recipe.clone(), SkillOutcome::Succeeded(MS))
            .unwrap();
    }
    for _ in 0..failures {
        library
            .learn(recipe.clone(), SkillOutcome::Failed(MS))
            .unwrap();
    }
}

#[test]
fn lookup_ranks_by_relevance_times_success_with_name_ties() {
    let library = SkillLibrary::in_memory();
    let tagged = skill("tagged").with_tag("email").with_tag("contacts");
    let described = skill("described").with_description("finds email addresses");
    let unrelated = skill("unrelated").with_description("parses prices");
    let other_kind = Skill::new("other-kind", "translate").with_tag("email");
    for s in [&tagged, &described, &unrelated, &other_kind] {
        learn_times(&library, s, 1, 0);
    }
    let names = |query: &str| -> Vec<String> {
        library
            .find("extract", query, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.skill.name().to_owned())
            .collect()
    };
    assert_eq!(
        names("email contacts"),
        ["tagged", "described", "unrelated"]
    );

    // Failures sink the best word match below a weaker one with a clean record.
    learn_times(&library, &tagged, 0, 2);
    assert_eq!(names("email"), ["described", "tagged", "unrelated"]);

    // Equal scores: by name.
    let twins = SkillLibrary::in_memory();
    for name in ["b", "c", "a"] {
        learn_times(&twins, &skill(name), 1, 0);
    }
    let best = twins.find("extract", "", 2).unwrap();
    let order: Vec<&str> = best.iter().map(|m| m.skill.name()).collect();
    assert_eq!(order, ["a", "b"]);
    assert_eq!(best[0].score, best[1].score);
}

#[test]
fn successes_strengthen_and_repeated_failures_retire_a_recipe() {
    let library = SkillLibrary::in_memory().retire_after(3);
    let recipe = skill("scrape");
    let stats = library
        .learn(recipe.clone(), SkillOutcome::Succeeded(MS))
        .unwrap();
    let once = stats.success_rate();
    let stats = library
        .learn(recipe.clone(), SkillOutcome::Succeeded(MS))
        .unwrap();
    assert!(stats.success_rate() > once, "a success strengthens");
    assert_eq!((stats.uses(), stats.successes()), (2, 2));

    let weaker = library.record("scrape", SkillOutcome::Failed(MS)).unwrap();
    assert!(
        weaker.success_rate() < stats.success_rate(),
        "a failure weakens"
    );
    library.record("scrape", SkillOutcome::Failed(MS)).unwrap();
    assert!(!library.retired("scrape").unwrap());
    assert_eq!(library.find("extract", "", 5).unwrap().len(), 1);

    library.record("scrape", SkillOutcome::Failed(MS)).unwrap();
    assert!(library.retired("scrape").unwrap());
    assert!(library.find("extract", "", 5).unwrap().is_empty());
    assert!(matches!(
        library.run("scrape", Output::empty()),
        Err(SkillRunError::Refused(Error::InvalidInput(_)))
    ));

    // A new success of the recipe brings it back.
    library.learn(recipe, SkillOutcome::Succeeded(MS)).unwrap();
    assert!(!library.retired("scrape").unwrap());
}

#[test]
fn a_new_recipe_under_a_known_name_starts_a_new_record() {
    let library = SkillLibrary::in_memory();
    learn_times(&library, &skill("scrape"), 3, 1);
    let changed = skill("scrape").with_step(SkillStep::new("validate"));
    let stats = library
        .learn(changed.clone(), SkillOutcome::Succeeded(MS))
        .unwrap();
    assert_eq!(stats.uses(), 1);
    assert_eq!(
        library.get("scrape").unwrap().unwrap().steps(),
        changed.steps()
    );
}

#[test]
fn running_a_skill_chains_steps_and_names_the_failed_step() {
    let library = SkillLibrary::in_memory();
    library
        .register_action("add", |call| {
            let n: i64 = call.params()?;
            let so_far: i64 = call.input().decode()?;
            Ok(Output::encode(&(so_far + n))?)
        })
        .unwrap();
    library
        .register_action("refuse-negative", |call| {
            let value: i64 = call.input().decode()?;
            if value < 0 {
                return Err(TaskError::fatal(format!("{value} is negative")));
            }
            Ok(call.input().clone())
        })
        .unwrap();
    let recipe = Skill::new("arith", "compute")
        .with_step(SkillStep::with_params("add", &5i64).unwrap())
        .with_step(SkillStep::with_params("add", &-10i64).unwrap())
        .with_step(SkillStep::new("refuse-negative"));
    library.learn(recipe, SkillOutcome::Succeeded(MS)).unwrap();

    let ok = library
        .run("arith", Output::encode(&20i64).unwrap())
        .unwrap();
    assert_eq!(ok.decode::<i64>().unwrap(), 15);

    let error = library
        .run("arith", Output::encode(&1i64).unwrap())
        .unwrap_err();
    assert_eq!(error.failed_step(), Some(2));
    assert_eq!(
        error.to_string(),
        "step 2 (refuse-negative) of skill \"arith\" failed: -4 is negative"
    );
    let stats = library.get("arith").unwrap().unwrap().stats().clone();
    assert_eq!(
        (stats.uses(), stats.successes(), stats.failures()),
        (3, 2, 1)
    );
}

#[test]
fn unknown_action_is_refused_before_any_step_runs() {
    let library = SkillLibrary::in_memory();
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    library
        .register_action("count", move |call| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(call.input().clone())
        })
        .unwrap();
    let recipe = Skill::new("broken", "k")
        .with_step(SkillStep::new("count"))
        .with_step(SkillStep::new("teleport"));
    library.learn(recipe, SkillOutcome::Succeeded(MS)).unwrap();
    match library.run("broken", Output::empty()) {
        Err(SkillRunError::Refused(Error::InvalidInput(why))) => {
            assert_eq!(
                why,
                "step 1 of skill \"broken\" names the unknown action \"teleport\""
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(matches!(
        library.run("missing", Output::empty()),
        Err(SkillRunError::Refused(Error::InvalidInput(_)))
    ));
}

fn sample(library: &SkillLibrary) -> Vec<Skill> {
    let recipe = Skill::new("scrape-contacts", "extract")
        .with_description("team pages to e-mail addresses")
        .with_tag("email")
        .with_step(SkillStep::with_params("fetch", &("https://acme.example", 3u8)).unwrap())
        .with_step(SkillStep::new("find-emails"));
    learn_times(library, &recipe, 4, 1);
    learn_times(library, &skill("other"), 0, 5);
    library.skills().unwrap()
}

#[test]
fn file_library_reopens_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skills.bin");
    let before = sample(&SkillLibrary::open(&path).unwrap());
    let reopened = SkillLibrary::open(&path).unwrap();
    assert_eq!(reopened.skills().unwrap(), before);
    assert!(reopened.retired("other").unwrap());
    assert!(!dir.path().join("skills.bin.tmp").exists());
}

#[test]
fn shared_memory_library_persists_with_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.snap");
    let memory = SharedMemory::open_with(&path, Durability::OnPersist).unwrap();
    let before = sample(&SkillLibrary::in_shared_memory(memory.clone(), "skills"));
    memory.persist().unwrap();
    drop(memory);
    let memory = SharedMemory::open_with(&path, Durability::OnPersist).unwrap();
    let reopened = SkillLibrary::in_shared_memory(memory, "skills");
    assert_eq!(reopened.skills().unwrap(), before);
}

#[test]
fn corrupt_skill_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skills.bin");
    sample(&SkillLibrary::open(&path).unwrap());
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    for (bytes, why) in [
        (b"garbage".to_vec(), "shorter than the header"),
        (good[..good.len() / 2].to_vec(), "header says"),
        (flipped, "checksum mismatch"),
        ([b"SNAP".as_slice(), &good[4..]].concat(), "bad magic"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        match SkillLibrary::open(&path) {
            Err(Error::CorruptSnapshot { reason, .. }) => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected a corrupt file error, got {other:?}"),
        }
    }
}

#[test]
fn agents_sharing_a_library_lose_no_outcome() {
    let library = SkillLibrary::in_shared_memory(SharedMemory::in_memory(), "skills");
    let recipe = skill("shared");
    let per_thread = if cfg!(miri) { 5 } else { 200 };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (library, recipe) = (library.clone(), recipe.clone());
            scope.spawn(move || learn_times(&library, &recipe, per_thread, 0));
        }
    });
    let stats = library.get("shared").unwrap().unwrap().stats().clone();
    assert_eq!(stats.uses(), 4 * per_thread as u64);
}
