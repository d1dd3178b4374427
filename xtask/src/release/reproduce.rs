//! `cargo xtask release --check-reproducible`: the selected targets built a
//! second time, elsewhere, and compared byte for byte with the release.
//!
//! The second build works in `<cache>/reproduce.tmp-<pid>/`: a copy of the
//! project (`root/`: hard links where the file system allows, else copies;
//! without `.git`, `target/`, the cache and the output), a fresh step cache
//! (`cache/`, nothing carried over but verified downloads) and its own
//! output (`output/`). It is planned from the same resolved recipe (the same
//! version, revision and `SOURCE_DATE_EPOCH`) through the same
//! [`crate::targets::plan`], so its keys must equal the first plan's (a
//! difference is a location leaking into a key, and is reported). The
//! directory is removed when the check ends, also on an error or a signal
//! (a guard), so nothing of it stays. (Hard-linking a file changes its
//! change time, so the digest memo of a large input, a model, no longer
//! holds: the next build reads it once more.)
//!
//! Artifacts are compared streaming, a few MiB at a time. For one that
//! differs, both builds' [`inventory`]s (the scan's readers: disks,
//! partitions, file systems, archives, nested to any depth) name the first
//! member that differs (content, or metadata where the format records it)
//! and the members only one build has.

use std::io::Read;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::facts::{FileFact, Verdict};
use crate::cx::Cx;
use crate::exec::TempDir;
use crate::plan::Plan;
use crate::recipe::Resolved;
use crate::scan::inventory::{self, Change, Inventory, What};
use crate::targets::{self, Format};

/// Members listed per artifact, beyond the first difference.
const LISTED: usize = 10;

/// Where the second build works, inside the step cache (the file system
/// kiln builds on, not a RAM-backed `/tmp`), named like the executor's
/// temporary directories.
pub fn work_dir(cache: &Utf8Path) -> Utf8PathBuf {
    cache.join(format!("reproduce.tmp-{}", std::process::id()))
}

/// The second build's places.
pub struct Second {
    /// Removes everything below on drop.
    guard: TempDir,
    pub root: Utf8PathBuf,
    pub cache: Utf8PathBuf,
    pub output: Utf8PathBuf,
    /// Temporary files of the comparison (disks converted to raw).
    pub tmp: Utf8PathBuf,
}

impl Second {
    /// A fresh work directory holding a copy of `r`'s project.
    pub fn prepare(cx: &Cx, r: &Resolved) -> Result<Second> {
        let guard = TempDir::new(work_dir(&cx.cache))?;
        let dir = guard.path.clone();
        let s = Second {
            root: dir.join("root"),
            cache: dir.join("cache"),
            output: dir.join("output"),
            tmp: dir.join("tmp"),
            guard,
        };
        for d in [&s.cache, &s.output, &s.tmp] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
        }
        let skip = [
            r.root.join(".git"),
            r.root.join("target"),
            cx.cache.clone(),
            cx.output.clone(),
        ];
        replicate(&r.root, &s.root, &skip)
            .with_context(|| format!("copying the project {} to {}", r.root, s.root))?;
        // Downloads are inputs pinned by sha256, not build results: the
        // check does not fetch a base ISO again.
        let downloads = cx.cache.join("downloads");
        if downloads.is_dir() {
            replicate(&downloads, &s.cache.join("downloads"), &[])?;
        }
        Ok(s)
    }

    pub fn dir(&self) -> &Utf8Path {
        &self.guard.path
    }

    /// Remove the work directory now, saying so if that fails (the guard
    /// would only try).
    pub fn remove(self) -> Result<()> {
        let dir = self.guard.path.clone();
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the reproducibility check's work directory {dir}"))
    }

    /// `r` as if its project lived in this copy: the same resolved recipe
    /// (version, revision and epoch as the first build took them), its files
    /// read from the copy.
    pub fn recipe(&self, r: &Resolved) -> Resolved {
        let mut r2 = r.clone();
        if let Ok(rel) = r.file.strip_prefix(&r.root) {
            r2.file = self.root.join(rel);
        }
        r2.root = self.root.clone();
        r2
    }

    /// The second build's plan: the first one's formats and options for the
    /// copy, in the fresh cache, published into this directory's output.
    pub fn plan(
        &self,
        cx: &Cx,
        r: &Resolved,
        formats: &[Format],
        options: &targets::Options,
    ) -> Result<Plan> {
        let r2 = self.recipe(r);
        let mut plan = Plan::new(
            "release --check-reproducible (second build)",
            &r2.file,
            &r2.root,
            &self.cache,
            &self.output,
        );
        plan.remember_digests = !cx.dry_run;
        targets::plan(&r2, &mut plan, formats, options)?;
        Ok(plan)
    }
}

