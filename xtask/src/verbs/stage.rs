use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Stage;

pub fn run(cx: &Cx, s: Stage) -> Result<()> {
    let r = cx.recipe()?;
    let mut plan = cx.plan("stage");
    let arches = match s.arch {
        Some(a) => vec![a],
        None => r.recipe.architectures.clone(),
    };
    let mut steps = Vec::new();
    for a in arches {
        steps.push(crate::stage::plan(&r, &mut plan, a)?);
    }
    cx.run_plan(&plan, None)?;
    if !cx.dry_run && !cx.json {
        for i in steps {
            let st = plan.step(i);
            println!("{}", st.output(crate::stage::TARBALL));
        }
    }
    Ok(())
}
