//! What a release records, gathered once from the plan that ran and the
//! files it published: the manifest, the SBOMs and the provenance are
//! written from these facts, so they agree with each other and with
//! `SHA256SUMS`. Nothing here names a location or reads a clock.
//!
//! The manifest records every fact (what follows from the steps, the tools,
//! dependencies and architectures, is derived from them by [`Derived`] both
//! when a release is made and when its manifest is read back), so
//! `release assemble` rebuilds the facts of its parts from their manifests
//! alone and writes the merged documents with the same writers.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::Source;
use crate::export::models::ModelRecord;
use crate::export::ImageRecord;
use crate::plan::{Input, Plan};
use crate::recipe::payloads::ModelPackaging;
use crate::recipe::{Arch, Resolved};
use crate::scan::dpkg::Installed;
use crate::targets::Format;

/// A file of the release: its name in the directory, size and sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileFact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What `--check-reproducible` found ([`super::reproduce::check`]), for the
/// manifest.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Every artifact compared (all identical), by name, with its sha256.
    pub artifacts: Vec<(String, String)>,
}

/// One step of the plan: its name, key, and inputs as the key hashes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepFact {
    pub name: String,
    pub key: String,
    pub inputs: serde_json::Value,
}

/// A Debian root file system and the packages dpkg installed in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Root {
    #[serde(rename = "architecture")]
    pub arch: Arch,
    pub step: String,
    pub packages: Vec<Installed>,
    /// Package name to its declared license (an SPDX expression), for the
    /// packages whose copyright file says it in DEP-5 short names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub licenses: BTreeMap<String, String>,
    /// The `LicenseRef-deb-…` ids those expressions use, to the Debian short
    /// name each stands for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub license_refs: BTreeMap<String, String>,
}

/// A container image carried for `arch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub arch: Arch,
    #[serde(flatten)]
    pub record: ImageRecord,
}

/// A model: its archive's sha256, or for a model shipped as files the
/// sha256 of its `SHA256SUMS` (one `sha256sum` line per file, by path).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    pub revision: Option<String>,
    pub packaging: ModelPackaging,
    pub sha256: String,
    pub files: usize,
}

/// A file or tree input of some step, by content.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    /// Its path with the project root written as `@ROOT@` (or a host file's
    /// own path).
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub name: String,
    pub version: String,
    pub formats: Vec<Format>,
    /// The architectures the formats were built for (`--arch`, else every
    /// one each format is built for), sorted.
    pub architectures: Vec<Arch>,
    /// The appliance's description and vendor (the SBOMs name them).
    pub description: Option<String>,
    pub vendor: Option<String>,
    pub source: Source,
    pub allow_dirty: bool,
    pub epoch: i64,
    /// The recipe file, relative to the project root when inside it.
    pub recipe_path: String,
    pub recipe_sha256: String,
    pub code_fingerprint: String,
    pub steps: Vec<StepFact>,
    /// Every external program a step runs, with its version line, every
    /// file and tree a step reads, and the architectures: from `steps`.
    pub derived: Derived,
    pub roots: Vec<Root>,
    pub images: Vec<Image>,
    pub models: Vec<Model>,
    pub artifacts: Vec<FileFact>,
    /// `--check-reproducible` ran and every artifact was identical.
    pub reproduced: Option<Verdict>,
    /// The minisign key id that signs `SHA256SUMS` (`SHA256SUMS.minisig`),
    /// when the release is signed ([`super::sign`]).
    pub signed_by: Option<String>,
}

/// What the steps of a release imply: computed from them, never recorded
/// apart from them, so a manifest read back gives the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    /// Every external program a step runs, with its version line.
    pub tools: BTreeMap<String, String>,
    /// Every file and tree input of a step, by content, sorted.
    pub dependencies: Vec<Dependency>,
    /// Architectures the release carries a staged tree or a root for.
    pub arches: Vec<Arch>,
}

impl Derived {
    pub fn of(steps: &[StepFact]) -> Result<Derived> {
        let mut tools = BTreeMap::new();
        let mut deps = BTreeSet::new();
        for s in steps {
            for i in s.inputs.as_array().into_iter().flatten() {
                let input: Input = serde_json::from_value(i.clone())
                    .with_context(|| format!("step {}: reading back an input", s.name))?;
                match input {
                    Input::Tool { name, version } => {
                        tools.insert(name, version);
                    }
                    Input::File { path, sha256 } | Input::Tree { path, sha256, .. } => {
                        deps.insert(Dependency {
                            name: path.to_string(),
                            sha256,
                        });
                    }
                    _ => {}
                }
            }
        }
        let has = |name: String| steps.iter().any(|s| s.name == name);
        let arches = [Arch::Amd64, Arch::Arm64]
            .into_iter()
            .filter(|&a| has(crate::stage::step_name(a)) || has(crate::qcow2::rootfs::step_name(a)))
            .collect();
        Ok(Derived {
            tools,
            dependencies: deps.into_iter().collect(),
            arches,
        })
    }
}

