//! Writing seeds: from the recipe alone, or by adding to an operator's
//! template without touching its bytes (only insertions, verified by parsing
//! the result back).

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value as J;

use super::validate::{self, SeedKind, Warning};
use super::yaml::{self, emit_item, emit_map, Kind, Node, Out, Val};
use super::{OverlayFormat, SeedTarget};
use crate::recipe::Resolved;

/// Generated seed files for one target (validated).
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: SeedTarget,
    pub user_data: String,
    pub meta_data: String,
    pub network_config: Option<Vec<u8>>,
    pub warnings: Vec<Warning>,
    /// Project files the seed was made from (templates, network-config, provision.env).
    pub sources: Vec<Utf8PathBuf>,
}

/// The recipe path as people read it (relative to the project root).
fn shown(r: &Resolved, p: &Utf8Path) -> String {
    p.strip_prefix(&r.root)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| p.to_string())
}

fn read(p: &Utf8Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {p} ({what})"))
}

/// Build the seed files for `target` and validate them.
pub fn generate(r: &Resolved, target: SeedTarget) -> Result<Seed> {
    let s = &r.recipe.seed;
    let allow = s.allow_passwords;
    let recipe = shown(r, &r.file);
    let mut warnings = Vec::new();
    let mut sources = Vec::new();
    let (kind, template, additions, at): (SeedKind, _, _, &[&str]) = match target {
        SeedTarget::Iso => (
            SeedKind::Autoinstall,
            s.autoinstall.template.clone(),
            autoinstall_settings(r)?,
            &["autoinstall"],
        ),
        SeedTarget::Qcow2 | SeedTarget::Pi => {
            let (adds, srcs) = cloud_settings(r)?;
            sources.extend(srcs);
            (
                SeedKind::CloudConfig,
                s.cloud_init.template.clone(),
                adds,
                &[],
            )
        }
    };
    let user_data = match template {
        None => {
            let mut out = String::from("#cloud-config\n");
            match target {
                SeedTarget::Iso => {
                    out.push_str(&format!(
                        "# Ubuntu autoinstall for {} {}, written by kiln from {recipe}.\n\
                         # Without interactive-sections the install asks nothing and erases the disk\n\
                         # that storage.layout.match picks. No password is baked in: the admin user\n\
                         # (user-data) has a locked password and logs in with its SSH keys.\n\
                         # kiln's late-commands lay the staged overlay from the ISO into /target, fix\n\
                         # ownership and modes, enable and mask units, regenerate SSH host keys and\n\
                         # write the installed marker. Change the recipe (seed.autoinstall), not this file.\n",
                        r.name(),
                        r.version
                    ));
                    out.push_str("autoinstall:\n");
                    emit_map(&additions, 2, &mut out);
                }
                _ => {
                    out.push_str(&format!(
                        "# cloud-init seed for {} {}, written by kiln from {recipe}.\n\
                         # The operator's config carrier: attach cidata.iso (or the CIDATA FAT image\n\
                         # cidata.img, which you can edit) to the VM at first boot.\n",
                        r.name(),
                        r.version
                    ));
                    emit_map(&additions, 0, &mut out);
                }
            }
            out
        }
        Some(t) => {
            let p = r.path(&t);
            let bytes = read(&p, "seed template")?;
            sources.push(p.clone());
            let diags = validate::diagnose_template(&bytes, &p, kind, allow);
            warnings.extend(validate::split(diags, &p)?);
            let text = String::from_utf8(bytes).expect("validated as UTF-8");
            if target != SeedTarget::Iso && r.recipe.seed.cloud_init.provision_env.is_some() {
                provision_clash(&text, &p, &super::provision_path(r))?;
            }
            merge_template(
                &text,
                &p,
                at,
                &additions,
                &format!("added by kiln from {recipe}"),
            )?
        }
    };
    let label = Utf8PathBuf::from(format!("user-data for {target} (generated)"));
    let final_warnings = validate::validate_user_data(user_data.as_bytes(), &label, kind, allow)?;
    if s.cloud_init.template.is_none() && target != SeedTarget::Iso
        || s.autoinstall.template.is_none() && target == SeedTarget::Iso
    {
        warnings.extend(final_warnings);
    }
    let mut meta = vec![(
        "instance-id".to_string(),
        Out::s(format!("{}-{}", r.name(), r.version)),
    )];
    let mut network_config = None;
    if target != SeedTarget::Iso {
        meta.push((
            "local-hostname".into(),
            Out::s(s.cloud_init.hostname().to_string()),
        ));
        if let Some(n) = &s.cloud_init.network_config {
            let p = r.path(n);
            let bytes = read(&p, "seed.cloud_init.network_config")?;
            warnings.extend(validate::validate_network_config(&bytes, &p)?);
            sources.push(p);
            network_config = Some(bytes);
        }
    }
    let mut meta_data = String::new();
    emit_map(&meta, 0, &mut meta_data);
    Ok(Seed {
        target,
        user_data,
        meta_data,
        network_config,
        warnings,
        sources,
    })
}

