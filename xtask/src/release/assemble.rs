//! `cargo xtask release assemble DIR…`: release directories of one version
//! built as parts (one runner per target and architecture) merged into one
//! `<output>/<name>-<version>/` with one `SHA256SUMS`, one manifest, one
//! provenance statement covering every artifact, and an SBOM per
//! architecture.
//!
//! Each part is read first: its `SHA256SUMS` must list exactly its files
//! (split files as their parts, [`super::parts`]) and agree with its
//! manifest, whose own sha256 is checked before it is believed. The parts
//! must be of one release: the same name, version, git revision, recipe,
//! `SOURCE_DATE_EPOCH` and kiln; a step they share must have the same key,
//! a tool the same version, an artifact, root, image or model the same
//! content (an error names both parts and both values). Then every
//! artifact is hard-linked (or copied, or joined from its parts) into the
//! new directory and its sha256 checked against its part's `SHA256SUMS`;
//! only then are the documents written, from the parts' facts merged, by
//! the writers `release` uses ([`super::write_documents`]), `SHA256SUMS`
//! last, and the directory renamed into place whole.
//!
//! The parts are merged in target order, whatever order they are given in,
//! so the documents are those one release of every target would have.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::facts::{Derived, Facts, FileFact, Image, Model, Root, StepFact};
use super::{parts, read_sums, Source, SUMS};
use crate::cx::Cx;
use crate::exec::TempDir;

/// One release directory to merge.
pub struct Part {
    pub dir: Utf8PathBuf,
    /// Its `SHA256SUMS`: name → sha256.
    pub sums: BTreeMap<String, String>,
    pub facts: Facts,
}

impl Part {
    /// Read and check the release directory `dir` (artifacts are verified
    /// later, as they are placed).
    pub fn read(dir: &Utf8Path) -> Result<Part> {
        let dir = crate::fsutil::absolute(dir)?;
        ensure!(dir.is_dir(), "{dir} is not a directory");
        let sums: BTreeMap<String, String> = read_sums(&dir)?.into_iter().collect();
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let e = e.with_context(|| format!("listing {dir}"))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("{dir}: file name {n:?} is not UTF-8"))?;
            // A signed part's signature is over its SHA256SUMS, not in it.
            let listed = name == SUMS
                || name == super::sign::SIG
                || sums.contains_key(&name)
                || parts::whole_of(&name).is_some_and(|w| sums.contains_key(w));
            ensure!(
                listed,
                "{dir} holds {name}, which its {SUMS} does not list: not a release directory \
                 as kiln writes it"
            );
            ensure!(
                e.file_type()?.is_file(),
                "{dir}/{name} is not a regular file"
            );
        }
        let manifests: Vec<&String> = sums
            .keys()
            .filter(|n| n.ends_with(".manifest.json"))
            .collect();
        let [manifest_name] = manifests[..] else {
            bail!(
                "{dir}: {SUMS} lists {} manifests (`*.manifest.json`), a release has one",
                manifests.len()
            );
        };
        let manifest_path = dir.join(manifest_name);
        let text =
            std::fs::read(&manifest_path).with_context(|| format!("reading {manifest_path}"))?;
        check_digest(&manifest_path, &text, &sums[manifest_name])?;
        let text =
            String::from_utf8(text).map_err(|_| anyhow::anyhow!("{manifest_path} is not UTF-8"))?;
        let (facts, sboms) = super::manifest::read(&text, manifest_path.as_str())?;
        let stem = format!("{}-{}", facts.name, facts.version);
        ensure!(
            *manifest_name == format!("{stem}.manifest.json"),
            "{manifest_path} is the manifest of {stem}, but is named {manifest_name}"
        );
        // SHA256SUMS lists what the manifest says the release holds.
        let provenance = format!("{stem}.provenance.json");
        let mut want: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for f in facts.artifacts.iter().chain(&sboms) {
            want.insert(&f.name, Some(&f.sha256));
        }
        want.insert(manifest_name, None);
        want.insert(&provenance, None);
        for (name, sha) in &want {
            let Some(listed) = sums.get(*name) else {
                bail!("{dir}: the manifest names {name}, but {SUMS} does not list it");
            };
            if let Some(sha) = sha {
                ensure!(
                    listed == sha,
                    "{dir}: {SUMS} gives {name} the sha256 {listed}, its manifest {sha}"
                );
            }
        }
        if let Some(extra) = sums.keys().find(|n| !want.contains_key(n.as_str())) {
            bail!("{dir}: {SUMS} lists {extra}, which its manifest does not name");
        }
        // The small documents are checked now; artifacts as they are placed.
        for name in sboms.iter().map(|s| &s.name).chain([&provenance]) {
            let p = dir.join(name);
            let bytes = std::fs::read(&p).with_context(|| format!("reading {p}"))?;
            check_digest(&p, &bytes, &sums[name])?;
        }
        Ok(Part { dir, sums, facts })
    }
}

