//! `<name>-<version>.manifest.json`: everything the release was built from
//! and everything it holds, for an auditor and for a rebuild: the recipe's
//! digest, the git revision and dirty flag, `SOURCE_DATE_EPOCH`, every
//! step of the plan with its key and inputs (by digest), every external
//! tool's version, kiln's code fingerprint, the Debian packages of each root
//! file system, the container images and models, every artifact, and
//! whether `--check-reproducible` rebuilt them all to the same bytes.
//!
//! One type, [`Manifest`], is both what is written and what is read back
//! ([`read`]): `release assemble` takes its parts' facts from their
//! manifests, so the manifest holds every fact the documents are written
//! from.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::facts::{Derived, Facts, FileFact, Image, Model, Root, StepFact, Verdict};
use super::Source;
use crate::recipe::Arch;
use crate::targets::Format;

/// The manifest's format; bump when a field changes meaning.
pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// The formats built (`--targets` names).
    pub targets: Vec<String>,
    /// The architectures they were built for.
    pub architectures: Vec<Arch>,
    pub appliance: Appliance,
    pub recipe: RecipeRef,
    pub source: SourceRef,
    pub source_date_epoch: i64,
    pub kiln: Kiln,
    pub tools: BTreeMap<String, String>,
    pub steps: Vec<StepFact>,
    pub roots: Vec<Root>,
    pub images: Vec<Image>,
    pub models: Vec<Model>,
    pub artifacts: Vec<FileFact>,
    pub sboms: Vec<FileFact>,
    /// [`reproducibility`]: `{"checked": false}`, or the check's verdict.
    pub reproducibility: Value,
    /// The signature over `SHA256SUMS`, when the release is signed (absent
    /// otherwise, so an unsigned release's manifest is as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureRef>,
}

/// How a release is signed: by whom (the key id; the public key is
/// published apart from the release), what and where.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRef {
    /// `minisign`.
    pub format: String,
    pub key_id: String,
    /// The file signed (`SHA256SUMS`).
    pub signs: String,
    /// The signature file (`SHA256SUMS.minisig`).
    pub file: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    pub description: Option<String>,
    pub vendor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeRef {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    pub revision: Option<String>,
    pub dirty: Option<bool>,
    pub allow_dirty: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kiln {
    pub code_fingerprint: String,
}

pub fn document(f: &Facts, sboms: &[FileFact]) -> Value {
    let m = Manifest {
        format: FORMAT,
        name: f.name.clone(),
        version: f.version.clone(),
        targets: f.formats.iter().map(|t| t.name().to_string()).collect(),
        architectures: f.architectures.clone(),
        appliance: Appliance {
            description: f.description.clone(),
            vendor: f.vendor.clone(),
        },
        recipe: RecipeRef {
            path: f.recipe_path.clone(),
            sha256: f.recipe_sha256.clone(),
        },
        source: SourceRef {
            revision: f.source.revision.clone(),
            dirty: f.source.dirty,
            allow_dirty: f.allow_dirty,
        },
        source_date_epoch: f.epoch,
        kiln: Kiln {
            code_fingerprint: f.code_fingerprint.clone(),
        },
        tools: f.derived.tools.clone(),
        steps: f.steps.clone(),
        roots: f.roots.clone(),
        images: f.images.clone(),
        models: f.models.clone(),
        artifacts: f.artifacts.clone(),
        sboms: sboms.to_vec(),
        reproducibility: reproducibility(f),
        signature: f.signed_by.as_ref().map(|id| SignatureRef {
            format: "minisign".into(),
            key_id: id.clone(),
            signs: super::SUMS.into(),
            file: super::sign::SIG.into(),
        }),
    };
    // Through a `Value`: its objects keep their keys sorted, as every
    // document of the release does.
    serde_json::to_value(&m).expect("a manifest serializes")
}

/// The facts a manifest records, and the SBOMs it lists; `what` names the
/// manifest in errors.
pub fn read(text: &str, what: &str) -> Result<(Facts, Vec<FileFact>)> {
    let head: Value = serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))?;
    let format = head.get("format").and_then(Value::as_u64);
    if format != Some(u64::from(FORMAT)) {
        bail!(
            "{what} is a manifest of format {}, this kiln reads format {FORMAT}: \
             assemble with the kiln that made it",
            format.map_or("(none)".to_string(), |f| f.to_string())
        );
    }
    let m: Manifest = serde_json::from_value(head)
        .with_context(|| format!("{what} is not a kiln release manifest"))?;
    let formats = m
        .targets
        .iter()
        .map(|t| Format::from_name(t).with_context(|| format!("{what}: unknown target `{t}`")))
        .collect::<Result<Vec<_>>>()?;
    let derived = Derived::of(&m.steps).with_context(|| format!("reading {what}"))?;
    if derived.tools != m.tools {
        bail!("{what}: its tools are not the ones its steps ran");
    }
    let facts = Facts {
        name: m.name,
        version: m.version,
        formats,
        architectures: m.architectures,
        description: m.appliance.description,
        vendor: m.appliance.vendor,
        source: Source {
            revision: m.source.revision,
            dirty: m.source.dirty,
        },
        allow_dirty: m.source.allow_dirty,
        epoch: m.source_date_epoch,
        recipe_path: m.recipe.path,
        recipe_sha256: m.recipe.sha256,
        code_fingerprint: m.kiln.code_fingerprint,
        steps: m.steps,
        derived,
        roots: m.roots,
        images: m.images,
        models: m.models,
        artifacts: m.artifacts,
        reproduced: reproduced(&m.reproducibility).with_context(|| format!("reading {what}"))?,
        signed_by: m.signature.map(|s| s.key_id),
    };
    Ok((facts, m.sboms))
}

/// Whether `--check-reproducible` ran: a second build from a copy of the
/// project at another path, in a fresh step cache, gave every artifact
/// byte for byte (a release whose check fails is not written at all).
fn reproducibility(f: &Facts) -> Value {
    match &f.reproduced {
        None => json!({ "checked": false }),
        Some(v) => json!({
            "checked": true,
            "identical": true,
            "second_build": "a copy of the project at another path, a fresh step cache",
            "artifacts": v
                .artifacts
                .iter()
                .map(|(name, sha256)| json!({ "name": name, "sha256": sha256 }))
                .collect::<Vec<_>>(),
        }),
    }
}

/// The verdict [`reproducibility`] recorded, read back.
fn reproduced(v: &Value) -> Result<Option<Verdict>> {
    if v.get("checked").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let artifacts = v
        .get("artifacts")
        .and_then(Value::as_array)
        .context("the reproducibility check lists no artifacts")?
        .iter()
        .map(|a| {
            let field = |k: &str| {
                a.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("a reproducibility entry without `{k}`"))
            };
            Ok((field("name")?, field("sha256")?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Verdict { artifacts }))
}
