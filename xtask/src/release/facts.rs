//! What a release records, gathered once from the plan that ran and the
//! files it published: the manifest, the SBOMs and the provenance are
//! written from these facts, so they agree with each other and with
//! `SHA256SUMS`. Nothing here names a location or reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::Source;
use crate::export::models::ModelRecord;
use crate::export::ImageRecord;
use crate::plan::{Input, Plan};
use crate::recipe::payloads::ModelPackaging;
use crate::recipe::{Arch, Resolved};
use crate::scan::dpkg::Installed;
use crate::targets::Format;

/// A file of the release: its name in the directory, size and sha256.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileFact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One step of the plan: its name, key, and inputs as the key hashes them.
#[derive(Debug, Clone, Serialize)]
pub struct StepFact {
    pub name: String,
    pub key: String,
    pub inputs: serde_json::Value,
}

/// A Debian root file system and the packages dpkg installed in it.
#[derive(Debug, Clone, Serialize)]
pub struct Root {
    pub arch: Arch,
    pub step: String,
    pub packages: Vec<Installed>,
}

/// A container image carried for `arch`.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub arch: Arch,
    #[serde(flatten)]
    pub record: ImageRecord,
}

/// A model: its archive's sha256, or for a model shipped as files the
/// sha256 of its `SHA256SUMS` (one `sha256sum` line per file, by path).
#[derive(Debug, Clone, Serialize)]
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

pub struct Facts {
    pub name: String,
    pub version: String,
    pub formats: Vec<Format>,
    pub source: Source,
    pub allow_dirty: bool,
    pub epoch: i64,
    /// The recipe file, relative to the project root when inside it.
    pub recipe_path: String,
    pub recipe_sha256: String,
    pub code_fingerprint: String,
    /// Every external program a step runs, with its version line.
    pub tools: BTreeMap<String, String>,
    pub steps: Vec<StepFact>,
    pub dependencies: Vec<Dependency>,
    pub roots: Vec<Root>,
    /// Architectures the release carries a staged tree or a root for.
    pub arches: Vec<Arch>,
    pub images: Vec<Image>,
    pub models: Vec<Model>,
    pub artifacts: Vec<FileFact>,
    /// `--check-reproducible` ran and every artifact was identical.
    pub reproduced: Option<super::reproduce::Verdict>,
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
pub fn gather(
    r: &Resolved,
    plan: &Plan,
    formats: &[Format],
    source: &Source,
    allow_dirty: bool,
    artifacts: Vec<FileFact>,
    reproduced: Option<super::reproduce::Verdict>,
) -> Result<Facts> {
    let mut tools = BTreeMap::new();
    let mut deps = BTreeSet::new();
    let mut steps = Vec::new();
    for s in &plan.steps {
        let inputs = s.inputs_relocated(&plan.root, &plan.cache);
        for i in inputs.as_array().into_iter().flatten() {
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
        steps.push(StepFact {
            name: s.name.clone(),
            key: s.key.clone(),
            inputs,
        });
    }
    let mut roots = Vec::new();
    let mut arches = BTreeSet::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        if plan.find(&crate::stage::step_name(arch)).is_some() {
            arches.insert(arch);
        }
        let Some(step) = plan.find(&crate::qcow2::rootfs::step_name(arch)) else {
            continue;
        };
        arches.insert(arch);
        let tar = step.output(crate::qcow2::rootfs::ROOTFS_TAR);
        roots.push(Root {
            arch,
            step: step.name.clone(),
            packages: packages_of(&tar)?,
        });
    }
    let mut images = Vec::new();
    for arch in &arches {
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
    Ok(Facts {
        name: r.name().to_string(),
        version: r.version.clone(),
        formats: formats.to_vec(),
        source: source.clone(),
        allow_dirty,
        epoch: r.epoch,
        recipe_sha256: crate::digest::file_sha256(&r.file)
            .with_context(|| format!("reading the recipe {} for the release", r.file))?,
        recipe_path,
        code_fingerprint: crate::plan::code_fingerprint(),
        tools,
        steps,
        dependencies: deps.into_iter().collect(),
        roots,
        arches: arches.into_iter().collect(),
        images,
        models,
        artifacts,
        reproduced,
    })
}

/// The packages dpkg installed in a root tarball (its `var/lib/dpkg/status`).
pub fn packages_of(tar: &Utf8Path) -> Result<Vec<Installed>> {
    const STATUS: &str = "var/lib/dpkg/status";
    let files = crate::qcow2::merge::read_from_rootfs(tar, |p| p == STATUS)
        .with_context(|| format!("reading dpkg's status from the root file system {tar}"))?;
    let status = files
        .get(STATUS)
        .with_context(|| format!("{tar} holds no /{STATUS}: not a Debian root"))?;
    let text = String::from_utf8_lossy(status);
    Ok(crate::scan::dpkg::installed(&text))
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
