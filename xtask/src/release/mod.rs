//! `cargo xtask release`: every selected target of the recipe built through
//! one plan (the one `build` makes, [`crate::targets::plan`]), behind the same
//! secret-scan gate, published as one directory `output/<name>-<version>/`
//! with what an operator and an auditor need beside the artifacts:
//! `SHA256SUMS`, a manifest of every input ([`manifest`]), an SPDX SBOM per
//! root file system ([`sbom`]) and an in-toto/SLSA provenance statement
//! ([`provenance`]).
//!
//! The directory is assembled as `output/.<name>-<version>.kiln-partial`
//! (artifacts are hard links to the cache's files, as `build` publishes
//! them) and renamed into place whole; an existing release of the same
//! version is exchanged with it in one `renameat2(RENAME_EXCHANGE)`, then
//! removed. A failure or a signal removes the partial directory: `output/`
//! holds a whole release or the one before.
//!
//! With `--push oci://HOST[:PORT]/REPO:CHANNEL` the finished directory's
//! documents (and, with `--push-artifacts`, its artifacts) are then pushed
//! to a registry as one OCI artifact ([`oci`]); `release pull` fetches one
//! back. A push that fails leaves the release directory as it was.
//! With `--check-reproducible` ([`reproduce`]), the targets are built a
//! second time from a copy of the project in a fresh cache before any
//! document is written, and the release goes on only if every artifact is
//! byte-identical (the manifest records it); a difference is the release's
//! error, so nothing is published.
//!
//! With `--sign-key FILE` (or `KILN_SIGN_KEY`), `SHA256SUMS` is signed
//! into `SHA256SUMS.minisig` ([`sign`]) after it is written and before the
//! directory is renamed into place, deterministically (the same key and
//! release give the same bytes); the manifest records the key id.
//!
//! A release built as parts on several machines (one per target and
//! architecture) is merged into one by [`assemble`], which reads the facts
//! back from the parts' manifests and writes the documents with the same
//! writers ([`write_documents`]); [`parts`] splits files too large to carry
//! (a GitHub release asset must be under 2 GiB) and joins them again.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::cx::Cx;
use crate::exec::TempDir;
use crate::targets;

pub mod assemble;
pub mod facts;
pub mod license;
pub mod manifest;
pub mod oci;
pub mod parts;
pub mod provenance;
pub mod reproduce;
pub mod sbom;
pub mod sign;

/// The checksum list of a release (coreutils `sha256sum` format).
pub const SUMS: &str = "SHA256SUMS";

/// What `cargo xtask release` was asked for.
pub struct Request {
    /// `--targets` (empty: every format the recipe builds).
    pub targets: Vec<String>,
    pub allow_dirty: bool,
    /// `--check-reproducible`: build the targets again elsewhere, in a
    /// fresh cache, and publish only if every artifact is identical
    /// ([`reproduce`]).
    pub check_reproducible: bool,
    /// `--arch` is `options.arches`.
    pub options: targets::Options,
    /// `--push`: where to publish the finished release.
    pub push: Option<Push>,
    /// `--sign-key` / `KILN_SIGN_KEY`: the minisign secret key that signs
    /// `SHA256SUMS`.
    pub sign_key: Option<Utf8PathBuf>,
}

/// Publish the finished release to a registry.
#[derive(Debug, Clone)]
pub struct Push {
    pub to: oci::Reference,
    /// Push the artifacts too, not only the documents (`--push-artifacts`).
    pub artifacts: bool,
}

/// The project's git state as a release records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// HEAD's revision (`None` outside a repository).
    pub revision: Option<String>,
    /// Uncommitted changes or untracked files (`None` outside a repository).
    pub dirty: Option<bool>,
}

