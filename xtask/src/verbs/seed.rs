//! `cargo xtask seed`.

use anyhow::Result;
use serde_json::json;

use crate::cx::Cx;
use crate::seed::{self, SeedTarget};

/// Write and validate the NoCloud seeds (autoinstall user-data for the ISO; cloud-init user-data, meta-data and cidata ISO/FAT images for qcow2 and Pi).
///
/// Write and validate the NoCloud seeds into the build tree, and print where.
///
/// `iso`: the Ubuntu autoinstall `user-data` (`#cloud-config` + `autoinstall:`)
/// and `meta-data` that the installer ISO carries under `/nocloud/`.
/// `qcow2`, `pi`: the cloud-init `user-data`, `meta-data` and optional
/// `network-config`, packaged as `cidata.iso` (volume label `cidata`) and
/// `cidata.img` (FAT, label `CIDATA`, editable with mtools): the config
/// carrier an operator attaches at first boot.
///
/// Every seed is validated first (YAML, `#cloud-config` header, autoinstall
/// keys and types, baked passwords, YAML 1.1 traps, then `cloud-init schema`);
/// errors name the file, line and column. Settings: the recipe's `seed:`
/// section (`cargo xtask recipe show`); templates: `nocloud/`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which seed to write [default: all of iso, qcow2, pi].
    #[arg(long, value_enum)]
    pub target: Option<SeedTarget>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    let targets = match a.target {
        Some(t) => vec![t],
        None => vec![SeedTarget::Iso, SeedTarget::Qcow2, SeedTarget::Pi],
    };
    let make = || {
        let mut plan = cx.plan("seed");
        for t in &targets {
            seed::plan(&r, &mut plan, *t)?;
        }
        Ok(plan)
    };
    let (plan, _) = cx.execute(make, None)?;
    if cx.dry_run {
        return Ok(());
    }
    let mut report = Vec::new();
    for &t in &targets {
        let st = plan
            .find(&seed::step_name(t))
            .expect("the seed plan has a step per target");
        let mut files: Vec<String> = std::fs::read_dir(&st.out)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        files.sort();
        if cx.json {
            report.push(json!({ "target": t, "dir": st.out, "files": files }));
        } else {
            println!("{t}: {}", st.out);
            for f in files {
                println!("  {}", st.out.join(f));
            }
        }
    }
    if cx.json {
        // One line after the executor's own JSON line.
        println!("{}", serde_json::to_string(&json!({ "seeds": report }))?);
    }
    Ok(())
}
