//! DWARF line tables: which machine addresses begin which source lines.
//!
//! Only `is_stmt` rows are used (the addresses a debugger would stop at for
//! a line), and only rows inside executable sections: sequences of functions
//! the linker discarded keep their rows but start at address 0.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSegment, SectionFlags};

/// The breakpoint sites of one executable, at link-time addresses.
#[derive(Debug, Clone)]
pub struct ImageLines {
    /// The executable these rows were read from.
    pub path: PathBuf,
    /// Position independent (ET_DYN): addresses move by the load bias.
    pub position_independent: bool,
    /// Link-time virtual address of the first loadable segment, page aligned.
    pub first_segment_vaddr: u64,
    /// Source files, indexed by the file index of each line entry.
    pub files: Vec<PathBuf>,
    /// Address -> the source lines that start there (file index, line).
    pub sites: BTreeMap<u64, Vec<(u32, u32)>>,
    /// Lines whose code the linker discarded (unused functions): they can
    /// never run, so they count as not hit.
    pub dead_lines: Vec<(u32, u32)>,
    /// Functions with code (DWARF subprograms) in the counted sources.
    pub functions: Vec<Function>,
}

/// A function of the executable, for function coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// Index into [`ImageLines::files`] of the file declaring it.
    pub file: u32,
    /// Its declaration line.
    pub line: u32,
    /// The breakpoint sites inside its code, out-of-line and inlined
    /// copies alike: hitting any means the function ran. Empty when its code
    /// was discarded.
    pub sites: Vec<u64>,
}

impl ImageLines {
    /// Number of distinct (file, line) pairs.
    pub fn line_count(&self) -> usize {
        let mut all: Vec<(u32, u32)> = self.sites.values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

/// Which source files count for coverage.
#[derive(Debug, Clone, Default)]
pub struct SourceFilter {
    /// When non-empty, only files under one of these directories count.
    pub include: Vec<PathBuf>,
}

impl SourceFilter {
    /// Toolchain and dependency sources are left out: files that do not exist
    /// here (the Rust standard library's `/rustc/<hash>/...`), system headers,
    /// and crates from the cargo registry.
    pub fn accepts(&self, path: &Path) -> bool {
        if !self.include.is_empty() {
            return self.include.iter().any(|dir| path.starts_with(dir)) && path.is_file();
        }
        let text = path.to_string_lossy();
        if text.starts_with("/usr/") || text.contains("/.cargo/registry/") {
            return false;
        }
        if text.contains("/.rustup/") || text.contains("/.cargo/git/") {
            return false;
        }
        path.is_file()
    }
}

/// Reads the line table of `path`. Returns `Ok(None)` when the file has no
/// DWARF line information (built without `-g`).
pub fn read_image_lines(path: &Path, filter: &SourceFilter) -> Result<Option<ImageLines>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an object file runq can read", path.display()))?;
    if file.section_by_name(".debug_line").is_none() {
        return Ok(None);
    }
    let executable_ranges: Vec<(u64, u64)> = file
        .sections()
        .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0))
        .map(|s| (s.address(), s.address() + s.size()))
        .collect();
    let first_segment_vaddr = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let position_independent = file.kind() == object::ObjectKind::Dynamic;

    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<[u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    })?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));

    let mut table = TableBuilder::new(filter, executable_ranges);
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        table.add_unit(&dwarf, &unit)?;
    }
    Ok(Some(table.finish(
        path,
        position_independent,
        first_segment_vaddr,
    )))
}

/// What [`read_image_lines`] gathers unit by unit.
struct TableBuilder<'f> {
    filter: &'f SourceFilter,
    /// Address ranges of executable sections: rows elsewhere were discarded.
    executable_ranges: Vec<(u64, u64)>,
    files: Vec<PathBuf>,
    /// Path -> index in `files`, `None` for a path the filter refused.
    file_index: HashMap<PathBuf, Option<u32>>,
    sites: BTreeMap<u64, Vec<(u32, u32)>>,
    dead_lines: Vec<(u32, u32)>,
    functions: Vec<Function>,
    /// Code ranges of the functions found, resolved to sites after all rows.
    function_ranges: Vec<(usize, Vec<(u64, u64)>)>,
}

/// A unit's DWARF file numbers mapped to indices in the table's files.
struct UnitFiles {
    /// The number of the first file: 0 from DWARF 5 on, 1 before.
    first_number: u64,
    /// Index in the table's files per file number (None: filtered out).
    indices: Vec<Option<u32>>,
}

impl UnitFiles {
    fn index_of(&self, number: u64) -> Option<u32> {
        number
            .checked_sub(self.first_number)
            .and_then(|i| self.indices.get(i as usize))
            .copied()
            .flatten()
    }
}

