//! Line and function coverage: which source lines and functions of the
//! traced executables ran, as lcov and as a per-file summary.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::lines::{read_image_lines, ImageLines, SourceFilter};

/// A function: (source path, declaration line, name).
type FunctionId = (PathBuf, u32, String);

/// Every executable loaded so far and every line seen, merged by source path.
#[derive(Debug, Default)]
pub struct Coverage {
    pub filter: SourceFilter,
    /// Loaded images; breakpoints refer to them by index.
    pub images: Vec<ImageLines>,
    image_by_path: HashMap<PathBuf, Option<usize>>,
    /// Source path -> line -> hit.
    pub lines: BTreeMap<PathBuf, BTreeMap<u32, bool>>,
    /// Source path -> (declaration line, name) -> ran.
    pub functions: BTreeMap<PathBuf, BTreeMap<(u32, String), bool>>,
    /// (image, site) -> the functions whose code holds that site.
    function_sites: HashMap<(usize, u64), Vec<FunctionId>>,
}

impl Coverage {
    pub fn new(filter: SourceFilter) -> Self {
        Coverage {
            filter,
            ..Default::default()
        }
    }

    /// The image index for an executable, reading its line table the first
    /// time. `None` when it has no line information.
    pub fn image_for(&mut self, exe: &Path) -> Result<Option<usize>> {
        if let Some(index) = self.image_by_path.get(exe) {
            return Ok(*index);
        }
        let lines = read_image_lines(exe, &self.filter)?;
        Ok(self.add_image(exe, lines))
    }

    /// Registers a line table read earlier for `exe` (a canonical path, as
    /// /proc/PID/exe shows it), so it is not read again at exec.
    pub fn add_image(&mut self, exe: &Path, lines: Option<ImageLines>) -> Option<usize> {
        let index = match lines {
            Some(image) if !image.sites.is_empty() => {
                for &(file, line) in image.sites.values().flatten().chain(&image.dead_lines) {
                    self.lines
                        .entry(image.files[file as usize].clone())
                        .or_default()
                        .entry(line)
                        .or_insert(false);
                }
                let index = self.images.len();
                for function in &image.functions {
                    let path = image.files[function.file as usize].clone();
                    self.functions
                        .entry(path.clone())
                        .or_default()
                        .entry((function.line, function.name.clone()))
                        .or_insert(false);
                    for &site in &function.sites {
                        self.function_sites.entry((index, site)).or_default().push((
                            path.clone(),
                            function.line,
                            function.name.clone(),
                        ));
                    }
                }
                self.images.push(image);
                Some(index)
            }
            _ => None,
        };
        self.image_by_path.insert(exe.to_path_buf(), index);
        index
    }

    /// Whether a breakpoint at this site could still teach something: one
    /// of its lines, or a function it belongs to, has not been hit yet.
    pub fn site_pending(&self, image_index: usize, link_address: u64) -> bool {
        let function_pending = self
            .function_sites
            .get(&(image_index, link_address))
            .is_some_and(|functions| {
                functions.iter().any(|(path, line, name)| {
                    self.functions
                        .get(path)
                        .and_then(|f| f.get(&(*line, name.clone())))
                        .is_some_and(|ran| !ran)
                })
            });
        let image = &self.images[image_index];
        function_pending
            || image.sites.get(&link_address).is_some_and(|sites| {
                sites.iter().any(|&(file, line)| {
                    self.lines
                        .get(&image.files[file as usize])
                        .and_then(|lines| lines.get(&line))
                        .is_some_and(|hit| !hit)
                })
            })
    }

    /// Records that the site at `link_address` of `image` ran.
    pub fn record_hit(&mut self, image_index: usize, link_address: u64) {
        if let Some(functions) = self.function_sites.get(&(image_index, link_address)) {
            for (path, line, name) in functions {
                if let Some(ran) = self
                    .functions
                    .get_mut(path)
                    .and_then(|f| f.get_mut(&(*line, name.clone())))
                {
                    *ran = true;
                }
            }
        }
        let image = &self.images[image_index];
        if let Some(sites) = image.sites.get(&link_address) {
            for &(file, line) in sites {
                if let Some(lines) = self.lines.get_mut(&image.files[file as usize]) {
                    lines.insert(line, true);
                }
            }
        }
    }

