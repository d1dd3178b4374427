//! `cargo xtask release`: the recipe's targets as one release directory,
//! optionally pushed to an OCI registry; `release pull` fetches one back,
//! `release assemble` merges parts built on several machines, `release
//! split` cuts large files for carrying.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::recipe::Arch;
use crate::release::{oci, sign};

/// Build a release: the recipe's targets as one directory with checksums, manifest, SBOMs and provenance
///
/// Every target of the recipe (or the ones `--targets` names) goes through
/// one plan, the same one `build` makes, is scanned for secrets, and is
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
/// `--sign-key FILE` (or KILN_SIGN_KEY=FILE, for CI secrets) signs SHA256SUMS
/// with a minisign secret key into SHA256SUMS.minisig, before the directory is
/// renamed into place; `minisign -Vm SHA256SUMS -p kiln.pub` verifies it. The
/// signature is deterministic (its timestamp is SOURCE_DATE_EPOCH), so a signed
/// release is still the same bytes each time. A password-protected key is
/// decrypted with KILN_SIGN_PASSWORD (never prompted for, never an argument).
/// The manifest records the key id; the public key is not shipped in the
/// release: users check against the one the project publishes elsewhere.
/// `release keygen --out DIR` makes a key pair.
///
/// `--push oci://HOST[:PORT]/REPO:CHANNEL` then publishes the finished
/// directory to an OCI registry as one artifact (an OCI 1.1 image manifest,
/// artifactType application/vnd.kiln.release.v1+json, one layer per file,
/// tagged CHANNEL): the manifest, SHA256SUMS, the SBOMs and the provenance,
/// and with `--push-artifacts` the images too. Blobs the registry has are
/// not sent again; the same release gives the same manifest digest. Plain
/// HTTP for a registry on this machine (localhost, 127.0.0.0/8, [::1]),
/// HTTPS for any other (a private CA: --ca-cert FILE or KILN_REGISTRY_CA,
/// then HTTPS on this machine too). A registry that asks for a login gets
/// KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD (from the environment only,
/// never shown or written): HTTP basic auth, or a bearer token from the
/// realm it names. A refused push leaves the release directory complete.
/// `release pull` fetches a release back, verified.
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
///   cargo xtask release --push oci://registry.example.com/appliances/demo:stable
///   KILN_REGISTRY_USER=ci KILN_REGISTRY_PASSWORD=$TOKEN cargo xtask release --push oci://registry.example.com/appliances/demo:stable
///   cargo xtask release --push oci://registry.lab:5000/demo:stable --ca-cert lab-ca.pem
///   cargo xtask release pull oci://registry.example.com/appliances/demo:stable --dest demo
///   cargo xtask release --check-reproducible     build twice, publish only identical bytes
///   cargo xtask release keygen --out ~/.kiln-keys   a signing key pair (kiln.key, kiln.pub)
///   cargo xtask release --sign-key ~/.kiln-keys/kiln.key
///   cargo xtask release assemble parts/*/demo-1.0    merge parts into output/demo-1.0/
///   cargo xtask release split output/demo-1.0    cut files over 1 GiB into parts
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Sub>,
    /// Targets to release, comma-separated: overlay, iso, qcow2, ova, pi [default: every target the recipe builds].
    #[arg(long, value_name = "T,…", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Only these architectures, comma-separated (the overlay and qcow2 are built per architecture, the ISO and OVA for amd64, the Pi image for arm64) [default: every one].
    #[arg(long, value_name = "A,…", value_delimiter = ',')]
    pub arch: Vec<Arch>,
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
    /// Once the release directory is complete, push it to this registry
    /// repository as one OCI artifact tagged CHANNEL (the documents; add
    /// --push-artifacts for the images).
    #[arg(long, value_name = "oci://HOST[:PORT]/REPO:CHANNEL", value_parser = oci::push_reference)]
    pub push: Option<oci::Reference>,
    /// With --push: push the artifacts (images) too, not only the manifest,
    /// SHA256SUMS, SBOMs and provenance.
    #[arg(long, requires = "push")]
    pub push_artifacts: bool,
    /// With --push: the registry's certificate must chain to a CA in this PEM file (a private
    /// CA; it replaces the public roots), and a registry on this machine is spoken to over
    /// HTTPS too.
    #[arg(long, value_name = "FILE", env = "KILN_REGISTRY_CA")]
    pub ca_cert: Option<Utf8PathBuf>,
    /// Sign SHA256SUMS with this minisign secret key into SHA256SUMS.minisig [default: the file
    /// KILN_SIGN_KEY names, if set]; an encrypted key's password is read from KILN_SIGN_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<Utf8PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Fetch a pushed release from an OCI registry into a new directory, verified
    ///
    /// Fetches the manifest (checked against REFERENCE when it names a
    /// digest), then every file, its size and sha256 checked against the
    /// manifest as it arrives, then every file against the pulled
    /// SHA256SUMS; all into a temporary directory beside DIR, renamed into
    /// place only when all of it verified. `sha256sum -c SHA256SUMS` in DIR
    /// then passes (add `--ignore-missing` when the images were not pushed).
    /// A registry that asks for a login gets KILN_REGISTRY_USER and
    /// KILN_REGISTRY_PASSWORD from the environment (basic auth or a bearer
    /// token from its realm); never a flag, never printed.
    ///
    /// Examples:
    ///   cargo xtask release pull oci://registry.example.com/appliances/demo:stable
    ///   cargo xtask release pull oci://127.0.0.1:5000/demo:stable --dest /srv/demo
    ///   cargo xtask release pull oci://registry.example.com/appliances/demo@sha256:<digest>
    ///   KILN_REGISTRY_USER=ops KILN_REGISTRY_PASSWORD=$TOKEN \
    ///     cargo xtask release pull oci://registry.example.com/appliances/demo:stable --verify-key kiln.pub
    ///   cargo xtask release pull oci://registry.lab:5000/demo:stable --ca-cert lab-ca.pem
    #[command(verbatim_doc_comment)]
    Pull(PullArgs),
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
    /// into place whole. The output is the global `--output-dir`. With
    /// `--dry-run` the parts are read, checked and merged, and what would be
    /// copied and written where is printed; nothing is written.
    ///
    /// Examples:
    ///   cargo xtask release assemble parts/overlay/demo-1.0 parts/pi/demo-1.0
    ///   cargo xtask release assemble --dry-run parts/*/demo-1.0
    ///   cargo xtask --output-dir dist release assemble parts/*/demo-1.0
    #[command(verbatim_doc_comment)]
    Assemble {
        /// Release directories (each `<name>-<version>` with its SHA256SUMS and manifest).
        #[arg(value_name = "DIR", required = true)]
        dirs: Vec<Utf8PathBuf>,
        /// Sign the assembled SHA256SUMS with this minisign secret key into SHA256SUMS.minisig
        /// [default: the file KILN_SIGN_KEY names, if set; password: KILN_SIGN_PASSWORD].
        #[arg(long, value_name = "FILE")]
        sign_key: Option<Utf8PathBuf>,
        /// Refuse any part whose SHA256SUMS is not signed (SHA256SUMS.minisig) by this minisign
        /// public key.
        #[arg(long, value_name = "PUBFILE")]
        verify_key: Option<Utf8PathBuf>,
    },
    /// Make a minisign key pair for signing releases: DIR/kiln.key (secret, unencrypted, mode
    /// 0600) and DIR/kiln.pub (publish it where users find it, not in the release).
    ///
    /// Existing files are never replaced. The secret key is the kind CI
    /// signs with (store its content as the KILN_SIGN_KEY secret); for a key
    /// with a password use `minisign -G` and set KILN_SIGN_PASSWORD when
    /// signing.
    ///
    /// Examples:
    ///   cargo xtask release keygen --out ~/.kiln-keys
    #[command(verbatim_doc_comment)]
    Keygen {
        /// The directory to write kiln.key and kiln.pub into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Utf8PathBuf,
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

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The release: oci://HOST[:PORT]/REPO:CHANNEL, or oci://HOST[:PORT]/REPO@sha256:<digest>.
    #[arg(value_name = "REFERENCE", value_parser = oci::pull_reference)]
    pub reference: oci::Reference,
    /// The directory to create (must not exist, or be empty) [default: ./<name>-<version>, from the artifact's title].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<Utf8PathBuf>,
    /// Refuse the release unless its SHA256SUMS carries a good signature (SHA256SUMS.minisig) by
    /// this minisign public key; checked before anything is put in place.
    #[arg(long, value_name = "PUBFILE")]
    pub verify_key: Option<Utf8PathBuf>,
    /// The registry's certificate must chain to a CA in this PEM file (a private CA; it replaces
    /// the public roots), and a registry on this machine is spoken to over HTTPS too.
    #[arg(long, value_name = "FILE", env = "KILN_REGISTRY_CA")]
    pub ca_cert: Option<Utf8PathBuf>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    match a.cmd {
        Some(Sub::Pull(p)) => return pull(cx, p),
        Some(Sub::Assemble {
            dirs,
            sign_key,
            verify_key,
        }) => {
            let keys = crate::release::assemble::Keys {
                sign: sign::key_path(sign_key),
                verify: verify_key,
            };
            return crate::release::assemble::run(cx, &dirs, &keys);
        }
        Some(Sub::Keygen { out }) => return keygen(cx, &out),
        Some(Sub::Split { dir, max_size }) => return crate::release::parts::run(&dir, max_size),
        None => {}
    }
    let req = crate::release::Request {
        targets: a.targets,
        allow_dirty: a.allow_dirty,
        check_reproducible: a.check_reproducible,
        options: crate::targets::Options {
            base_iso: a.base_iso,
            base_sha256: a.base_sha256,
            preview: cx.dry_run,
            arches: a.arch,
        },
        push: a.push.map(|to| crate::release::Push {
            to: to.with_ca_cert(a.ca_cert),
            artifacts: a.push_artifacts,
        }),
        sign_key: sign::key_path(a.sign_key),
    };
    crate::release::run(cx, req)
}

