use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Test;
use crate::tools::registry::{self, Target};

/// Ensure the test tools (installing them as root unless `--no-install`),
/// then run the suite: every test binary of the workspace, side by side
/// ([`crate::suite`]).
pub fn run(cx: &Cx, t: Test) -> Result<()> {
    let needs: Vec<String> = registry::for_target(Target::Test)
        .iter()
        .filter(|r| r.manual.is_none())
        .map(|r| r.name.to_string())
        .collect();
    crate::doctor::ensure(&needs, "`cargo xtask test`", cx.no_install)?;
    crate::suite::run(&t.cargo_args)
}