    /// lcov tracefile text (one record per source file), readable by genhtml.
    pub fn to_lcov(&self, test_name: &str) -> String {
        let mut out = String::new();
        for (path, lines) in &self.lines {
            let _ = writeln!(out, "TN:{test_name}");
            let _ = writeln!(out, "SF:{}", path.display());
            if let Some(functions) = self.functions.get(path) {
                // lcov names functions; the same name declared twice in one
                // file (methods of different impls) gets its line appended.
                let mut seen: HashMap<&str, usize> = HashMap::new();
                for (_, name) in functions.keys() {
                    *seen.entry(name).or_default() += 1;
                }
                let label = |line: u32, name: &str| {
                    if seen[name] > 1 {
                        format!("{name}:{line}")
                    } else {
                        name.to_string()
                    }
                };
                for (line, name) in functions.keys() {
                    let _ = writeln!(out, "FN:{line},{}", label(*line, name));
                }
                for ((line, name), ran) in functions {
                    let _ = writeln!(out, "FNDA:{},{}", u8::from(*ran), label(*line, name));
                }
                let _ = writeln!(out, "FNF:{}", functions.len());
                let _ = writeln!(out, "FNH:{}", functions.values().filter(|r| **r).count());
            }
            for (line, hit) in lines {
                let _ = writeln!(out, "DA:{line},{}", u8::from(*hit));
            }
            let hit = lines.values().filter(|h| **h).count();
            let _ = writeln!(out, "LH:{hit}");
            let _ = writeln!(out, "LF:{}", lines.len());
            out.push_str("end_of_record\n");
        }
        out
    }

    /// Lines hit / lines total, per file and overall.
    pub fn summary(&self) -> CoverageSummary {
        let files: Vec<FileSummary> = self
            .lines
            .iter()
            .map(|(path, lines)| FileSummary {
                path: path.clone(),
                functions_hit: self
                    .functions
                    .get(path)
                    .map_or(0, |f| f.values().filter(|r| **r).count()),
                functions_total: self.functions.get(path).map_or(0, BTreeMap::len),
                lines_hit: lines.values().filter(|h| **h).count(),
                lines_total: lines.len(),
                hit_lines: lines.iter().filter(|(_, h)| **h).map(|(l, _)| *l).collect(),
                missed_lines: lines
                    .iter()
                    .filter(|(_, h)| !**h)
                    .map(|(l, _)| *l)
                    .collect(),
            })
            .collect();
        CoverageSummary {
            functions_hit: files.iter().map(|f| f.functions_hit).sum(),
            functions_total: files.iter().map(|f| f.functions_total).sum(),
            lines_hit: files.iter().map(|f| f.lines_hit).sum(),
            lines_total: files.iter().map(|f| f.lines_total).sum(),
            files,
        }
    }
}

/// Coverage totals, as printed and as written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct CoverageSummary {
    pub lines_hit: usize,
    pub lines_total: usize,
    pub functions_hit: usize,
    pub functions_total: usize,
    pub files: Vec<FileSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub lines_hit: usize,
    pub lines_total: usize,
    pub functions_hit: usize,
    pub functions_total: usize,
    pub hit_lines: Vec<u32>,
    pub missed_lines: Vec<u32>,
}

/// `hit` of `total` as a percentage (100 for an empty set).
pub fn percent(hit: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        100.0 * hit as f64 / total as f64
    }
}

impl CoverageSummary {
    /// The human-readable table printed after a run.
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("coverage:        lines hit/total          functions hit/total\n");
        let mut row = |lh: usize, lt: usize, fh: usize, ft: usize, name: &str| {
            let _ = writeln!(
                out,
                "  {:>6} / {:<6} {:>6.1}%   {:>5} / {:<5} {:>6.1}%   {name}",
                lh,
                lt,
                percent(lh, lt),
                fh,
                ft,
                percent(fh, ft)
            );
        };
        for f in &self.files {
            let name = f.path.display().to_string();
            row(
                f.lines_hit,
                f.lines_total,
                f.functions_hit,
                f.functions_total,
                &name,
            );
        }
        row(
            self.lines_hit,
            self.lines_total,
            self.functions_hit,
            self.functions_total,
            "total",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcov_records_hits_and_totals() {
        let mut coverage = Coverage::default();
        let file = PathBuf::from("/src/a.c");
        coverage.lines.insert(
            file.clone(),
            BTreeMap::from([(3, true), (4, false), (9, true)]),
        );
        coverage.functions.insert(
            file.clone(),
            BTreeMap::from([
                ((2, "main".to_string()), true),
                ((8, "new".to_string()), false),
                ((12, "new".to_string()), true),
            ]),
        );
        let text = coverage.to_lcov("t");
        assert_eq!(
            text,
            "TN:t\nSF:/src/a.c\nFN:2,main\nFN:8,new:8\nFN:12,new:12\n\
             FNDA:1,main\nFNDA:0,new:8\nFNDA:1,new:12\nFNF:3\nFNH:2\n\
             DA:3,1\nDA:4,0\nDA:9,1\nLH:2\nLF:3\nend_of_record\n"
        );
        let summary = coverage.summary();
        assert_eq!((summary.lines_hit, summary.lines_total), (2, 3));
        assert_eq!((summary.functions_hit, summary.functions_total), (2, 3));
        assert_eq!(summary.files[0].missed_lines, vec![4]);
    }
}
