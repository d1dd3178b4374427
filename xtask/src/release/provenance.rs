//! `<name>-<version>.provenance.json`: an in-toto Statement v1 whose
//! predicate is SLSA Provenance v1. Its subjects are the release's files
//! (artifacts, SBOMs, manifest) with the sha256s `SHA256SUMS` lists; its
//! build definition names the recipe and targets (external parameters) and
//! every file and tree the plan read, by sha256 (resolved dependencies).
//! No clock, host or path outside the project is in it.

use serde_json::{json, Value};

use super::facts::{Facts, FileFact};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a kiln release build is (a URI naming it, on a reserved domain:
/// RFC 2606), and who builds it.
pub const BUILD_TYPE: &str = "https://kiln.invalid/release/v1";
pub const BUILDER_ID: &str = "https://kiln.invalid/builder/cargo-xtask-release";

pub fn statement(f: &Facts, subjects: &[FileFact]) -> Value {
    let subject: Vec<Value> = subjects
        .iter()
        .map(|s| json!({ "name": s.name, "digest": { "sha256": s.sha256 } }))
        .collect();
    let mut deps: Vec<Value> = Vec::new();
    if let Some(rev) = &f.source.revision {
        deps.push(json!({ "name": "source", "digest": { "gitCommit": rev } }));
    }
    deps.push(json!({ "name": f.recipe_path, "digest": { "sha256": f.recipe_sha256 } }));
    deps.extend(
        f.derived
            .dependencies
            .iter()
            .map(|d| json!({ "name": d.name, "digest": { "sha256": d.sha256 } })),
    );
    for img in &f.images {
        let r = &img.record;
        let hex = r.manifest_digest.trim_start_matches("sha256:");
        deps.push(json!({
            "name": format!("image {} ({})", r.name, r.platform),
            "digest": { "sha256": hex },
            "annotations": { "source": r.source, "reference": r.reference },
        }));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": { "path": f.recipe_path, "sha256": f.recipe_sha256 },
                    "targets": f.formats.iter().map(|t| t.name()).collect::<Vec<_>>(),
                    "architectures": f.architectures,
                    "allowDirty": f.allow_dirty,
                },
                "internalParameters": {
                    "SOURCE_DATE_EPOCH": f.epoch,
                    "dirty": f.source.dirty,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": { "kiln": f.code_fingerprint },
                },
            },
        },
    })
}
