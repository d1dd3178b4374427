use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Test;
use crate::tools::Target;

/// Ensure the tools, then `cargo test --workspace`.
pub fn run(_cx: &Cx, t: Test) -> Result<()> {
    if !crate::doctor::missing(Target::Test).is_empty() || crate::doctor::needs_binfmt(Target::Test)
    {
        if t.no_install {
            crate::doctor::require(Target::Test)?;
        }
        crate::ui::info("installing missing or too old test tools (doctor --install)");
        crate::doctor::install(Target::Test)?;
    }
    crate::tools::run(&crate::tools::cargo::test(&t.cargo_args))?;
    Ok(())
}
