//! Builder 2: customize a vendor cloud image (Debian genericcloud, Ubuntu
//! cloud image, …) — the seed's way, made safe: the base is sha256-verified
//! (downloads are cached), checked with `qemu-img check`, converted and
//! resized, then changed in **one** virt-customize run (staged tree copied
//! in, packages, identity reset with machine-id truncated last, cloud-init
//! clean), then `virt-sparsify --in-place`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder, OUT};
use crate::recipe::iso::Source;
use crate::recipe::{Arch, Resolved};
use crate::tools::{self, Cmd};

/// The customized disk inside the customize step's output.
pub const CUSTOMIZED: &str = "customized.qcow2";
/// The downloaded base inside the download step's output.
const DOWNLOADED: &str = "base.img";

/// Add the download (for a URL) and customize steps; returns the customize
/// step's index.
pub fn plan(
    r: &Resolved,
    plan: &mut Plan,
    arch: Arch,
    src: &Source,
    stage: usize,
    name: &str,
) -> Result<usize> {
    let q = &r.recipe.qcow2;
    let (base, base_input) = match (&src.path, &src.url) {
        (Some(p), _) => {
            let p = r.path(p);
            if !p.is_file() {
                bail!("{}: qcow2.base.image.path {p} does not exist", r.file);
            }
            // Hashed now, so a mismatch fails before any work.
            let input = Input::file(&p)?;
            if let Input::File { sha256, .. } = &input {
                if !sha256.eq_ignore_ascii_case(&src.sha256) {
                    bail!(
                        "{}: qcow2.base.image {p} has sha256 {sha256}, but the recipe pins {}; \
                         refusing to build from an unverified base",
                        r.file,
                        src.sha256
                    );
                }
            }
            (p, input)
        }
        (None, Some(url)) => {
            let b = StepBuilder::new(format!("qcow2-base-{arch}"), format!("download {url}"))
                .input(Input::value("url", url))
                .input(Input::value("sha256", &src.sha256))
                .cmd(tools::virt_customize::download(
                    url,
                    &Utf8Path::new(OUT).join(DOWNLOADED),
                ))
                .op(Verify {
                    file: DOWNLOADED.into(),
                    sha256: src.sha256.to_lowercase(),
                    url: url.clone(),
                })
                .long();
            let i = plan.add(b);
            (plan.step(i).output(DOWNLOADED), Input::step(plan.step(i)))
        }
        (None, None) => bail!("{}: qcow2.base.image needs `path` or `url`", r.file),
    };
    if r.recipe.payloads.runs_containers()
        && !crate::recipe::payloads::RUNTIME_PACKAGES
            .iter()
            .all(|p| q.packages.iter().any(|x| x == p))
    {
        crate::ui::warn(&format!(
            "{}: payloads.images[].run: kiln does not add the container runtime to a vendor \
             image; unless the image has podman, its container units are skipped at boot (list \
             `podman` in qcow2.packages to install it)",
            r.file
        ));
    }
    let spec = CustomizeSpec {
        base,
        tree: plan.step(stage).output(crate::stage::TREE),
        size: q.size_bytes,
        hostname: q.hostname().to_string(),
        packages: q.packages.clone(),
        carrier: r.recipe.seed.has_cloud_init(),
    };
    let b = StepBuilder::new(name, "customize the vendor image with virt-customize")
        .input(base_input)
        .after(plan.step(stage))
        .op(CustomizeOp(spec))
        .long();
    let _ = arch;
    Ok(plan.add(b))
}

struct Verify {
    file: String,
    sha256: String,
    url: String,
}

