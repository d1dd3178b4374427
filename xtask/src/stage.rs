//! `stage`: the tree every image format lays over its root file system —
//! overlay files, systemd units with their enablement links, masks, sysusers
//! files, payload archives and `/etc/<name>/build-info.json` — plus a
//! deterministic `overlay.tar.zst` of it.
//!
//! Everything that can be checked without copying (unit files parse, enable
//! and mask name real units, overlays do not clash, no special files) is
//! checked while planning, so `--dry-run` reports it too.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::recipe::{Arch, Resolved};

/// Where units go in the image.
pub const UNIT_DIR: &str = "etc/systemd/system";
pub const SYSUSERS_DIR: &str = "usr/lib/sysusers.d";

/// The staged tree inside a stage step's output.
pub const TREE: &str = "tree";
/// The archive of the tree inside a stage step's output.
pub const TARBALL: &str = "overlay.tar.zst";

/// A unit file, parsed enough to enable it.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub name: String,
    pub source: Utf8PathBuf,
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
}

/// Parse a systemd unit file: sections, `Key=Value` lines, comments,
/// continuation lines. Errors name the file and line.
pub fn parse_unit(path: &Utf8Path) -> Result<Unit> {
    let name = path
        .file_name()
        .with_context(|| format!("{path}: not a file name"))?
        .to_string();
    if !crate::recipe::is_unit_name(&name) {
        bail!(
            "{path}: `{name}` is not a unit file name (expected a suffix like .service or .timer)"
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading unit file {path}"))?;
    let mut section: Option<String> = None;
    let mut seen_sections = BTreeSet::new();
    let (mut wanted_by, mut required_by) = (Vec::new(), Vec::new());
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let lineno = i + 1;
        let mut line = raw.trim().to_string();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, more)) => line.push_str(more.trim()),
                None => break,
            }
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                bail!("{path}:{lineno}: malformed section header `{line}`");
            }
            let s = line[1..line.len() - 1].to_string();
            seen_sections.insert(s.clone());
            section = Some(s);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("{path}:{lineno}: `{line}` is neither `Key=Value`, a `[Section]` nor a comment");
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("{path}:{lineno}: `{k}` is not a valid key");
        }
        let Some(sec) = &section else {
            bail!("{path}:{lineno}: `{k}=` appears before any [Section] header");
        };
        if sec == "Install" {
            let vals = v.split_whitespace().map(str::to_string);
            match k {
                "WantedBy" => wanted_by.extend(vals),
                "RequiredBy" => required_by.extend(vals),
                _ => {}
            }
        }
    }
    if seen_sections.is_empty() {
        bail!("{path}: no [Unit]/[Service]/[Install] section: this does not look like a unit file");
    }
    Ok(Unit {
        name,
        source: path.to_owned(),
        wanted_by,
        required_by,
    })
}

/// Everything the stage step copies, resolved and validated at plan time.
#[derive(Debug, Clone, Serialize)]
pub struct StageSpec {
    pub arch: Arch,
    /// (overlay directory, paths it wins)
    pub overlays: Vec<(Utf8PathBuf, Vec<String>)>,
    pub units: Vec<Unit>,
    pub enable: Vec<String>,
    pub mask: Vec<String>,
    pub sysusers: Vec<Utf8PathBuf>,
    /// Baked images run as services: kiln writes and enables their units.
    pub containers: Vec<crate::containers::Service>,
    /// Trees produced by payload export steps, merged in as-is.
    pub payload_trees: Vec<Utf8PathBuf>,
    pub build_info: serde_json::Value,
    pub name: String,
    pub epoch: i64,
}