/// Make the tree at `from` again at `to`: directories created, links
/// recreated as they are, files hard-linked (copied across file systems).
/// Paths in `skip` (and what is below them) are left out.
pub fn replicate(from: &Utf8Path, to: &Utf8Path, skip: &[Utf8PathBuf]) -> Result<()> {
    let mut it = walkdir::WalkDir::new(from).sort_by_file_name().into_iter();
    while let Some(e) = it.next() {
        crate::signals::check()?;
        let e = e.with_context(|| format!("walking {from}"))?;
        let path = Utf8Path::from_path(e.path())
            .with_context(|| format!("{}: not UTF-8", e.path().display()))?;
        if skip.iter().any(|s| s == path) {
            if e.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let rel = path
            .strip_prefix(from)
            .expect("walkdir stays under its root");
        let dest = to.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).with_context(|| format!("creating {dest}"))?;
            let mode = e.metadata()?.permissions();
            std::fs::set_permissions(&dest, mode)?;
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(path).with_context(|| format!("reading link {path}"))?;
            std::os::unix::fs::symlink(&target, &dest)
                .with_context(|| format!("creating link {dest}"))?;
        } else if ft.is_file() && std::fs::hard_link(path, &dest).is_err() {
            std::fs::copy(path, &dest).with_context(|| format!("copying {path} to {dest}"))?;
        }
        // Sockets, FIFOs and devices: no build reads them.
    }
    Ok(())
}

/// The steps of `b` whose key differs from the step of the same name in
/// `a`, each with why: the inputs whose recorded content differs (with the
/// project and the cache written as placeholders, so that where each plan
/// lives does not count), else its actions (a location that reached the
/// key). An input read twice with other content is a non-reproducible
/// input: the steps after it follow.
pub fn moved_keys(a: &Plan, b: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for s in &b.steps {
        let Some(f) = a.find(&s.name) else {
            out.push(format!("{} (not in the first plan)", s.name));
            continue;
        };
        if f.key == s.key {
            continue;
        }
        let (ia, ib) = (
            f.inputs_relocated(&a.root, &a.cache),
            s.inputs_relocated(&b.root, &b.cache),
        );
        let (ia, ib) = (
            ia.as_array().cloned().unwrap_or_default(),
            ib.as_array().cloned().unwrap_or_default(),
        );
        let changed: Vec<String> = ib
            .iter()
            .filter(|i| !ia.contains(i))
            .map(|i| {
                serde_json::from_value::<crate::plan::Input>(i.clone())
                    .map(|i| i.label())
                    .unwrap_or_else(|_| i.to_string())
            })
            .collect();
        if changed.is_empty() {
            out.push(format!(
                "{} (its commands: a location reached its key)",
                s.name
            ));
        } else {
            out.push(format!("{} (changed: {})", s.name, changed.join(", ")));
        }
    }
    out
}

/// `--dry-run`: the second build's plan, as it would run (the project is
/// copied to plan it, then removed with the work directory).
pub fn preview(
    cx: &Cx,
    r: &Resolved,
    formats: &[Format],
    options: &targets::Options,
) -> Result<(Plan, Utf8PathBuf)> {
    let second = Second::prepare(cx, r)?;
    let plan = second.plan(cx, r, formats, options)?;
    let dir = second.dir().to_owned();
    second.remove()?;
    Ok((plan, dir))
}

/// The text `--dry-run` prints before the second build's plan.
pub fn preview_header(dir: &Utf8Path) -> String {
    format!(
        "\nreproducibility check (--check-reproducible): after the build above, before \
         anything is published, the same targets are built again from a copy of the project \
         ({dir}/root) in a fresh step cache ({dir}/cache), and every artifact is compared byte \
         for byte with the first build's; a difference fails the release, naming the artifact, \
         the first differing byte and the member that differs. {dir} is removed afterwards.\n"
    )
}

