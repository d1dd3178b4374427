//! Recipes: what to build. A recipe is a YAML file (`recipes/demo.yaml`)
//! parsed strictly (unknown keys and wrong types are errors with file, line
//! and column), then resolved once: every default is filled in
//! [`Recipe::resolve`] and nowhere else.
//!
//! The types are the recipe as written, so a setting whose default depends
//! on something else (the appliance name, git, the build host's apt
//! sources) is an `Option` there; `resolve` fills it, `recipe show` prints
//! the filled value, and consumers read it through an accessor that never
//! supplies a default of its own.
//!
//! The per-target sections live in submodules, one per target, beside the
//! code that consumes them.

use std::fmt;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub mod iso;
pub mod ova;
pub mod payloads;
pub mod pi;
pub mod qcow2;
pub mod scan;
pub mod seed;
pub mod smoke;

/// The recipe as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub appliance: Appliance,
    /// Architectures to build for (default: `[amd64]`).
    #[serde(default)]
    pub architectures: Vec<Arch>,
    /// Directories laid over `/`, in order.
    #[serde(default)]
    pub overlays: Vec<Overlay>,
    #[serde(default)]
    pub systemd: Systemd,
    #[serde(default)]
    pub payloads: payloads::Payloads,
    #[serde(default)]
    pub seed: seed::SeedOptions,
    #[serde(default)]
    pub iso: iso::IsoOptions,
    #[serde(default)]
    pub qcow2: qcow2::Qcow2Options,
    #[serde(default)]
    pub ova: ova::OvaOptions,
    /// The Raspberry Pi image: built when the section is present.
    #[serde(default)]
    pub pi: Option<pi::PiOptions>,
    #[serde(default)]
    pub scan: scan::ScanOptions,
    /// What `cargo xtask smoke` checks on a booted instance.
    #[serde(default)]
    pub smoke: smoke::SmokeOptions,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// Lower-case name: names output files, `/etc/<name>/`, the ISO label.
    pub name: String,
    /// Release version; default `git describe --tags --always --dirty`, else
    /// `0.0.0-dev` (filled by `resolve`; also [`Resolved::version`]).
    #[serde(default)]
    pub version: Option<String>,
    /// Human-readable product name (default: the name; filled by `resolve`).
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Debian's name (`amd64`, `arm64`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// OCI platform architecture (`amd64`, `arm64`).
    pub fn oci(self) -> &'static str {
        self.debian()
    }
    /// The kernel's / qemu's name (`x86_64`, `aarch64`).
    pub fn uname(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Directory (relative to the project root) laid over `/`.
    pub path: Utf8PathBuf,
    /// Paths (relative to `/`) this overlay provides that an earlier overlay
    /// provides too; without this, such a clash is an error.
    #[serde(default)]
    pub wins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// Unit files installed 0644 under `/etc/systemd/system`.
    #[serde(default)]
    pub units: Vec<Utf8PathBuf>,
    /// Units to enable (as the `wants/`/`requires/` links their `[Install]` implies).
    #[serde(default)]
    pub enable: Vec<String>,
    /// Units to mask (a link to `/dev/null`).
    #[serde(default)]
    pub mask: Vec<String>,
    /// Units the base system provides, which `enable`/`mask` may name.
    #[serde(default)]
    pub base_units: Vec<String>,
    /// sysusers.d files installed under `/usr/lib/sysusers.d`.
    #[serde(default)]
    pub sysusers: Vec<Utf8PathBuf>,
}

impl Appliance {
    /// The product name (filled by `resolve`).
    pub fn product(&self) -> &str {
        filled(&self.product, "appliance.product")
    }
}

/// A setting [`Recipe::resolve`] fills; reading it from an unresolved recipe
/// is a bug in kiln, not in the recipe.
pub(crate) fn filled<'a>(v: &'a Option<String>, key: &str) -> &'a str {
    v.as_deref()
        .unwrap_or_else(|| panic!("{key} is read before Recipe::resolve filled it"))
}

/// A recipe with every default filled in, plus where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The recipe file.
    pub file: Utf8PathBuf,
    /// The project root; relative paths in the recipe are relative to it.
    pub root: Utf8PathBuf,
    /// `recipe.appliance.version`, filled.
    pub version: String,
    /// Git revision of the project, when it is a repository.
    pub revision: Option<String>,
    /// `SOURCE_DATE_EPOCH`: from the environment, else the last commit time
    /// (commits that changed only kiln's own code aside), else 0.
    pub epoch: i64,
    pub epoch_source: String,
    pub recipe: Recipe,
}

