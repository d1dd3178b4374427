//! Seeds: the autoinstall `user-data` for the ISO and the cloud-init NoCloud
//! seed for qcow2/Pi, generated from the recipe and validated.
//!
//! Contract for consumers (iso, qcow2, pi): [`plan`] adds a step whose output
//! directory holds `user-data` and `meta-data` (and for cloud-init targets
//! `cidata.iso` and `cidata.img`).

use anyhow::Result;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::recipe::Resolved;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedTarget {
    Iso,
    Qcow2,
    Pi,
}

struct Minimal {
    user_data: String,
    meta_data: String,
}

impl Op for Minimal {
    fn describe(&self) -> serde_json::Value {
        json!({ "seed": { "user-data": self.user_data, "meta-data": self.meta_data } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        std::fs::write(cx.out.join("user-data"), &self.user_data)?;
        std::fs::write(cx.out.join("meta-data"), &self.meta_data)?;
        Ok(())
    }
}

/// Add the seed step for `target`; returns its index.
pub fn plan(r: &Resolved, plan: &mut Plan, target: SeedTarget) -> Result<usize> {
    let name = r.name();
    let user_data = match target {
        SeedTarget::Iso => "#cloud-config\nautoinstall:\n  version: 1\n".to_string(),
        _ => "#cloud-config\n".to_string(),
    };
    let meta_data = format!("instance-id: {name}\nlocal-hostname: {name}\n");
    let step = StepBuilder::new(
        format!("seed-{target:?}").to_lowercase(),
        "write the NoCloud seed",
    )
    .input(Input::value("version", &r.version))
    .op(Minimal {
        user_data,
        meta_data,
    });
    Ok(plan.add(step))
}