impl<'f> TableBuilder<'f> {
    fn new(filter: &'f SourceFilter, executable_ranges: Vec<(u64, u64)>) -> Self {
        TableBuilder {
            filter,
            executable_ranges,
            files: Vec::new(),
            file_index: HashMap::new(),
            sites: BTreeMap::new(),
            dead_lines: Vec::new(),
            functions: Vec::new(),
            function_ranges: Vec::new(),
        }
    }

    fn in_text(&self, addr: u64) -> bool {
        self.executable_ranges
            .iter()
            .any(|&(lo, hi)| addr >= lo && addr < hi)
    }

    /// Adds the line rows and the functions of one compilation unit.
    fn add_unit(
        &mut self,
        dwarf: &gimli::Dwarf<Slice<'_>>,
        unit: &gimli::Unit<Slice<'_>>,
    ) -> Result<()> {
        let Some(program) = unit.line_program.clone() else {
            return Ok(());
        };
        let unit_files = self.unit_files(dwarf, unit, program.header());
        // Units of only foreign sources (the standard library,
        // dependencies) are skipped without walking their rows.
        if unit_files.indices.iter().all(Option::is_none) {
            return Ok(());
        }
        self.add_rows(program, &unit_files)?;
        self.add_functions(dwarf, unit, &unit_files)
    }

