//! `cargo xtask scan`.

use anyhow::{bail, Result};
use camino::Utf8PathBuf;

use crate::cx::Cx;

/// Scan artifacts (directories, tars, ISOs, disks, OVAs) for baked secrets and per-instance identity.
///
/// Scan artifacts for baked secrets and per-instance identity: private keys,
/// SSH host keys, a filled /etc/machine-id, systemd random seeds, cloud-init
/// instance state, password hashes, `.env` secrets, cloud-config passwords,
/// registry and kube credentials, tokens, shell histories, apt proxy
/// credentials, and high-entropy values under secret-looking names.
///
/// Reads directories, tar (plain/gz/zst/xz), cpio, ISO 9660, raw disks
/// (GPT/MBR; ext2/3/4 and FAT partitions), qcow2/VMDK/VHDX/VDI, OVAs and
/// anything nested in them, without mounting and without root. Findings show
/// the nested path (`x.iso!/kiln/overlay.tar.zst!/etc/shadow`), the rule and
/// a redacted excerpt; the secret itself is never printed.
///
/// Exits non-zero if any finding is not allowed by the recipe's
/// `scan.allow` list, or if any part of an artifact could not be read (a
/// partial scan is not a pass). Findings in files under /usr that are
/// byte-identical to what their Debian package installed (dpkg's md5sums,
/// e.g. libgnutls' self-test keys) are accepted and reported as allowed,
/// with the package named. Every build verb runs the same scan before
/// publishing into output/.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Artifacts to scan: directories or files of any supported format.
    #[arg(required_unless_present = "rules")]
    pub paths: Vec<Utf8PathBuf>,
    /// List the rules (id, what it catches, how to fix it) and exit.
    #[arg(long)]
    pub rules: bool,
    /// Ignore the recipe's allowlist (also works without a recipe).
    #[arg(long)]
    pub no_allowlist: bool,
    /// Directory for temporary files (converted disks, FAT extractions) [default: system temp].
    #[arg(long)]
    pub tmp: Option<Utf8PathBuf>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    use crate::scan::rules::RULES;
    if a.rules {
        if cx.json {
            println!("{}", serde_json::to_string_pretty(RULES)?);
        } else {
            for r in RULES {
                println!("{}\n    {}\n    fix: {}", r.id, r.description, r.fix);
            }
        }
        return Ok(());
    }
    let mut opts = crate::scan::Options {
        tmp: a.tmp.clone(),
        ..Default::default()
    };
    if !a.no_allowlist && cx.recipe_file.exists() {
        opts = crate::scan::Options {
            tmp: a.tmp.clone(),
            ..crate::scan::Options::from_recipe(&cx.recipe()?)
        };
    }
    if !cx.dry_run {
        // Tools are needed only for some formats; say which are missing up front.
        let missing: Vec<&str> = ["qemu-img", "mcopy"]
            .into_iter()
            .filter(|t| crate::tools::find(t).is_none())
            .collect();
        if !missing.is_empty() {
            crate::ui::warn(&format!(
                "{} not installed: qcow2/VMDK disks (qemu-img) and FAT partitions (mcopy) cannot be read \
                 (`cargo xtask doctor scan`)",
                missing.join(", ")
            ));
        }
    }
    if cx.dry_run {
        println!(
            "would scan: {}",
            a.paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(());
    }
    let report = crate::scan::scan(&a.paths, &opts);
    if cx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.ok {
        let blocking: usize = report.artifacts.iter().map(|r| r.blocking().count()).sum();
        let errors = report
            .artifacts
            .iter()
            .filter(|r| r.error.is_some())
            .count();
        bail!("secret scan failed: {blocking} finding(s) not allowed, {errors} artifact(s) not fully readable");
    }
    Ok(())
}
