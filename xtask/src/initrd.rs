//! A small initramfs written in process: a `newc` cpio archive (gzip) with a
//! static busybox, the kernel modules the root disk needs (closed over
//! `modules.dep`) and an `/init` script that mounts the root file system by
//! UUID and hands over to systemd.
//!
//! kiln builds it on the host from files of the target's own root file
//! system, so a foreign-architecture disk (arm64 on an x86-64 host) does not
//! run `mkinitramfs` under emulation (ten minutes and more under qemu-user).
//! It is reproducible: entries in a fixed order, inode numbers counted,
//! times from the epoch, gzip without a name or time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::{bail, Context, Result};

/// A newc ("070701") cpio archive, the format the kernel unpacks.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    mtime: u32,
}

impl Cpio {
    /// Every entry's mtime is `epoch` (clamped into cpio's 32 bits).
    pub fn new(epoch: i64) -> Cpio {
        Cpio {
            mtime: u32::try_from(epoch.max(0)).unwrap_or(u32::MAX),
            ..Cpio::default()
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let namez = format!("{name}\0");
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            self.mtime,
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            namez.len() as u32,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            // Writing into a Vec cannot fail.
            let _ = write!(self.buf, "{f:08x}");
        }
        self.buf.extend_from_slice(namez.as_bytes());
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | (perm & 0o7777), data, (0, 0));
    }
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }
    /// A character device node.
    pub fn char_node(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }
    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }
}

/// A kernel's `modules.dep`: module path (relative to
/// `/lib/modules/<release>/`) to the paths it needs, as depmod wrote them.
#[derive(Debug, Default)]
pub struct ModuleDeps {
    deps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

/// `ext4`, `virtio-blk` and `virtio_blk` name the same module.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleDeps {
    /// Parse `modules.dep` and `modules.builtin` (the latter may be empty).
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<ModuleDeps> {
        let mut deps = BTreeMap::new();
        for (i, line) in modules_dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (m, ds) = line
                .split_once(':')
                .with_context(|| format!("modules.dep line {}: no `:`", i + 1))?;
            deps.insert(
                m.trim().to_string(),
                ds.split_whitespace().map(str::to_string).collect(),
            );
        }
        let builtin = modules_builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        Ok(ModuleDeps { deps, builtin })
    }

    fn path_of(&self, name: &str) -> Option<&str> {
        let want = module_name(name);
        self.deps
            .keys()
            .find(|k| module_name(k) == want)
            .map(String::as_str)
    }

    /// The module files to load, dependencies first, for `required` (each
    /// must be a module or built in) and `optional` (skipped when absent).
    pub fn closure(&self, required: &[&str], optional: &[&str]) -> Result<Vec<String>> {
        fn visit(m: &str, deps: &BTreeMap<String, Vec<String>>, out: &mut Vec<String>) {
            if out.iter().any(|x| x == m) {
                return;
            }
            // depmod lists the whole closure, deepest last: load it reversed.
            for d in deps.get(m).into_iter().flatten().rev() {
                visit(d, deps, out);
            }
            out.push(m.to_string());
        }
        let mut out = Vec::new();
        for (name, needed) in required
            .iter()
            .map(|n| (n, true))
            .chain(optional.iter().map(|n| (n, false)))
        {
            match self.path_of(name) {
                Some(p) => visit(p, &self.deps, &mut out),
                None if self.builtin.contains(&module_name(name)) || !needed => {}
                None => bail!(
                    "the kernel has no module `{name}` and does not build it in \
                     (modules.dep, modules.builtin): the initrd cannot find the root disk"
                ),
            }
        }
        Ok(out)
    }
}

/// Modules for a root disk on virtio (qemu `virt`, cloud VMs) with ext4.
pub const ROOT_MODULES: &[&str] = &["ext4", "virtio_blk"];
/// Loaded when the kernel has them as modules: transports, the checksum
/// ext4's metadata_csum needs at mount time (no modprobe in this initrd to
/// ask for it), SCSI/NVMe/SD disks.
pub const OPTIONAL_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "crc32c_generic",
    "crc32c_arm64",
    "crc32c_intel",
    "virtio_scsi",
    "sd_mod",
    "nvme",
    "mmc_block",
    // Raspberry Pi SD cards: the Pi 3's sdhost and the Pi 4's emmc2
    // (sdhci-iproc); the Pi 5's SD controller where the kernel has it.
    "bcm2835",
    "sdhci_iproc",
    "sdhci_brcmstb",
    // USB boot (Pi 3: dwc2; Pi 4: VL805 xHCI on PCIe) of USB mass storage.
    "dwc2",
    "xhci_pci",
    "xhci_plat_hcd",
    "usb_storage",
    "uas",
];