impl StageSpec {
    pub fn from_recipe(
        r: &Resolved,
        arch: Arch,
        payload_trees: Vec<Utf8PathBuf>,
    ) -> Result<StageSpec> {
        let rc = &r.recipe;
        let file = &r.file;
        let mut units = Vec::new();
        let mut names = BTreeSet::new();
        for u in &rc.systemd.units {
            let p = r.path(u);
            let unit =
                parse_unit(&p).with_context(|| format!("{file}: systemd.units entry `{u}`"))?;
            if !names.insert(unit.name.clone()) {
                bail!("{file}: two unit files are named `{}`", unit.name);
            }
            units.push(unit);
        }
        let base: BTreeSet<&String> = rc.systemd.base_units.iter().collect();
        for e in &rc.systemd.enable {
            match units.iter().find(|u| &u.name == e) {
                Some(u) if u.wanted_by.is_empty() && u.required_by.is_empty() => bail!(
                    "{file}: systemd.enable names `{e}`, but {} has no WantedBy=/RequiredBy= in \
                     its [Install] section, so enabling it would do nothing",
                    u.source
                ),
                Some(_) => {}
                None if base.contains(e) => bail!(
                    "{file}: systemd.enable names `{e}`, a base-system unit; kiln can only enable \
                     units it installs (add its file to systemd.units)"
                ),
                None => bail!(
                    "{file}: systemd.enable names `{e}`, which is not among systemd.units ({})",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        for m in &rc.systemd.mask {
            if !names.contains(m) && !base.contains(m) {
                bail!(
                    "{file}: systemd.mask names `{m}`, which is neither among systemd.units nor \
                     systemd.base_units (list base-system units there to mask them)"
                );
            }
            if rc.systemd.enable.contains(m) {
                bail!("{file}: `{m}` is both enabled and masked");
            }
        }
        let containers = crate::containers::services(&rc.payloads.images);
        for c in &containers {
            let unit = c.unit_name();
            if names.contains(&unit) || rc.systemd.mask.contains(&unit) {
                bail!(
                    "{file}: image `{}` runs as `{unit}` (payloads.images[].run), and the recipe \
                     has a unit of that name too; rename the image or the unit",
                    c.name
                );
            }
        }
        let mut sysusers = Vec::new();
        for s in &rc.systemd.sysusers {
            let p = r.path(s);
            if !p.is_file() {
                bail!("{file}: systemd.sysusers file {p} does not exist");
            }
            sysusers.push(p);
        }
        let mut overlays = Vec::new();
        for o in &rc.overlays {
            let p = r.path(&o.path);
            if !p.is_dir() {
                bail!("{file}: overlay directory {p} does not exist");
            }
            overlays.push((
                p,
                o.wins
                    .iter()
                    .map(|w| w.trim_start_matches('/').to_string())
                    .collect(),
            ));
        }
        let build_info = json!({
            "name": r.name(),
            "version": r.version,
            "revision": r.revision,
            "source_date_epoch": r.epoch,
            "architecture": arch.debian(),
        });
        let spec = StageSpec {
            arch,
            overlays,
            units,
            enable: rc.systemd.enable.clone(),
            mask: rc.systemd.mask.clone(),
            sysusers,
            containers,
            payload_trees,
            build_info,
            name: r.name().to_string(),
            epoch: r.epoch,
        };
        spec.layout()?;
        Ok(spec)
    }

    /// Every path of the staged tree and where it comes from. Fails on clashes
    /// and special files.
    pub fn layout(&self) -> Result<BTreeMap<String, Entry>> {
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        let mut put = |map: &mut BTreeMap<String, Entry>,
                       rel: String,
                       e: Entry,
                       who: String,
                       wins: bool|
         -> Result<()> {
            if let Some(prev) = map.get(&rel) {
                let both_dirs = matches!(prev, Entry::Dir { .. }) && matches!(e, Entry::Dir { .. });
                if !both_dirs && !wins {
                    bail!(
                        "/{rel} is provided by both {} and {who}; remove one, or list `/{rel}` \
                         under `wins:` of the later overlay in the recipe",
                        owner[&rel]
                    );
                }
                if both_dirs {
                    return Ok(());
                }
            }
            owner.insert(rel.clone(), who);
            map.insert(rel, e);
            Ok(())
        };
        for (dir, wins) in &self.overlays {
            for (rel, md) in crate::digest::walk_sorted(dir)? {
                let src = dir.join(&rel);
                let ft = md.file_type();
                let e = if ft.is_symlink() {
                    let t =
                        std::fs::read_link(&src).with_context(|| format!("reading link {src}"))?;
                    let t = Utf8PathBuf::from_path_buf(t)
                        .map_err(|_| anyhow::anyhow!("{src}: link target is not UTF-8"))?;
                    Entry::Link { target: t }
                } else if ft.is_dir() {
                    Entry::Dir {
                        mode: md.permissions().mode() & 0o7777,
                    }
                } else if ft.is_file() {
                    Entry::File {
                        source: src.clone(),
                        mode: md.permissions().mode() & 0o7777,
                    }
                } else {
                    bail!(
                        "{src}: device nodes, sockets and FIFOs are not allowed in an overlay \
                         (create them at boot, e.g. with a tmpfiles.d entry)"
                    );
                };
                let win = wins.iter().any(|w| w == rel.as_str());
                put(&mut map, rel.to_string(), e, format!("overlay {dir}"), win)?;
            }
        }
        let gen = "kiln (generated)".to_string();
        let dirs = |map: &mut BTreeMap<String, Entry>, rel: &str| -> Result<()> {
            let p = Utf8Path::new(rel);
            for a in p.ancestors().skip(1) {
                if a.as_str().is_empty() {
                    continue;
                }
                map.entry(a.to_string())
                    .or_insert(Entry::Dir { mode: 0o755 });
            }
            Ok(())
        };
        for u in &self.units {
            let rel = format!("{UNIT_DIR}/{}", u.name);
            dirs(&mut map, &rel)?;
            put(
                &mut map,
                rel,
                Entry::File {
                    source: u.source.clone(),
                    mode: 0o644,
                },
                u.source.to_string(),
                false,
            )?;
        }
        for e in &self.enable {
            let u = self.units.iter().find(|u| &u.name == e).expect("validated");
            for (t, kind) in u
                .wanted_by
                .iter()
                .map(|t| (t, "wants"))
                .chain(u.required_by.iter().map(|t| (t, "requires")))
            {
                let rel = format!("{UNIT_DIR}/{t}.{kind}/{}", u.name);
                dirs(&mut map, &rel)?;
                let target = Utf8PathBuf::from(format!("/{UNIT_DIR}/{}", u.name));
                put(&mut map, rel, Entry::Link { target }, gen.clone(), false)?;
            }
        }
        for c in &self.containers {
            let unit = c.unit_name();
            let rel = format!("{UNIT_DIR}/{unit}");
            dirs(&mut map, &rel)?;
            let bytes = c.unit().into_bytes();
            put(
                &mut map,
                rel,
                Entry::Bytes { bytes, mode: 0o644 },
                gen.clone(),
                false,
            )?;
            let rel = format!("{UNIT_DIR}/multi-user.target.wants/{unit}");
            dirs(&mut map, &rel)?;
            let target = Utf8PathBuf::from(format!("/{UNIT_DIR}/{unit}"));
            put(&mut map, rel, Entry::Link { target }, gen.clone(), false)?;
        }
        for m in &self.mask {
            let rel = format!("{UNIT_DIR}/{m}");
            dirs(&mut map, &rel)?;
            // A mask replaces the recipe's own unit file of that name.
            map.remove(&rel);
            put(
                &mut map,
                rel,
                Entry::Link {
                    target: "/dev/null".into(),
                },
                gen.clone(),
                false,
            )?;
        }
        for s in &self.sysusers {
            let base = s.file_name().unwrap_or("sysusers");
            let name = if base.ends_with(".conf") {
                base.to_string()
            } else {
                format!("{}.conf", base.trim_end_matches(".sysusers"))
            };
            let rel = format!("{SYSUSERS_DIR}/{name}");
            dirs(&mut map, &rel)?;
            put(
                &mut map,
                rel,
                Entry::File {
                    source: s.clone(),
                    mode: 0o644,
                },
                s.to_string(),
                false,
            )?;
        }
        let rel = format!("etc/{}/build-info.json", self.name);
        dirs(&mut map, &rel)?;
        let mut bi = serde_json::to_string_pretty(&self.build_info)?;
        bi.push('\n');
        put(
            &mut map,
            rel,
            Entry::Bytes {
                bytes: bi.into_bytes(),
                mode: 0o644,
            },
            gen.clone(),
            false,
        )?;
        for t in &self.payload_trees {
            if !t.exists() {
                // Planned but not yet built: checked again when the op runs.
                continue;
            }
            for (rel, md) in crate::digest::walk_sorted(t)? {
                let src = t.join(&rel);
                let e = if md.is_dir() {
                    Entry::Dir {
                        mode: md.permissions().mode() & 0o7777,
                    }
                } else if md.is_file() {
                    Entry::File {
                        source: src,
                        mode: md.permissions().mode() & 0o7777,
                    }
                } else {
                    bail!("{src}: payload trees hold only files and directories");
                };
                put(&mut map, rel.to_string(), e, format!("payload {t}"), false)?;
            }
        }
        Ok(map)
    }
}

/// One path in the staged tree.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        source: Utf8PathBuf,
        mode: u32,
    },
    Bytes {
        bytes: Vec<u8>,
        mode: u32,
    },
    Link {
        target: Utf8PathBuf,
    },
    /// A file of a payload export step: hard-linked (cache entries are
    /// immutable), so multi-GiB models are not copied again.
    Payload {
        source: Utf8PathBuf,
        mode: u32,
    },
}

struct StageOp(StageSpec);

impl Op for StageOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "stage": self.0 })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let spec = &self.0;
        for t in &spec.payload_trees {
            if !t.is_dir() {
                bail!(
                    "payload tree {t} is missing: an export step produced no output (fail closed)"
                );
            }
        }
        let tree = cx.out.join(TREE);
        std::fs::create_dir_all(&tree)?;
        let layout = spec.layout()?;
        for (rel, e) in &layout {
            crate::signals::check()?;
            let dest = tree.join(rel);
            match e {
                Entry::Dir { mode } => {
                    std::fs::create_dir_all(&dest).with_context(|| format!("creating {dest}"))?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::File { source, mode } => {
                    std::fs::copy(source, &dest)
                        .with_context(|| format!("copying {source} to {dest}"))?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::Payload { source, mode } => {
                    if std::fs::hard_link(source, &dest).is_err() {
                        std::fs::copy(source, &dest)
                            .with_context(|| format!("copying {source} to {dest}"))?;
                    }
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::Bytes { bytes, mode } => {
                    std::fs::write(&dest, bytes).with_context(|| format!("writing {dest}"))?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::Link { target } => {
                    std::os::unix::fs::symlink(target, &dest)
                        .with_context(|| format!("creating link {dest} -> {target}"))?;
                }
            }
        }
        // Directories from the layout map get their modes before children are
        // written; make sure the tree root is 0755 and every timestamp is the epoch.
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755))?;
        crate::fsutil::set_tree_mtimes(&tree, spec.epoch)?;
        let (hex, _) =
            crate::archive::write_tree_tar_zst(&tree, &cx.out.join(TARBALL), spec.epoch)?;
        std::fs::write(
            cx.out.join(format!("{TARBALL}.sha256")),
            crate::digest::sha256sum_line(&hex, TARBALL),
        )?;
        Ok(())
    }
}