fn check_digest(path: &Utf8Path, bytes: &[u8], want: &str) -> Result<()> {
    let hex = crate::digest::bytes_sha256(bytes);
    ensure!(
        hex == want,
        "{path}: its sha256 is {hex}, {SUMS} says {want}: the part is damaged \
         (download it again)"
    );
    Ok(())
}

/// What two parts disagree about: "`what`: `a` in A, `b` in B".
fn differ(a: &Utf8Path, b: &Utf8Path, what: &str, va: &str, vb: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{a} and {b} are not parts of one release: {what} is `{va}` in {a} and `{vb}` in {b}; \
         assemble parts built from one commit, one recipe and one SOURCE_DATE_EPOCH, by one kiln"
    )
}

fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v:?}").trim_matches('"').to_string(),
        None => "none".into(),
    }
}

/// A fact that parts may share: one thing by its [`Shared::key`] (which
/// names its kind too, so one map of the part each was first seen in serves
/// every kind), that every part carrying it must carry alike.
trait Shared: Clone {
    fn key(&self) -> String;
    /// How `self` (an earlier part's) and `other` differ, as [`differ`]
    /// says it: what differs, and its value in each; `None` when alike.
    fn differs(&self, other: &Self) -> Option<(String, String, String)>;
}

impl Shared for StepFact {
    fn key(&self) -> String {
        format!("step {}", self.name)
    }
    fn differs(&self, o: &Self) -> Option<(String, String, String)> {
        (self.key != o.key).then(|| {
            let what = format!("the key of step `{}`", o.name);
            (what, self.key.clone(), o.key.clone())
        })
    }
}

impl Shared for FileFact {
    fn key(&self) -> String {
        format!("artifact {}", self.name)
    }
    fn differs(&self, o: &Self) -> Option<(String, String, String)> {
        (self.sha256 != o.sha256 || self.size != o.size).then(|| {
            let what = format!("the sha256 of {}", o.name);
            (what, self.sha256.clone(), o.sha256.clone())
        })
    }
}

impl Shared for Root {
    fn key(&self) -> String {
        format!("root {}", self.arch)
    }
    fn differs(&self, o: &Self) -> Option<(String, String, String)> {
        let show = |r: &Root| format!("{} ({} packages)", r.step, r.packages.len());
        (self != o).then(|| {
            let what = format!("the {} root file system", o.arch);
            (what, show(self), show(o))
        })
    }
}

impl Shared for Image {
    fn key(&self) -> String {
        format!("image {} {}", self.arch, self.record.name)
    }
    fn differs(&self, o: &Self) -> Option<(String, String, String)> {
        (self != o).then(|| {
            let what = format!("container image {} ({})", o.record.name, o.arch);
            (what, self.record.sha256.clone(), o.record.sha256.clone())
        })
    }
}

impl Shared for Model {
    fn key(&self) -> String {
        format!("model {}", self.name)
    }
    fn differs(&self, o: &Self) -> Option<(String, String, String)> {
        (self != o).then(|| {
            let what = format!("model {}", o.name);
            (what, self.sha256.clone(), o.sha256.clone())
        })
    }
}

/// Where each of `items` was first seen: in `dir`, the first part's.
fn first_seen<'a, T: Shared>(
    items: &[T],
    dir: &'a Utf8Path,
    seen_in: &mut BTreeMap<String, &'a Utf8Path>,
) {
    for t in items {
        seen_in.insert(t.key(), dir);
    }
}

/// Adds to `out` each of `theirs` (the part in `dir`'s) that no earlier
/// part carried; one that an earlier part carried otherwise is the error
/// naming both parts.
fn carry<'a, T: Shared>(
    out: &mut Vec<T>,
    theirs: &[T],
    dir: &'a Utf8Path,
    seen_in: &mut BTreeMap<String, &'a Utf8Path>,
) -> Result<()> {
    for t in theirs {
        let key = t.key();
        match out.iter().find(|o| o.key() == key) {
            Some(o) => {
                if let Some((what, a, b)) = o.differs(t) {
                    return Err(differ(seen_in[&key], dir, &what, &a, &b));
                }
            }
            None => {
                seen_in.insert(key, dir);
                out.push(t.clone());
            }
        }
    }
    Ok(())
}

