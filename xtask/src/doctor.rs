//! `doctor`: which external tools a target needs, found or not, their
//! versions and packages; `--install` installs the missing ones with apt.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use serde_json::json;

use crate::tools::registry::{self, Kind, Requirement, Target};
use crate::ui;

static VERSIONS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// A program's version line (memoized), `missing` when absent, `unknown`
/// when it has no version probe or the probe failed.
pub fn version(program: &str) -> String {
    if let Some(v) = VERSIONS.lock().unwrap().get(program) {
        return v.clone();
    }
    let v = probe(program);
    VERSIONS
        .lock()
        .unwrap()
        .insert(program.to_string(), v.clone());
    v
}

fn probe(program: &str) -> String {
    if crate::tools::find(program).is_none() {
        return "missing".into();
    }
    let args: &[&str] = registry::requirement(program)
        .map(|r| r.version_args)
        .unwrap_or(&["--version"]);
    if args.is_empty() {
        return "unknown".into();
    }
    let cmd = crate::tools::Cmd::new(program, "probe the version").args(args);
    let out = match crate::tools::run_unchecked(&cmd) {
        Ok(Ok(o)) => o,
        Ok(Err(f)) => crate::tools::Output {
            stdout: f.stdout,
            stderr: f.stderr,
        },
        Err(_) => return "unknown".into(),
    };
    let text = format!("{}\n{}", out.stdout_str(), out.stderr_str());
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(100)
        .collect()
}

/// The version line of a program older than the requirement's minimum
/// (`None` when it is new enough, absent, or its version can't be read).
pub fn too_old(r: &Requirement) -> Option<String> {
    let (min, _) = r.min_version?;
    if !matches!(r.kind, Kind::Program) || !r.present() {
        return None;
    }
    let line = version(r.name);
    let found = registry::parse_version(&line)?;
    registry::older_than(&found, min).then_some(line)
}

/// Requirements of a target that are absent or too old.
pub fn missing(target: Target) -> Vec<&'static Requirement> {
    registry::for_target(target)
        .into_iter()
        .filter(|r| !r.present() || too_old(r).is_some())
        .collect()
}

/// `  - name (purpose): package P` plus, for a too-old program, what was
/// found and what is needed.
fn missing_line(r: &Requirement) -> String {
    let old = match (too_old(r), r.min_version) {
        (Some(found), Some((min, why))) => {
            format!(" [found `{found}`; {why} needs {min} or newer]")
        }
        _ => String::new(),
    };
    format!(
        "  - {} ({}){old}: package {}{}",
        r.name,
        r.purpose,
        r.package,
        if r.backports {
            " (bookworm-backports)"
        } else if r.pip.is_some() {
            " (PyPI, pip)"
        } else {
            ""
        }
    )
}

/// What a host lacks of a list of needed programs and files.
#[derive(Debug, Default)]
pub struct Lacking {
    /// Known to the tool table: absent, or older than its minimum.
    pub tools: Vec<&'static Requirement>,
    /// Absent and not in the tool table (a kiln bug: every tool has a row).
    pub unknown: Vec<String>,
    /// Foreign architectures whose programs need qemu-user registered with
    /// binfmt_misc (kernel state, not a package).
    pub binfmt: Vec<crate::recipe::Arch>,
}

impl Lacking {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.unknown.is_empty() && self.binfmt.is_empty()
    }
    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tools.iter().map(|r| missing_line(r)).collect();
        v.extend(self.unknown.iter().map(|u| {
            format!("  - {u}: not installed, and kiln's tool table has no package for it")
        }));
        v.extend(self.binfmt.iter().map(|a| {
            format!(
                "  - qemu-user for {a} registered with binfmt_misc (kernel state; \
                 `doctor --install` registers {})",
                crate::tools::binfmt::rule_file(*a)
            )
        }));
        v
    }
}

/// What of `needs` (program names and host file paths, as a plan lists
/// them) this host lacks.
pub fn lacking(needs: &[String]) -> Lacking {
    use crate::recipe::Arch;
    let mut l = Lacking::default();
    for n in needs {
        match registry::requirement(n) {
            Some(r) if !r.present() || too_old(r).is_some() => l.tools.push(r),
            Some(_) => {}
            None if crate::tools::find(n).is_none() => l.unknown.push(n.clone()),
            None => {}
        }
    }
    for arch in [Arch::Amd64, Arch::Arm64] {
        let rule = crate::tools::binfmt::rule_file(arch);
        if needs.contains(&rule) && !crate::tools::binfmt::can_run(arch) {
            l.binfmt.push(arch);
        }
    }
    l
}

