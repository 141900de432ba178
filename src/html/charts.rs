//! The chart kinds of the HTML report, drawn with plotters' SVG backend
//! into strings: line charts (optionally log-x, with a reference line and
//! marked intervals), grouped bar charts (with an optional marker per
//! bar, e.g. a fair share), and strip charts of two samples per row.
//! They know nothing about runs; `html::page` turns runs into their
//! inputs.

use anyhow::anyhow;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Size of every chart in pixels.
pub const SIZE: (u32, u32) = (900, 380);

/// The colour of series `i` (plotters' 99-colour palette).
fn colour(i: usize) -> RGBAColor {
    Palette99::pick(i).to_rgba()
}

/// Runs `draw` on a white SVG canvas and returns the SVG text.
fn render(draw: impl FnOnce(&Area<'_>) -> Drawn) -> anyhow::Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow!("drawing a chart: {e}"))?;
        draw(&root).map_err(|e| anyhow!("drawing a chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing a chart: {e}"))?;
    }
    Ok(buf)
}

/// The label of the category drawn at `at` (categories sit at 0, 1, 2, ...);
/// nothing between them.
fn label_at(labels: &[String], at: f64) -> String {
    let i = at.round();
    if (at - i).abs() < 1e-6 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// The legend box every chart kind draws, top right.
fn draw_legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> Drawn {
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

/// One line a series, each in its own colour and in the legend; the x axis
/// may be linear or logarithmic.
fn draw_lines<'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    series: &[Series],
) -> Drawn {
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    Ok(())
}

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// An interval of one series to mark (e.g. a stall), drawn in red.
pub struct Mark {
    pub x0: f64,
    pub x1: f64,
    pub y: f64,
}

/// A line chart.
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (values must be positive).
    pub log_x: bool,
    /// A horizontal reference line and its legend label.
    pub reference: Option<(f64, String)>,
    pub marks: Vec<Mark>,
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// A range that is never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0))
    }
}

impl LineChart {
    /// The SVG, or `None` when no series has a point.
    pub fn svg(&self) -> anyhow::Result<Option<String>> {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.reference.iter().map(|r| r.0));
        let (Some((x0, x1)), Some((y0, y1))) = (bounds(xs), bounds(ys)) else {
            return Ok(None);
        };
        let (y0, y1) = padded(y0.min(0.0), y1 * 1.05);
        render(|root| {
            if self.log_x {
                self.draw_log_x(root, (x0, x1), (y0, y1))
            } else {
                self.draw_linear(root, (x0, x1), (y0, y1))
            }
        })
        .map(Some)
    }

    /// The chart's frame: its title and label areas (`y_label_area` pixels
    /// for the y axis's numbers).
    fn builder<'a, 'b>(
        &self,
        root: &'a Area<'b>,
        y_label_area: u32,
    ) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(&self.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(y_label_area);
        builder
    }

    /// The axes with their descriptions, then one line a series.
    fn draw_axes_and_lines<'a, X>(
        &self,
        chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    ) -> Drawn
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .draw()?;
        draw_lines(chart, &self.series)
    }

    /// The series over a logarithmic x axis (no reference line or marks).
    fn draw_log_x(&self, root: &Area<'_>, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Drawn {
        let (x0, x1) = (x0.max(1e-3), x1.max(x0.max(1e-3) * 10.0));
        let mut chart = self
            .builder(root, 60)
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
        self.draw_axes_and_lines(&mut chart)?;
        draw_legend(&mut chart)?;
        Ok(())
    }

    /// The series over a linear x axis, with the reference line and marks.
    fn draw_linear(&self, root: &Area<'_>, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Drawn {
        let (x0, x1) = padded(x0, x1);
        let mut chart = self.builder(root, 70).build_cartesian_2d(x0..x1, y0..y1)?;
        self.draw_axes_and_lines(&mut chart)?;
        if let Some((y, label)) = &self.reference {
            chart
                .draw_series(LineSeries::new(
                    vec![(x0, *y), (x1, *y)],
                    BLACK.stroke_width(1),
                ))?
                .label(label.as_str())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        if !self.marks.is_empty() {
            chart
                .draw_series(self.marks.iter().map(|m| {
                    PathElement::new(vec![(m.x0, m.y), (m.x1, m.y)], RED.stroke_width(6))
                }))?
                .label("stall")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(6)));
        }
        draw_legend(&mut chart)?;
        Ok(())
    }
}