/// What kiln puts under `autoinstall:` (all of it without a template; with
/// one, only what the recipe names plus kiln's late-commands).
fn autoinstall_settings(r: &Resolved) -> Result<Vec<(String, Out)>> {
    let a = &r.recipe.seed.autoinstall;
    let mut v: Vec<(String, Out)> = vec![("version".into(), Out::Int(1))];
    // None at all is the unattended install (an empty list means the same).
    if let Some(s) = a.interactive_sections.as_ref().filter(|s| !s.is_empty()) {
        v.push(("interactive-sections".into(), Out::strs(s.clone())));
    }
    if let Some(l) = &a.locale {
        v.push(("locale".into(), Out::s(l)));
    }
    if let Some(k) = &a.keyboard_layout {
        v.push(("keyboard".into(), Out::map(vec![("layout", Out::s(k))])));
    }
    if let Some(t) = &a.timezone {
        v.push(("timezone".into(), Out::s(t)));
    }
    // Without a template kiln configures the network, unless the recipe
    // leaves it to the operator: DHCP on every wired interface, matched by
    // name so any NIC model works; `optional` so the installed system does
    // not wait at boot for a port without a cable.
    if a.template.is_none() && !a.is_interactive("network") {
        v.push((
            "network".into(),
            Out::map(vec![
                ("version", Out::Int(2)),
                (
                    "ethernets",
                    Out::map(vec![(
                        "wired",
                        Out::map(vec![
                            ("match", Out::map(vec![("name", Out::s("e*"))])),
                            ("dhcp4", Out::Bool(true)),
                            ("optional", Out::Bool(true)),
                        ]),
                    )]),
                ),
            ]),
        ));
    }
    let mut ssh = Vec::new();
    if let Some(i) = a.ssh_install_server {
        ssh.push(("install-server", Out::Bool(i)));
    }
    // The keys go to the admin user when kiln creates one (the installer's
    // `authorized-keys` go to the `identity` user).
    if !a.ssh_authorized_keys.is_empty() && a.admin_user.is_none() {
        ssh.push(("authorized-keys", Out::strs(a.ssh_authorized_keys.clone())));
    }
    if !ssh.is_empty() {
        v.push(("ssh".into(), Out::map(ssh)));
    }
    if a.storage_layout.is_some() || a.storage_match.is_some() {
        let mut layout = Vec::new();
        if let Some(l) = &a.storage_layout {
            layout.push(("name", Out::s(l)));
        }
        if let Some(m) = &a.storage_match {
            layout.push(("match", disk_match(m)));
        }
        v.push((
            "storage".into(),
            Out::map(vec![("layout", Out::map(layout))]),
        ));
    }
    if let Some(u) = &a.admin_user {
        v.push(("user-data".into(), admin_user_data(r, u)));
    }
    if !a.packages.is_empty() {
        v.push(("packages".into(), Out::strs(a.packages.clone())));
    }
    let mut cmds = late_commands(r)?;
    cmds.extend(a.late_commands.iter().cloned());
    v.push(("late-commands".into(), Out::strs(cmds)));
    Ok(v)
}

