//! `cargo xtask bench`: run benchmark cases and print kiln/baseline ratios.

use anyhow::{bail, Result};

use crate::bench::{self, BenchCx, Measurement};
use crate::cx::Cx;

/// Measure kiln against the baseline tools the issues name, on generated
/// inputs, in the same run; print ratios (never absolute pass/fail on time).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only run cases whose name contains this: export, container, iso, installer, scan, ova,
    /// qcow2, smoke, arm64, pi. `installer` builds the demo's installer ISO on the step cache,
    /// times its ISO step against `zstd -T0`, and installs it under TCG (several minutes).
    #[arg(long)]
    pub case: Option<String>,
    /// Scale the generated inputs (1.0 = the sizes the goals are set for).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

type Case = fn(&BenchCx) -> Result<Vec<Measurement>>;

/// The cases, in the order they run (their names are listed in `--case`'s help).
fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("export", bench::export::model_export),
        ("container", bench::container::debian_image),
        ("iso", bench::iso::remaster),
        ("installer", bench::installer::installer_iso),
        ("scan", bench::scan::scan_disk),
        ("ova", bench::ova::ova_build),
        ("qcow2", bench::qcow2::qcow2_builds),
        ("smoke", bench::qcow2::smoke),
        ("arm64", bench::qcow2::qcow2_arm64_cold),
        ("pi", bench::qcow2::pi_builds),
    ]
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    // One scratch per run: two runs sharing a cache never remove each
    // other's files (a run killed midway leaves its own behind).
    let scratch = cx.cache.join(format!("bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let bcx = BenchCx {
        scratch: &scratch,
        cache: &cx.cache,
        scale: a.scale,
    };
    let mut all = Vec::new();
    let selected: Vec<_> = cases()
        .into_iter()
        .filter(|(n, _)| a.case.as_deref().is_none_or(|c| n.contains(c)))
        .collect();
    if selected.is_empty() {
        bail!("no benchmark case matches {:?}", a.case);
    }
    for (name, case) in selected {
        crate::ui::info(&format!("bench: {name}"));
        all.extend(case(&bcx)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if cx.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", bench::render(&all));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `--case`'s help names every case, so `--help` teaches what to pass.
    #[test]
    fn the_case_help_names_every_case() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: super::Args,
        }
        let cmd = Cli::command();
        let help = cmd
            .get_arguments()
            .find(|a| a.get_id() == "case")
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for (name, _) in super::cases() {
            assert!(
                help.contains(name),
                "`--case` help does not name {name}: {help}"
            );
        }
    }
}
