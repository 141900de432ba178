//! What the HTML report shows, built from run documents and, for two
//! inputs, their comparison. Charts per run (its first run for a repeated
//! one): CPU time against fair share per worker, wake-latency CDF per
//! cgroup, progress per worker over time with stalls marked, host noise
//! over time, scheduler captures per step and the scheduler's event
//! counters when present. For two inputs: the verdict table, every judged
//! metric of both sides on one scale, and their pooled wake-latency CDFs.

use std::fmt::Write as _;

use super::charts::{BarChart, LineChart, Mark, Series, StripChart};
use crate::check::{worker_shares, CheckInput};
use crate::regress::{figure, Comparison, Direction, Document, Verdict};
use crate::report::RunReport;

/// At most this many points per CDF line.
const CDF_POINTS: usize = 300;

/// At most this many cgroups get a progress chart each.
const MAX_PROGRESS_CHARTS: usize = 8;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1000px}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
th{background:#f0f0f0}figure.chart{margin:1.5em 0}figcaption{font-size:13px;color:#555}\
.regressed{background:#fdd}.improved{background:#dfd}.not_enough_runs{background:#ffd}\
.FAIL{color:#b00;font-weight:bold}.PASS{color:#070}.SKIP{color:#777}.warning{color:#a50}";

/// Records script errors and, on load, which charts rendered (see the
/// module docs of `html`).
const SCRIPT: &str = "window.runqErrors=[];\
window.addEventListener('error',function(e){window.runqErrors.push(String(e.message));});\
window.addEventListener('load',function(){var figs=document.querySelectorAll('figure.chart');var ok=0;\
figs.forEach(function(f){var s=f.querySelector('svg');if(!s)return;var r=s.getBoundingClientRect();\
if(r.width>0&&r.height>0&&s.querySelectorAll('*').length>10)ok++;});\
document.body.setAttribute('data-charts',String(figs.length));\
document.body.setAttribute('data-charts-rendered',String(ok));\
document.body.setAttribute('data-errors',JSON.stringify(window.runqErrors));});";

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page as HTML. `inputs` are (label, document); with two, `comparison`
/// is B against A.
pub fn render_page(
    inputs: &[(String, Document)],
    comparison: Option<&Comparison>,
) -> anyhow::Result<String> {
    let title = inputs
        .iter()
        .map(|(_, d)| d.scenario().to_string())
        .collect::<Vec<_>>()
        .join(" vs ");
    let mut body = String::new();
    let _ = writeln!(body, "<h1>runq: {}</h1>", esc(&title));
    if let (Some(c), [(la, a), (lb, b)]) = (comparison, inputs) {
        comparison_section(&mut body, c, (la, a), (lb, b))?;
    }
    for (i, (label, doc)) in inputs.iter().enumerate() {
        let side = if inputs.len() == 2 {
            ["A", "B"][i].to_string()
        } else {
            String::new()
        };
        document_section(&mut body, &side, label, doc)?;
    }
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>runq: {}</title>\
<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n{body}</body></html>\n",
        esc(&title)
    ))
}

fn figure_of(out: &mut String, id: &str, svg: Option<String>, caption: &str, missing: &str) {
    match svg {
        Some(svg) => {
            let _ = writeln!(
                out,
                "<figure class=\"chart\" id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>",
                esc(caption)
            );
        }
        None => {
            let _ = writeln!(out, "<p class=\"nochart\">{}</p>", esc(missing));
        }
    }
}

fn document_section(
    out: &mut String,
    side: &str,
    label: &str,
    doc: &Document,
) -> anyhow::Result<()> {
    let runs = doc.runs();
    let _ = writeln!(
        out,
        "<h2>{}{} ({}, {} run{})</h2>",
        if side.is_empty() {
            String::new()
        } else {
            format!("{side}: ")
        },
        esc(label),
        esc(doc.scenario()),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    let run = &runs[0];
    host_table(out, run);
    if let Document::Repeat(r) = doc {
        let _ = writeln!(
            out,
            "<table><tr><th>check</th><th>passed</th><th>failed on a busy host</th></tr>"
        );
        for c in &r.checks {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
                esc(&c.name),
                c.passed,
                r.repeat,
                c.failed_on_busy_host
            );
        }
        let _ = writeln!(out, "</table>");
        metric_summary_table(out, r);
        let _ = writeln!(
            out,
            "<p>Charts below: run 1 of {} (seed {}).</p>",
            r.repeat, run.seed
        );
    } else {
        checks_table(out, run);
    }
    run_charts(
        out,
        &format!("{side}{}", if side.is_empty() { "run" } else { "" }),
        run,
    )
}

fn host_table(out: &mut String, run: &RunReport) {
    let _ = writeln!(out, "<table><tr><th colspan=\"2\">host</th></tr>");
    for (k, v) in run.host.fields() {
        let _ = writeln!(out, "<tr><td>{k}</td><td>{}</td></tr>", esc(&v));
    }
    if let Some(n) = &run.noise {
        let _ = writeln!(
            out,
            "<tr><td>host noise</td><td>{}{}</td></tr>",
            esc(&n.describe()),
            if n.busy { " (host busy)" } else { "" }
        );
    }
    let _ = writeln!(out, "</table>");
}

fn checks_table(out: &mut String, run: &RunReport) {
    let _ = writeln!(
        out,
        "<table><tr><th>check</th><th></th><th>summary</th></tr>"
    );
    for c in &run.checks.checks {
        let busy = c
            .host_busy
            .as_ref()
            .map(|w| format!(" (host busy: {})", esc(w)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"{v}\">{v}</td><td>{}{busy}</td></tr>",
            esc(&c.name),
            esc(&c.summary),
            v = c.verdict()
        );
    }
    let _ = writeln!(out, "</table>");
}

fn metric_summary_table(out: &mut String, r: &crate::regress::RepeatReport) {
    let _ = writeln!(
        out,
        "<table><tr><th>metric</th><th>unit</th><th>median</th><th>quartiles</th><th>min..max</th><th>CV</th></tr>"
    );
    for m in &r.metrics {
        let Some(s) = &m.summary else { continue };
        let _ = writeln!(
            out,
            "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}..{}</td><td>{}..{}</td><td>{}</td></tr>",
            m.direction.arrow(),
            esc(&m.name),
            esc(&m.unit),
            figure(s.median),
            figure(s.q1),
            figure(s.q3),
            figure(s.min),
            figure(s.max),
            s.cv.map_or("-".into(), |c| format!("{:.1}%", c * 100.0))
        );
    }
    let _ = writeln!(out, "</table>");
}

/// Every chart of one run; `id` prefixes the figures' ids.
fn run_charts(out: &mut String, id: &str, run: &RunReport) -> anyhow::Result<()> {
    figure_of(
        out,
        &format!("{id}-cpu-share"),
        cpu_share_chart(run)?,
        "CPU time each CPU-bound worker got (bars) against its fair share (black marks: the fair-share model of not_starved).",
        "No CPU-bound worker had a fair share to show.",
    );
    figure_of(
        out,
        &format!("{id}-wake-cdf"),
        wake_cdf(
            "wake latency CDF per cgroup",
            run.cgroups
                .iter()
                .map(|c| (c.name.clone(), c.workers.iter().collect::<Vec<_>>())),
        )?,
        "Share of sampled wake/resume latencies at or below x (log scale), per cgroup.",
        "No wake latencies were sampled (no worker sleeps or blocks).",
    );
    let stall_ms = run.thresholds.max_gap_ms / 2.0;
    for (i, cg) in run.cgroups.iter().take(MAX_PROGRESS_CHARTS).enumerate() {
        figure_of(
            out,
            &format!("{id}-progress-{i}"),
            progress_chart(cg, stall_ms)?,
            &format!(
                "Work units of each worker of {} over time, from the hold samples; red: the counter stood still for {stall_ms:.0} ms or more.",
                cg.name
            ),
            &format!("{}: no progress samples.", cg.name),
        );
    }
    figure_of(
        out,
        &format!("{id}-noise"),
        noise_chart(run)?,
        "CPU time taken on the run's CPUs by processes outside the run, per sample interval of the holds.",
        "Host noise was not sampled.",
    );
    figure_of(
        out,
        &format!("{id}-captures"),
        captures_chart(run)?,
        "What the workers got in each step according to the scheduler captures (schedstat).",
        "The run took no scheduler captures (capture_snapshot ops or periodic_capture_ms).",
    );
    figure_of(
        out,
        &format!("{id}-scheduler-events"),
        scheduler_chart(run)?,
        "The sched_ext scheduler's event counters (root/events), added in each step.",
        "No sched_ext scheduler ran (or it reported no event counters).",
    );
    Ok(())
}

/// Event counters per step (or over the run) when a scheduler ran.
fn scheduler_chart(run: &RunReport) -> anyhow::Result<Option<String>> {
    let value = serde_json::to_value(run)?;
    let total = crate::regress::scheduler_counters(&value);
    if total.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = total.iter().map(|c| c.0.clone()).collect();
    let steps = value
        .pointer("/scheduler/events/steps")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    let series: Vec<(String, Vec<f64>)> = if steps.is_empty() {
        vec![("run".into(), total.iter().map(|c| c.1).collect())]
    } else {
        steps
            .iter()
            .map(|s| {
                let delta = s.get("delta");
                (
                    format!(
                        "step {}",
                        s.get("step").and_then(|v| v.as_u64()).unwrap_or(0)
                    ),
                    names
                        .iter()
                        .map(|n| {
                            delta
                                .and_then(|d| d.get(n))
                                .and_then(|v| v.as_f64())
                                .unwrap_or(0.0)
                        })
                        .collect(),
                )
            })
            .collect()
    };
    BarChart {
        title: "scheduler event counters".into(),
        y_desc: "events".into(),
        categories: names,
        series,
        markers: None,
    }
    .svg()
}

fn cpu_share_chart(run: &RunReport) -> anyhow::Result<Option<String>> {
    let input = CheckInput {
        cgroups: run.cgroups.clone(),
        num_cpus: run.topology.num_cpus,
        duration_ms: run.duration_ms,
    };
    let shares = worker_shares(&input);
    BarChart {
        title: "CPU time vs fair share per worker".into(),
        y_desc: "CPU ms".into(),
        categories: shares
            .iter()
            .map(|s| format!("{}/{}", run.cgroups[s.cgroup].name, s.worker))
            .collect(),
        series: vec![(
            "CPU ms".into(),
            shares.iter().map(|s| s.cpu_ns / 1e6).collect(),
        )],
        markers: Some((
            "fair ms".into(),
            shares.iter().map(|s| s.fair_ns / 1e6).collect(),
        )),
    }
    .svg()
}

/// Empirical CDF of latencies in microseconds, at most [`CDF_POINTS`].
fn cdf_points(mut ns: Vec<u64>) -> Vec<(f64, f64)> {
    if ns.is_empty() {
        return Vec::new();
    }
    ns.sort_unstable();
    let n = ns.len();
    let steps = CDF_POINTS.min(n);
    (0..steps)
        .map(|k| {
            let i = if steps == 1 {
                n - 1
            } else {
                k * (n - 1) / (steps - 1)
            };
            ((ns[i] as f64 / 1e3).max(0.01), (i + 1) as f64 / n as f64)
        })
        .collect()
}

fn wake_cdf<'a>(
    title: &str,
    groups: impl Iterator<Item = (String, Vec<&'a crate::workload::WorkerReport>)>,
) -> anyhow::Result<Option<String>> {
    let series: Vec<Series> = groups
        .map(|(name, workers)| Series {
            name,
            points: cdf_points(
                workers
                    .iter()
                    .flat_map(|w| w.wake_latency_ns.iter().copied())
                    .collect(),
            ),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    LineChart {
        title: title.into(),
        x_desc: "latency (us, log scale)".into(),
        y_desc: "share of wakes".into(),
        series,
        log_x: true,
        reference: None,
        marks: Vec::new(),
    }
    .svg()
}

fn progress_chart(cg: &crate::check::CgroupRun, stall_ms: f64) -> anyhow::Result<Option<String>> {
    let mut series = Vec::new();
    let mut marks = Vec::new();
    for (w, report) in cg.workers.iter().enumerate() {
        let points: Vec<(f64, u64)> = cg
            .samples
            .iter()
            .filter_map(|s| s.iterations.get(w).map(|&it| (s.at_ms, it)))
            .collect();
        // Runs of equal counters at least `stall_ms` long.
        let mut start = 0;
        for i in 1..=points.len() {
            if i == points.len() || points[i].1 != points[start].1 {
                if i - 1 > start && points[i - 1].0 - points[start].0 >= stall_ms {
                    marks.push(Mark {
                        x0: points[start].0 / 1e3,
                        x1: points[i - 1].0 / 1e3,
                        y: points[start].1 as f64,
                    });
                }
                start = i;
            }
        }
        series.push(Series {
            name: format!("{} {} (tid {})", w, report.work_type, report.tid),
            points: points.iter().map(|&(t, it)| (t / 1e3, it as f64)).collect(),
        });
    }
    LineChart {
        title: format!("progress of {}", cg.name),
        x_desc: "time since the run's start (s)".into(),
        y_desc: "work units".into(),
        series,
        log_x: false,
        reference: None,
        marks,
    }
    .svg()
}

fn noise_chart(run: &RunReport) -> anyhow::Result<Option<String>> {
    let Some(n) = &run.noise else {
        return Ok(None);
    };
    let cpus = n.cpus.len().max(1) as f64;
    let points: Vec<(f64, f64)> = n
        .samples
        .iter()
        .filter(|s| s.interval_ms > 0.0)
        .map(|s| {
            (
                s.at_ms / 1e3,
                100.0 * s.foreign_ms() / (s.interval_ms * cpus),
            )
        })
        .collect();
    LineChart {
        title: "host noise during the holds".into(),
        x_desc: "time since the run's start (s)".into(),
        y_desc: "foreign CPU (% of the run's CPUs)".into(),
        series: vec![Series {
            name: "foreign".into(),
            points,
        }],
        log_x: false,
        reference: Some((
            crate::host::BUSY_FOREIGN_SHARE * 100.0,
            "busy (whole run)".into(),
        )),
        marks: Vec::new(),
    }
    .svg()
}

fn captures_chart(run: &RunReport) -> anyhow::Result<Option<String>> {
    let Some(section) = &run.captures else {
        return Ok(None);
    };
    let phases = crate::snapshot::summarize_phases(&section.captures);
    BarChart {
        title: "scheduler captures per step".into(),
        y_desc: "ms / count".into(),
        categories: phases
            .iter()
            .map(|p| format!("step {} ({} captures)", p.step_index, p.captures))
            .collect(),
        series: vec![
            (
                "worker run ms".into(),
                phases.iter().map(|p| p.worker_run_ms).collect(),
            ),
            (
                "worker wait ms".into(),
                phases.iter().map(|p| p.worker_delay_ms).collect(),
            ),
            (
                "preemptions".into(),
                phases.iter().map(|p| p.worker_preemptions).collect(),
            ),
        ],
        markers: None,
    }
    .svg()
}

fn comparison_section(
    out: &mut String,
    c: &Comparison,
    (la, a): (&String, &Document),
    (lb, b): (&String, &Document),
) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "<h2>B against A</h2><p>A: {} ({} runs); B: {} ({} runs); alpha {}, max regression {:.0}%.</p>",
        esc(la),
        c.a.runs,
        esc(lb),
        c.b.runs,
        c.options.alpha,
        c.options.max_regression * 100.0
    );
    for w in &c.warnings {
        let _ = writeln!(out, "<p class=\"warning\">warning: {}</p>", esc(w));
    }
    comparison_table(out, c);
    figure_of(
        out,
        "compare-metrics",
        comparison_strips(c).svg()?,
        "One dot per run: A above, B below each metric's line; 1 is A's median.",
        "No metric both sides have.",
    );
    figure_of(
        out,
        "compare-wake-cdf",
        wake_cdf(
            "wake latency CDF, every run pooled",
            [pooled("A", a), pooled("B", b)].into_iter(),
        )?,
        "Wake/resume latencies of every worker of every run, A against B (log scale).",
        "Neither side sampled wake latencies.",
    );
    Ok(())
}

/// The metrics table, one row a metric, coloured by verdict.
fn comparison_table(out: &mut String, c: &Comparison) {
    let _ = writeln!(
        out,
        "<table><tr><th>metric</th><th>unit</th><th>A median</th><th>B median</th><th>change</th><th>CI</th><th>p</th><th>verdict</th></tr>"
    );
    for m in &c.metrics {
        let class = match m.verdict {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::NotEnoughRuns => "not_enough_runs",
            _ => "",
        };
        let (a_median, b_median) = m.median_texts();
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.direction.arrow(),
            esc(&m.name),
            esc(&m.unit),
            a_median,
            b_median,
            m.change_text(),
            m.interval_text(),
            m.p_text(),
            esc(&m.verdict_text())
        );
    }
    let _ = writeln!(out, "</table>");
}

/// Every run of both sides of each judged metric, relative to A's median.
fn comparison_strips(c: &Comparison) -> StripChart {
    let judged: Vec<_> = c
        .metrics
        .iter()
        .filter(|m| {
            m.direction != Direction::Context
                && m.a_summary.as_ref().is_some_and(|s| s.median != 0.0)
                && !m.b.is_empty()
        })
        .collect();
    StripChart {
        title: "every run of A and B, relative to A's median".into(),
        x_desc: "value / A's median".into(),
        rows: judged.iter().map(|m| m.name.clone()).collect(),
        values: judged
            .iter()
            .map(|m| {
                let base = m.a_summary.as_ref().map_or(1.0, |s| s.median);
                (
                    m.a.iter().map(|v| v / base).collect(),
                    m.b.iter().map(|v| v / base).collect(),
                )
            })
            .collect(),
    }
}

/// Every worker of every run of a document, under one label.
fn pooled<'a>(label: &str, d: &'a Document) -> (String, Vec<&'a crate::workload::WorkerReport>) {
    (
        label.to_string(),
        d.runs()
            .iter()
            .flat_map(|r| r.cgroups.iter().flat_map(|c| c.workers.iter()))
            .collect(),
    )
}
