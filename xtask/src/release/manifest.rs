//! `<name>-<version>.manifest.json`: everything the release was built from
//! and everything it holds, for an auditor and for a rebuild: the recipe's
//! digest, the git revision and dirty flag, `SOURCE_DATE_EPOCH`, every
//! step of the plan with its key and inputs (by digest), every external
//! tool's version, kiln's code fingerprint, the Debian packages of each root
//! file system, the container images and models, every artifact, and
//! whether `--check-reproducible` rebuilt them all to the same bytes.

use serde_json::{json, Value};

use super::facts::{Facts, FileFact};
use crate::recipe::Resolved;

/// The manifest's format; bump when a field changes meaning.
pub const FORMAT: u32 = 1;

pub fn document(_r: &Resolved, f: &Facts, sboms: &[FileFact]) -> Value {
    let roots: Vec<Value> = f
        .roots
        .iter()
        .map(|root| {
            json!({
                "architecture": root.arch,
                "step": root.step,
                "packages": root.packages,
            })
        })
        .collect();
    json!({
        "format": FORMAT,
        "name": f.name,
        "version": f.version,
        "targets": f.formats.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "recipe": { "path": f.recipe_path, "sha256": f.recipe_sha256 },
        "source": {
            "revision": f.source.revision,
            "dirty": f.source.dirty,
            "allow_dirty": f.allow_dirty,
        },
        "source_date_epoch": f.epoch,
        "kiln": { "code_fingerprint": f.code_fingerprint },
        "tools": f.tools,
        "steps": f.steps,
        "roots": roots,
        "images": f.images,
        "models": f.models,
        "artifacts": f.artifacts,
        "sboms": sboms,
        "reproducibility": reproducibility(f),
    })
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