/// Decide whether a tree with `changes` (`git status --porcelain` lines;
/// `None` outside a repository) may be released: a dirty tree is refused,
/// naming the changes, unless `allow_dirty`, when it is only warned about.
pub fn check_tree(
    root: &Utf8Path,
    changes: Option<&[String]>,
    allow_dirty: bool,
) -> Result<Option<bool>> {
    let Some(changes) = changes else {
        crate::ui::warn(&format!(
            "{root} is not a git repository: the release records no revision"
        ));
        return Ok(None);
    };
    if changes.is_empty() {
        return Ok(Some(false));
    }
    let shown: Vec<&str> = changes.iter().take(10).map(String::as_str).collect();
    let more = if changes.len() > 10 {
        format!("\n  … and {} more", changes.len() - 10)
    } else {
        String::new()
    };
    let list = format!("  {}{more}", shown.join("\n  "));
    if !allow_dirty {
        bail!(
            "the work tree of {root} has changes git does not hold; a release must be \
             reproducible from its revision:\n{list}\ncommit them, or pass --allow-dirty \
             (the manifest then records `dirty: true`)"
        );
    }
    crate::ui::warn(&format!(
        "releasing a dirty work tree (--allow-dirty; recorded in the manifest):\n{list}"
    ));
    Ok(Some(true))
}

