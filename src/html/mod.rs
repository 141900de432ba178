//! `runq report --html OUT.html RUN.json [OTHER.json]`: one self-contained
//! page (inline SVG, inline CSS, a few lines of inline script, nothing
//! fetched) showing a run, or two runs and their comparison.
//!
//! | file | owns |
//! | --- | --- |
//! | `charts.rs` | the chart kinds (line, grouped bar, strip), drawn with plotters' SVG backend |
//! | `page.rs` | what the page shows: turning runs and a comparison into charts and tables |
//!
//! Every chart is a `<figure class="chart">` holding one `<svg>`; a chart
//! without data is replaced by a sentence saying why. On load the page's
//! script writes to `<body>` how many charts exist (`data-charts`), how many
//! rendered with a non-empty box and content (`data-charts-rendered`) and
//! the script errors it saw (`data-errors`), so a headless browser's DOM
//! dump tells whether the page worked.

mod charts;
mod page;

pub use page::render_page;