/// subiquity's match spec for the target disk.
fn disk_match(m: &crate::recipe::seed::DiskMatch) -> Out {
    let mut e = Vec::new();
    for (k, v) in [
        ("serial", &m.serial),
        ("model", &m.model),
        ("vendor", &m.vendor),
        ("path", &m.path),
    ] {
        if let Some(v) = v {
            e.push((k, Out::s(v)));
        }
    }
    if let Some(ssd) = m.ssd {
        e.push(("ssd", Out::Bool(ssd)));
    }
    if let Some(size) = m.size {
        e.push(("size", Out::s(size.as_str())));
    }
    Out::map(e)
}

/// The autoinstall `user-data` section: cloud-init on the installed system
/// creates the admin account at its first boot. Its password is locked (no
/// password is baked in): it logs in with the recipe's SSH keys, and sudo
/// asks no password it could not give. With `user-data` present the
/// installer needs no `identity` section.
fn admin_user_data(r: &Resolved, user: &str) -> Out {
    let a = &r.recipe.seed.autoinstall;
    let mut u = vec![
        ("name", Out::s(user)),
        ("gecos", Out::s(format!("{} administrator", r.name()))),
        ("groups", Out::strs(["adm", "sudo"])),
        ("shell", Out::s("/bin/bash")),
        ("lock_passwd", Out::Bool(true)),
        ("sudo", Out::s("ALL=(ALL) NOPASSWD:ALL")),
    ];
    if !a.ssh_authorized_keys.is_empty() {
        u.push((
            "ssh_authorized_keys",
            Out::strs(a.ssh_authorized_keys.clone()),
        ));
    }
    Out::map(vec![
        ("hostname", Out::s(r.recipe.seed.cloud_init.hostname())),
        ("users", Out::Seq(vec![Out::map(u)])),
    ])
}

/// Scratch file in the target while the overlay is laid.
const TARGET_TAR: &str = "/target/var/tmp/kiln-overlay.tar";