/// Build the selected targets again in a fresh place and compare each of
/// `artifacts` (the release's, in `dir`, by name) with its namesake.
/// Returns the verdict when every artifact is identical; else an error
/// naming what differs.
pub fn check(
    cx: &Cx,
    r: &Resolved,
    formats: &[Format],
    options: &targets::Options,
    first: &Plan,
    dir: &Utf8Path,
    artifacts: &[FileFact],
) -> Result<Verdict> {
    let start = std::time::Instant::now();
    let second = Second::prepare(cx, r)?;
    crate::ui::info(&format!(
        "reproducibility check: building {} again from a copy of the project at {} in a fresh \
         cache at {}",
        formats
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", "),
        second.root,
        second.cache
    ));
    let plan = second.plan(cx, r, formats, options)?;
    let moved = moved_keys(first, &plan);
    let moved = if moved.is_empty() {
        String::new()
    } else {
        let text = format!(
            "the second build's plan has other keys than the first's: {}",
            moved.join("; ")
        );
        crate::ui::warn(&text);
        format!("\n\n{text}")
    };
    let opts = crate::exec::Options {
        force: false,
        gate: None,
    };
    let report = crate::exec::execute(&plan, &opts).context(
        "the reproducibility check's second build failed (its work directory is removed)",
    )?;
    let mut failures = Vec::new();
    let mut verdict = Verdict {
        artifacts: Vec::new(),
    };
    for a in artifacts {
        crate::signals::check()?;
        let mine = dir.join(&a.name);
        let Some(theirs) = report
            .published
            .iter()
            .find(|p| p.file_name() == Some(a.name.as_str()))
        else {
            bail!(
                "the second build published no {} (it published {:?})",
                a.name,
                report.published
            );
        };
        match first_difference(&mine, theirs)? {
            None => verdict.artifacts.push((a.name.clone(), a.sha256.clone())),
            Some(offset) => {
                failures.push(explain(&a.name, &mine, theirs, offset, &second.tmp)?);
            }
        }
    }
    second.remove()?;
    if !failures.is_empty() {
        bail!(
            "the release is not reproducible: a second build from a copy of the project in a \
             fresh cache gave other bytes; nothing was published\n\n{}{moved}",
            failures.join("\n\n")
        );
    }
    let width = verdict
        .artifacts
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    let lines: Vec<String> = verdict
        .artifacts
        .iter()
        .map(|(n, h)| format!("  {n:width$}  identical  sha256 {h}"))
        .collect();
    crate::ui::info(&format!(
        "reproducibility check passed in {:.0}s: the second build gave the same bytes\n{}",
        start.elapsed().as_secs_f64(),
        lines.join("\n")
    ));
    Ok(verdict)
}

/// The offset of the first byte where `a` and `b` differ (one ending
/// before the other differs where it ends); `None` when they are the same.
/// Both are read a few MiB at a time.
pub fn first_difference(a: &Utf8Path, b: &Utf8Path) -> Result<Option<u64>> {
    const CHUNK: usize = 4 << 20;
    let open = |p: &Utf8Path| std::fs::File::open(p).with_context(|| format!("opening {p}"));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let total = fa.metadata()?.len();
    let mut progress = (total > 256 << 20).then(|| {
        crate::ui::Progress::bytes(&format!("compare {}", a.file_name().unwrap_or("")), total)
    });
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut at = 0u64;
    let found = loop {
        crate::signals::check()?;
        let na = fill(&mut fa, &mut ba).with_context(|| format!("reading {a}"))?;
        let nb = fill(&mut fb, &mut bb).with_context(|| format!("reading {b}"))?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            break Some(at + i as u64);
        }
        if na != nb {
            break Some(at + n as u64);
        }
        if na == 0 {
            break None;
        }
        at += n as u64;
        if let Some(p) = &mut progress {
            p.inc(n as u64);
        }
    };
    if let Some(p) = progress {
        p.finish();
    }
    Ok(found)
}