    /// Resolves the unit's file numbers up front, registering the paths the
    /// filter accepts.
    fn unit_files(
        &mut self,
        dwarf: &gimli::Dwarf<Slice<'_>>,
        unit: &gimli::Unit<Slice<'_>>,
        header: &gimli::LineProgramHeader<Slice<'_>>,
    ) -> UnitFiles {
        let comp_dir = unit
            .comp_dir
            .map(|d| PathBuf::from(d.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let first_number = if header.version() >= 5 { 0 } else { 1 };
        let mut indices: Vec<Option<u32>> = Vec::new();
        for number in first_number..first_number + header.file_names().len() as u64 {
            let path = row_file_path(dwarf, unit, header, number, &comp_dir).unwrap_or_default();
            let index = if path.as_os_str().is_empty() {
                None
            } else {
                let (files, filter) = (&mut self.files, self.filter);
                *self.file_index.entry(path.clone()).or_insert_with(|| {
                    filter.accepts(&path).then(|| {
                        files.push(path.clone());
                        (files.len() - 1) as u32
                    })
                })
            };
            indices.push(index);
        }
        UnitFiles {
            first_number,
            indices,
        }
    }

    /// Records the unit's `is_stmt` rows as sites, or as dead lines when
    /// their code lies outside the executable sections.
    fn add_rows(
        &mut self,
        program: gimli::IncompleteLineProgram<Slice<'_>>,
        unit_files: &UnitFiles,
    ) -> Result<()> {
        let mut rows = program.rows();
        while let Some((_, row)) = rows.next_row()? {
            if row.end_sequence() || !row.is_stmt() {
                continue;
            }
            let Some(line) = row.line() else { continue };
            let address = row.address();
            let Some(index) = unit_files.index_of(row.file_index()) else {
                continue;
            };
            let key = (index, line.get() as u32);
            if !self.in_text(address) {
                self.dead_lines.push(key);
                continue;
            }
            let entry = self.sites.entry(address).or_default();
            if !entry.contains(&key) {
                entry.push(key);
            }
        }
        Ok(())
    }

    /// Records the unit's subprograms and inlined copies that have code,
    /// with their code ranges.
    fn add_functions(
        &mut self,
        dwarf: &gimli::Dwarf<Slice<'_>>,
        unit: &gimli::Unit<Slice<'_>>,
        unit_files: &UnitFiles,
    ) -> Result<()> {
        let mut entries = unit.entries();
        while let Some((_, entry)) = entries.next_dfs()? {
            if entry.tag() != gimli::DW_TAG_subprogram
                && entry.tag() != gimli::DW_TAG_inlined_subroutine
            {
                continue;
            }
            let mut ranges = Vec::new();
            let mut iter = dwarf.die_ranges(unit, entry)?;
            while let Some(range) = iter.next()? {
                if self.in_text(range.begin) && range.end > range.begin {
                    ranges.push((range.begin, range.end));
                }
            }
            if ranges.is_empty() && !has_code_attribute(entry)? {
                // A declaration or an abstract instance: no code of its own.
                continue;
            }
            let Some((name, decl_file, line)) = subprogram_identity(dwarf, unit, entry, 0)? else {
                continue;
            };
            let Some(file) = unit_files.index_of(decl_file) else {
                continue;
            };
            self.function_ranges.push((self.functions.len(), ranges));
            self.functions.push(Function {
                name,
                file,
                line,
                sites: Vec::new(),
            });
        }
        Ok(())
    }

    /// Resolves function ranges to sites (now that all rows are in) and
    /// merges the instances of each function.
    fn finish(
        mut self,
        path: &Path,
        position_independent: bool,
        first_segment_vaddr: u64,
    ) -> ImageLines {
        for (index, ranges) in &self.function_ranges {
            self.functions[*index].sites = ranges
                .iter()
                .flat_map(|&(low, high)| self.sites.range(low..high).map(|(a, _)| *a))
                .collect();
        }
        // One record per function: instances (inlined copies, generic
        // instantiations) merge.
        let functions = &mut self.functions;
        functions.sort_by(|a, b| (a.file, a.line, &a.name).cmp(&(b.file, b.line, &b.name)));
        functions.dedup_by(|later, first| {
            let same =
                (later.file, later.line, &later.name) == (first.file, first.line, &first.name);
            if same {
                first.sites.append(&mut later.sites);
            }
            same
        });
        self.dead_lines.sort_unstable();
        self.dead_lines.dedup();
        ImageLines {
            path: path.to_path_buf(),
            position_independent,
            first_segment_vaddr,
            files: self.files,
            sites: self.sites,
            dead_lines: self.dead_lines,
            functions: self.functions,
        }
    }
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;
type Die<'a, 'b, 'c> = gimli::DebuggingInformationEntry<'a, 'b, Slice<'c>>;

/// Whether a DIE claims code (even code the linker discarded).
fn has_code_attribute(entry: &Die<'_, '_, '_>) -> Result<bool> {
    Ok(entry.attr_value(gimli::DW_AT_low_pc)?.is_some()
        || entry.attr_value(gimli::DW_AT_ranges)?.is_some())
}

/// (name, DWARF file number, line) of a subprogram, following
/// DW_AT_abstract_origin / DW_AT_specification to where they are declared.
fn subprogram_identity(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &Die<'_, '_, '_>,
    depth: u32,
) -> Result<Option<(String, u64, u32)>> {
    let name = match entry.attr_value(gimli::DW_AT_name)? {
        Some(value) => Some(
            dwarf
                .attr_string(unit, value)?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    let file = match entry.attr_value(gimli::DW_AT_decl_file)? {
        Some(gimli::AttributeValue::FileIndex(index)) => Some(index),
        Some(other) => other.udata_value(),
        None => None,
    };
    let line = entry
        .attr_value(gimli::DW_AT_decl_line)?
        .and_then(|v| v.udata_value());
    if let (Some(name), Some(file), Some(line)) = (&name, file, line) {
        return Ok(Some((name.clone(), file, line as u32)));
    }
    if depth >= 3 {
        return Ok(None);
    }
    for origin in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
        if let Some(gimli::AttributeValue::UnitRef(offset)) = entry.attr_value(origin)? {
            let target = unit.entry(offset)?;
            return subprogram_identity(dwarf, unit, &target, depth + 1);
        }
    }
    Ok(None)
}

fn row_file_path(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    header: &gimli::LineProgramHeader<Slice<'_>>,
    file_number: u64,
    comp_dir: &Path,
) -> Option<PathBuf> {
    let file = header.file(file_number)?;
    let mut path = comp_dir.to_path_buf();
    if let Some(dir) = file.directory(header) {
        let dir = dwarf.attr_string(unit, dir).ok()?;
        path.push(dir.to_string_lossy().as_ref());
    }
    let name = dwarf.attr_string(unit, file.path_name()).ok()?;
    path.push(name.to_string_lossy().as_ref());
    Some(normalize(&path))
}

/// Lexically removes `.` and `..` so one file has one name.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_dot_segments() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c.c")),
            PathBuf::from("/a/c.c")
        );
    }

    #[test]
    fn filter_rejects_toolchain_sources() {
        let filter = SourceFilter::default();
        assert!(!filter.accepts(Path::new("/rustc/abc/library/core/src/lib.rs")));
        assert!(!filter.accepts(Path::new("/usr/include/stdio.h")));
        assert!(filter.accepts(Path::new(file!()).canonicalize().unwrap().as_path()));
    }

    #[test]
    fn own_test_binary_has_lines_for_this_file() {
        let exe = std::env::current_exe().unwrap();
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join(file!());
        let filter = SourceFilter {
            include: vec![here.parent().unwrap().to_path_buf()],
        };
        let lines = read_image_lines(&exe, &filter)
            .unwrap()
            .expect("test binary has DWARF");
        assert!(lines.files.iter().any(|f| f == &here), "{:?}", lines.files);
        assert!(lines.position_independent);
    }
}