/// The `/init` script: mount the root named by `root=` read-only (systemd
/// remounts it from fstab), move /dev over, switch to `init=` or
/// /sbin/init. A root that does not show up within 30 s drops to a shell on
/// the console with the reason, as initramfs-tools does.
///
/// `root=` is a device, `UUID=`/`LABEL=` (busybox `findfs`) or an MBR
/// `PARTUUID=<disk id>-<nn>` (what a Raspberry Pi's `cmdline.txt` names;
/// busybox `findfs` does not know it, and without udev there is no
/// `/dev/disk/by-partuuid`): each partition in sysfs is matched against the
/// disk id at byte 440 of its disk and its partition number.
pub fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         # kiln's initrd: load the root disk's modules, mount the root, start systemd.\n\
         /bin/busybox mkdir -p /proc /sys /dev /root /run\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         rescue() { echo \"initrd: $*\"; exec sh; }\n\
         partuuid() {\n\
         \x20 want=$(echo \"$1\" | tr A-F a-f)\n\
         \x20 for p in /sys/class/block/*; do\n\
         \x20   [ -f \"$p/partition\" ] || continue\n\
         \x20   n=$(cat \"$p/partition\")\n\
         \x20   d=$(basename \"$(readlink -f \"$p/..\")\")\n\
         \x20   set -- $(od -An -tx1 -j440 -N4 \"/dev/$d\" 2>/dev/null)\n\
         \x20   [ $# -eq 4 ] || continue\n\
         \x20   if [ \"$4$3$2$1-$(printf %02x \"$n\")\" = \"$want\" ]; then echo \"/dev/${p##*/}\"; return 0; fi\n\
         \x20 done\n\
         \x20 return 1\n\
         }\n",
    );
    for m in modules {
        let f = m.rsplit('/').next().unwrap_or(m);
        s.push_str(&format!(
            "insmod /lib/modules/{f} || echo \"initrd: cannot load {f}\"\n"
        ));
    }
    s.push_str(
        "root=; fstype=ext4; flags=ro; init=/sbin/init\n\
         for a in $(cat /proc/cmdline); do\n\
         \x20 case \"$a\" in\n\
         \x20   root=*) root=\"${a#root=}\" ;;\n\
         \x20   rootfstype=*) fstype=\"${a#rootfstype=}\" ;;\n\
         \x20   rw) flags=rw ;;\n\
         \x20   init=*) init=\"${a#init=}\" ;;\n\
         \x20 esac\n\
         done\n\
         [ -n \"$root\" ] || rescue \"no root= on the kernel command line\"\n\
         i=0\n\
         while :; do\n\
         \x20 case \"$root\" in\n\
         \x20   /dev/*) dev=\"$root\"; [ -b \"$dev\" ] && break ;;\n\
         \x20   PARTUUID=*) dev=$(partuuid \"${root#PARTUUID=}\") && break ;;\n\
         \x20   *) dev=$(findfs \"$root\" 2>/dev/null) && break ;;\n\
         \x20 esac\n\
         \x20 i=$((i + 1)); [ $i -le 300 ] || rescue \"root $root not found\"\n\
         \x20 sleep 0.1\n\
         done\n\
         mount -t \"$fstype\" -o \"$flags\" \"$dev\" /root || rescue \"cannot mount $dev ($root)\"\n\
         mount --move /dev /root/dev || umount /dev\n\
         umount /sys /proc\n\
         exec switch_root /root \"$init\"\n",
    );
    s
}

/// What the initrd is built from: files read out of the target's root file
/// system.
pub struct Sources<'a> {
    /// A static busybox for the target architecture.
    pub busybox: &'a [u8],
    /// Module path (as in modules.dep) to its bytes.
    pub modules: &'a BTreeMap<String, Vec<u8>>,
    /// Load order from [`ModuleDeps::closure`].
    pub order: &'a [String],
}