/// kiln's own late-commands (run by the installer with the new system at
/// `/target`), from the same recipe data `stage` uses.
pub fn late_commands(r: &Resolved) -> Result<Vec<String>> {
    let ov = super::iso_overlay(r);
    let name = r.name();
    let mut c = Vec::new();
    // 1. The staged overlay -> /target. Both formats go through one tar
    //    extraction so ownership (root, numeric), modes, symlinks and the
    //    base system's directory symlinks (merged /usr) are handled alike.
    match ov.format {
        OverlayFormat::Tar => {
            // The live installer may lack zstd; the installed system has it
            // (Ubuntu's initramfs needs it), so fall back to the target's.
            let src = ov.cdrom_path();
            c.push(format!(
                "zstd -dc {src} >{TARGET_TAR} || chroot /target zstd -dc <{src} >{TARGET_TAR}"
            ));
        }
        OverlayFormat::Tree => {
            c.push(format!(
                "tar -C {} -c --owner=0 --group=0 --numeric-owner -f {TARGET_TAR} .",
                ov.cdrom_path()
            ));
        }
    }
    c.push(format!(
        "tar -x -p --same-owner --numeric-owner --no-overwrite-dir --keep-directory-symlink -C /target -f {TARGET_TAR}"
    ));
    c.push(format!("rm -f {TARGET_TAR}"));
    // 2. Accounts from the staged sysusers.d files, then ownership and modes
    //    of the appliance's own directories, as staged.
    let arch = r
        .recipe
        .architectures
        .first()
        .copied()
        .unwrap_or(crate::recipe::Arch::Amd64);
    let spec = crate::stage::StageSpec::from_recipe(r, arch, Vec::new())?;
    if !spec.sysusers.is_empty() {
        c.push("curtin in-target -- systemd-sysusers".into());
    }
    let layout = spec.layout()?;
    let mut by_mode: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for base in ["etc", "opt", "srv", "var/lib", "usr/lib", "usr/share"] {
        let rel = format!("{base}/{name}");
        if let Some(crate::stage::Entry::Dir { mode }) = layout.get(&rel) {
            by_mode.entry(*mode).or_default().push(format!("/{rel}"));
        }
    }
    let dirs: Vec<String> = by_mode.values().flatten().cloned().collect();
    if !dirs.is_empty() {
        c.push(format!(
            "curtin in-target -- chown -R root:root {}",
            dirs.join(" ")
        ));
        for (mode, ds) in &by_mode {
            c.push(format!(
                "curtin in-target -- chmod {mode:04o} {}",
                ds.join(" ")
            ));
        }
    }
    // 3. Units: the recipe's enable/mask lists (the links are in the overlay
    //    too; systemctl makes the state explicit and checks the names).
    let (enable, mask) = crate::stage::unit_names(r);
    if !enable.is_empty() {
        c.push(format!(
            "curtin in-target -- systemctl enable {}",
            enable.join(" ")
        ));
    }
    if !mask.is_empty() {
        c.push(format!(
            "curtin in-target -- systemctl mask {}",
            mask.join(" ")
        ));
    }
    // 4. Per-install identities (`crate::identity`: SSH host keys, the
    //    snakeoil pair, …), made again on the installed system. The installer
    //    copies Ubuntu's prebuilt system image to the target, then installs
    //    packages there with apt: keys their maintainer scripts make then are
    //    this machine's own, but keys that came with the prebuilt image were
    //    made when Ubuntu built the ISO and would be shared by every machine
    //    installed from it. So every kind is removed and, when its package's
    //    program is installed, regenerated now (in the installer's chroot:
    //    the snakeoil certificate names the installer's host name; it is
    //    self-signed either way). Never the installer's, never shared.
    for id in crate::identity::IDENTITIES {
        c.push(format!("curtin in-target -- sh -c '{}'", id.reset_sh()));
    }
    // 5. The marker a still-attached ISO's boot menu looks for (last: only a
    //    complete install has it).
    let marker = super::installed_marker(r.name());
    let dir = Utf8Path::new(&marker)
        .parent()
        .expect("marker has a directory");
    c.push(format!(
        "mkdir -p /target{dir} && printf '%s\\n' '{} {}' >/target{marker}",
        name, r.version
    ));
    for cmd in &c {
        if cmd.contains('\n') {
            bail!("internal: a late-command contains a line break: {cmd}");
        }
    }
    Ok(c)
}

/// A template that writes the provision file itself would race kiln's entry.
fn provision_clash(text: &str, file: &Utf8Path, path: &str) -> Result<()> {
    let Ok(Some(root)) = yaml::parse(text) else {
        return Ok(());
    };
    if let Some(Val::Seq(files)) = root.get("write_files").map(|n| n.val()) {
        for f in files {
            if let Some(p) = f.get("path").filter(|p| p.text() == Some(path)) {
                bail!(
                    "{file}:{}:{}: the template writes {path} itself, and so does the recipe \
                     (seed.cloud_init.provision_env)\n    hint: keep one of them",
                    p.start.line,
                    p.start.col
                );
            }
        }
    }
    Ok(())
}

/// Top-level cloud-config keys kiln adds for qcow2/Pi seeds.
/// Entries kiln adds to a mapping.
type Entries = Vec<(String, Out)>;