impl Op for Verify {
    fn describe(&self) -> serde_json::Value {
        json!({ "verify-sha256": { "file": self.file, "sha256": self.sha256 } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let got = crate::digest::file_sha256(&cx.out.join(&self.file))?;
        if got != self.sha256 {
            bail!(
                "{} has sha256 {got}, but the recipe pins {}; the download is discarded",
                self.url,
                self.sha256
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
struct CustomizeSpec {
    base: Utf8PathBuf,
    tree: Utf8PathBuf,
    size: u64,
    hostname: String,
    packages: Vec<String>,
    /// The recipe has a cloud-init seed (the config carrier): the image is
    /// checked for cloud-init, which kiln does not add to a vendor image.
    carrier: bool,
}

/// What reads the config carrier in an image.
const CLOUD_INIT_BIN: &str = "/usr/bin/cloud-init";

struct CustomizeOp(CustomizeSpec);

/// The virt-customize commands, one per line (`--commands-from-file`);
/// `units` holds the first-boot units of [`crate::identity::IDENTITIES`]
/// ([`write_units`]).
fn commands(spec: &CustomizeSpec, top_level: &[String], units: &Utf8Path) -> String {
    let mut c = String::new();
    c.push_str(&format!("hostname {}\n", spec.hostname));
    if !spec.packages.is_empty() {
        c.push_str(&format!("install {}\n", spec.packages.join(",")));
    }
    for t in top_level {
        c.push_str(&format!("copy-in {}:/\n", spec.tree.join(t)));
    }
    // Identity reset, machine-id last: virt-customize itself writes one.
    c.push_str("link /dev/null:/etc/systemd/system/systemd-firstboot.service\n");
    c.push_str(
        "run-command if command -v cloud-init >/dev/null; then cloud-init clean --logs; fi\n",
    );
    c.push_str("run-command apt-get clean || true\n");
    c.push_str("run-command rm -rf /var/lib/apt/lists/* /var/lib/systemd/random-seed /var/lib/dbus/machine-id\n");
    // Per-install identities (SSH host keys, the snakeoil pair, …): the
    // vendor's and those the installed packages just made go; which packages
    // the image holds is known only inside it, so every unit is installed,
    // and each is skipped at boot when its package's program is missing.
    let sys = "/etc/systemd/system";
    for id in crate::identity::IDENTITIES {
        c.push_str(&format!("run-command {}\n", id.remove_sh()));
        let unit = id.unit_name();
        // `upload` keeps the local file's owner and mode.
        c.push_str(&format!("upload {}:{sys}/{unit}\n", units.join(&unit)));
        c.push_str(&format!("chmod 0644:{sys}/{unit}\n"));
        c.push_str(&format!("run-command chown root:root {sys}/{unit}\n"));
        for by in id.wanted_by() {
            c.push_str(&format!("mkdir {sys}/{by}.wants\n"));
            c.push_str(&format!("link {sys}/{unit}:{sys}/{by}.wants/{unit}\n"));
        }
    }
    c.push_str("truncate /etc/machine-id\n");
    c
}

impl Op for CustomizeOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "qcow2-customize": self.0 })
    }
    fn commands(&self) -> Vec<Cmd> {
        let spec = &self.0;
        let out = Utf8Path::new(OUT).join(CUSTOMIZED);
        let cmds = Utf8Path::new(OUT).join("customize.cmds");
        let network = !spec.packages.is_empty();
        let mut v = vec![
            tools::qemu_img::info_json(&spec.base),
            tools::qemu_img::check(&spec.base, "<format>"),
            tools::qemu_img::convert_to_qcow2(&spec.base, "<format>", &out, None),
            tools::qemu_img::info_json(&out),
            tools::qemu_img::resize(&out, "qcow2", spec.size),
        ];
        if Utf8Path::new("/dev/kvm").exists() {
            v.push(tools::virt_customize::kvm_probe(Utf8Path::new("<kernel>")));
        }
        for tcg in [true, false] {
            v.push(tools::virt_customize::customize(&out, &cmds, network, tcg));
            if spec.carrier {
                v.push(tools::virt_customize::has_file(&out, CLOUD_INIT_BIN, tcg));
            }
            v.push(tools::virt_customize::sparsify_in_place(&out, tcg));
        }
        v
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let spec = &self.0;
        // A corrupt base fails here, with qemu-img's report.
        let fmt = base_format(&spec.base)?;
        tools::run(&tools::qemu_img::check(&spec.base, &fmt)).with_context(|| {
            format!(
                "the vendor image {} is corrupt (`qemu-img check` failed)",
                spec.base
            )
        })?;
        let out = cx.out.join(CUSTOMIZED);
        tools::run(&tools::qemu_img::convert_to_qcow2(
            &spec.base, &fmt, &out, None,
        ))?;
        let vsize = virtual_size(&out)?;
        if spec.size < vsize {
            bail!(
                "qcow2.size ({} MiB) is smaller than the vendor image ({} MiB)",
                spec.size >> 20,
                vsize >> 20
            );
        }
        if spec.size > vsize {
            tools::run(&tools::qemu_img::resize(&out, "qcow2", spec.size))?;
        }
        let mut top: Vec<String> = Vec::new();
        for e in spec
            .tree
            .read_dir_utf8()
            .with_context(|| format!("listing {}", spec.tree))?
        {
            top.push(e?.file_name().to_string());
        }
        top.sort();
        let cmds_file = cx.out.join("customize.cmds");
        let units = cx.out.join("kiln-units");
        write_units(&units)?;
        std::fs::write(&cmds_file, commands(spec, &top, &units))?;
        let tcg = !kvm_usable();
        let cmd =
            tools::virt_customize::customize(&out, &cmds_file, !spec.packages.is_empty(), tcg);
        match tools::run_unchecked(&cmd)? {
            Ok(_) => {}
            Err(f) => {
                let log = format!(
                    "{}{}",
                    String::from_utf8_lossy(&f.stdout),
                    String::from_utf8_lossy(&f.stderr)
                );
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n  | ");
                bail!(
                    "virt-customize failed ({}):\n  {}\nlog (last lines):\n  | {tail}",
                    f.status,
                    f.command
                );
            }
        }
        if spec.carrier {
            let o = tools::run(&tools::virt_customize::has_file(&out, CLOUD_INIT_BIN, tcg))
                .with_context(|| {
                    format!("looking for cloud-init in the customized {}", spec.base)
                })?;
            if String::from_utf8_lossy(&o.stdout).trim() != "true" {
                crate::ui::warn(&format!(
                    "the vendor image {} has no cloud-init ({CLOUD_INIT_BIN}): its instances \
                     will not read the config carrier (cidata.iso, cidata.img) and mint every \
                     secret themselves; list `cloud-init` in qcow2.packages to install it, or \
                     use a cloud image that has it",
                    spec.base
                ));
            }
        }
        tools::run(&tools::virt_customize::sparsify_in_place(&out, tcg))?;
        std::fs::remove_file(&cmds_file)?;
        std::fs::remove_dir_all(&units).with_context(|| format!("removing {units}"))?;
        Ok(())
    }
}

/// Write the first-boot units of [`crate::identity::IDENTITIES`] into `dir`.
fn write_units(dir: &Utf8Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    for id in crate::identity::IDENTITIES {
        let f = dir.join(id.unit_name());
        std::fs::write(&f, id.unit()).with_context(|| format!("writing {f}"))?;
    }
    Ok(())
}

fn info(path: &Utf8Path) -> Result<serde_json::Value> {
    let o = tools::run(&tools::qemu_img::info_json(path))?;
    serde_json::from_slice(&o.stdout).with_context(|| format!("parsing `qemu-img info` of {path}"))
}

fn base_format(path: &Utf8Path) -> Result<String> {
    let v = info(path)?;
    let f = v["format"].as_str().unwrap_or("raw").to_string();
    match f.as_str() {
        "qcow2" | "raw" | "vmdk" | "vpc" | "vhdx" => Ok(f),
        other => bail!("{path}: `{other}` images are not supported as a vendor base (qcow2, raw, vmdk, vhd, vhdx)"),
    }
}

fn virtual_size(path: &Utf8Path) -> Result<u64> {
    info(path)?["virtual-size"]
        .as_u64()
        .with_context(|| format!("`qemu-img info` of {path} has no virtual-size"))
}

/// Is KVM usable? `/dev/kvm` exists on machines where a KVM guest hangs, so
/// boot the host kernel under KVM and wait (bounded) for it to reach its
/// root-mount panic. `KILN_KVM=0|1` overrides.
pub fn kvm_usable() -> bool {
    match std::env::var("KILN_KVM").as_deref() {
        Ok("0") => return false,
        Ok("1") => return true,
        _ => {}
    }
    if !Utf8Path::new("/dev/kvm").exists() {
        return false;
    }
    let Some(kernel) = ["/vmlinuz", "/boot/vmlinuz"]
        .iter()
        .map(Utf8Path::new)
        .find(|p| p.exists())
    else {
        return false;
    };
    let probe: Cmd = tools::virt_customize::kvm_probe(kernel);
    let ok = matches!(
        tools::run_until(&probe, &["Kernel panic"], Duration::from_secs(15)),
        Ok(tools::Watch::Matched { .. })
    );
    crate::ui::info(&format!(
        "KVM probe: {}",
        if ok {
            "usable"
        } else {
            "unusable, libguestfs uses TCG"
        }
    ));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_truncated_last() {
        let spec = CustomizeSpec {
            base: "b.qcow2".into(),
            tree: "/t".into(),
            size: 1 << 30,
            hostname: "demo".into(),
            packages: vec![],
            carrier: true,
        };
        let c = commands(&spec, &["etc".into(), "opt".into()], "/u".into());
        assert!(c.trim_end().ends_with("truncate /etc/machine-id"));
        // Per-install identities: removed after the packages are installed,
        // and regenerated at first boot.
        let install = c.find("install ").unwrap_or(0);
        for id in crate::identity::IDENTITIES {
            let rm = c.find(&id.remove_sh()).expect("the identity is removed");
            assert!(rm > install);
            let unit = id.unit_name();
            assert!(c.contains(&format!("upload /u/{unit}:/etc/systemd/system/{unit}\n")));
            assert!(c.contains(&format!(
                "link /etc/systemd/system/{unit}:/etc/systemd/system/multi-user.target.wants/{unit}\n"
            )));
        }
        assert!(c.contains("-lname ssl-cert-snakeoil.pem -delete; fi\n"));
        assert!(c.contains("copy-in /t/opt:/\n"));
        assert!(!c.contains("install "));
    }
}