/// Before any work: everything `needs` names is on this host, or is
/// installed now. As root on a host with apt, unless `no_install`, the
/// missing tools are installed exactly as `cargo xtask test` installs its
/// own (backports first, then binfmt registration); otherwise one error
/// lists everything missing, with the command that installs it. `what`
/// names the work in messages. Returns whether anything was installed (tool
/// versions changed: a plan keyed on them must be made again).
pub fn ensure(needs: &[String], what: &str, no_install: bool) -> Result<bool> {
    let l = lacking(needs);
    if l.is_empty() {
        return Ok(false);
    }
    let can_install = !no_install && is_root() && crate::tools::find("apt-get").is_some();
    if !can_install || !l.unknown.is_empty() {
        let how = if !l.unknown.is_empty() {
            "install them by hand (kiln cannot tell their package)".to_string()
        } else if no_install {
            "run `cargo xtask doctor --install` as root, or this command again without \
             `--no-install` as root"
                .to_string()
        } else if crate::tools::find("apt-get").is_none() {
            "install the packages named above (this host has no apt-get)".to_string()
        } else {
            "run `cargo xtask doctor --install` as root (or this command as root: it installs \
             what it needs first)"
                .to_string()
        };
        bail!(
            "{what} needs tools this host lacks:\n{}\n{how}",
            l.lines().join("\n")
        );
    }
    ui::info(&format!(
        "{what}: installing what this host lacks first (`--no-install` turns this off):\n{}",
        l.lines().join("\n")
    ));
    if !l.tools.is_empty() {
        install_missing(&l.tools)?;
    }
    // The versions probed before the install are stale now.
    VERSIONS.lock().unwrap().clear();
    for arch in &l.binfmt {
        crate::tools::binfmt::register(*arch)?;
    }
    let still = lacking(needs);
    let still_tools: Vec<_> = still.tools.iter().filter(|r| r.manual.is_none()).collect();
    if !still_tools.is_empty() || !still.binfmt.is_empty() {
        bail!(
            "still missing after the install:\n{}",
            still.lines().join("\n")
        );
    }
    if !still.tools.is_empty() {
        bail!(
            "{what} needs tools apt cannot install here:\n{}",
            still.lines().join("\n")
        );
    }
    ui::info("all tools installed");
    Ok(true)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn target_name(t: Target) -> &'static str {
    match t {
        Target::Seed => "seed",
        Target::Iso => "iso",
        Target::Qcow2 => "qcow2",
        Target::Ova => "ova",
        Target::Pi => "pi",
        Target::Smoke => "smoke",
        Target::Scan => "scan",
        Target::Test => "test",
        Target::All => "all",
    }
}

pub fn run(target: Target, install: bool, json_out: bool) -> Result<()> {
    let reqs = registry::for_target(target);
    if json_out {
        let rows: Vec<_> = reqs
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "kind": r.kind, "package": r.package, "backports": r.backports,
                    "purpose": r.purpose, "found": r.present(),
                    "min_version": r.min_version.map(|(v, _)| v), "too_old": too_old(r).is_some(),
                    "version": match r.kind { Kind::Program => version(r.name), Kind::File => String::new() },
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<48} {:<8} {:<44} package", "tool", "status", "version");
        for r in &reqs {
            let (status, ver) = match (r.present(), r.kind) {
                (true, Kind::Program) if too_old(r).is_some() => ("TOO OLD", version(r.name)),
                (true, Kind::Program) => ("ok", version(r.name)),
                (true, Kind::File) => ("ok", String::new()),
                (false, _) => ("MISSING", String::new()),
            };
            let pkg = if r.backports {
                format!("{} (bookworm-backports)", r.package)
            } else if let Some(spec) = r.pip {
                format!("{spec} (PyPI, pip)")
            } else {
                r.package.to_string()
            };
            println!(
                "{:<48} {:<8} {:<44} {pkg}",
                r.name,
                status,
                truncate(&ver, 44)
            );
        }
    }
    let miss = missing(target);
    let unregistered = needs_binfmt(target);
    if unregistered {
        println!(
            "{:<48} {:<8} {:<44} (kernel state: `doctor --install` registers it)",
            "binfmt_misc qemu-aarch64", "OFF", ""
        );
    }
    if miss.is_empty() && !unregistered {
        ui::info(&format!(
            "all {} tools for `{}` are present",
            reqs.len(),
            target_name(target)
        ));
        return Ok(());
    }
    if !install {
        bail!(
            "{} missing or too old for `{}`; run `cargo xtask doctor --target {} --install` as root",
            miss.len() + usize::from(unregistered),
            target_name(target),
            target_name(target)
        );
    }
    self::install(target)
}

/// Install what `target` lacks (or has too old), then check again. Tools
/// apt cannot install are only reported (the table says how to get them).
pub fn install(target: Target) -> Result<()> {
    let names: Vec<String> = registry::for_target(target)
        .iter()
        .filter(|r| r.manual.is_none())
        .map(|r| r.name.to_string())
        .collect();
    if !ensure(&names, &format!("`{}`", target_name(target)), false)? {
        ui::info("all tools installed");
    }
    Ok(())
}