fn cloud_settings(r: &Resolved) -> Result<(Entries, Vec<Utf8PathBuf>)> {
    let c = &r.recipe.seed.cloud_init;
    let mut v = Vec::new();
    let mut sources = Vec::new();
    if !c.ssh_authorized_keys.is_empty() {
        v.push((
            "ssh_authorized_keys".into(),
            Out::strs(c.ssh_authorized_keys.clone()),
        ));
    }
    if let Some(p) = &c.provision_env {
        let p = r.path(p);
        let bytes = read(&p, "seed.cloud_init.provision_env")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{p}: provision.env must be UTF-8 text"))?;
        sources.push(p);
        v.push((
            "write_files".into(),
            Out::Seq(vec![Out::map(vec![
                ("path", Out::s(super::provision_path(r))),
                ("owner", Out::s("root:root")),
                ("permissions", Out::s("0600")),
                ("content", Out::Text(text)),
            ])]),
        ));
    }
    Ok((v, sources))
}

pub(crate) fn to_json(o: &Out) -> J {
    match o {
        Out::Str(s) | Out::Text(s) => J::String(s.clone()),
        Out::Bool(b) => J::Bool(*b),
        Out::Int(i) => J::from(*i),
        Out::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Out::Map(e) => J::Object(e.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

struct Edit {
    at: usize,
    seq: usize,
    text: String,
}

/// Add `additions` to the mapping at `at` (a key path from the root) of a
/// template, by inserting text only: missing keys are appended to the
/// mapping, list items are put before the template's own items, nested
/// mappings are extended the same way, and a scalar that differs from the
/// template's is an error (kiln never rewrites a template's values).
pub fn merge_template(
    text: &str,
    file: &Utf8Path,
    at: &[&str],
    additions: &[(String, Out)],
    note: &str,
) -> Result<String> {
    let root = match yaml::parse(text) {
        Ok(Some(r)) => r,
        Ok(None) => yaml::parse("{}").unwrap().unwrap(),
        Err(e) => bail!(
            "{file}:{}:{}: YAML does not parse: {}",
            e.pos.line,
            e.pos.col,
            e.problem
        ),
    };
    let mut target = &root;
    let mut path = String::new();
    for k in at {
        target = target
            .get(k)
            .with_context(|| format!("{file}: the template has no `{k}:` mapping"))?;
        path = if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        };
    }
    let mut edits = Vec::new();
    let empty_root = matches!(root.val(), Val::Null)
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if empty_root && at.is_empty() {
        // A template with only comments: append everything.
        let mut s = String::new();
        if !text.is_empty() && !text.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&format!("# {note}\n"));
        emit_map(additions, 0, &mut s);
        edits.push(Edit {
            at: text.len(),
            seq: 0,
            text: s,
        });
    } else {
        extend_map(text, file, target, &path, additions, note, &mut edits)?;
    }
    edits.sort_by(|a, b| b.at.cmp(&a.at).then(b.seq.cmp(&a.seq)));
    let mut out = text.to_string();
    for e in &edits {
        out.insert_str(e.at, &e.text);
    }
    // The result must mean exactly the template plus the additions.
    let mut expected = if empty_root {
        J::Object(Default::default())
    } else {
        root.to_json()
    };
    let mut slot = &mut expected;
    for k in at {
        slot = slot.get_mut(*k).expect("navigated above");
    }
    apply_json(slot, additions);
    let got = yaml::parse(&out).ok().flatten().map(|n| n.to_json());
    if got.as_ref() != Some(&expected) {
        bail!(
            "{file}: kiln could not add its settings to this template without changing what the \
             template says (an unusual layout, e.g. a compact nested list)\n    hint: write the \
             affected mapping or list in plain block style, one entry per line"
        );
    }
    Ok(out)
}

fn line_start(text: &str, i: usize) -> usize {
    text[..i].rfind('\n').map(|n| n + 1).unwrap_or(0)
}

/// Where text appended after the node ending at `i` goes: the next line start.
fn after_line(text: &str, i: usize) -> usize {
    if i == 0 || text.as_bytes()[i - 1] == b'\n' {
        return i;
    }
    match text[i..].find('\n') {
        Some(n) => i + n + 1,
        None => text.len(),
    }
}

/// The end of the last scalar (or flow collection) inside `n`.
fn last_end(n: &Node) -> usize {
    match &n.kind {
        Kind::Map {
            entries,
            flow: false,
        } if !entries.is_empty() => last_end(&entries[entries.len() - 1].1),
        Kind::Seq { items, flow: false } if !items.is_empty() => last_end(&items[items.len() - 1]),
        _ => n.end.index,
    }
}

fn extend_map(
    text: &str,
    file: &Utf8Path,
    map: &Node,
    path: &str,
    adds: &[(String, Out)],
    note: &str,
    edits: &mut Vec<Edit>,
) -> Result<()> {
    let show = |n: &Node| format!("{file}:{}:{}", n.start.line, n.start.col);
    let Kind::Map { entries, flow } = &map.kind else {
        bail!(
            "{}: `{path}` is {} in the template; kiln needs a mapping there to add its settings",
            show(map),
            map.type_name()
        );
    };
    let keys: Vec<&str> = adds.iter().map(|(k, _)| k.as_str()).collect();
    if *flow {
        bail!(
            "{}: `{path}` is written in flow style `{{…}}`; kiln must add {} to it\n    hint: write it \
             as a block mapping (one key per line)",
            show(map),
            keys.join(", ")
        );
    }
    let indent = entries.first().map(|(k, _)| k.start.col - 1).unwrap_or(0);
    let mut append: Vec<(String, Out)> = Vec::new();
    for (key, val) in adds {
        let p = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some((_, have)) = map.entry(key) else {
            append.push((key.clone(), val.clone()));
            continue;
        };
        match val {
            Out::Map(sub) => extend_map(text, file, have, &p, sub, note, edits)?,
            Out::Seq(items) => {
                let Val::Seq(existing) = have.val() else {
                    bail!(
                        "{}: `{p}` is {} in the template, but kiln adds list items to it",
                        show(have),
                        have.type_name()
                    );
                };
                let new: Vec<&Out> = items
                    .iter()
                    .filter(|o| !existing.iter().any(|h| h.to_json() == to_json(o)))
                    .collect();
                if new.is_empty() {
                    continue;
                }
                if have.is_flow() || existing.is_empty() {
                    bail!(
                        "{}: `{p}` is written as a flow list `[…]`; kiln must add {} item(s) to it\n    \
                         hint: write it as a block list (one `- item` per line)",
                        show(have),
                        new.len()
                    );
                }
                let first = existing[0].start.index;
                let dash = text[..first]
                    .rfind('-')
                    .context("a block list item follows a dash")?;
                let ls = line_start(text, dash);
                if !text[ls..dash].bytes().all(|b| b == b' ') {
                    bail!(
                        "{}: `{p}` starts on the line of another item (a compact nested list)\n    hint: \
                         put its first `- item` on its own line",
                        show(have)
                    );
                }
                let col = dash - ls;
                let mut s = format!("{}# {note}\n", " ".repeat(col));
                for o in new {
                    emit_item(o, col, &mut s);
                }
                edits.push(Edit {
                    at: ls,
                    seq: edits.len(),
                    text: s,
                });
            }
            scalar => {
                if have.to_json() != to_json(scalar) {
                    bail!(
                        "{}: `{p}` is `{}` in the template, but the recipe sets `{}`\n    hint: remove one \
                         of them (kiln never rewrites a template's values)",
                        show(have),
                        have.text().unwrap_or("…"),
                        to_json(scalar)
                    );
                }
            }
        }
    }
    if !append.is_empty() {
        let at = after_line(text, last_end(map));
        let mut s = String::new();
        if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&format!("{}# {note}\n", " ".repeat(indent)));
        emit_map(&append, indent, &mut s);
        edits.push(Edit {
            at,
            seq: edits.len(),
            text: s,
        });
    }
    Ok(())
}

