//! The command line. Doc comments here are the `--help` text.

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};

use crate::recipe::Arch;
use crate::tools::Target;

/// kiln builds bootable appliance images — an installer ISO (kiln's offline
/// installer or a remastered Ubuntu ISO), a qcow2 (amd64, arm64), an OVA and
/// a Raspberry Pi image — from one recipe, reproducibly, without root
/// tricks, with no secrets baked in.
///
/// Every verb resolves the recipe into a plan of steps, prints it with
/// `--dry-run` (`--json` for machines), then checks every tool the plan
/// needs (run as root on Debian/Ubuntu it installs the missing ones first;
/// `--no-install` turns that off) and runs it, reusing cached steps whose
/// inputs did not change. Finished artifacts land in `output/`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true,
    version
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: Option<Verb>,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The recipe to build (relative to the current directory, else to the project root).
    #[arg(
        long,
        global = true,
        default_value = "recipes/demo.yaml",
        env = "KILN_RECIPE"
    )]
    pub recipe: Utf8PathBuf,
    /// Project root: recipe paths are relative to it [default: the kiln workspace].
    #[arg(long, global = true, env = "KILN_ROOT")]
    pub root: Option<Utf8PathBuf>,
    /// Step cache [default: <root>/target/kiln/cache].
    #[arg(long, global = true, env = "KILN_CACHE")]
    pub cache_dir: Option<Utf8PathBuf>,
    /// Where finished artifacts go [default: <root>/output].
    #[arg(long, global = true, env = "KILN_OUTPUT")]
    pub output_dir: Option<Utf8PathBuf>,
    /// Print the plan (commands, inputs, cache keys) and do nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Machine-readable output (the plan with --dry-run, reports otherwise).
    #[arg(long, global = true)]
    pub json: bool,
    /// Re-run every step, ignoring the cache.
    #[arg(long, global = true)]
    pub force: bool,
    /// Never install missing tools. By default a verb that builds, run as
    /// root on Debian/Ubuntu, first installs every tool its plan needs with
    /// apt (as `doctor --install` does); without root it lists them all.
    #[arg(long, global = true)]
    pub no_install: bool,
    /// Show every command as it runs.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Only errors and warnings.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Inspect recipes: `recipe show` prints the resolved recipe (every default filled in).
    #[command(subcommand)]
    Recipe(RecipeCmd),
    /// List the external tools each target needs, their versions and packages; install the missing ones.
    Doctor(Doctor),
    /// Build the staged tree (overlay, units, payloads, build-info) and its deterministic overlay.tar.zst.
    Stage(Stage),
    // `--help`: the doc comment of `verbs::seed::Args`.
    Seed(crate::verbs::seed::Args),
    // `--help`: the doc comment of `verbs::iso::Args`.
    Iso(crate::verbs::iso::Args),
    // `--help`: the doc comment of `verbs::qcow2::Args`.
    Qcow2(crate::verbs::qcow2::Args),
    // `--help`: the doc comment of `verbs::ova::Args`.
    Ova(crate::verbs::ova::Args),
    // `--help`: the doc comment of `verbs::pi::Args`.
    Pi(crate::verbs::pi::Args),
    // `--help`: the doc comment of `verbs::scan::Args`.
    Scan(crate::verbs::scan::Args),
    /// Measure kiln against baseline tools in the same run and print ratios.
    Bench(crate::verbs::bench::Args),
    // `--help`: the doc comment of `verbs::smoke::Args`.
    Smoke(crate::verbs::smoke::Args),
    /// Build every format the recipe asks for in one plan: overlay archive, qcow2 per architecture, OVA, the Raspberry Pi image when the recipe has `pi:`, and the ISO: kiln's offline installer (`iso.mode: installer`, the default), or a remastered Ubuntu ISO when a base ISO is set.
    ///
    /// The formats share steps (one stage, one Debian root file system per
    /// architecture for the qcow2 and the Pi image, one disk for the qcow2 and
    /// the OVA). Before any work every
    /// tool the plan needs is checked; run as root on Debian/Ubuntu the missing
    /// ones are installed with apt first (`--no-install` turns that off). Steps
    /// whose inputs did not change are reused from the cache, so a rebuild after
    /// an overlay change redoes the disk, not the Debian root. Every artifact is
    /// scanned for secrets, then lands in `output/` with a `.sha256`.
    ///
    /// Examples:
    ///   cargo xtask build                         the demo appliance (recipes/demo.yaml)
    ///   cargo xtask build --dry-run               every step, command, input and key
    ///   cargo xtask build --base-iso ubuntu.iso   the ISO remastered from an Ubuntu live-server ISO
    ///   cargo xtask --recipe recipes/mine.yaml build
    #[command(verbatim_doc_comment)]
    Build(crate::verbs::build::Args),
    // `--help`: the doc comment of `verbs::release::Args`.
    Release(Box<crate::verbs::release::Args>),
    /// Ensure the test tools are installed (as root: `doctor --install`), then run the whole test suite.
    ///
    /// Builds every test binary (`cargo test --no-run`) and runs them side by side, each
    /// binary's output in `target/kiln/test-logs/<binary>.log`, printed whole when it ends,
    /// then a summary. Arguments go to cargo as with `cargo test`: options before `--`
    /// choose what is built, a test-name filter and everything after `--` go to every binary.
    ///
    /// Examples:
    ///   cargo xtask test                              the whole suite
    ///   cargo xtask test --test smoke                 one test file
    ///   cargo xtask test --test qcow2 arm64 -- --nocapture
    #[command(verbatim_doc_comment)]
    Test(Test),
}

#[derive(Debug, Subcommand)]
pub enum RecipeCmd {
    /// Print the resolved recipe as YAML (or JSON with --json).
    Show {
        /// The recipe file (same as the global --recipe).
        #[arg(value_name = "RECIPE")]
        file: Option<Utf8PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct Doctor {
    /// Which target's tools to check.
    #[arg(long, value_enum, default_value = "all")]
    pub target: Target,
    /// Install what is missing with apt-get (needs root; adds bookworm-backports on Debian 12).
    #[arg(long)]
    pub install: bool,
}

#[derive(Debug, Args)]
pub struct Stage {
    /// Architecture to stage for [default: every architecture of the recipe].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
}

#[derive(Debug, Args)]
pub struct Test {
    /// Extra arguments for `cargo test` (e.g. a filter, or `-- --nocapture`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

impl Global {
    /// The context every verb gets from these flags.
    pub fn cx(&self) -> anyhow::Result<crate::cx::Cx> {
        crate::cx::Cx::new(
            self.root.as_deref(),
            &self.recipe,
            self.cache_dir.as_deref(),
            self.output_dir.as_deref(),
            self.dry_run,
            self.json,
            self.force,
            self.no_install,
        )
    }
}