/// `target` builds arm64 root file systems and this host cannot run arm64
/// programs yet (no binfmt_misc rule registered).
pub fn needs_binfmt(target: Target) -> bool {
    let arm64 = crate::recipe::Arch::Arm64;
    let rule = crate::tools::binfmt::rule_file(arm64);
    registry::for_target(target).iter().any(|r| r.name == rule)
        && !crate::tools::binfmt::can_run(arm64)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// apt-get install the packages providing `reqs`; on Debian bookworm first
/// add bookworm-backports (and non-free-firmware) using the host's own mirror.
pub fn install_missing(reqs: &[&Requirement]) -> Result<()> {
    if !is_root() {
        let pkgs: BTreeSet<_> = reqs.iter().map(|r| r.package).collect();
        bail!(
            "installing needs root; run as root, or install by hand: apt-get install {}",
            pkgs.into_iter().collect::<Vec<_>>().join(" ")
        );
    }
    let codename = crate::hostapt::host_codename();
    let bookworm = codename.as_deref() == Some("bookworm");
    let mut plain: BTreeSet<&str> = BTreeSet::new();
    let mut bpo: BTreeSet<&str> = BTreeSet::new();
    let mut pypi: BTreeSet<&str> = BTreeSet::new();
    for r in reqs {
        if let Some(spec) = r.pip {
            pypi.insert(spec);
            continue;
        }
        if let Some(how) = r.manual {
            ui::warn(&format!("{}: not installed with apt here; {how}", r.name));
            continue;
        }
        if r.backports && bookworm {
            bpo.insert(r.package);
        } else {
            plain.insert(r.package);
        }
    }
    if bookworm {
        add_bookworm_sources(Utf8Path::new("/etc/apt"))?;
    }
    crate::tools::run(&crate::tools::apt::update())?;
    let plain: Vec<&str> = plain.into_iter().collect();
    let bpo: Vec<&str> = bpo.into_iter().collect();
    // Backports first: with qemu-system-x86 from backports installed, the
    // plain set (libguestfs-tools needs a qemu-system) resolves against it.
    // The other order makes apt pick bookworm's qemu-system-common, which the
    // backports qemu-utils breaks, and the install fails as "held broken".
    if !bpo.is_empty() {
        ui::info(&format!(
            "apt-get install -t bookworm-backports {}",
            bpo.join(" ")
        ));
        crate::tools::run(&crate::tools::apt::install(
            &bpo,
            Some("bookworm-backports"),
        ))?;
    }
    if !plain.is_empty() {
        ui::info(&format!("apt-get install {}", plain.join(" ")));
        crate::tools::run(&crate::tools::apt::install(&plain, None))?;
    }
    // Not in Debian: from PyPI, pinned.
    if !pypi.is_empty() {
        let specs: Vec<&str> = pypi.into_iter().collect();
        ui::info(&format!("pip install {}", specs.join(" ")));
        crate::tools::run(&crate::tools::pip::install(&specs))?;
    }
    Ok(())
}

/// The deb822 source kiln adds on Debian 12: bookworm-backports (main,
/// non-free-firmware) and bookworm's non-free-firmware, from the mirror the
/// host already uses.
pub fn bookworm_sources_text(mirror: &str) -> String {
    format!(
        "# Added by `cargo xtask doctor --install` (kiln): newer qemu, e2fsprogs and\n\
         # mmdebstrap from backports; raspi-firmware from non-free-firmware.\n\
         Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main non-free-firmware\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: {mirror}\nSuites: bookworm\nComponents: non-free-firmware\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

fn add_bookworm_sources(etc_apt: &Utf8Path) -> Result<()> {
    let sources = crate::hostapt::sources(etc_apt)?;
    if sources.iter().any(|s| s.suite == "bookworm-backports") {
        return Ok(());
    }
    let mirror = crate::hostapt::debian_mirror(&sources, "bookworm")?;
    let path = etc_apt.join("sources.list.d/kiln-bookworm-backports.sources");
    std::fs::write(&path, bookworm_sources_text(&mirror))
        .with_context(|| format!("writing apt source {path}"))?;
    ui::info(&format!("added {path} (mirror {mirror})"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookworm_sources_use_the_hosts_mirror() {
        let d = tempfile::tempdir().unwrap();
        let etc = Utf8Path::from_path(d.path()).unwrap();
        std::fs::create_dir_all(etc.join("sources.list.d")).unwrap();
        std::fs::write(
            etc.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.internal/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        add_bookworm_sources(etc).unwrap();
        let added =
            std::fs::read_to_string(etc.join("sources.list.d/kiln-bookworm-backports.sources"))
                .unwrap();
        let parsed = crate::hostapt::parse_deb822(&added, Utf8Path::new("x"));
        assert_eq!(parsed.len(), 2);
        assert!(parsed
            .iter()
            .all(|s| s.uri == "http://mirror.internal/debian"));
        assert_eq!(parsed[0].suite, "bookworm-backports");
        assert_eq!(parsed[0].components, ["main", "non-free-firmware"]);
        assert_eq!(parsed[1].suite, "bookworm");
        assert_eq!(parsed[1].components, ["non-free-firmware"]);
        // Idempotent: a second call sees backports and adds nothing.
        std::fs::write(
            etc.join("sources.list.d/kiln-bookworm-backports.sources"),
            "",
        )
        .unwrap();
        std::fs::write(
            etc.join("sources.list.d/bpo.list"),
            "deb http://m/debian bookworm-backports main\n",
        )
        .unwrap();
        add_bookworm_sources(etc).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("sources.list.d/kiln-bookworm-backports.sources"))
                .unwrap(),
            ""
        );
    }
}
