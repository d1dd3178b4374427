//! The `container` case: a container image from Debian packages
//! (`source: { debian: … }`, the demo web server's `busybox-static` with
//! variant `extract` and a small overlay), built cold in a private cache
//! (mmdebstrap, layer filter, docker-archive), against a bare `mmdebstrap` of
//! the same packages and variant into a tar, in alternating rounds whose
//! medians are compared. Goal: ≤ 1.2×.

use anyhow::{Context, Result};
use camino::Utf8Path;

use super::{timed, BenchCx, Measurement};
use crate::plan::Plan;
use crate::recipe::payloads::ImageSource;
use crate::recipe::Arch;

/// Goal: kiln's cold image build at most this many times the bare mmdebstrap.
const GOAL: f64 = 1.2;
/// Alternating rounds of baseline and kiln (medians are compared).
const ROUNDS: usize = 3;

const RECIPE: &str = "appliance:
  name: bench
  version: '1'
architectures: [amd64]
payloads:
  images:
    - name: web
      source:
        debian:
          packages: [busybox-static]
          variant: extract
          overlay: payloads/web
      cmd: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /srv/www]
      exposed_ports: [\"8080\"]
      dest: /opt/demo/images
";

pub fn debian_image(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    crate::tools::require(&["mmdebstrap"])?;
    let root = bcx.scratch.join("container-bench");
    let _ = std::fs::remove_dir_all(&root);
    let www = root.join("payloads/web/srv/www");
    std::fs::create_dir_all(&www).with_context(|| format!("creating {www}"))?;
    std::fs::write(www.join("index.html"), "<h1>bench</h1>\n")?;
    std::fs::write(www.join("healthz"), "ok")?;
    let recipe = root.join("recipes/bench.yaml");
    std::fs::create_dir_all(root.join("recipes"))?;
    std::fs::write(&recipe, RECIPE)?;
    let r = crate::recipe::load_resolved(&recipe, &root)?;
    let img = &r.recipe.payloads.images[0];
    let ImageSource::Debian(d) = &img.source else {
        unreachable!("the bench recipe has a debian source")
    };
    let arch = Arch::Amd64;
    let mirrors = crate::qcow2::rootfs::suite_lines(&r, d.suite(), "main")?;
    let bare_out = bcx.scratch.join("container-bare.tar");
    let cache = root.join("cache");
    let fresh = |p: &Utf8Path| {
        let _ = std::fs::remove_dir_all(p);
        let _ = std::fs::remove_file(p);
    };
    let (size, kiln, base) = super::alternating(
        ROUNDS,
        || {
            fresh(&bare_out);
            let c = crate::tools::mmdebstrap::image_root_tar(
                arch.debian(),
                d.suite(),
                d.variant.name(),
                &d.packages,
                &mirrors,
                &bare_out,
                r.epoch,
            );
            let (_, t) = timed(|| crate::tools::run(&c))?;
            Ok(t)
        },
        || {
            fresh(&cache);
            timed(|| {
                let mut plan = Plan::new("stage", &recipe, &root, &cache, &root.join("output"));
                crate::export::plan(&r, &mut plan, arch)?;
                crate::exec::execute(&plan, &crate::exec::Options::default())?;
                let step = plan
                    .find(&format!("image-web-{arch}"))
                    .context("the image step")?;
                let archive =
                    crate::export::tree_dir(&step.out, &img.dest).join(img.archive_name(arch));
                Ok(std::fs::metadata(&archive)
                    .with_context(|| format!("{archive}: kiln wrote no archive"))?
                    .len())
            })
        },
    )?;
    anyhow::ensure!(size > 0, "kiln wrote an empty archive");
    fresh(&bare_out);
    fresh(&root);
    Ok(vec![Measurement::time(
        "container",
        &format!(
            "kiln image from Debian packages, cold, private cache (mmdebstrap + layer + \
             docker-archive, {size} bytes; median of {ROUNDS})"
        ),
        kiln,
        "bare mmdebstrap --variant=extract busybox-static into a tar",
        base,
        GOAL,
    )])
}