/// Read until `buf` is full or the file ends; returns the count.
fn fill(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What differs between the two builds of the artifact `name`: the first
/// differing byte, then (from both builds' inventories, taken side by side)
/// the member that differs first and the others.
fn explain(name: &str, a: &Utf8Path, b: &Utf8Path, offset: u64, tmp: &Utf8Path) -> Result<String> {
    let size = |p: &Utf8Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut text = format!(
        "{name} differs: first differing byte at offset {offset} ({offset:#x}); {} bytes in \
         the release, {} in the second build",
        size(a),
        size(b)
    );
    crate::ui::info(&format!(
        "reproducibility check: {name} differs at byte {offset}; listing both builds' \
         contents to find the member that differs"
    ));
    let (ia, ib) = std::thread::scope(|s| {
        let ta = tmp.join("a");
        let tb = tmp.join("b");
        let _ = std::fs::create_dir_all(&ta);
        let _ = std::fs::create_dir_all(&tb);
        let ha = s.spawn(move || inventory::inventory(a, &ta));
        let ib = inventory::inventory(b, &tb);
        let ia = ha
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("listing {a} panicked")));
        (ia, ib)
    });
    let (ia, ib) = match (ia, ib) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            if e.downcast_ref::<crate::signals::Interrupted>().is_some() {
                return Err(e);
            }
            text.push_str(&format!("\n  its contents could not be listed: {e:#}"));
            return Ok(text);
        }
    };
    text.push_str(&render(name, &ia, &ib));
    Ok(text)
}

/// The member lines of a difference report: the first difference with its
/// levels spelled out, then up to [`LISTED`] more of each sort.
pub fn render(name: &str, a: &Inventory, b: &Inventory) -> String {
    let changes = inventory::diff(&a.entries, &b.entries);
    let mut s = String::new();
    if a.kind.is_none() && b.kind.is_none() {
        s.push_str("\n  (a plain file: kiln reads no members in it)");
        return s;
    }
    let Some(first) = inventory::first(&changes) else {
        s.push_str(&format!(
            "\n  every member is the same: the difference is in the {}'s own structures \
             (headers, partition table or file-system metadata)",
            a.kind.unwrap_or("file")
        ));
        return s;
    };
    let entries = if matches!(first.what, What::OnlyB) {
        &b.entries
    } else {
        &a.entries
    };
    let kind = a.kind.map(|k| format!(" ({k})")).unwrap_or_default();
    s.push_str(&format!(
        "\n  first differing member: {name}!{}\n    ({name}{kind} → {})\n    {}",
        first.path,
        inventory::describe(&first.path, entries),
        what(&first.what)
    ));
    if matches!(first.what, What::Content { .. } | What::Meta { .. }) {
        let has_members = changes
            .iter()
            .any(|c| c.path.starts_with(&format!("{}!", first.path)));
        if !has_members
            && a.entries
                .iter()
                .any(|e| e.path == first.path && matches!(e.kind, inventory::Kind::Container(_)))
        {
            s.push_str(
                "\n    every member inside it is the same: the difference is in its own \
                 structures",
            );
        }
    }
    let list = |title: &str, pick: &dyn Fn(&Change) -> bool| -> String {
        let all: Vec<&Change> = changes.iter().filter(|c| pick(c)).collect();
        if all.is_empty() {
            return String::new();
        }
        let mut t = format!("\n  {title} ({}):", all.len());
        for c in all.iter().take(LISTED) {
            t.push_str(&format!("\n    {}", c.path));
        }
        if all.len() > LISTED {
            t.push_str(&format!("\n    … and {} more", all.len() - LISTED));
        }
        t
    };
    s.push_str(&list("members that differ", &|c| {
        !matches!(c.what, What::OnlyA | What::OnlyB)
    }));
    s.push_str(&list("only in the release", &|c| {
        matches!(c.what, What::OnlyA)
    }));
    s.push_str(&list("only in the second build", &|c| {
        matches!(c.what, What::OnlyB)
    }));
    s
}