/// A grouped bar chart: one group per category, one bar per series, and
/// optionally a black marker across each bar of the first series.
pub struct BarChart {
    pub title: String,
    pub y_desc: String,
    pub categories: Vec<String>,
    /// (name, one value per category).
    pub series: Vec<(String, Vec<f64>)>,
    /// (name, one value per category) drawn as a marker line.
    pub markers: Option<(String, Vec<f64>)>,
}

impl BarChart {
    /// The SVG, or `None` without categories.
    pub fn svg(&self) -> anyhow::Result<Option<String>> {
        let n = self.categories.len();
        if n == 0 || self.series.is_empty() {
            return Ok(None);
        }
        let top = self
            .series
            .iter()
            .flat_map(|s| s.1.iter())
            .chain(self.markers.iter().flat_map(|m| m.1.iter()))
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let width = 0.8 / self.series.len() as f64;
        render(|root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)?;
            let labels = self.categories.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n.min(30))
                .x_label_formatter(&|x| label_at(&labels, *x))
                .y_desc(self.y_desc.as_str())
                .draw()?;
            for (si, (name, values)) in self.series.iter().enumerate() {
                let c = colour(si);
                let left = |i: usize| i as f64 - 0.4 + si as f64 * width;
                chart
                    .draw_series(values.iter().enumerate().map(|(i, v)| {
                        Rectangle::new([(left(i), 0.0), (left(i) + width * 0.9, *v)], c.filled())
                    }))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled())
                    });
            }
            if let Some((name, values)) = &self.markers {
                chart
                    .draw_series(values.iter().enumerate().map(|(i, v)| {
                        let x = i as f64 - 0.4;
                        PathElement::new(vec![(x, *v), (x + width, *v)], BLACK.stroke_width(3))
                    }))?
                    .label(name.as_str())
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3))
                    });
            }
            draw_legend(&mut chart)?;
            Ok(())
        })
        .map(Some)
    }
}

/// Rows of two samples (A and B) on a common scale, one dot per value.
pub struct StripChart {
    pub title: String,
    pub x_desc: String,
    pub rows: Vec<String>,
    /// (A values, B values) per row.
    pub values: Vec<(Vec<f64>, Vec<f64>)>,
}

impl StripChart {
    pub fn svg(&self) -> anyhow::Result<Option<String>> {
        let all = self
            .values
            .iter()
            .flat_map(|(a, b)| a.iter().chain(b.iter()))
            .copied();
        let Some((x0, x1)) = bounds(all) else {
            return Ok(None);
        };
        let (x0, x1) = padded(x0, x1);
        let pad = (x1 - x0) * 0.05;
        let n = self.rows.len();
        render(|root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(220)
                .build_cartesian_2d((x0 - pad)..(x1 + pad), -0.5..(n as f64 - 0.5))?;
            let rows = self.rows.clone();
            chart
                .configure_mesh()
                .y_labels(n.min(30))
                .y_label_formatter(&|y| label_at(&rows, *y))
                .x_desc(self.x_desc.as_str())
                .draw()?;
            for (side, offset, c) in [(0, -0.15, colour(0)), (1, 0.15, colour(1))] {
                let dots: Vec<(f64, f64)> = self
                    .values
                    .iter()
                    .enumerate()
                    .flat_map(|(row, pair)| {
                        let v = if side == 0 { &pair.0 } else { &pair.1 };
                        v.iter().map(move |x| (*x, row as f64 + offset))
                    })
                    .collect();
                chart
                    .draw_series(dots.into_iter().map(|p| Circle::new(p, 4, c.filled())))?
                    .label(if side == 0 { "A" } else { "B" })
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
            draw_legend(&mut chart)?;
            Ok(())
        })
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_titles() {
        let line = LineChart {
            title: "progress".into(),
            x_desc: "s".into(),
            y_desc: "units".into(),
            series: vec![Series {
                name: "w0".into(),
                points: vec![(0.0, 0.0), (1.0, 10.0)],
            }],
            log_x: false,
            reference: Some((5.0, "ref".into())),
            marks: vec![Mark {
                x0: 0.2,
                x1: 0.6,
                y: 2.0,
            }],
        };
        let svg = line.svg().unwrap().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("progress") && svg.contains("polyline"));
        let empty = LineChart {
            series: vec![],
            ..line
        };
        assert!(empty.svg().unwrap().is_none());
        let bars = BarChart {
            title: "cpu".into(),
            y_desc: "ms".into(),
            categories: vec!["a".into(), "b".into()],
            series: vec![("got".into(), vec![1.0, 2.0])],
            markers: Some(("fair".into(), vec![1.5, 1.5])),
        };
        assert!(bars.svg().unwrap().unwrap().contains("<rect"));
    }
}
