use anyhow::Result;

use crate::cx::Cx;
use crate::flags::RecipeCmd;
use crate::recipe::qcow2::Base;

pub fn run(cx: &Cx, c: RecipeCmd) -> Result<()> {
    match c {
        RecipeCmd::Show { file } => {
            let file = match file {
                Some(p) => Cx::locate_recipe(&cx.root, &p)?,
                None => cx.recipe_file.clone(),
            };
            let r = crate::recipe::load_resolved(&file, &cx.root)?;
            // No mirror is no error until a step needs one; say so anyway.
            let q = &r.recipe.qcow2;
            if let (Base::Packages, Err(e)) = (&q.base, q.mirror()) {
                crate::ui::warn(&format!("{e:#}"));
            }
            if cx.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", yaml_serde::to_string(&r)?);
            }
            Ok(())
        }
    }
}
