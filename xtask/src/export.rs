//! Payload export: container-image archives and ML-model archives written
//! into a tree that `stage` merges, so every format carries the same bytes.

use anyhow::Result;

use crate::plan::Plan;
use crate::recipe::{Arch, Resolved};

/// The tree inside an export step's output that `stage` merges.
pub const TREE: &str = "tree";

/// Add one export step per payload; returns their indices.
pub fn plan(r: &Resolved, _plan: &mut Plan, _arch: Arch) -> Result<Vec<usize>> {
    let p = &r.recipe.payloads;
    anyhow::ensure!(
        p.images.is_empty() && p.models.is_empty(),
        "{}: payload export is not implemented yet",
        r.file
    );
    Ok(Vec::new())
}