pub fn run(cx: &Cx, req: Request) -> Result<()> {
    let r = cx.recipe()?;
    let formats = targets::select(&r, &req.options, &req.targets)?;
    // The key is read and checked before anything is built.
    let key = req
        .sign_key
        .as_deref()
        .map(sign::SigningKey::load)
        .transpose()?;
    let architectures: Vec<crate::recipe::Arch> = formats
        .iter()
        .flat_map(|&f| req.options.arches_of(&r, f))
        .collect();
    let changes = crate::tools::git::changes(&r.root);
    let dirty = check_tree(&r.root, changes.as_deref(), req.allow_dirty)?;
    let source = Source {
        revision: r.revision.clone(),
        dirty,
    };
    let name = format!("{}-{}", r.name(), r.version);
    let dest = cx.output.join(&name);
    let make = |output: &Utf8Path| {
        let mut plan = cx.plan("release");
        targets::plan(&r, &mut plan, &formats, &req.options)?;
        plan.output = output.to_owned();
        if let Some(key) = &key {
            plan.notes.push(sign_note(key, r.epoch));
        }
        if let Some(push) = &req.push {
            plan.notes
                .push(push_note(&plan, &dest, &name, push, key.is_some()));
        }
        Ok(plan)
    };
    if cx.dry_run {
        if !req.check_reproducible {
            cx.execute(|| make(&dest), None)?;
            return Ok(());
        }
        let plan = make(&dest)?;
        let (second, work) = reproduce::preview(cx, &r, &formats, &req.options)?;
        if cx.json {
            let mut doc = plan.to_json();
            doc["check_reproducible"] = serde_json::json!({
                "work": work,
                "plan": second.to_json(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!("{}", plan.render());
            print!("{}", reproduce::preview_header(&work));
            print!("{}", second.render());
        }
        return Ok(());
    }
    std::fs::create_dir_all(&cx.output)
        .with_context(|| format!("creating the output directory {}", cx.output))?;
    let partial = TempDir::new(cx.output.join(format!(".{name}.kiln-partial")))?;
    let gate = crate::scan::gate(&r);
    let (plan, report) = cx.execute(|| make(&partial.path), Some(&gate))?;
    let report = report.context("the release plan did not run")?;
    crate::signals::check()?;

    let artifacts = facts::artifacts(&partial.path, &report.published)?;
    let reproduced = if req.check_reproducible {
        let opts = &req.options;
        let verdict = reproduce::check(cx, &r, &formats, opts, &plan, &partial.path, &artifacts)?;
        Some(verdict)
    } else {
        None
    };
    let mut facts = facts::gather(
        &r,
        &plan,
        &formats,
        &architectures,
        &source,
        req.allow_dirty,
        artifacts,
        reproduced,
    )?;
    facts.signed_by = key.as_ref().map(sign::SigningKey::key_id);
    crate::signals::check()?;
    let subjects = write_documents(&partial.path, &facts)?;
    let sums = write_sums(&partial.path, &subjects)?;
    let signature = key
        .as_ref()
        .map(|k| sign::sign_sums(&partial.path, k, facts.epoch))
        .transpose()?;
    // The documents, by role, for a push.
    let document = |file: &str| {
        subjects
            .iter()
            .find(|f| f.name == file)
            .cloned()
            .with_context(|| format!("the release wrote no {file}"))
    };
    let manifest = document(&format!("{name}.manifest.json"))?;
    let provenance = document(&format!("{name}.provenance.json"))?;
    let written: Vec<facts::FileFact> = subjects
        .iter()
        .filter(|f| f.name.ends_with(".spdx.json"))
        .cloned()
        .collect();
    crate::signals::check()?;
    put_in_place(partial, &dest)?;
    let targets = formats
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ");
    crate::ui::info(&format!(
        "released {dest} ({targets}; check a copy with `sha256sum -c {SUMS}` inside it)"
    ));
    if let Some(key) = &key {
        signed_info(key);
    }
    let Some(push) = &req.push else {
        return Ok(());
    };
    let role = |f: &facts::FileFact, role| oci::File {
        name: f.name.clone(),
        size: f.size,
        sha256: f.sha256.clone(),
        role,
    };
    let mut files = vec![
        role(&sums, oci::Role::Sums),
        role(&manifest, oci::Role::Manifest),
        role(&provenance, oci::Role::Provenance),
    ];
    if let Some(sig) = &signature {
        files.push(role(sig, oci::Role::Signature));
    }
    files.extend(written.iter().map(|f| role(f, oci::Role::Sbom)));
    if push.artifacts {
        files.extend(facts.artifacts.iter().map(|f| role(f, oci::Role::Artifact)));
    }
    let annotations = push_annotations(&name, &r.version, &source, facts.epoch, push, &formats);
    crate::ui::info(&format!(
        "pushing {} file(s) of {name} to {} ({})",
        files.len(),
        push.to,
        if push.artifacts {
            "documents and artifacts"
        } else {
            "documents; the artifacts stay local"
        }
    ));
    let pushed = oci::push(&push.to, &dest, &files, annotations).map_err(|e| {
        if crate::signals::interrupted() {
            return e;
        }
        e.context(format!(
            "the release {dest} is complete and intact (`sha256sum -c {SUMS}` inside it checks \
             it), but pushing it to {} failed; run the same command again to retry (its \
             steps are cached)",
            push.to
        ))
    })?;
    crate::ui::info(&format!(
        "pushed {name} to {} as {} ({} blob(s) uploaded, {} already there); fetch it with \
         `cargo xtask release pull {}` (this very release: `… pull {}@{}`)",
        push.to, pushed.digest, pushed.uploaded, pushed.present, push.to, push.to, pushed.digest
    ));
    if cx.json {
        println!(
            "{}",
            serde_json::json!({
                "pushed": push.to.to_string(),
                "digest": pushed.digest,
                "files": files.iter().map(|f| &f.name).collect::<Vec<_>>(),
            })
        );
    }
    Ok(())
}

/// The manifest annotations of a pushed release: nothing but what the
/// release itself records (no clock, no host), so a push is reproducible.
fn push_annotations(
    name: &str,
    version: &str,
    source: &Source,
    epoch: i64,
    push: &Push,
    formats: &[targets::Format],
) -> std::collections::BTreeMap<String, String> {
    let mut a = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_string(), v);
    };
    put(oci::TITLE, name.to_string());
    put("org.opencontainers.image.version", version.to_string());
    put(
        "org.opencontainers.image.created",
        crate::export::rfc3339(epoch),
    );
    if let Some(rev) = &source.revision {
        put("org.opencontainers.image.revision", rev.clone());
    }
    put(oci::WITH_ARTIFACTS, push.artifacts.to_string());
    put(
        "vnd.kiln.release.targets",
        formats
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
    );
    a
}

/// What `--dry-run` says signing will do (the key's file and id, never its
/// content).
fn sign_note(key: &sign::SigningKey, epoch: i64) -> String {
    format!(
        "sign: once {SUMS} is written, sign it with the minisign key {} (key id {}) into {}, \
         trusted comment `{}` (the release's SOURCE_DATE_EPOCH: the same key and release give \
         the same signature); the manifest records the key id",
        key.path,
        key.key_id(),
        sign::SIG,
        sign::trusted_comment(epoch).replace('\t', " "),
    )
}

/// Say which key signed a release and how to check it.
pub(crate) fn signed_info(key: &sign::SigningKey) {
    crate::ui::info(&format!(
        "signed {SUMS} into {} with the key {} (key id {}, public key {}); verify with \
         `minisign -Vm {SUMS} -P <the public key published for the project>` before \
         `sha256sum -c {SUMS}`",
        sign::SIG,
        key.path,
        key.key_id(),
        key.public_base64()
    ));
}

/// What `--dry-run` says a push will do: where, and which files.
fn push_note(
    plan: &crate::plan::Plan,
    dest: &Utf8Path,
    name: &str,
    push: &Push,
    signed: bool,
) -> String {
    let r = &push.to;
    let mut files = vec![
        format!("{name}.manifest.json"),
        SUMS.to_string(),
        format!("the SBOMs ({name}-<arch>.spdx.json)"),
        format!("{name}.provenance.json"),
    ];
    if signed {
        files.insert(2, sign::SIG.to_string());
    }
    let artifacts = if push.artifacts {
        let names: Vec<&str> = plan.publish.iter().map(|p| p.name.as_str()).collect();
        files.push(format!("the artifacts ({})", names.join(", ")));
        String::new()
    } else {
        "; the artifacts stay local (--push-artifacts adds them)".to_string()
    };
    format!(
        "push: once {dest} is complete, publish it to {r} ({}://{}, repository {}, tag `{}`) \
         as one OCI artifact ({}, artifactType {}): {}{artifacts}",
        r.scheme(),
        r.registry,
        r.repository,
        r.target_str(),
        oci::MANIFEST_TYPE,
        oci::ARTIFACT_TYPE,
        files.join(", ")
    )
}

/// Write the release's documents from `facts` into `dir`, beside its
/// artifacts: an SBOM per architecture, the manifest, then the provenance
/// (whose subjects are every file before it). Returns every file of the
/// release (artifacts and documents) for `SHA256SUMS`.
pub fn write_documents(dir: &Utf8Path, facts: &facts::Facts) -> Result<Vec<facts::FileFact>> {
    let name = format!("{}-{}", facts.name, facts.version);
    let mut written = Vec::new();
    for (arch, doc) in sbom::documents(facts) {
        let file = format!("{name}-{arch}.spdx.json");
        written.push(write_doc(dir, &file, &doc)?);
    }
    let doc = manifest::document(facts, &written);
    let manifest = write_doc(dir, &format!("{name}.manifest.json"), &doc)?;
    let mut subjects: Vec<facts::FileFact> = facts.artifacts.clone();
    subjects.extend(written);
    subjects.push(manifest);
    let doc = provenance::statement(facts, &subjects);
    subjects.push(write_doc(dir, &format!("{name}.provenance.json"), &doc)?);
    Ok(subjects)
}

/// Write `doc` as pretty JSON into the release directory; returns its fact.
fn write_doc(dir: &Utf8Path, name: &str, doc: &serde_json::Value) -> Result<facts::FileFact> {
    let path = dir.join(name);
    let mut text = serde_json::to_string_pretty(doc)
        .with_context(|| format!("serializing the release's {name}"))?;
    text.push('\n');
    std::fs::write(&path, &text).with_context(|| format!("writing the release's {path}"))?;
    Ok(facts::FileFact {
        name: name.to_string(),
        size: text.len() as u64,
        sha256: crate::digest::bytes_sha256(text.as_bytes()),
    })
}

/// `SHA256SUMS`: one `<hex>  <name>` line per file of `dir` except itself,
/// sorted by name, written last. The digests are the ones taken when each
/// file was written or published (`files`), so no image is read again; a
/// file of `dir` that `files` does not describe, or the reverse, is an error.
/// Returns `SHA256SUMS`' own fact.
pub fn write_sums(dir: &Utf8Path, files: &[facts::FileFact]) -> Result<facts::FileFact> {
    let mut names: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing the release {dir}"))? {
        let e = e.with_context(|| format!("listing the release {dir}"))?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{dir}: file name {n:?} is not UTF-8"))?;
        if name != SUMS {
            names.push(name);
        }
    }
    names.sort();
    let mut listed: Vec<&facts::FileFact> = files.iter().collect();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let listed_names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
    anyhow::ensure!(
        names == listed_names,
        "the release {dir} holds {names:?}, but kiln wrote {listed_names:?}"
    );
    let text: String = listed
        .iter()
        .map(|f| crate::digest::sha256sum_line(&f.sha256, &f.name))
        .collect();
    let path = dir.join(SUMS);
    std::fs::write(&path, &text).with_context(|| format!("writing {path}"))?;
    Ok(facts::FileFact {
        name: SUMS.to_string(),
        size: text.len() as u64,
        sha256: crate::digest::bytes_sha256(text.as_bytes()),
    })
}

