//! `runq report --html`: the page of two real runs, loaded in headless
//! Chromium: no console messages or script errors, every chart rendered
//! (an `<svg>` with a non-empty box and content, counted by the page's own
//! load handler), and a screenshot.
//!
//! Needs `/usr/bin/chromium` (scripts/setup installs it): without it the
//! test says so and skips, and fails under CI=true.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{output_text as text, output_within, runq};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let msg =
        format!("{CHROMIUM} is missing: install it with scripts/setup (Debian package chromium)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Runs headless Chromium with the isolation flags plus `args`, killing it
/// after 90 s. Its output goes to files (its logging can fill a pipe).
fn chromium(profile: &Path, args: &[String]) -> Output {
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args(args)
        .stdin(Stdio::null());
    output_within(command, Duration::from_secs(90), "chromium")
}

fn attribute<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} on <body>: the load handler did not run\n{dom}"))
        + key.len();
    &dom[start..start + dom[start..].find('"').unwrap()]
}

fn scenario_with_captures(dir: &Path) -> PathBuf {
    let out = runq(&["list", "--toml", "mixed_work"]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = String::from_utf8(out.stdout).unwrap();
    let path = dir.join("mixed_captured.toml");
    std::fs::write(
        &path,
        toml.replacen("duration =", "periodic_capture_ms = 250\nduration =", 1),
    )
    .unwrap();
    path
}

#[test]
fn the_page_of_two_runs_renders_every_chart_in_chromium() {
    if !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_with_captures(dir.path());
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for (seed, json) in [("3", &a), ("4", &b)] {
        let out = runq(&[
            "run",
            scenario.to_str().unwrap(),
            "--duration",
            "1s",
            "--seed",
            seed,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{}",
            text(&out)
        );
    }
    let page = dir.path().join("page.html");
    let out = runq(&[
        "report",
        "--html",
        page.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    for id in [
        "A-cpu-share",
        "A-wake-cdf",
        "A-progress-0",
        "A-noise",
        "A-captures",
        "B-cpu-share",
        "B-wake-cdf",
        "B-progress-0",
        "B-noise",
        "B-captures",
        "compare-metrics",
        "compare-wake-cdf",
    ] {
        assert!(
            html.contains(&format!("<figure class=\"chart\" id=\"{id}\"><svg")),
            "chart {id} missing"
        );
    }
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing is fetched"
    );
    assert!(
        !html.contains("<link") && !html.contains("src=\""),
        "the page is self-contained"
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let dump = chromium(profile.path(), &["--dump-dom".into(), url.clone()]);
    assert!(dump.status.success(), "{}", text(&dump));
    let dom = String::from_utf8_lossy(&dump.stdout);
    let stderr = String::from_utf8_lossy(&dump.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let charts: usize = attribute(&dom, "data-charts").parse().unwrap();
    let rendered: usize = attribute(&dom, "data-charts-rendered").parse().unwrap();
    assert_eq!(attribute(&dom, "data-errors"), "[]");
    assert_eq!(charts, html.matches("<figure class=\"chart\"").count());
    assert!(charts >= 12, "{charts} charts");
    assert_eq!(rendered, charts, "every chart rendered");

    let shot = dir.path().join("page.png");
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,2400".into(),
            url,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a screenshot with content ({} bytes)",
        png.len()
    );
    if let Ok(keep) = std::env::var("RUNQ_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