/// Plan the stage for `arch` and publish its overlay archive
/// (`<name>-<version>-<arch>.overlay.tar.zst`).
pub fn plan_published(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    let i = plan_or_reuse(r, plan, arch)?;
    let from = plan.step(i).output(TARBALL);
    plan.publish(from, r.artifact_name(arch, "overlay.tar.zst"), true);
    Ok(i)
}

/// The stage step for `arch`: the plan's own when it has one, else a new one.
pub fn plan_or_reuse(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    match plan.steps.iter().position(|s| s.name == step_name(arch)) {
        Some(i) => Ok(i),
        None => self::plan(r, plan, arch),
    }
}

/// The name of `arch`'s stage step.
pub fn step_name(arch: Arch) -> String {
    format!("stage-{arch}")
}

/// Add the stage step (and the payload export steps it needs) for `arch`;
/// returns the stage step's index.
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    let payload_steps = crate::export::plan(r, plan, arch)?;
    let payload_trees: Vec<Utf8PathBuf> = payload_steps
        .iter()
        .map(|&i| plan.step(i).output(crate::export::TREE))
        .collect();
    let spec = StageSpec::from_recipe(r, arch, payload_trees)?;
    let mut b = StepBuilder::new(
        step_name(arch),
        format!("stage the overlay tree for {arch}"),
    );
    for (dir, _) in &spec.overlays {
        b = b.input(Input::tree(dir)?);
    }
    for u in &spec.units {
        b = b.input(Input::file(&u.source)?);
    }
    for s in &spec.sysusers {
        b = b.input(Input::file(s)?);
    }
    for &i in &payload_steps {
        b = b.after(plan.step(i));
    }
    b = b
        .input(Input::value("version", &r.version))
        .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
        .op(StageOp(spec));
    Ok(plan.add(b))
}