/// The facts of one release made of `parts` (in the order given), or an
/// error naming the two parts that differ and how.
pub fn merge(parts: &[(&Utf8Path, &Facts)]) -> Result<Facts> {
    let Some(&(first_dir, first)) = parts.first() else {
        bail!("no parts to assemble");
    };
    let mut out = first.clone();
    let mut tool_from: BTreeMap<String, (&str, &Utf8Path)> = BTreeMap::new();
    for (name, v) in &first.derived.tools {
        tool_from.insert(name.clone(), (v, first_dir));
    }
    // The part each step, artifact, root, image and model was first seen in.
    let mut seen_in: BTreeMap<String, &Utf8Path> = BTreeMap::new();
    first_seen(&first.steps, first_dir, &mut seen_in);
    first_seen(&first.artifacts, first_dir, &mut seen_in);
    first_seen(&first.roots, first_dir, &mut seen_in);
    first_seen(&first.images, first_dir, &mut seen_in);
    first_seen(&first.models, first_dir, &mut seen_in);
    for &(dir, f) in &parts[1..] {
        let same = |what: &str, a: String, b: String| -> Result<()> {
            if a != b {
                return Err(differ(first_dir, dir, what, &a, &b));
            }
            Ok(())
        };
        same("the name", first.name.clone(), f.name.clone())?;
        same("the version", first.version.clone(), f.version.clone())?;
        same(
            "the git revision",
            show(&first.source.revision),
            show(&f.source.revision),
        )?;
        same(
            "the recipe",
            format!("{} sha256 {}", first.recipe_path, first.recipe_sha256),
            format!("{} sha256 {}", f.recipe_path, f.recipe_sha256),
        )?;
        same(
            "SOURCE_DATE_EPOCH",
            first.epoch.to_string(),
            f.epoch.to_string(),
        )?;
        same(
            "kiln's code fingerprint",
            first.code_fingerprint.clone(),
            f.code_fingerprint.clone(),
        )?;
        same(
            "the appliance's description and vendor",
            format!("{} / {}", show(&first.description), show(&first.vendor)),
            format!("{} / {}", show(&f.description), show(&f.vendor)),
        )?;
        for &t in &f.formats {
            if !out.formats.contains(&t) {
                out.formats.push(t);
            }
        }
        for &a in &f.architectures {
            if !out.architectures.contains(&a) {
                out.architectures.push(a);
            }
        }
        out.allow_dirty |= f.allow_dirty;
        out.source = Source {
            revision: out.source.revision.clone(),
            dirty: match (out.source.dirty, f.source.dirty) {
                (Some(a), Some(b)) => Some(a || b),
                (a, b) => a.or(b),
            },
        };
        carry(&mut out.steps, &f.steps, dir, &mut seen_in)?;
        for (name, v) in &f.derived.tools {
            match tool_from.get(name) {
                Some(&(was, from)) if was != v => {
                    return Err(differ(
                        from,
                        dir,
                        &format!("the version of `{name}`"),
                        was,
                        v,
                    ));
                }
                Some(_) => {}
                None => {
                    tool_from.insert(name.clone(), (v, dir));
                }
            }
        }
        carry(&mut out.artifacts, &f.artifacts, dir, &mut seen_in)?;
        // Checked as a whole only if every part was.
        out.reproduced = match (out.reproduced.take(), &f.reproduced) {
            (Some(mut v), Some(w)) => {
                for a in &w.artifacts {
                    if !v.artifacts.contains(a) {
                        v.artifacts.push(a.clone());
                    }
                }
                v.artifacts.sort();
                Some(v)
            }
            _ => None,
        };
        carry(&mut out.roots, &f.roots, dir, &mut seen_in)?;
        carry(&mut out.images, &f.images, dir, &mut seen_in)?;
        carry(&mut out.models, &f.models, dir, &mut seen_in)?;
    }
    out.formats.sort();
    out.architectures.sort();
    out.artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    out.roots.sort_by_key(|r| r.arch);
    // Per architecture, images in the order the parts list them (the
    // recipe's), as one release's plan lists them.
    out.images.sort_by_key(|i| i.arch);
    out.derived = Derived::of(&out.steps)?;
    Ok(out)
}