/// The `SHA256SUMS` of the release directory `dir`: (name, sha256) per
/// line, in its order. Names are file names in `dir` (no `/`), each once.
pub fn read_sums(dir: &Utf8Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(SUMS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is {dir} a kiln release directory?)"))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || anyhow::anyhow!("{path}:{}: not a `sha256sum` line: {line:?}", i + 1);
        let (hex, rest) = line.split_at_checked(64).ok_or_else(bad)?;
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(bad());
        }
        if name.contains('/') || name == "." || name == ".." {
            bail!(
                "{path}:{}: {name:?} is not a file name of the directory",
                i + 1
            );
        }
        if out.iter().any(|(n, _)| n == name) {
            bail!("{path}: {name} is listed twice");
        }
        out.push((name.to_string(), hex.to_ascii_lowercase()));
    }
    Ok(out)
}

/// Rename the assembled release to `dest`: a plain rename when there is no
/// release of that version yet, else an atomic exchange with it, after which
/// the old one (now under the partial name) is removed with the guard.
pub(crate) fn put_in_place(partial: TempDir, dest: &Utf8Path) -> Result<()> {
    if std::fs::symlink_metadata(dest).is_err() {
        return partial.persist(dest);
    }
    exchange(&partial.path, dest)
        .with_context(|| format!("replacing the release {dest} with {}", partial.path))?;
    let old = partial.path.clone();
    drop(partial);
    anyhow::ensure!(
        !old.exists(),
        "the release before, moved to {old}, could not be removed"
    );
    Ok(())
}

