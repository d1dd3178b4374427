use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Test;
use crate::tools::registry::{self, Target};

/// Ensure the test tools (installing them as root unless `--no-install`),
/// then `cargo test --workspace`.
pub fn run(cx: &Cx, t: Test) -> Result<()> {
    let needs: Vec<String> = registry::for_target(Target::Test)
        .iter()
        .filter(|r| r.manual.is_none())
        .map(|r| r.name.to_string())
        .collect();
    crate::doctor::ensure(&needs, "`cargo xtask test`", cx.no_install)?;
    crate::tools::run(&crate::tools::cargo::test(&t.cargo_args))?;
    Ok(())
}
