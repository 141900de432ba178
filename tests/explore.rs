//! Exploration tests that need no forking: seed mixing, recipes, replay
//! determinism, the single-threaded guard, and the CLI (explore, replay and
//! its bad input) run as real processes.

use std::process::Command;

use runq::error::{exit_code_for, EXIT_BAD_INPUT, EXIT_ENVIRONMENT};
use runq::explore::{self, maze, rng, ExploreConfig, Recipe};

fn runq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runq"))
}

#[test]
fn seed_mixing_is_fnv1a_over_parent_name_index() {
    assert_eq!(rng::fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(rng::fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(rng::fnv1a64(b"foobar"), 0x85944171f73967e8);
    let mut bytes = 7u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"gate");
    bytes.extend_from_slice(&3u32.to_le_bytes());
    assert_eq!(rng::mix_seed(7, "gate", 3), rng::fnv1a64(&bytes));
    // Every input matters.
    let base = rng::mix_seed(7, "gate", 3);
    assert_ne!(base, rng::mix_seed(8, "gate", 3));
    assert_ne!(base, rng::mix_seed(7, "gatf", 3));
    assert_ne!(base, rng::mix_seed(7, "gate", 4));
}

#[test]
fn replay_is_deterministic_and_applies_every_fork() {
    let recipe = Recipe::parse("seed=11;fork=2@0x1234;fork=5@77;fork=5@0x99").unwrap();
    let mut first = Vec::new();
    let a = explore::replay(&recipe, &mut || maze::walk(&mut first));
    let mut second = Vec::new();
    let b = explore::replay(&recipe, &mut || maze::walk(&mut second));
    assert_eq!(first, second);
    assert_eq!(a.rng_calls, b.rng_calls);
    assert_eq!(a.fired, b.fired);
    // A different fork seed changes the choices after that fork.
    let other = Recipe::parse("seed=11;fork=2@0x1235").unwrap();
    let mut third = Vec::new();
    explore::replay(&other, &mut || maze::walk(&mut third));
    assert_eq!(first[..2], third[..2]);
    assert_ne!(first, third);
}

#[test]
fn exploring_from_a_threaded_process_is_refused() {
    // The test harness runs this test on its own thread: two threads.
    let err = explore::explore(&ExploreConfig::default(), &mut || {
        maze::walk(&mut Vec::new())
    })
    .unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_ENVIRONMENT);
    assert!(err.to_string().contains("single-threaded"), "{err}");
}

#[test]
fn bad_config_is_bad_input() {
    for config in [
        ExploreConfig {
            energy: 0,
            ..Default::default()
        },
        ExploreConfig {
            max_depth: 1000,
            ..Default::default()
        },
        ExploreConfig {
            timelines_per_split: 0,
            ..Default::default()
        },
    ] {
        let err = explore::explore(&config, &mut || {}).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err}");
    }
}

#[test]
fn cli_maze_finds_the_bug_and_its_recipe_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("maze.json");
    let out = runq()
        .args(["explore", "--demo", "maze", "--seed", "100", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("BUG:"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let recipe = report["replay"].as_str().unwrap().to_string();
    assert!(stdout.contains(&recipe));
    assert!(report["report"]["timelines"].as_u64().unwrap() <= 10_000);
    assert!(report["report"]["never_fired"]
        .as_array()
        .unwrap()
        .is_empty());

    // The same exploration again: the same recipe.
    let again = runq()
        .args(["explore", "--demo", "maze", "--seed", "100"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains(&recipe));

    for _ in 0..2 {
        let replay = runq()
            .args(["replay", &recipe, "--demo", "maze"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&replay.stdout);
        assert_eq!(replay.status.code(), Some(1), "{text}");
        assert!(
            text.contains(&format!("FAILED: {}", maze::MAZE_BUG)),
            "{text}"
        );
        assert!(!text.contains("never reached"), "{text}");
    }

    // In-process replay of the same recipe: the bug, every fork applied.
    let parsed = Recipe::parse(&recipe).unwrap();
    let r = explore::replay(&parsed, &mut || maze::walk(&mut Vec::new()));
    assert!(r.found_bug());
    assert_eq!(
        (r.forks_applied, r.forks_unreached),
        (parsed.forks.len(), 0)
    );
    // Without its forks the root seed alone does not reach the treasure.
    let root = explore::run_plain(parsed.seed, &mut || maze::walk(&mut Vec::new()));
    assert!(!root.found_bug());
}

#[test]
fn cli_bad_input_exits_two_naming_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["replay", "seed=1;fork=3", "--demo", "maze"],
            "missing `@`",
        ),
        (
            &["replay", "fork=1@2", "--demo", "maze"],
            "must start with `seed=",
        ),
        (
            &["replay", "seed=1", "--demo", "nope"],
            "unknown demonstration",
        ),
        (
            &["explore", "--demo", "maze", "--parallelism", "lots"],
            "parallelism",
        ),
        (&["explore", "--demo", "maze", "--energy", "0"], "energy"),
        (
            &["explore", "--demo", "maze", "--max-depth", "99"],
            "max-depth",
        ),
        (&["explore"], "nothing to explore"),
        (
            &[
                "explore",
                "--demo",
                "maze",
                "--json",
                "/nonexistent/dir/x.json",
            ],
            "--json",
        ),
    ];
    for (args, needle) in cases {
        let out = runq().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