fn what(w: &What) -> String {
    let short = |h: &str| match h.strip_prefix(inventory::BLOCKS) {
        Some(b) => format!("block digest {}", &b[..b.len().min(16)]),
        None => format!("sha256 {}", &h[..h.len().min(16)]),
    };
    match w {
        What::Content { a, b } => format!(
            "content differs: {} bytes, {}… in the release; {} bytes, {}… in the second build",
            a.0,
            short(&a.1),
            b.0,
            short(&b.1)
        ),
        What::Meta { a, b } => {
            format!("same bytes, other metadata: {a} in the release; {b} in the second build")
        }
        What::Kind { a, b } => format!(
            "a {} in the release, a {} in the second build",
            a.name(),
            b.name()
        ),
        What::OnlyA => "only in the release".into(),
        What::OnlyB => "only in the second build".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Utf8Path, name: &str, bytes: &[u8]) -> Utf8PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn the_first_differing_byte_is_found_across_chunks_and_lengths() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let big = vec![7u8; (4 << 20) + 100];
        let mut other = big.clone();
        other[(4 << 20) + 3] = 8;
        let a = file(dir, "a", &big);
        assert_eq!(
            first_difference(&a, &file(dir, "same", &big)).unwrap(),
            None
        );
        assert_eq!(
            first_difference(&a, &file(dir, "b", &other)).unwrap(),
            Some((4 << 20) + 3)
        );
        assert_eq!(
            first_difference(&a, &file(dir, "short", &big[..10])).unwrap(),
            Some(10)
        );
    }

    /// A zstd-compressed tar of `(path, bytes)` files, as an overlay archive.
    fn tar_zst(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn a_report_names_the_artifact_the_offset_and_the_member() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let a = file(
            dir,
            "a.tar.zst",
            &tar_zst(&[("etc/hostname", b"demo\n"), ("etc/nonce", b"1111")]),
        );
        let b = file(
            dir,
            "b.tar.zst",
            &tar_zst(&[
                ("etc/hostname", b"demo\n"),
                ("etc/nonce", b"2222"),
                ("etc/zz-new", b"x"),
            ]),
        );
        let offset = first_difference(&a, &b).unwrap().unwrap();
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let text = explain("demo-amd64.overlay.tar.zst", &a, &b, offset, &tmp).unwrap();
        assert!(
            text.starts_with(&format!(
                "demo-amd64.overlay.tar.zst differs: first differing byte at offset {offset} "
            )),
            "{text}"
        );
        assert!(
            text.contains("first differing member: demo-amd64.overlay.tar.zst!/etc/nonce\n"),
            "{text}"
        );
        assert!(
            text.contains("(demo-amd64.overlay.tar.zst (zstd stream) → /etc/nonce)"),
            "{text}"
        );
        assert!(text.contains("content differs: 4 bytes"), "{text}");
        assert!(
            text.contains("only in the second build (1):\n    /etc/zz-new"),
            "{text}"
        );
        // A plain file has no members to name.
        let (p, q) = (file(dir, "p", b"abc"), file(dir, "q", b"abd"));
        let text = explain("x.bin", &p, &q, 2, &tmp).unwrap();
        assert!(
            text.contains("offset 2 (0x2)") && text.contains("plain file"),
            "{text}"
        );
    }

    #[test]
    fn the_copy_leaves_out_what_it_is_told_and_keeps_links() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let root = dir.join("p");
        std::fs::create_dir_all(root.join("overlay/etc")).unwrap();
        std::fs::create_dir_all(root.join("target/kiln/cache/x")).unwrap();
        std::fs::create_dir_all(root.join("output")).unwrap();
        file(&root, "overlay/etc/motd", b"hi");
        file(&root, "output/old.qcow2", b"disk");
        std::os::unix::fs::symlink("/proc/sys/kernel/random/uuid", root.join("overlay/uuid"))
            .unwrap();
        let to = dir.join("copy");
        replicate(&root, &to, &[root.join("target"), root.join("output")]).unwrap();
        assert_eq!(std::fs::read(to.join("overlay/etc/motd")).unwrap(), b"hi");
        assert_eq!(
            std::fs::read_link(to.join("overlay/uuid")).unwrap(),
            std::path::Path::new("/proc/sys/kernel/random/uuid")
        );
        assert!(!to.join("target").exists() && !to.join("output").exists());
    }
}
