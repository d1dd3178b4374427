//! The formats a recipe builds and the one plan that builds a selection of
//! them. `cargo xtask build` plans every format; `cargo xtask release` plans
//! the ones `--targets` names, for the architectures `--arch` names. Both go
//! through [`plan`], so a release builds exactly what a build does, sharing
//! every step (one stage, one Debian root per architecture, one disk for the
//! qcow2 and the OVA). [`matrix`] lists every (format, architecture) a recipe
//! builds: the release workflow runs one job per entry.

use anyhow::{bail, Result};
use camino::Utf8PathBuf;

use crate::plan::Plan;
use crate::recipe::{Arch, Resolved};

/// One kind of artifact, in the order a plan adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `<name>-<version>-<arch>.overlay.tar.zst` per architecture.
    Overlay,
    /// The installer ISO (kiln's offline installer, or a remastered Ubuntu ISO).
    Iso,
    /// `<name>-<version>-<arch>.qcow2` per architecture.
    Qcow2,
    /// The amd64 OVA.
    Ova,
    /// The Raspberry Pi card image.
    Pi,
}

pub const ALL: [Format; 5] = [
    Format::Overlay,
    Format::Iso,
    Format::Qcow2,
    Format::Ova,
    Format::Pi,
];

impl Format {
    /// The format `--targets` calls `name`.
    pub fn from_name(name: &str) -> Option<Format> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    /// The architectures this format is built for by `r`: the overlay and
    /// the qcow2 for each of the recipe's, the ISO and the OVA for amd64, the
    /// Raspberry Pi image for arm64.
    pub fn arches(self, r: &Resolved) -> Vec<Arch> {
        match self {
            Format::Overlay | Format::Qcow2 => r.recipe.architectures.clone(),
            Format::Iso | Format::Ova => vec![Arch::Amd64],
            Format::Pi => vec![Arch::Arm64],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Overlay => "overlay",
            Format::Iso => "iso",
            Format::Qcow2 => "qcow2",
            Format::Ova => "ova",
            Format::Pi => "pi",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the ISO is built from, beyond the recipe (`--base-iso`), and which
/// architectures to build (`--arch`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub base_iso: Option<Utf8PathBuf>,
    pub base_sha256: Option<String>,
    /// `--dry-run`: read bases without remembering digests.
    pub preview: bool,
    /// Only these architectures (`--arch`); empty: every one.
    pub arches: Vec<Arch>,
}

impl Options {
    fn wants(&self, a: Arch) -> bool {
        self.arches.is_empty() || self.arches.contains(&a)
    }

    /// The architectures `f` is built for by `r` with these options.
    pub fn arches_of(&self, r: &Resolved, f: Format) -> Vec<Arch> {
        f.arches(r).into_iter().filter(|&a| self.wants(a)).collect()
    }
}

/// The ISO is built in installer mode, or with a base to remaster.
pub fn with_iso(r: &Resolved, o: &Options) -> bool {
    o.base_iso.is_some()
        || r.recipe.iso.base.is_some()
        || r.recipe.iso.mode() == crate::recipe::iso::IsoMode::Installer
}

/// The formats this recipe builds (with these options), each once, in order.
pub fn available(r: &Resolved, o: &Options) -> Vec<Format> {
    ALL.into_iter()
        .filter(|&f| builds(r, o, f) && !o.arches_of(r, f).is_empty())
        .collect()
}

/// The recipe builds `f` at all (for some architecture).
fn builds(r: &Resolved, o: &Options, f: Format) -> bool {
    match f {
        Format::Overlay | Format::Qcow2 => true,
        Format::Iso => with_iso(r, o),
        Format::Ova => r.recipe.architectures.contains(&Arch::Amd64),
        Format::Pi => r.recipe.pi.is_some(),
    }
}

/// Every (format, architecture) the recipe builds, in order: the units a
/// release can be split into, one runner each (the release workflow's matrix).
pub fn matrix(r: &Resolved, o: &Options) -> Vec<(Format, Arch)> {
    available(r, o)
        .into_iter()
        .flat_map(|f| o.arches_of(r, f).into_iter().map(move |a| (f, a)))
        .collect()
}

/// The formats named in `wanted` (names as `--targets` takes them), checked
/// against what the recipe builds: an unknown name, a format the recipe does
/// not build or an empty selection is an error naming what exists.
pub fn select(r: &Resolved, o: &Options, wanted: &[String]) -> Result<Vec<Format>> {
    let have = available(r, o);
    let list = |v: &[Format]| v.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
    let arches = |v: &[Arch]| v.iter().map(|a| a.debian()).collect::<Vec<_>>().join(", ");
    if have.is_empty() {
        if !o.arches.is_empty() {
            bail!(
                "{} builds nothing for {}: its targets are built for {}",
                r.file,
                arches(&o.arches),
                matrix(
                    r,
                    &Options {
                        arches: Vec::new(),
                        ..o.clone()
                    }
                )
                .iter()
                .map(|(f, a)| format!("{f} ({a})"))
                .collect::<Vec<_>>()
                .join(", ")
            );
        }
        bail!("{}: the recipe builds no format", r.file);
    }
    if wanted.is_empty() {
        return Ok(have);
    }
    let mut out = Vec::new();
    for w in wanted.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
        let Some(f) = Format::from_name(w) else {
            bail!(
                "unknown target `{w}`: the targets are {}; {} builds {}",
                list(&ALL),
                r.file,
                list(&have)
            );
        };
        if !have.contains(&f) && builds(r, o, f) {
            bail!(
                "target `{w}` is built for {} only, not for {} (--arch); for {} {} builds {}",
                arches(&f.arches(r)),
                arches(&o.arches),
                arches(&o.arches),
                r.file,
                list(&have)
            );
        }
        if !have.contains(&f) {
            let why = match f {
                Format::Pi => "it has no `pi:` section",
                Format::Ova => "its architectures do not include amd64",
                Format::Iso => "iso.mode is remaster and no base ISO is set (iso.base, --base-iso)",
                Format::Overlay | Format::Qcow2 => "",
            };
            bail!(
                "target `{w}`: {} does not build it ({why}); it builds {}",
                r.file,
                list(&have)
            );
        }
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        bail!(
            "--targets selects nothing; {} builds {}",
            r.file,
            list(&have)
        );
    }
    out.sort();
    Ok(out)
}

/// Add to `plan` every step `formats` need and publish their artifacts:
/// the overlay archive and the qcow2 per architecture (the ones `o` selects),
/// the amd64 OVA, the Raspberry Pi image and the ISO. Steps two formats need
/// are planned once. A format none of whose architectures `o` selects is
/// not planned ([`select`] refuses to select it).
pub fn plan(r: &Resolved, plan: &mut Plan, formats: &[Format], o: &Options) -> Result<()> {
    let has = |f| formats.contains(&f) && !o.arches_of(r, f).is_empty();
    if has(Format::Overlay) {
        for arch in o.arches_of(r, Format::Overlay) {
            crate::stage::plan_published(r, plan, arch)?;
        }
    }
    if has(Format::Iso) {
        let o = crate::iso::Overrides {
            base_iso: o.base_iso.clone(),
            base_sha256: o.base_sha256.clone(),
            preview: o.preview,
        };
        crate::iso::plan(r, plan, &o)?;
    }
    if has(Format::Qcow2) {
        for arch in o.arches_of(r, Format::Qcow2) {
            crate::qcow2::plan(r, plan, arch)?;
        }
    }
    if has(Format::Ova) {
        let disk = crate::ova::DiskSource::from_recipe(r, plan, crate::ova::Firmware::Auto)?;
        crate::ova::plan(r, plan, Arch::Amd64, disk)?;
    }
    if has(Format::Pi) {
        crate::pi::plan(r, plan)?;
    }
    Ok(())
}
