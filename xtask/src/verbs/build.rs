//! `cargo xtask build`: every format the recipe builds, in one plan.

use anyhow::Result;

use crate::cx::Cx;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(cx: &Cx, _a: Args) -> Result<()> {
    let r = cx.recipe()?;
    let mut plan = cx.plan("build");
    for a in r.recipe.architectures.clone() {
        crate::stage::plan(&r, &mut plan, a)?;
    }
    cx.run_plan(&plan, None)?;
    Ok(())
}
