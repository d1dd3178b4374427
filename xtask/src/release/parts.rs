//! Files of a release split into parts small enough to carry, and joined
//! again. A GitHub release asset must be under 2 GiB, and large uploads are
//! the ones that fail, so the release workflow splits every file larger
//! than [`DEFAULT_MAX`] before it uploads a directory (a matrix part, the
//! assembled release) and `release assemble` joins them.
//!
//! `NAME` becomes `NAME.part-000`, `NAME.part-001`, … (three digits, in
//! order, every part but the last exactly the part size). Joining them is
//! concatenating them in name order, so an operator needs nothing but
//! coreutils:
//!
//! ```text
//! cat NAME.part-* > NAME && sha256sum -c SHA256SUMS
//! ```
//!
//! `SHA256SUMS` keeps listing `NAME`, the whole file: the parts are a way
//! to carry it, not files of the release.

use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::exec::TempFile;

/// Files larger than this are split (1 GiB: half GitHub's limit for a
/// release asset).
pub const DEFAULT_MAX: u64 = 1 << 30;

/// Between a file's name and its part number.
pub const PART: &str = ".part-";

/// At most this many parts (three digits).
const MAX_PARTS: usize = 1000;

/// The name of part `i` of `name`.
pub fn part_name(name: &str, i: usize) -> String {
    format!("{name}{PART}{i:03}")
}

