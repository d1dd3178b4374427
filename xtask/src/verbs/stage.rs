use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Stage;

/// `stage` publishes `<name>-<version>-<arch>.overlay.tar.zst` (+ .sha256) into
/// the output directory; the tree itself stays in the step cache.
pub fn run(cx: &Cx, s: Stage) -> Result<()> {
    let r = cx.recipe()?;
    let arches = match s.arch {
        Some(a) => vec![a],
        None => r.recipe.architectures.clone(),
    };
    let make = || {
        let mut plan = cx.plan("stage");
        for &a in &arches {
            crate::stage::plan_published(&r, &mut plan, a)?;
        }
        Ok(plan)
    };
    let gate = crate::scan::gate(&r);
    cx.execute(make, Some(&gate))?;
    Ok(())
}