/// The recipe's unit lists, for seeds that enable/mask units in an installer
/// (the same data `stage` uses, never a second list).
pub fn unit_names(r: &Resolved) -> (Vec<String>, Vec<String>) {
    (
        r.recipe.systemd.enable.clone(),
        r.recipe.systemd.mask.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Result<Unit> {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().join("x.service")).unwrap();
        std::fs::write(&p, text).unwrap();
        parse_unit(&p)
    }

    #[test]
    fn install_section_and_continuations() {
        let u = unit("# c\n[Unit]\nDescription=a \\\n  b\n; c\n[Install]\nWantedBy=multi-user.target \\\n graphical.target\nRequiredBy=x.target\n").unwrap();
        assert_eq!(u.wanted_by, ["multi-user.target", "graphical.target"]);
        assert_eq!(u.required_by, ["x.target"]);
    }

    #[test]
    fn malformed_units_are_refused_with_a_line() {
        let e = unit("Description=x\n").unwrap_err().to_string();
        assert!(
            e.contains(":1: `Description=` appears before any [Section]"),
            "{e}"
        );
        let e = unit("[Unit\n").unwrap_err().to_string();
        assert!(e.contains(":1: malformed section header"), "{e}");
        let e = unit("").unwrap_err().to_string();
        assert!(e.contains("does not look like a unit file"), "{e}");
    }

    /// The demo recipe's web image runs as a service: its unit is written
    /// and enabled; an image named like one of the recipe's units is refused.
    #[test]
    fn images_that_run_get_an_enabled_unit() {
        let root = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let file = root.join("recipes/demo.yaml");
        let r = crate::recipe::load_resolved(&file, root).unwrap();
        let spec = StageSpec::from_recipe(&r, Arch::Amd64, Vec::new()).unwrap();
        let layout = spec.layout().unwrap();
        match &layout["etc/systemd/system/demo-web.service"] {
            Entry::Bytes { bytes, mode: 0o644 } => {
                let u = String::from_utf8_lossy(bytes);
                assert!(u.contains("--publish 80:8080 demo-web:latest"), "{u}");
                assert!(
                    u.contains("After=network.target demo-bootstrap.service"),
                    "{u}"
                );
            }
            e => panic!("{e:?}"),
        }
        match &layout["etc/systemd/system/multi-user.target.wants/demo-web.service"] {
            Entry::Link { target } => assert_eq!(target, "/etc/systemd/system/demo-web.service"),
            e => panic!("{e:?}"),
        }
        assert!(r.root_packages(Arch::Amd64).iter().any(|p| p == "podman"));

        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("name: demo-web", "name: demo-bootstrap");
        let r = crate::recipe::parse(&text, &file)
            .unwrap()
            .resolve(&file, root)
            .unwrap();
        let e = StageSpec::from_recipe(&r, Arch::Amd64, Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("runs as `demo-bootstrap.service`"),
            "{e:#}"
        );
    }
}