/// Swap two directory entries in one step (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Utf8Path, b: &Utf8Path) -> Result<()> {
    use std::ffi::CString;
    let ca = CString::new(a.as_str()).context("a path holds a NUL byte")?;
    let cb = CString::new(b.as_str()).context("a path holds a NUL byte")?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as
    // given (they are absolute).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("renameat2(RENAME_EXCHANGE)");
    }
    Ok(())
}

/// Where a release of `r` goes under `output`.
pub fn release_dir(output: &Utf8Path, name: &str, version: &str) -> Utf8PathBuf {
    output.join(format!("{name}-{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_tree_is_refused_unless_allowed() {
        let root = Utf8Path::new("/p");
        let changes = vec![
            " M overlay/etc/motd".to_string(),
            "?? notes.txt".to_string(),
        ];
        let err = format!("{:#}", check_tree(root, Some(&changes), false).unwrap_err());
        assert!(
            err.contains("overlay/etc/motd") && err.contains("--allow-dirty"),
            "{err}"
        );
        assert_eq!(check_tree(root, Some(&changes), true).unwrap(), Some(true));
        assert_eq!(check_tree(root, Some(&[]), false).unwrap(), Some(false));
        assert_eq!(check_tree(root, None, false).unwrap(), None);
    }

    #[test]
    fn sums_list_every_file_but_themselves_sorted_by_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let fact = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes).unwrap();
            facts::FileFact {
                name: name.into(),
                size: bytes.len() as u64,
                sha256: crate::digest::bytes_sha256(bytes),
            }
        };
        let files = [fact("b.qcow2", b"disk"), fact("a.json", b"{}")];
        std::fs::write(dir.join(SUMS), b"stale").unwrap();
        write_sums(dir, &files).unwrap();
        let text = std::fs::read_to_string(dir.join(SUMS)).unwrap();
        let want = format!(
            "{}  a.json\n{}  b.qcow2\n",
            crate::digest::bytes_sha256(b"{}"),
            crate::digest::bytes_sha256(b"disk")
        );
        assert_eq!(text, want);
        // A file kiln did not account for is not silently listed.
        std::fs::write(dir.join("stray"), b"x").unwrap();
        let err = format!("{:#}", write_sums(dir, &files).unwrap_err());
        assert!(err.contains("stray"), "{err}");
    }

    #[test]
    fn an_existing_release_is_exchanged_whole() {
        let d = tempfile::tempdir().unwrap();
        let out = Utf8Path::from_path(d.path()).unwrap();
        let dest = release_dir(out, "demo", "1.0");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("old.qcow2"), b"old").unwrap();
        let partial = TempDir::new(out.join(".demo-1.0.kiln-partial")).unwrap();
        std::fs::write(partial.path.join("new.qcow2"), b"new").unwrap();
        put_in_place(partial, &dest).unwrap();
        let names: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["demo-1.0"]);
        assert!(dest.join("new.qcow2").is_file() && !dest.join("old.qcow2").exists());
    }
}