fn apply_json(j: &mut J, adds: &[(String, Out)]) {
    let J::Object(m) = j else { return };
    for (k, v) in adds {
        match (m.get_mut(k), v) {
            (None, _) => {
                m.insert(k.clone(), to_json(v));
            }
            (Some(e), Out::Map(sub)) => apply_json(e, sub),
            (Some(J::Array(a)), Out::Seq(items)) => {
                let new: Vec<J> = items
                    .iter()
                    .map(to_json)
                    .filter(|x| !a.contains(x))
                    .collect();
                a.splice(0..0, new);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds() -> Vec<(String, Out)> {
        vec![
            ("version".into(), Out::Int(1)),
            ("locale".into(), Out::s("en_US.UTF-8")),
            (
                "ssh".into(),
                Out::map(vec![("install-server", Out::Bool(true))]),
            ),
            ("late-commands".into(), Out::strs(["echo kiln"])),
        ]
    }

    #[test]
    fn template_bytes_are_kept_and_keys_added() {
        let t = "#cloud-config\n# mine\nautoinstall:\n  version: 1\n  # their comment\n  ssh:\n    allow-pw: false  # no\n  late-commands:\n    - echo theirs\n  identity: {realname: x}\nzzz: 1\n";
        let out =
            merge_template(t, "t".into(), &["autoinstall"], &adds(), "added by kiln").unwrap();
        // Every original line survives, in order.
        let mut it = out.lines();
        for l in t.lines() {
            assert!(it.any(|o| o == l), "lost line {l:?} in\n{out}");
        }
        let j = yaml::parse(&out).unwrap().unwrap().to_json();
        assert_eq!(
            j["autoinstall"]["late-commands"],
            serde_json::json!(["echo kiln", "echo theirs"])
        );
        assert_eq!(j["autoinstall"]["ssh"]["install-server"], true);
        assert_eq!(j["autoinstall"]["ssh"]["allow-pw"], false);
        assert_eq!(j["autoinstall"]["locale"], "en_US.UTF-8");
        assert_eq!(j["zzz"], 1);
    }

    #[test]
    fn conflicts_and_flow_lists_are_errors() {
        let t = "#cloud-config\nautoinstall:\n  version: 1\n  locale: de_DE.UTF-8\n";
        let e = merge_template(t, "t".into(), &["autoinstall"], &adds(), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t:4:11") && e.contains("locale"), "{e}");
        let t = "#cloud-config\nautoinstall:\n  version: 1\n  late-commands: [echo a]\n";
        let e = merge_template(t, "t".into(), &["autoinstall"], &adds()[3..], "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("block list"), "{e}");
    }

    #[test]
    fn appends_at_end_of_file_without_newline_and_after_block_scalars() {
        let t = "#cloud-config\nautoinstall:\n  version: 1\n  debconf-selections: |\n    a b\n\n    c d\n";
        let out = merge_template(t, "t".into(), &["autoinstall"], &adds()[1..2], "k").unwrap();
        let j = yaml::parse(&out).unwrap().unwrap().to_json();
        assert_eq!(j["autoinstall"]["debconf-selections"], "a b\n\nc d\n");
        let t = "#cloud-config\nautoinstall:\n  version: 1";
        let out = merge_template(t, "t".into(), &["autoinstall"], &adds()[1..2], "k").unwrap();
        assert!(out.starts_with(t));
    }

    #[test]
    fn byte_positions_with_non_ascii() {
        let t = "#cloud-config\n# é ü\nwrite_files:\n  - path: /ä\n    content: \"ö\"\n";
        let a = vec![(
            "write_files".to_string(),
            Out::Seq(vec![Out::map(vec![("path", Out::s("/k"))])]),
        )];
        let out = merge_template(t, "t".into(), &[], &a, "k").unwrap();
        let j = yaml::parse(&out).unwrap().unwrap().to_json();
        assert_eq!(j["write_files"][0]["path"], "/k");
        assert_eq!(j["write_files"][1]["path"], "/ä");
    }
}
