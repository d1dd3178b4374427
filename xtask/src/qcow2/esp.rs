//! What goes on the EFI system partition: on amd64 the unified kernel image
//! ([`super::uki`]); on arm64 systemd-boot with one loader entry, the kernel
//! and kiln's own initrd ([`crate::initrd`]), all read from the image's
//! packages.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::merge::{read_from_rootfs, Boot};
use super::spec::DiskSpec;

/// What goes onto the EFI system partition: directories (parents first)
/// and files (source, path on the ESP).
pub(super) struct Esp {
    pub(super) dirs: Vec<String>,
    pub(super) files: Vec<(Utf8PathBuf, String)>,
}

/// What goes on the ESP: on amd64 the UKI (`work/BOOTX64.EFI`) as the
/// removable-media loader; on arm64 systemd-boot, its loader.conf, one
/// entry, `kernel` and kiln's initrd (all but the kernel written to `work`).
pub(super) fn esp_layout(spec: &DiskSpec, work: &Utf8Path, kernel: &Utf8Path) -> Esp {
    if !super::kiln_initrd(spec.arch) {
        return Esp {
            dirs: vec!["/EFI".into(), "/EFI/BOOT".into()],
            files: vec![(work.join("BOOTX64.EFI"), "/EFI/BOOT/BOOTX64.EFI".into())],
        };
    }
    let n = &spec.name;
    Esp {
        dirs: vec![
            "/EFI".into(),
            "/EFI/BOOT".into(),
            "/loader".into(),
            "/loader/entries".into(),
            format!("/{n}"),
        ],
        files: vec![
            (work.join("BOOTAA64.EFI"), "/EFI/BOOT/BOOTAA64.EFI".into()),
            (work.join("loader.conf"), "/loader/loader.conf".into()),
            (work.join("entry.conf"), format!("/loader/entries/{n}.conf")),
            (kernel.to_owned(), format!("/{n}/linux")),
            (work.join("initrd.img"), format!("/{n}/initrd")),
        ],
    }
}

const SYSTEMD_BOOT_AA64: &str = "lib/systemd/boot/efi/systemd-bootaa64.efi";
const BUSYBOX: &str = "bin/busybox";

/// kiln's initrd for the image's newest kernel, and systemd-boot, both
/// from the root tarball (arm64).
pub(crate) struct OwnBoot {
    pub(crate) release: String,
    pub(crate) initrd: Vec<u8>,
    loader: Vec<u8>,
}

/// Build the initrd from the image's static busybox and the root disk's
/// modules ([`crate::initrd`]); read systemd-boot for the ESP.
pub(super) fn own_boot(spec: &DiskSpec) -> Result<OwnBoot> {
    let is_moddata = |p: &str| {
        p.strip_prefix("lib/modules/").is_some_and(|r| {
            r.split_once('/')
                .is_some_and(|(_, f)| f == "modules.dep" || f == "modules.builtin")
        })
    };
    let first = read_from_rootfs(&spec.rootfs_tar, |p| {
        is_moddata(p) || p == BUSYBOX || p == SYSTEMD_BOOT_AA64
    })?;
    let release = first
        .keys()
        .filter_map(|p| p.strip_prefix("lib/modules/")?.strip_suffix("/modules.dep"))
        .max()
        .context(
            "the root file system has no /usr/lib/modules/*/modules.dep: is a linux-image \
             package installed?",
        )?
        .to_string();
    let moddir = format!("lib/modules/{release}/");
    let text = |f: &str| {
        String::from_utf8_lossy(first.get(&format!("{moddir}{f}")).map_or(&[][..], |v| v))
            .into_owned()
    };
    let loader = first.get(SYSTEMD_BOOT_AA64).with_context(|| {
        format!(
            "the root file system has no /usr/{SYSTEMD_BOOT_AA64}: add the systemd-boot-efi package"
        )
    })?;
    let busybox = first.get(BUSYBOX).with_context(|| {
        format!(
            "the root file system has no /usr/{BUSYBOX} for kiln's initrd: add the \
             busybox-static package"
        )
    })?;
    let deps = crate::initrd::ModuleDeps::parse(&text("modules.dep"), &text("modules.builtin"))
        .with_context(|| format!("reading /usr/{moddir}modules.dep"))?;
    let order = deps
        .closure(crate::initrd::ROOT_MODULES, crate::initrd::OPTIONAL_MODULES)
        .with_context(|| format!("kernel {release}"))?;
    let wanted: BTreeSet<String> = order.iter().map(|m| format!("{moddir}{m}")).collect();
    let modules: BTreeMap<String, Vec<u8>> =
        read_from_rootfs(&spec.rootfs_tar, |p| wanted.contains(p))?
            .into_iter()
            .map(|(p, d)| (p[moddir.len()..].to_string(), d))
            .collect();
    let initrd = crate::initrd::build(
        &crate::initrd::Sources {
            busybox,
            modules: &modules,
            order: &order,
        },
        spec.epoch,
    )?;
    crate::ui::info(&format!(
        "  kiln initrd for {release}: {} modules, {} KiB",
        order.len(),
        initrd.len() >> 10
    ));
    Ok(OwnBoot {
        release,
        initrd,
        loader: loader.clone(),
    })
}

/// arm64's ESP: systemd-boot as the removable-media loader, one Boot Loader
/// Specification entry (no timeout, no editor), the kernel and kiln's initrd.
pub(super) fn systemd_boot_esp(
    spec: &DiskSpec,
    boot: &Boot,
    own: &OwnBoot,
    work: &Utf8Path,
) -> Result<Esp> {
    let (release, kernel) = boot.kernel.as_ref().context(
        "the root file system has no /boot/vmlinuz-*: is a linux-image package installed?",
    )?;
    ensure!(
        *release == own.release,
        "the newest kernel is /boot/vmlinuz-{release} but the newest modules are for {}",
        own.release
    );
    let initrd = work.join("initrd.img");
    std::fs::write(&initrd, &own.initrd).with_context(|| format!("writing {initrd}"))?;
    let loader = work.join("BOOTAA64.EFI");
    std::fs::write(&loader, &own.loader).with_context(|| format!("writing {loader}"))?;
    let n = &spec.name;
    let conf = work.join("loader.conf");
    std::fs::write(
        &conf,
        format!("# Written by kiln.\ntimeout 0\ndefault {n}.conf\neditor no\n"),
    )?;
    let entry = work.join("entry.conf");
    std::fs::write(
        &entry,
        format!(
            "title {n}\nversion {release}\nlinux /{n}/linux\ninitrd /{n}/initrd\noptions {}\n",
            spec.cmdline
        ),
    )?;
    Ok(esp_layout(spec, work, kernel))
}
