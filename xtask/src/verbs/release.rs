//! `cargo xtask release`: the recipe's targets as one release directory.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;

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
/// `--check-reproducible` proves the last claim before publishing: the
/// selected targets are built again from a copy of the project at another
/// path, in a fresh step cache (`<cache>/reproduce.tmp-<pid>/`, removed
/// afterwards; it rebuilds everything, the Debian root file systems too),
/// and every artifact is compared byte for byte. The same bytes: a short
/// report (each artifact, identical, its sha256), the release is published
/// and its manifest records the check. Other bytes: the release fails and
/// nothing is published; the error names the artifact, the first differing
/// byte and, read with the secret scanner's readers, the member that differs
/// (a disk's partition, file system and path; an OVA's member and the path
/// in its disk; a tar's member; a path in an ISO) and the members only one
/// build has.
///
/// Examples:
///   cargo xtask release                          every target of recipes/demo.yaml
///   cargo xtask release --targets qcow2,ova      only the qcow2 and the OVA
///   cargo xtask release --dry-run                every step, command, input and key
///   cargo xtask release --allow-dirty            try a release with uncommitted changes
///   cargo xtask release --check-reproducible     build twice, publish only identical bytes
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Targets to release, comma-separated: overlay, iso, qcow2, ova, pi [default: every target the recipe builds].
    #[arg(long, value_name = "T,…", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Release a work tree with uncommitted changes or untracked files (the manifest records it).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Build the targets a second time from a copy of the project in a fresh step cache (a
    /// temporary directory in the cache, removed afterwards) and publish only if every artifact
    /// is byte-identical; a difference names the artifact, its first differing byte and the
    /// member inside it (partition, file system, path) that differs.
    #[arg(long)]
    pub check_reproducible: bool,
    /// The Ubuntu live-server ISO to remaster (overrides `iso.base`).
    #[arg(long, value_name = "PATH")]
    pub base_iso: Option<Utf8PathBuf>,
    /// Expected sha256 of `--base-iso`.
    #[arg(long, value_name = "HEX", requires = "base_iso")]
    pub base_sha256: Option<String>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let req = crate::release::Request {
        targets: a.targets,
        allow_dirty: a.allow_dirty,
        check_reproducible: a.check_reproducible,
        options: crate::targets::Options {
            base_iso: a.base_iso,
            base_sha256: a.base_sha256,
            preview: cx.dry_run,
        },
    };
    crate::release::run(cx, req)
}