/// Put `part`'s artifact `a` at `to` (a hard link, else a copy, or its
/// parts joined) and check its sha256 and size against the part's
/// `SHA256SUMS`.
fn place(part: &Part, a: &FileFact, to: &Utf8Path) -> Result<()> {
    let src = part.dir.join(&a.name);
    let want = &part.sums[&a.name];
    let (hex, size, what) = if src.is_file() {
        if std::fs::hard_link(&src, to).is_ok() {
            let hex = crate::digest::file_sha256(to)?;
            (hex, std::fs::metadata(to)?.len(), src.to_string())
        } else {
            let (hex, n) = copy_hashed(&src, to)?;
            (hex, n, src.to_string())
        }
    } else {
        let ps = parts::parts_of(&part.dir, &a.name)?;
        ensure!(
            !ps.is_empty(),
            "{}: {SUMS} lists {}, which is neither there nor split into {}",
            part.dir,
            a.name,
            parts::part_name(&a.name, 0)
        );
        let (hex, n) = parts::join(&ps, to)?;
        (hex, n, format!("{} joined from {} parts", src, ps.len()))
    };
    ensure!(
        hex == *want && size == a.size,
        "{what}: sha256 {hex} ({size} bytes), but the part records {want} ({} bytes): \
         the part is damaged (download it again)",
        a.size
    );
    Ok(())
}

/// Check `part`'s copy of an artifact another part already carried.
fn verify(part: &Part, a: &FileFact) -> Result<()> {
    let src = part.dir.join(&a.name);
    let hex = if src.is_file() {
        crate::digest::file_sha256(&src)?
    } else {
        let ps = parts::parts_of(&part.dir, &a.name)?;
        ensure!(!ps.is_empty(), "{}: {} is missing", part.dir, a.name);
        let mut h = crate::digest::HashWriter::new(std::io::sink());
        for p in &ps {
            let mut f = std::fs::File::open(p).with_context(|| format!("opening {p}"))?;
            std::io::copy(&mut f, &mut h).with_context(|| format!("reading {p}"))?;
        }
        h.finish().1
    };
    let want = &part.sums[&a.name];
    ensure!(
        hex == *want,
        "{src}: sha256 {hex}, but the part records {want}: the part is damaged (download it again)"
    );
    Ok(())
}

fn copy_hashed(from: &Utf8Path, to: &Utf8Path) -> Result<(String, u64)> {
    let mut r = std::fs::File::open(from).with_context(|| format!("opening {from}"))?;
    let out = std::fs::File::create(to).with_context(|| format!("creating {to}"))?;
    let mut w = crate::digest::HashWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
    std::io::copy(&mut r, &mut w).with_context(|| format!("copying {from} to {to}"))?;
    w.flush()?;
    let (buf, hex, n) = w.finish();
    let f = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {to}"))?;
    f.sync_all()?;
    Ok((hex, n))
}

/// Merge the release directories `dirs` into `<cx.output>/<name>-<version>/`.
/// What `release assemble` signs and checks with.
#[derive(Default)]
pub struct Keys {
    /// `--sign-key` / `KILN_SIGN_KEY`: sign the assembled `SHA256SUMS`.
    pub sign: Option<Utf8PathBuf>,
    /// `--verify-key`: every part must carry a good signature by this key.
    pub verify: Option<Utf8PathBuf>,
}