/// Parse a recipe file; errors name the file, line and column.
pub fn load(file: &Utf8Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading recipe {file} (pass another one with --recipe)"))?;
    parse(&text, file)
}

pub fn parse(text: &str, file: &Utf8Path) -> Result<Recipe> {
    yaml_serde::from_str::<Recipe>(text).map_err(|e| yaml_error(file, &e))
}

/// A recipe's text with `lines` (YAML, indented under the key) added to its
/// top-level `section` (a block mapping, `section:` alone on its line),
/// which is created at the end when the text has none.
/// How `cargo xtask bench` and the tests derive recipes from the demo's
/// (e.g. a smaller disk) without a second `qcow2:` key, which YAML refuses.
pub fn with_section_lines(text: &str, section: &str, lines: &str) -> String {
    let header = format!("{section}:\n");
    let nl = if lines.ends_with('\n') { "" } else { "\n" };
    let at = if text.starts_with(&header) {
        Some(header.len())
    } else {
        text.find(&format!("\n{header}"))
            .map(|i| i + 1 + header.len())
    };
    match at {
        Some(i) => format!("{}{lines}{nl}{}", &text[..i], &text[i..]),
        None => {
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            format!("{text}{sep}{header}{lines}{nl}")
        }
    }
}

/// `FILE:LINE:COL: message` for a YAML/serde error.
pub fn yaml_error(file: &Utf8Path, e: &yaml_serde::Error) -> anyhow::Error {
    let msg = e.to_string();
    // The library appends " at line L column C"; we lead with the location instead.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    match e.location() {
        Some(l) => anyhow::anyhow!("{file}:{}:{}: {msg}", l.line(), l.column()),
        None => anyhow::anyhow!("{file}: {msg}"),
    }
}

impl Recipe {
    /// Fill every default and check what types alone cannot.
    pub fn resolve(mut self, file: &Utf8Path, root: &Utf8Path) -> Result<Resolved> {
        let a = &self.appliance;
        if a.name.is_empty()
            || !a
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || a.name.starts_with('-')
        {
            bail!(
                "{file}: appliance.name `{}` must be lower-case letters, digits and `-` \
                 (it names files, directories and users)",
                a.name
            );
        }
        if self.architectures.is_empty() {
            self.architectures.push(Arch::Amd64);
        }
        self.architectures.sort();
        self.architectures.dedup();
        let name = self.appliance.name.clone();
        self.appliance.product.get_or_insert_with(|| name.clone());
        let version = match &self.appliance.version {
            Some(v) => v.clone(),
            None => crate::tools::git::describe(root).unwrap_or_else(|| "0.0.0-dev".into()),
        };
        if version.is_empty() || version.contains(['/', ' ', '\n']) {
            bail!("{file}: version `{version}` must not be empty or contain `/` or spaces");
        }
        self.appliance.version = Some(version.clone());
        let revision = crate::tools::git::revision(root);
        let (epoch, epoch_source) = crate::epoch::resolve(root)?;
        self.seed.resolve(file, &name)?;
        self.iso.resolve(file, &self.appliance)?;
        self.qcow2
            .resolve(file, &name, Utf8Path::new(crate::hostapt::ETC_APT))?;
        // After qcow2: a `debian` image's suite defaults to the checked qcow2.suite.
        let suite = self.qcow2.suite.clone();
        self.payloads.resolve(file, &suite)?;
        self.ova.resolve(file)?;
        if let Some(pi) = &mut self.pi {
            pi.resolve(file)?;
        }
        self.scan.resolve(file)?;
        let provision = self.seed.cloud_init.provision_env.is_some();
        self.smoke.resolve(file, provision)?;
        Ok(Resolved {
            file: file.to_owned(),
            root: root.to_owned(),
            version,
            revision,
            epoch,
            epoch_source,
            recipe: self,
        })
    }
}

/// The Debian package that reads the config carrier (the NoCloud seed).
pub const CLOUD_INIT: &str = "cloud-init";

