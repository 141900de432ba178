//! Kernel image files: telling a bzImage from an ELF kernel, the compressed
//! ELF kernel inside a bzImage, the release string, and the PVH entry note
//! that lets qemu boot the ELF kernel directly.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// What kind of kernel image a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// An x86 boot image (`HdrS` setup header): `vmlinuz`.
    BzImage,
    /// An uncompressed ELF kernel: `vmlinux`.
    Elf,
}

/// Reads the first bytes of `path` and says which kind of kernel it is;
/// the error says why it is not one.
pub fn kind_of(path: &Path) -> Result<ImageKind, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut head = Vec::with_capacity(0x210);
    file.by_ref()
        .take(0x210)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read: {e}"))?;
    kind_of_bytes(&head)
        .ok_or_else(|| "not a Linux kernel image (no bzImage header, not ELF)".into())
}

/// [`kind_of`] for bytes already read (at least the first 0x206).
pub fn kind_of_bytes(head: &[u8]) -> Option<ImageKind> {
    if head.get(0x202..0x206) == Some(b"HdrS") {
        Some(ImageKind::BzImage)
    } else if head.starts_with(b"\x7fELF") {
        Some(ImageKind::Elf)
    } else {
        None
    }
}

/// The compressed kernel inside a bzImage (boot protocol 2.08+ fields
/// `payload_offset` and `payload_length`).
pub fn bzimage_payload(data: &[u8]) -> anyhow::Result<&[u8]> {
    if data.get(0x202..0x206) != Some(b"HdrS") {
        anyhow::bail!("no bzImage header");
    }
    let version = read_u16(data, 0x206).unwrap_or(0);
    if version < 0x208 {
        anyhow::bail!("boot protocol {version:#x} has no payload fields");
    }
    let setup_sectors = match data[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sectors + 1) * 512;
    let offset = read_u32(data, 0x248).unwrap_or(0) as usize;
    let length = read_u32(data, 0x24c).unwrap_or(0) as usize;
    data.get(start + offset..start + offset + length)
        .ok_or_else(|| anyhow::anyhow!("payload lies outside the file"))
}

/// The uncompressed ELF kernel inside a bzImage.
pub fn vmlinux_of(bzimage: &[u8]) -> anyhow::Result<Vec<u8>> {
    let elf = decompress(bzimage_payload(bzimage)?)?;
    if !elf.starts_with(b"\x7fELF") {
        anyhow::bail!("the decompressed payload is not an ELF file");
    }
    Ok(elf)
}

/// Decompresses a kernel payload. gzip and zstd (what Debian uses) are
/// decoded in-process; xz goes through the `xz` tool (xz-utils is part of
/// every Debian system, and no xz decoder is among runq's dependencies).
///
/// The zstd payload is one frame followed by the uncompressed size (four
/// bytes the kernel's decompressor reads); the frame decoder stops at the
/// frame's end and ignores them.
fn decompress(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    if payload.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .context("decompressing the gzip payload")?;
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut source = payload;
        ruzstd::decoding::StreamingDecoder::new(&mut source)
            .map_err(|e| anyhow::anyhow!("reading the zstd frame header: {e}"))?
            .read_to_end(&mut out)
            .context("decompressing the zstd payload")?;
    } else if payload.starts_with(b"\xfd7zXZ\x00") {
        out = run_filter(&["xz", "-dc", "--single-stream"], payload)?;
    } else {
        anyhow::bail!("payload compression not handled (only gzip, zstd and xz)");
    }
    Ok(out)
}

fn run_filter(tool: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", tool[0]))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Feed stdin from a scoped thread so a full stdout pipe cannot deadlock.
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(input);
        });
        child.wait_with_output()
    })?;
    if !output.status.success() {
        anyhow::bail!("{} failed ({})", tool[0], output.status);
    }
    Ok(output.stdout)
}

/// Whether an ELF kernel has the Xen PVH entry note
/// (XEN_ELFNOTE_PHYS32_ENTRY), which qemu needs to boot it directly.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    use object::read::elf::{FileHeader, ProgramHeader};
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(elf) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    let Ok(segments) = header.program_headers(endian, elf) else {
        return false;
    };
    for segment in segments {
        let Ok(Some(mut notes)) = segment.notes(endian, elf) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
        }
    }
    false
}

/// The release (`uname -r`) a kernel image was built as: from a bzImage's
/// `kernel_version` header field, or an ELF kernel's `Linux version`
/// banner.
pub fn release_of(data: &[u8]) -> Option<String> {
    let text = match kind_of_bytes(data)? {
        ImageKind::BzImage => {
            let pointer = read_u16(data, 0x20e)? as usize;
            data.get(pointer + 0x200..)?
        }
        ImageKind::Elf => {
            const BANNER: &[u8] = b"Linux version ";
            let at = data.windows(BANNER.len()).position(|w| w == BANNER)?;
            &data[at + BANNER.len()..]
        }
    };
    let end = text.iter().position(|&b| b == b' ' || b == 0)?;
    let release = std::str::from_utf8(&text[..end]).ok()?;
    (!release.is_empty() && release.len() < 128).then(|| release.to_string())
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage whose payload is `payload`, with a version string.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sectors = 4usize;
        let start = (setup_sectors + 1) * 512;
        let mut data = vec![0u8; start];
        data[0x1f1] = setup_sectors as u8;
        data[0x202..0x206].copy_from_slice(b"HdrS");
        data[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        data[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        data[0x500..0x50a].copy_from_slice(b"6.9.0-test");
        data[0x50a] = b' ';
        data[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        data[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        data.extend_from_slice(payload);
        data
    }

    #[test]
    fn gzip_payload_and_release_come_out() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"\x7fELF and the rest of a kernel").unwrap();
        let image = bzimage(&gz.finish().unwrap());
        assert_eq!(kind_of_bytes(&image), Some(ImageKind::BzImage));
        assert_eq!(release_of(&image).as_deref(), Some("6.9.0-test"));
        assert!(vmlinux_of(&image).unwrap().starts_with(b"\x7fELF and"));
    }

    #[test]
    fn zstd_frame_with_trailing_size_decodes() {
        // A zstd frame holding one raw block, then four trailing bytes as
        // the kernel's build appends them.
        let content = b"\x7fELF raw block";
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd];
        frame.push(0x20); // single segment, 1-byte content size
        frame.push(content.len() as u8);
        let header = ((content.len() as u32) << 3) | 1; // last block, raw
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(content);
        frame.extend_from_slice(&(content.len() as u32).to_le_bytes());
        assert_eq!(decompress(&frame).unwrap(), content);
    }

    #[test]
    fn junk_is_no_kernel() {
        assert_eq!(kind_of_bytes(b"junk"), None);
        assert!(vmlinux_of(b"junk").is_err());
        assert!(!has_pvh_note(b"\x7fELF"));
    }
}
