//! `cargo xtask release`: the recipe's targets as one release directory;
//! `release assemble` merges parts built on several machines, `release
//! split` cuts large files for carrying.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::recipe::Arch;

/// Build a release: every target of the recipe (or the ones `--targets`
/// names) through one plan, the same one `build` makes, scanned for secrets,
/// published as one directory `output/<name>-<version>/` holding:
///
///   the artifacts             hard links to the cache's files (no copies)
///   SHA256SUMS                every other file's sha256 (`sha256sum -c SHA256SUMS`)
///   <name>-<version>.manifest.json
///                             recipe digest, git revision and dirty flag,
///                             SOURCE_DATE_EPOCH, every step's key and inputs,
///                             tool versions, kiln's code fingerprint, Debian
///                             packages per root, images, models, artifacts
///   <name>-<version>-<arch>.spdx.json
///                             SPDX 2.3 SBOM per root file system
///   <name>-<version>.provenance.json
///                             in-toto Statement v1, SLSA Provenance v1
///
/// The directory is assembled beside its place and renamed in whole: a
/// failed target or Ctrl-C leaves nothing, and a release of the same version
/// already there is replaced only by a complete one. The same commit and
/// SOURCE_DATE_EPOCH give the same bytes. A work tree with changes git does
/// not hold is refused unless `--allow-dirty` (recorded in the manifest).
///
/// Operators verify a download with `sha256sum -c SHA256SUMS` in its directory.
///
/// A release can be built in parts, one machine per target and architecture
/// (`--targets T --arch A`, each into its own `--output-dir`), and merged
/// with `release assemble` (see ci/README.md for the GitHub workflow).
///
/// Examples:
///   cargo xtask release                          every target of recipes/demo.yaml
///   cargo xtask release --targets qcow2,ova      only the qcow2 and the OVA
///   cargo xtask release --targets pi --arch arm64
///   cargo xtask release --dry-run                every step, command, input and key
///   cargo xtask release --allow-dirty            try a release with uncommitted changes
///   cargo xtask release assemble parts/*/demo-1.0    merge parts into output/demo-1.0/
///   cargo xtask release split output/demo-1.0    cut files over 1 GiB into parts
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Targets to release, comma-separated: overlay, iso, qcow2, ova, pi [default: every target the recipe builds].
    #[arg(long, value_name = "T,…", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Only these architectures, comma-separated (the overlay and qcow2 are built per architecture, the ISO and OVA for amd64, the Pi image for arm64) [default: every one].
    #[arg(long, value_name = "A,…", value_delimiter = ',')]
    pub arch: Vec<Arch>,
    /// Release a work tree with uncommitted changes or untracked files (the manifest records it).
    #[arg(long)]
    pub allow_dirty: bool,
    /// The Ubuntu live-server ISO to remaster (overrides `iso.base`).
    #[arg(long, value_name = "PATH")]
    pub base_iso: Option<Utf8PathBuf>,
    /// Expected sha256 of `--base-iso`.
    #[arg(long, value_name = "HEX", requires = "base_iso")]
    pub base_sha256: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Merge release directories of one version, built as parts (one machine per target and architecture), into one.
    ///
    /// Every part is checked before anything is written: its SHA256SUMS lists
    /// exactly its files and agrees with its manifest; the parts have the same
    /// name, version, git revision, recipe, SOURCE_DATE_EPOCH and kiln, and
    /// agree on every step key, tool version and artifact they share (an error
    /// names both parts). Each artifact is hard-linked (or copied, or joined
    /// from its `.part-NNN` files) into `<output>/<name>-<version>/` and its
    /// sha256 checked; then one manifest, one provenance statement covering
    /// every artifact, an SBOM per architecture and SHA256SUMS (last) are
    /// written by the same code `release` uses, and the directory is renamed
    /// into place whole. The output is the global `--output-dir`.
    ///
    /// Examples:
    ///   cargo xtask release assemble parts/overlay/demo-1.0 parts/pi/demo-1.0
    ///   cargo xtask --output-dir dist release assemble parts/*/demo-1.0
    #[command(verbatim_doc_comment)]
    Assemble {
        /// Release directories (each `<name>-<version>` with its SHA256SUMS and manifest).
        #[arg(value_name = "DIR", required = true)]
        dirs: Vec<Utf8PathBuf>,
    },
    /// Split every file of a release directory larger than --max-size into `NAME.part-000`, `NAME.part-001`, … (in place).
    ///
    /// A GitHub release asset must be under 2 GiB. SHA256SUMS keeps naming the
    /// whole file: join the parts with `cat NAME.part-* > NAME`, then
    /// `sha256sum -c SHA256SUMS`. `release assemble` joins them itself. Each
    /// file is checked against SHA256SUMS as it is read and removed only once
    /// its parts are complete.
    #[command(verbatim_doc_comment)]
    Split {
        /// The release directory.
        #[arg(value_name = "DIR")]
        dir: Utf8PathBuf,
        /// Largest part: bytes, or a number with K, M or G (powers of 1024).
        #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = crate::release::parts::parse_size)]
        max_size: u64,
    },
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    match a.command {
        Some(Command::Assemble { dirs }) => return crate::release::assemble::run(cx, &dirs),
        Some(Command::Split { dir, max_size }) => {
            return crate::release::parts::run(&dir, max_size)
        }
        None => {}
    }
    let req = crate::release::Request {
        targets: a.targets,
        allow_dirty: a.allow_dirty,
        options: crate::targets::Options {
            base_iso: a.base_iso,
            base_sha256: a.base_sha256,
            preview: cx.dry_run,
            arches: a.arch,
        },
    };
    crate::release::run(cx, req)
}