fn keygen(cx: &Cx, out: &camino::Utf8Path) -> Result<()> {
    if cx.dry_run {
        println!("keygen: write a new minisign key pair to {out}/kiln.key (mode 0600) and {out}/kiln.pub, replacing neither");
        return Ok(());
    }
    let (key, public, id) = sign::keygen(out)?;
    crate::ui::info(&format!(
        "wrote the secret key {key} (unencrypted: keep it secret; sign with `release --sign-key {key}`) \
         and the public key {public} (key id {id}): publish it apart from the releases, e.g. in the \
         README, for `minisign -Vm SHA256SUMS -p kiln.pub`"
    ));
    println!("{id}");
    Ok(())
}

fn pull(cx: &Cx, mut p: PullArgs) -> Result<()> {
    p.reference = p.reference.clone().with_ca_cert(p.ca_cert.take());
    let verify = p
        .verify_key
        .as_deref()
        .map(sign::VerifyingKey::load)
        .transpose()?;
    if cx.dry_run {
        let dest = match &p.dest {
            Some(d) => d.to_string(),
            None => "./<name>-<version> (the artifact's title)".to_string(),
        };
        println!(
            "pull: fetch {} ({}://{}, repository {}) into {dest}: the manifest, then every \
             layer checked against its sha256, then every file against SHA256SUMS{}",
            p.reference,
            p.reference.scheme(),
            p.reference.registry,
            p.reference.repository,
            match &verify {
                Some(k) => format!(
                    ", then SHA256SUMS against its signature {} with the public key {} (key id {})",
                    sign::SIG,
                    k.path,
                    k.key_id()
                ),
                None => String::new(),
            }
        );
        return Ok(());
    }
    let pulled = oci::pull(&p.reference, p.dest.as_deref(), verify.as_ref())?;
    if cx.json {
        println!("{}", serde_json::to_string(&pulled)?);
        return Ok(());
    }
    let missing = if pulled.not_pushed.is_empty() {
        String::new()
    } else {
        format!(
            "; not in the registry (the images were not pushed): {}; check with \
             `sha256sum -c --ignore-missing SHA256SUMS`",
            pulled.not_pushed.join(", ")
        )
    };
    crate::ui::info(&format!(
        "pulled {}@{} into {}: {} file(s), every one verified against SHA256SUMS{}{missing}",
        p.reference,
        pulled.digest,
        pulled.dest,
        pulled.files.len(),
        match &verify {
            Some(k) => format!(", SHA256SUMS signed by key id {}", k.key_id()),
            None => String::new(),
        }
    ));
    println!("{}", pulled.dest);
    Ok(())
}
