//! qcow2 bench cases (issue: cold build ≤ 1.3× a bare mmdebstrap of the same
//! packages, warm rebuild after one overlay change ≤ 20 s, no-op ≤ 2 s).
//! The input is a copy of the demo project with a small disk, generated in
//! the scratch directory; the baseline runs in the same process, same run.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{timed, BenchCx, Measurement};
use crate::plan::Plan;
use crate::recipe::Arch;

struct Project {
    root: Utf8PathBuf,
    recipe: Utf8PathBuf,
}

fn demo_project(scratch: &Utf8Path) -> Result<Project> {
    let root = scratch.join("qcow2-bench");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {root}"))?;
    }
    let src = crate::cx::workspace_root();
    for d in ["overlay", "systemd", "nocloud", "recipes", "payloads"] {
        copy_dir(&src.join(d), &root.join(d))?;
    }
    let demo = std::fs::read_to_string(root.join("recipes/demo.yaml"))?;
    let recipe = root.join("recipes/bench-qcow2.yaml");
    std::fs::write(&recipe, format!("{demo}\nqcow2:\n  size: 2G\n"))?;
    Ok(Project { root, recipe })
}

fn copy_dir(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    for (rel, md) in crate::digest::walk_sorted(from)? {
        let (s, d) = (from.join(&rel), to.join(&rel));
        if md.is_dir() {
            std::fs::create_dir_all(&d)?;
        } else if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else {
            std::fs::create_dir_all(d.parent().expect("has parent"))?;
            std::fs::copy(&s, &d).with_context(|| format!("copying {s}"))?;
        }
    }
    Ok(())
}

fn build(p: &Project) -> Result<Plan> {
    let r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    let mut plan = Plan::new(
        "qcow2",
        &p.recipe,
        &p.root.join("cache"),
        &p.root.join("output"),
    );
    crate::qcow2::plan(&r, &mut plan, Arch::Amd64)?;
    crate::exec::execute(&plan, &crate::exec::Options::default())?;
    Ok(plan)
}

/// Cold build vs bare mmdebstrap; warm rebuild after one overlay change; no-op.
pub fn qcow2_builds(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let p = demo_project(bcx.scratch)?;
    let r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    let q = &r.recipe.qcow2;
    let packages = q.packages_for(Arch::Amd64);
    let mirrors = crate::qcow2::rootfs::mirror_lines(&r, Utf8Path::new("/etc/apt"))?;
    let bare_out = bcx.scratch.join("bare-mmdebstrap.tar");
    let bare = crate::tools::mmdebstrap::rootfs_tar(
        "amd64", &q.suite, &packages, &mirrors, &bare_out, r.epoch, false,
    );
    let (_, base) = timed(|| crate::tools::run(&bare))?;
    let _ = std::fs::remove_file(&bare_out);

    let (_, cold) = timed(|| build(&p))?;
    let mut ms = vec![Measurement::time(
        "qcow2 cold build",
        "kiln qcow2 (mmdebstrap + assembly + zstd qcow2)",
        cold,
        "bare mmdebstrap, same packages",
        base,
        1.3,
    )];

    let f = p.root.join("overlay/etc/demo/README");
    let mut text = std::fs::read_to_string(&f).unwrap_or_default();
    text.push_str("\nchanged for the warm-rebuild bench\n");
    std::fs::write(&f, text)?;
    let (_, warm) = timed(|| build(&p))?;
    ms.push(Measurement::within_secs(
        "qcow2 warm rebuild",
        "one overlay file changed",
        warm,
        "cold build (ratio)",
        cold,
        20.0,
    ));

    let (_, noop) = timed(|| build(&p))?;
    ms.push(Measurement::within_secs(
        "qcow2 no-op rebuild",
        "nothing changed",
        noop,
        "cold build (ratio)",
        cold,
        2.0,
    ));
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(ms)
}