/// The gzip-compressed initrd.
pub fn build(src: &Sources, epoch: i64) -> Result<Vec<u8>> {
    let mut c = Cpio::new(epoch);
    for d in [
        "bin",
        "dev",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "run",
        "sys",
    ] {
        c.dir(d);
    }
    c.char_node("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, src.busybox);
    for m in src.order {
        let data = src
            .modules
            .get(m)
            .with_context(|| format!("module {m} was not read from the root file system"))?;
        if m.ends_with(".ko.xz") || m.ends_with(".ko.zst") || m.ends_with(".ko.gz") {
            bail!("module {m} is compressed; this initrd loads plain .ko files (busybox insmod)");
        }
        let f = m.rsplit('/').next().unwrap_or(m);
        c.file(&format!("lib/modules/{f}"), 0o644, data);
    }
    c.file("init", 0o755, init_script(src.order).as_bytes());
    let cpio = c.finish();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&cpio)?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/fs/mbcache.ko:\n\
kernel/lib/crc16.ko:\n\
kernel/drivers/block/virtio_blk.ko:\n\
kernel/crypto/crc32c_generic.ko:\n";

    #[test]
    fn closure_loads_dependencies_first_once_and_skips_built_ins() {
        let d = ModuleDeps::parse(DEP, "kernel/drivers/virtio/virtio_pci.ko\n").unwrap();
        let order = d
            .closure(
                &["ext4", "virtio-blk", "virtio_pci"],
                &["crc32c_generic", "nvme"],
            )
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/ext4/ext4.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/crypto/crc32c_generic.ko",
            ]
        );
        let e = d.closure(&["btrfs"], &[]).unwrap_err().to_string();
        assert!(e.contains("no module `btrfs`"), "{e}");
    }

    #[test]
    fn initrd_is_a_reproducible_newc_archive_the_scanner_reads_back() {
        let mut modules = BTreeMap::new();
        modules.insert(
            "kernel/fs/mbcache.ko".to_string(),
            b"\x7fELF mbcache".to_vec(),
        );
        let order = vec!["kernel/fs/mbcache.ko".to_string()];
        let src = Sources {
            busybox: b"\x7fELF busybox",
            modules: &modules,
            order: &order,
        };
        let a = build(&src, 1_700_000_000).unwrap();
        assert_eq!(a, build(&src, 1_700_000_000).unwrap());
        let mut cpio = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(a.as_slice()), &mut cpio)
            .unwrap();
        let mut r = cpio.as_slice();
        let mut pos = 0;
        let mut names = Vec::new();
        while let Some(h) = crate::scan::cpio::next(&mut r, &mut pos).unwrap() {
            let mut data = vec![0; h.size as usize];
            std::io::Read::read_exact(&mut r, &mut data).unwrap();
            pos += h.size;
            crate::scan::cpio::skip_pad(&mut r, &mut pos).unwrap();
            if h.name == "init" {
                let s = String::from_utf8(data).unwrap();
                assert!(s.starts_with("#!/bin/busybox sh\n"));
                assert!(s.contains("insmod /lib/modules/mbcache.ko"));
                assert!(s.contains("exec switch_root /root \"$init\""));
            }
            names.push((h.name, h.mode));
        }
        assert!(names.contains(&("bin/busybox".into(), 0o100755)));
        assert!(names.contains(&("dev/console".into(), 0o020600)));
        assert!(names.contains(&("lib/modules/mbcache.ko".into(), 0o100644)));
    }

    #[test]
    fn compressed_modules_are_refused_by_name() {
        let mut modules = BTreeMap::new();
        modules.insert("kernel/fs/ext4/ext4.ko.xz".to_string(), vec![1]);
        let order = vec!["kernel/fs/ext4/ext4.ko.xz".to_string()];
        let src = Sources {
            busybox: b"",
            modules: &modules,
            order: &order,
        };
        let e = build(&src, 0).unwrap_err().to_string();
        assert!(e.contains("ext4.ko.xz is compressed"), "{e}");
    }
}
