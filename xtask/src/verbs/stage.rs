use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Stage;

/// `stage` publishes `<name>-<version>-<arch>.overlay.tar.zst` (+ .sha256) into
/// the output directory; the tree itself stays in the step cache.
pub fn run(cx: &Cx, s: Stage) -> Result<()> {
    let r = cx.recipe()?;
    let mut plan = cx.plan("stage");
    let arches = match s.arch {
        Some(a) => vec![a],
        None => r.recipe.architectures.clone(),
    };
    for a in arches {
        let i = crate::stage::plan(&r, &mut plan, a)?;
        let from = plan.step(i).output(crate::stage::TARBALL);
        plan.publish(from, r.artifact_name(a, "overlay.tar.zst"), true);
    }
    let gate = crate::scan::gate(&r);
    cx.run_plan(&plan, Some(&gate))?;
    Ok(())
}