/// The published artifacts in the release directory `dir`, with the sha256
/// publishing took (its `<name>.sha256`, which is then removed: the
/// release's `SHA256SUMS` lists them all).
pub fn artifacts(dir: &Utf8Path, published: &[Utf8PathBuf]) -> Result<Vec<FileFact>> {
    let mut out = Vec::new();
    for p in published {
        let name = p
            .file_name()
            .with_context(|| format!("published file {p} has no name"))?
            .to_string();
        let sums = dir.join(format!("{name}.sha256"));
        let line = std::fs::read_to_string(&sums)
            .with_context(|| format!("reading {sums}, the sha256 publishing took of {name}"))?;
        let sha256 = line
            .split_whitespace()
            .next()
            .filter(|h| h.len() == 64)
            .with_context(|| format!("{sums} holds no sha256"))?
            .to_string();
        std::fs::remove_file(&sums).with_context(|| format!("removing {sums}"))?;
        let size = std::fs::metadata(p)
            .with_context(|| format!("reading the size of {p}"))?
            .len();
        out.push(FileFact { name, size, sha256 });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Everything the release documents record, from the plan that ran (and the
/// reproducibility check's verdict, when it ran).
#[allow(clippy::too_many_arguments)]
pub fn gather(
    r: &Resolved,
    plan: &Plan,
    formats: &[Format],
    architectures: &[Arch],
    source: &Source,
    allow_dirty: bool,
    artifacts: Vec<FileFact>,
    reproduced: Option<Verdict>,
) -> Result<Facts> {
    let steps: Vec<StepFact> = plan
        .steps
        .iter()
        .map(|s| StepFact {
            name: s.name.clone(),
            key: s.key.clone(),
            inputs: s.inputs_relocated(&plan.root, &plan.cache),
        })
        .collect();
    let derived = Derived::of(&steps)?;
    let mut roots = Vec::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        let Some(step) = plan.find(&crate::qcow2::rootfs::step_name(arch)) else {
            continue;
        };
        let tar = step.output(crate::qcow2::rootfs::ROOTFS_TAR);
        let p = packages_of(&tar)?;
        roots.push(Root {
            arch,
            step: step.name.clone(),
            packages: p.packages,
            licenses: p.licenses,
            license_refs: p.license_refs,
        });
    }
    let mut images = Vec::new();
    for arch in &derived.arches {
        for img in &r.recipe.payloads.images {
            let Some(step) = plan.find(&format!("image-{}-{arch}", img.name)) else {
                continue;
            };
            let record: ImageRecord =
                crate::export::read_record(&step.output(crate::export::IMAGE_RECORD), &step.name)?;
            images.push(Image {
                arch: *arch,
                record,
            });
        }
    }
    let mut models = Vec::new();
    for m in &r.recipe.payloads.models {
        let Some(step) = plan.find(&format!("model-{}", m.name)) else {
            continue;
        };
        let rec: ModelRecord =
            crate::export::read_record(&step.output(crate::export::MODEL_RECORD), &step.name)?;
        models.push(model(&rec));
    }
    let recipe_path = r
        .file
        .strip_prefix(&r.root)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| r.file.file_name().unwrap_or("recipe").to_string());
    let mut architectures = architectures.to_vec();
    architectures.sort();
    architectures.dedup();
    Ok(Facts {
        name: r.name().to_string(),
        version: r.version.clone(),
        formats: formats.to_vec(),
        architectures,
        description: r.recipe.appliance.description.clone(),
        vendor: r.recipe.appliance.vendor.clone(),
        source: source.clone(),
        allow_dirty,
        epoch: r.epoch,
        recipe_sha256: crate::digest::file_sha256(&r.file)
            .with_context(|| format!("reading the recipe {} for the release", r.file))?,
        recipe_path,
        code_fingerprint: crate::plan::code_fingerprint(),
        steps,
        derived,
        roots,
        images,
        models,
        artifacts,
        reproduced,
        signed_by: None,
    })
}

/// The packages dpkg installed in a root tarball (its `var/lib/dpkg/status`),
/// the declared licenses of those whose copyright file
/// (`usr/share/doc/<package>/copyright`) is DEP-5 ([`super::license`]),
/// and the license references those use.
pub fn packages_of(tar: &Utf8Path) -> Result<Packages> {
    const STATUS: &str = "var/lib/dpkg/status";
    let copyright = |p: &str| -> Option<String> {
        let pkg = p
            .strip_prefix("usr/share/doc/")?
            .strip_suffix("/copyright")?;
        (!pkg.contains('/')).then(|| pkg.to_string())
    };
    let files =
        crate::qcow2::merge::read_from_rootfs(tar, |p| p == STATUS || copyright(p).is_some())
            .with_context(|| format!("reading dpkg's status from the root file system {tar}"))?;
    let status = files
        .get(STATUS)
        .with_context(|| format!("{tar} holds no /{STATUS}: not a Debian root"))?;
    let text = String::from_utf8_lossy(status);
    let packages = crate::scan::dpkg::installed(&text);
    let mut licenses = BTreeMap::new();
    let mut refs = BTreeMap::new();
    for p in &packages {
        let Some(data) = files.get(&format!("usr/share/doc/{}/copyright", p.name)) else {
            continue;
        };
        if let Some(d) = super::license::declared(&String::from_utf8_lossy(data)) {
            licenses.insert(p.name.clone(), d.expression);
            refs.extend(d.refs);
        }
    }
    Ok(Packages {
        packages,
        licenses,
        license_refs: refs,
    })
}

/// What [`packages_of`] reads from a root: its packages, their declared
/// licenses and the license references those use (as in [`Root`]).
pub struct Packages {
    pub packages: Vec<Installed>,
    pub licenses: BTreeMap<String, String>,
    pub license_refs: BTreeMap<String, String>,
}

fn model(rec: &ModelRecord) -> Model {
    let sha256 = match &rec.sha256 {
        Some(h) => h.clone(),
        None => {
            let mut files: Vec<_> = rec.files.iter().collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let sums: String = files
                .iter()
                .map(|f| crate::digest::sha256sum_line(&f.sha256, &f.path))
                .collect();
            crate::digest::bytes_sha256(sums.as_bytes())
        }
    };
    Model {
        name: rec.name.clone(),
        revision: rec.revision.clone(),
        packaging: rec.packaging,
        sha256,
        files: rec.files.len(),
    }
}