impl Resolved {
    pub fn name(&self) -> &str {
        &self.recipe.appliance.name
    }
    /// A path from the recipe, made absolute against the project root.
    pub fn path(&self, p: &Utf8Path) -> Utf8PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.root.join(p)
        }
    }
    /// The packages of `arch`'s Debian root file system: the recipe's
    /// ([`qcow2::Qcow2Options::packages_for`]), plus on arm64, when the
    /// recipe builds a Raspberry Pi image, the Pi's boot firmware and
    /// `fdisk` (the first boot grows the root partition of the MBR card).
    /// One list for the arm64 qcow2 and the Pi image: they share the root.
    /// When an image runs as a service (`payloads.images[].run`), the
    /// container runtime ([`payloads::RUNTIME_PACKAGES`]). When the recipe
    /// has a cloud-init seed (`seed.cloud_init`), `cloud-init`, which reads
    /// it at first boot.
    pub fn root_packages(&self, arch: Arch) -> Vec<String> {
        let mut p = self.recipe.qcow2.packages_for(arch);
        let mut extras: Vec<&str> = Vec::new();
        if self.pi_root(arch) {
            extras.extend(["raspi-firmware", "fdisk"]);
        }
        if self.recipe.payloads.runs_containers() {
            extras.extend(payloads::RUNTIME_PACKAGES);
        }
        if self.recipe.seed.has_cloud_init() {
            extras.push(CLOUD_INIT);
        }
        for extra in extras {
            if !p.iter().any(|x| x == extra) {
                p.push(extra.to_string());
            }
        }
        p
    }

    /// The root file system of `arch` holds cloud-init (the recipe's seed
    /// asks for it, or the recipe lists it in `qcow2.packages`).
    pub fn root_has_cloud_init(&self, arch: Arch) -> bool {
        self.root_packages(arch).iter().any(|p| p == CLOUD_INIT)
    }

    /// `arch`'s root file system also serves the Raspberry Pi image.
    pub fn pi_root(&self, arch: Arch) -> bool {
        arch == Arch::Arm64 && self.recipe.pi.is_some()
    }

    /// `<name>-<version>-<arch>.<ext>`: every artifact's file name.
    pub fn artifact_name(&self, arch: Arch, ext: &str) -> String {
        format!("{}-{}-{}.{ext}", self.name(), self.version, arch)
    }
}

/// `FILE:LINE` of the first line holding `needle` at or after the first
/// line holding `anchor` (e.g. an image's `name: web`), or `FILE` when the
/// recipe text has no such line: error messages point at the setting.
pub(crate) fn locate(file: &Utf8Path, anchor: &str, needle: &str) -> String {
    match std::fs::read_to_string(file)
        .ok()
        .and_then(|t| line_of(&t, anchor, needle))
    {
        Some(l) => format!("{file}:{l}"),
        None => file.to_string(),
    }
}

/// The 1-based line of `needle` at or after `anchor`'s line (anywhere, when
/// no line holds `anchor`).
pub(crate) fn line_of(text: &str, anchor: &str, needle: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.contains(anchor)).unwrap_or(0);
    let holds = |l: &str| {
        let code = l.split(" #").next().unwrap_or(l);
        code.match_indices(needle).any(|(i, _)| {
            let word = |c: char| c.is_ascii_alphanumeric() || "-_.+".contains(c);
            let before = code[..i].chars().next_back().is_none_or(|c| !word(c));
            let after = code[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !word(c));
            before && after
        })
    };
    (start..lines.len())
        .find(|&i| holds(lines[i]))
        .map(|i| i + 1)
}

/// The suffixes of systemd unit names.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".slice",
    ".scope",
    ".swap",
    ".device",
];

/// `name` looks like a systemd unit name (`x.service`, `y.target`, …).
pub fn is_unit_name(name: &str) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:\\".contains(&b))
}

/// Load and resolve in one go.
pub fn load_resolved(file: &Utf8Path, root: &Utf8Path) -> Result<Resolved> {
    load(file)?.resolve(file, root)
}

#[cfg(test)]
mod tests {
    use super::with_section_lines;

    #[test]
    fn section_lines_join_an_existing_section_or_start_one() {
        let text = "appliance:\n  name: a\nqcow2:\n  packages: [x]\nsmoke: {}\n";
        let got = with_section_lines(text, "qcow2", "  size: 2G");
        assert_eq!(
            got,
            "appliance:\n  name: a\nqcow2:\n  size: 2G\n  packages: [x]\nsmoke: {}\n"
        );
        let got = with_section_lines("appliance:\n  name: a", "qcow2", "  size: 2G\n");
        assert_eq!(got, "appliance:\n  name: a\nqcow2:\n  size: 2G\n");
        // A key that merely ends in the section's name is not the section.
        let got = with_section_lines("my_qcow2:\n  a: 1\n", "qcow2", "  size: 2G\n");
        assert_eq!(got, "my_qcow2:\n  a: 1\nqcow2:\n  size: 2G\n");
        let got = with_section_lines("qcow2:\n  a: 1\n", "qcow2", "  size: 2G\n");
        assert_eq!(got, "qcow2:\n  size: 2G\n  a: 1\n");
    }
}