/// `name` split in `dir`: its parts, in order (none when `name` is not
/// split). Parts must be numbered from 000 without a gap.
pub fn parts_of(dir: &Utf8Path, name: &str) -> Result<Vec<Utf8PathBuf>> {
    let mut found: Vec<usize> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {dir}"))? {
        let e = e.with_context(|| format!("listing {dir}"))?;
        let Ok(f) = e.file_name().into_string() else {
            continue;
        };
        if let Some(n) = part_number(&f, name) {
            found.push(n);
        }
    }
    found.sort();
    for (want, &n) in found.iter().enumerate() {
        if n != want {
            bail!(
                "{dir}: {name} is split, but part {} is missing (found {})",
                part_name(name, want),
                found
                    .iter()
                    .map(|&i| part_name(name, i))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(found
        .into_iter()
        .map(|i| dir.join(part_name(name, i)))
        .collect())
}

/// The part number when `file` is a part of `name`.
fn part_number(file: &str, name: &str) -> Option<usize> {
    let digits = file.strip_prefix(name)?.strip_prefix(PART)?;
    (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// When `file` names a part (`<name>.part-NNN`): its whole file's name.
pub fn whole_of(file: &str) -> Option<&str> {
    let (name, digits) = file.rsplit_once(PART)?;
    (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

/// Split `dir/name` into parts of `max` bytes beside it, then remove it.
/// The file is read once: its sha256, taken as it is read, must be `sha256`
/// (the release's record of it), or nothing changes. Each part is written
/// through a temporary name; a failure removes the parts written.
pub fn split(dir: &Utf8Path, name: &str, sha256: &str, max: u64) -> Result<usize> {
    ensure!(max > 0, "the part size must be more than 0 bytes");
    let path = dir.join(name);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let size = file.metadata()?.len();
    let count = size.div_ceil(max).max(1) as usize;
    ensure!(
        count <= MAX_PARTS,
        "{path} would be {count} parts of {max} bytes; at most {MAX_PARTS}: use a larger part size"
    );
    let mut reader = crate::digest::HashReader::new(file);
    // Temporary files until the whole file's sha256 is checked: dropped
    // (removed) on any error before that.
    let mut temps = Vec::new();
    for i in 0..count {
        crate::signals::check()?;
        let dest = dir.join(part_name(name, i));
        let t = TempFile::beside(&dest);
        let mut out =
            std::fs::File::create(&t.path).with_context(|| format!("creating {}", t.path))?;
        let n = std::io::copy(&mut (&mut reader).take(max), &mut out)
            .with_context(|| format!("writing {}", t.path))?;
        out.flush()?;
        ensure!(
            n == max || i + 1 == count,
            "{path} changed while it was split (read {n} bytes for part {i})"
        );
        temps.push((t, dest));
    }
    let (hex, n) = reader.finish();
    ensure!(
        n == size && hex == sha256,
        "{path}: its sha256 is {hex}, the release's SHA256SUMS says {sha256}: \
         the file is damaged; it was not split"
    );
    let mut done: Vec<Utf8PathBuf> = Vec::new();
    for (t, dest) in temps {
        if let Err(e) = t.persist(&dest) {
            for p in &done {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        done.push(dest);
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {path} (now split)"))?;
    Ok(count)
}

/// Split every file of the release directory `dir` larger than `max`
/// (`SHA256SUMS` says which files are the release's, and their sha256).
/// Returns each split file's name and part count.
pub fn split_release(dir: &Utf8Path, max: u64) -> Result<Vec<(String, usize)>> {
    let sums = super::read_sums(dir)?;
    let mut out = Vec::new();
    for (name, sha256) in &sums {
        let path = dir.join(name);
        let Ok(md) = std::fs::metadata(&path) else {
            if !parts_of(dir, name)?.is_empty() {
                continue; // split already
            }
            bail!("{dir}: SHA256SUMS lists {name}, which is not there");
        };
        if md.len() > max {
            out.push((name.clone(), split(dir, name, sha256, max)?));
        }
    }
    Ok(out)
}

/// Concatenate `parts` into `to` (through a temporary name); returns the
/// sha256 and size of what was written.
pub fn join(parts: &[Utf8PathBuf], to: &Utf8Path) -> Result<(String, u64)> {
    ensure!(!parts.is_empty(), "no parts to join into {to}");
    let t = TempFile::beside(to);
    let out = std::fs::File::create(&t.path).with_context(|| format!("creating {}", t.path))?;
    let mut w = crate::digest::HashWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
    for p in parts {
        crate::signals::check()?;
        let mut f = std::fs::File::open(p).with_context(|| format!("opening {p}"))?;
        std::io::copy(&mut f, &mut w).with_context(|| format!("joining {p} into {}", t.path))?;
    }
    let (buf, hex, n) = w.finish();
    let file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", t.path))?;
    file.sync_all()?;
    t.persist(to)?;
    Ok((hex, n))
}

/// Parse a size: bytes, or a number with `K`, `M`, `G` (powers of 1024; `KiB`,
/// `MiB`, `GiB` too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or a number with K, M or G)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("`{s}`: unknown unit `{other}` (K, M or G)")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err("the part size must be more than 0 bytes".into());
    }
    Ok(v)
}

/// `cargo xtask release split DIR`: every file of the release directory
/// larger than `max` split into parts.
pub fn run(dir: &Utf8Path, max: u64) -> Result<()> {
    let dir = crate::fsutil::absolute(dir)?;
    let done = split_release(&dir, max)?;
    if done.is_empty() {
        crate::ui::info(&format!("{dir}: no file is larger than {max} bytes"));
    }
    for (name, n) in done {
        crate::ui::info(&format!(
            "{dir}: {name} split into {n} parts ({}…; join: `cat {name}{}* > {name}`)",
            part_name(&name, 0),
            PART
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8Path::from_path(d.path()).unwrap().to_owned();
        (d, p)
    }

    #[test]
    fn a_split_file_joins_back_to_the_same_bytes_and_only_a_whole_part_set_joins() {
        let (_d, dir) = dir();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("disk.img"), &bytes).unwrap();
        let sha = crate::digest::bytes_sha256(&bytes);
        assert_eq!(split(&dir, "disk.img", &sha, 4096).unwrap(), 3);
        assert!(!dir.join("disk.img").exists());
        let parts = parts_of(&dir, "disk.img").unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(
            names,
            [
                "disk.img.part-000",
                "disk.img.part-001",
                "disk.img.part-002"
            ]
        );
        assert_eq!(std::fs::metadata(&parts[0]).unwrap().len(), 4096);
        assert_eq!(std::fs::metadata(&parts[2]).unwrap().len(), 10_000 - 8192);
        assert_eq!(whole_of("disk.img.part-002"), Some("disk.img"));
        assert_eq!(whole_of("disk.img.part-2"), None);
        let (hex, n) = join(&parts, &dir.join("joined")).unwrap();
        assert_eq!((hex.as_str(), n), (sha.as_str(), 10_000));
        assert_eq!(std::fs::read(dir.join("joined")).unwrap(), bytes);
        // A missing part is named, not joined around.
        std::fs::remove_file(&parts[1]).unwrap();
        let err = format!("{:#}", parts_of(&dir, "disk.img").unwrap_err());
        assert!(err.contains("disk.img.part-001"), "{err}");
    }

    #[test]
    fn a_file_whose_bytes_are_not_the_recorded_ones_is_not_split() {
        let (_d, dir) = dir();
        std::fs::write(dir.join("a.qcow2"), vec![1u8; 5000]).unwrap();
        let wrong = crate::digest::bytes_sha256(b"other");
        let err = format!("{:#}", split(&dir, "a.qcow2", &wrong, 1024).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.qcow2"]);
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("big").is_err());
    }
}