pub fn run(cx: &Cx, dirs: &[Utf8PathBuf], keys: &Keys) -> Result<()> {
    ensure!(!dirs.is_empty(), "name the release directories to assemble");
    // Both keys are read and checked before any part is.
    let sign_key = keys
        .sign
        .as_deref()
        .map(super::sign::SigningKey::load)
        .transpose()?;
    let verify_key = keys
        .verify
        .as_deref()
        .map(super::sign::VerifyingKey::load)
        .transpose()?;
    let mut parts = Vec::new();
    for d in dirs {
        if let Some(key) = &verify_key {
            key.verify_dir(d)
                .with_context(|| format!("checking the signature of the release part {d}"))?;
            crate::ui::info(&format!(
                "{d}: {SUMS} signed by key id {} ({})",
                key.key_id(),
                key.path
            ));
        }
        let p = Part::read(d).with_context(|| format!("reading the release part {d}"))?;
        if let Some(q) = parts.iter().find(|q: &&Part| q.dir == p.dir) {
            bail!("{} is named twice", q.dir);
        }
        parts.push(p);
    }
    parts.sort_by(|a, b| {
        (&a.facts.formats, &a.facts.architectures).cmp(&(&b.facts.formats, &b.facts.architectures))
    });
    let views: Vec<(&Utf8Path, &Facts)> =
        parts.iter().map(|p| (p.dir.as_path(), &p.facts)).collect();
    let mut facts = merge(&views)?;
    // The assembled release is signed by the assembler's key, or not at all,
    // whatever signed the parts.
    facts.signed_by = sign_key.as_ref().map(super::sign::SigningKey::key_id);
    let name = format!("{}-{}", facts.name, facts.version);
    let dest = super::release_dir(&cx.output, &facts.name, &facts.version);
    if let Some(p) = parts.iter().find(|p| p.dir == dest) {
        bail!(
            "{} is one of the parts and where the assembled release would go; \
             put the parts elsewhere or pass another --output-dir",
            p.dir
        );
    }
    if cx.dry_run {
        print!("{}", preview(&parts, &facts, &dest));
        return Ok(());
    }
    std::fs::create_dir_all(&cx.output)
        .with_context(|| format!("creating the output directory {}", cx.output))?;
    let partial = TempDir::new(cx.output.join(format!(".{name}.kiln-partial")))?;
    for part in &parts {
        for a in &part.facts.artifacts {
            crate::signals::check()?;
            let to = partial.path.join(&a.name);
            if to.exists() {
                verify(part, a)?;
            } else {
                place(part, a, &to)?;
            }
            crate::ui::info(&format!("{}: {} verified", part.dir, a.name));
        }
    }
    let subjects = super::write_documents(&partial.path, &facts)?;
    super::write_sums(&partial.path, &subjects)?;
    if let Some(key) = &sign_key {
        super::sign::sign_sums(&partial.path, key, facts.epoch)?;
    }
    crate::signals::check()?;
    super::put_in_place(partial, &dest)?;
    crate::ui::info(&format!(
        "assembled {dest} from {} part{} ({}; check a copy with `sha256sum -c {SUMS}` inside it)",
        parts.len(),
        if parts.len() == 1 { "" } else { "s" },
        facts
            .formats
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(key) = &sign_key {
        super::signed_info(key);
    }
    Ok(())
}

/// What `release assemble --dry-run` prints once the parts were read, their
/// signatures checked and their facts merged (every refusal of a real run
/// that needs no artifact's bytes has happened): where each artifact comes
/// from, what is written, and where. Nothing is written.
fn preview(parts: &[Part], facts: &Facts, dest: &Utf8Path) -> String {
    let mut out = String::new();
    for part in parts {
        let formats: Vec<&str> = part.facts.formats.iter().map(|f| f.name()).collect();
        let arches: Vec<String> = part
            .facts
            .architectures
            .iter()
            .map(|a| a.to_string())
            .collect();
        out += &format!(
            "part {}: {} for {}\n",
            part.dir,
            formats.join(", "),
            arches.join(", ")
        );
    }
    let mut placed = std::collections::BTreeSet::new();
    for part in parts {
        for a in &part.facts.artifacts {
            let verb = if placed.insert(a.name.as_str()) {
                "copy"
            } else {
                "check (also in an earlier part)"
            };
            out += &format!(
                "  {verb} {} ({} bytes, sha256 {}) from {}, verified against its SHA256SUMS\n",
                a.name, a.size, a.sha256, part.dir
            );
        }
    }
    let arches: Vec<String> = facts.architectures.iter().map(|a| a.to_string()).collect();
    let name = format!("{}-{}", facts.name, facts.version);
    out += &format!(
        "  write {name}.manifest.json, an SPDX SBOM per architecture ({}), the provenance statement, then SHA256SUMS\n",
        arches.join(", ")
    );
    if let Some(id) = &facts.signed_by {
        out += &format!("  sign SHA256SUMS into SHA256SUMS.minisig with key id {id}\n");
    }
    out += &format!("  then rename the whole directory into place: {dest}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Arch;
    use crate::targets::Format;
    use serde_json::json;

    fn step(name: &str, key: &str, tool: (&str, &str)) -> super::super::facts::StepFact {
        super::super::facts::StepFact {
            name: name.into(),
            key: key.into(),
            inputs: json!([
                { "kind": "tool", "name": tool.0, "version": tool.1 },
                { "kind": "file", "path": "@ROOT@/recipes/demo.yaml", "sha256": "ab" },
            ]),
        }
    }

    /// A part that built `format` for `arch`: a stage step (shared), a step
    /// of its own, and one artifact.
    fn part(format: Format, arch: Arch) -> Facts {
        let steps = vec![
            step(
                &format!("stage-{arch}"),
                &format!("k-stage-{arch}"),
                ("zstd", "1.5"),
            ),
            step(
                &format!("{format}-{arch}"),
                &format!("k-{format}-{arch}"),
                ("qemu-img", "10.0"),
            ),
        ];
        Facts {
            name: "demo".into(),
            version: "1.0".into(),
            formats: vec![format],
            architectures: vec![arch],
            description: Some("d".into()),
            vendor: None,
            source: Source {
                revision: Some("abc".into()),
                dirty: Some(false),
            },
            allow_dirty: false,
            epoch: 1_700_000_000,
            recipe_path: "recipes/demo.yaml".into(),
            recipe_sha256: "r1".into(),
            code_fingerprint: "c1".into(),
            derived: Derived::of(&steps).unwrap(),
            steps,
            roots: Vec::new(),
            images: Vec::new(),
            models: Vec::new(),
            artifacts: vec![FileFact {
                name: format!("demo-1.0-{arch}.{format}"),
                size: 3,
                sha256: format!("sha-{format}-{arch}"),
            }],
            reproduced: None,
            signed_by: None,
        }
    }

    fn merge2(a: &Facts, b: &Facts) -> Result<Facts> {
        merge(&[
            (Utf8Path::new("/parts/a"), a),
            (Utf8Path::new("/parts/b"), b),
        ])
    }

    #[test]
    fn parts_merge_into_the_union_of_their_targets_steps_and_artifacts() {
        let a = part(Format::Overlay, Arch::Amd64);
        let b = part(Format::Pi, Arch::Arm64);
        let mut b2 = part(Format::Qcow2, Arch::Amd64);
        b2.source.dirty = Some(true);
        let m = merge(&[
            (Utf8Path::new("/a"), &a),
            (Utf8Path::new("/b"), &b),
            (Utf8Path::new("/c"), &b2),
        ])
        .unwrap();
        assert_eq!(m.formats, [Format::Overlay, Format::Qcow2, Format::Pi]);
        assert_eq!(m.architectures, [Arch::Amd64, Arch::Arm64]);
        let steps: Vec<&str> = m.steps.iter().map(|s| s.name.as_str()).collect();
        // The shared stage-amd64 once, in the order the parts give them.
        assert_eq!(
            steps,
            [
                "stage-amd64",
                "overlay-amd64",
                "stage-arm64",
                "pi-arm64",
                "qcow2-amd64"
            ]
        );
        let names: Vec<&str> = m.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.0-amd64.overlay",
                "demo-1.0-amd64.qcow2",
                "demo-1.0-arm64.pi"
            ]
        );
        assert_eq!(m.derived.arches, [Arch::Amd64, Arch::Arm64]);
        assert_eq!(m.derived.tools.len(), 2);
        assert_eq!(
            m.source.dirty,
            Some(true),
            "one dirty part makes a dirty release"
        );
    }

    #[test]
    fn parts_of_different_releases_are_refused_naming_both() {
        let a = part(Format::Overlay, Arch::Amd64);
        type Change = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(&str, Change)> = vec![
            ("the version", Box::new(|f| f.version = "1.1".into())),
            (
                "the git revision",
                Box::new(|f| f.source.revision = Some("def".into())),
            ),
            ("the recipe", Box::new(|f| f.recipe_sha256 = "r2".into())),
            ("SOURCE_DATE_EPOCH", Box::new(|f| f.epoch += 1)),
            (
                "kiln's code fingerprint",
                Box::new(|f| f.code_fingerprint = "c2".into()),
            ),
            (
                "the key of step `stage-amd64`",
                Box::new(|f| f.steps[0].key = "other".into()),
            ),
            (
                "the version of `qemu-img`",
                Box::new(|f| {
                    f.steps[1].inputs[0]["version"] = json!("9.0");
                    f.derived = Derived::of(&f.steps).unwrap();
                }),
            ),
            (
                "the sha256 of demo-1.0-amd64.overlay",
                Box::new(|f| f.artifacts[0].sha256 = "changed".into()),
            ),
        ];
        for (what, change) in cases {
            let mut b = part(Format::Overlay, Arch::Amd64);
            b.formats = vec![Format::Qcow2];
            change(&mut b);
            let err = format!("{:#}", merge2(&a, &b).unwrap_err());
            assert!(
                err.contains(what) && err.contains("/parts/a") && err.contains("/parts/b"),
                "{what}: {err}"
            );
        }
    }
}
