//! A small Ubuntu-like hybrid installer ISO, built in the test (no real
//! Ubuntu ISO is reachable): GRUB i386-pc El Torito image + x86_64-efi image
//! on an EFI FAT image, grub2 MBR, protective MBR, `-partition_offset 16`,
//! in one of two [`Layout`]s (Ubuntu 22.04/24.04's by default), with
//! `/casper/vmlinuz` (the host's kernel) and a busybox initrd that prints
//! `/proc/cmdline` and the ISO's `/nocloud/user-data` to the serial console.
//! Commands: shared notes `iso-fixture.md`.

#![allow(dead_code)]

use camino::{Utf8Path, Utf8PathBuf};

use super::sh;

pub const FIXTURE_EPOCH: &str = "1724716800";
pub const GRUB_MODS: &str =
    "normal configfile linux echo serial terminal search search_fs_file search_label \
    iso9660 part_msdos part_gpt fat ls cat test true gzio loadenv";

pub const GRUB_CFG: &str = "serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
menuentry \"Try or Install Ubuntu Server\" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz  console=ttyS0,115200 ---
\tinitrd\t/casper/initrd
}
";

/// The EFI image's path in the ISO with [`Layout::Embedded`].
pub const EMBEDDED_EFI: &str = "boot/grub/efi.img";

pub const TOOLS: &[&str] = &[
    "xorriso",
    "grub-mkimage",
    "mkfs.vfat",
    "mmd",
    "mcopy",
    "/usr/lib/grub/i386-pc/boot_hybrid.img",
    "/usr/lib/grub/x86_64-efi/linux.mod",
    "/bin/busybox",
    "/vmlinuz",
];

/// Where the EFI image lives and how the system area is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Ubuntu 22.04/24.04: the EFI image appended after the ISO as GPT
    /// partition 2 (`-appended_part_as_gpt`, ISO partition type
    /// `-iso_mbr_part_type a2a0…`), `-partition_cyl_align off`, and the
    /// padding `-as mkisofs` writes after it listed as a `Gap1` partition.
    Appended,
    /// Older Ubuntu ISOs (20.04's shape, with GRUB's hybrid MBR instead of
    /// isolinux): the EFI image is the file `/boot/grub/efi.img` inside the
    /// ISO, exposed as a GPT partition (`-efi-boot-part --efi-boot-image`),
    /// the gaps around it as `Gap0`/`Gap1`, and the image padded to whole
    /// cylinders (`-partition_cyl_align on`).
    Embedded,
}

pub struct Options {
    pub layout: Layout,
    /// Add the UEFI El Torito entry and EFI partition.
    pub efi: bool,
    pub grub_cfg: Option<String>,
    /// Write boot/grub/grub.cfg at all.
    pub grub: bool,
    pub loopback: bool,
    pub md5sum: bool,
    /// Size of an extra `casper/filesystem.squashfs` (zeros), for big bases.
    pub filler: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            layout: Layout::Appended,
            efi: true,
            grub_cfg: None,
            grub: true,
            loopback: true,
            md5sum: true,
            filler: 0,
        }
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub iso: Utf8PathBuf,
    pub sha256: String,
}

/// Build the ISO in a new temporary directory.
pub fn build(o: &Options) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("kiln-isofix-")
        .tempdir()
        .unwrap();
    let d = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    let r = d.join("root");
    for s in ["boot/grub/i386-pc", "casper", ".disk", "EFI/boot"] {
        std::fs::create_dir_all(r.join(s)).unwrap();
    }
    std::fs::copy("/vmlinuz", r.join("casper/vmlinuz")).unwrap();
    busybox_initrd(&r.join("casper/initrd"));
    if o.filler > 0 {
        let f = std::fs::File::create(r.join("casper/filesystem.squashfs")).unwrap();
        f.set_len(o.filler).unwrap();
    }
    std::fs::write(
        r.join(".disk/info"),
        "Ubuntu-Server 24.04.1 LTS \"Noble Numbat\" - Release amd64 (20240827)\n",
    )
    .unwrap();
    let cfg = o.grub_cfg.clone().unwrap_or_else(|| GRUB_CFG.to_string());
    if o.grub {
        std::fs::write(r.join("boot/grub/grub.cfg"), &cfg).unwrap();
    }
    if o.grub && o.loopback {
        std::fs::write(r.join("boot/grub/loopback.cfg"), &cfg).unwrap();
    }
    if o.md5sum {
        let mut sums = String::new();
        for f in [
            "boot/grub/grub.cfg",
            "casper/vmlinuz",
            "casper/initrd",
            ".disk/info",
        ] {
            if !r.join(f).exists() {
                continue;
            }
            let out = sh("md5sum", &[r.join(f).as_str()]);
            sums.push_str(&format!("{}  ./{f}\n", &out[..32]));
        }
        std::fs::write(r.join("md5sum.txt"), sums).unwrap();
    }
    let mods: Vec<&str> = GRUB_MODS.split_whitespace().collect();
    let eltorito = r.join("boot/grub/i386-pc/eltorito.img");
    let mut args = vec![
        "-O",
        "i386-pc-eltorito",
        "-p",
        "/boot/grub",
        "-o",
        eltorito.as_str(),
    ];
    args.extend(&mods);
    args.push("biosdisk");
    sh("grub-mkimage", &args);
    for e in std::fs::read_dir("/usr/lib/grub/i386-pc").unwrap() {
        let p = e.unwrap().path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("mod" | "lst")) {
            std::fs::copy(
                &p,
                r.join("boot/grub/i386-pc")
                    .as_std_path()
                    .join(p.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let mut x: Vec<String> = [
        "-as",
        "mkisofs",
        "-r",
        "-J",
        "-joliet-long",
        "-V",
        "Ubuntu-Server 24.04.1 LTS amd64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let iso = d.join("base.iso");
    x.extend(["-o".into(), iso.to_string()]);
    x.extend(
        [
            "--grub2-mbr",
            "/usr/lib/grub/i386-pc/boot_hybrid.img",
            "--protective-msdos-label",
            "-partition_cyl_align",
            match o.layout {
                Layout::Appended => "off",
                Layout::Embedded => "on",
            },
            "-partition_offset",
            "16",
            "--mbr-force-bootable",
        ]
        .map(String::from),
    );
    if o.efi {
        let early = d.join("early.cfg");
        std::fs::write(&early, "search --no-floppy --set=root --file /.disk/info\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n").unwrap();
        let efi = d.join("BOOTX64.EFI");
        let mut args = vec![
            "-O",
            "x86_64-efi",
            "-p",
            "/boot/grub",
            "-c",
            early.as_str(),
            "-o",
            efi.as_str(),
        ];
        args.extend(&mods);
        args.push("efi_gop");
        sh("grub-mkimage", &args);
        std::fs::copy(&efi, r.join("EFI/boot/bootx64.efi")).unwrap();
        let img = d.join("efi.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        sh("mkfs.vfat", &["-n", "ESP", img.as_str()]);
        sh("mmd", &["-i", img.as_str(), "::/EFI", "::/EFI/boot"]);
        sh(
            "mcopy",
            &["-i", img.as_str(), efi.as_str(), "::/EFI/boot/bootx64.efi"],
        );
        match o.layout {
            Layout::Appended => x.extend(
                [
                    "-append_partition",
                    "2",
                    "28732ac11ff8d211ba4b00a0c93ec93b",
                    img.as_str(),
                    "-appended_part_as_gpt",
                    "-iso_mbr_part_type",
                    "a2a0d0ebe5b9334487c068b6b72699c7",
                ]
                .map(String::from),
            ),
            Layout::Embedded => {
                std::fs::copy(&img, r.join(EMBEDDED_EFI)).unwrap();
                x.extend(["-efi-boot-part", "--efi-boot-image"].map(String::from));
            }
        }
    }
    x.extend(
        [
            "-c",
            "/boot.catalog",
            "-b",
            "/boot/grub/i386-pc/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
        ]
        .map(String::from),
    );
    if o.efi {
        let efi_image = match o.layout {
            Layout::Appended => "--interval:appended_partition_2:all::".to_string(),
            Layout::Embedded => format!("/{EMBEDDED_EFI}"),
        };
        x.extend([
            "-eltorito-alt-boot".to_string(),
            "-e".to_string(),
            efi_image,
            "-no-emul-boot".to_string(),
        ]);
    }
    x.push(r.to_string());
    let out = std::process::Command::new("xorriso")
        .args(&x)
        .env("SOURCE_DATE_EPOCH", FIXTURE_EPOCH)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha256 = super::sha256(&iso);
    Fixture { dir, iso, sha256 }
}

/// Kernel release of `/vmlinuz` (`vmlinuz-<release>`).
pub fn kernel_release() -> String {
    let t = std::fs::read_link("/vmlinuz").expect("/vmlinuz is a link to boot/vmlinuz-<release>");
    let name = t.file_name().unwrap().to_str().unwrap().to_string();
    name.strip_prefix("vmlinuz-")
        .expect("vmlinuz-<release>")
        .to_string()
}

/// Modules (paths relative to /lib/modules/<rel>) to load for `want`,
/// dependencies first; those the kernel builds in are left out.
fn modules(rel: &str, want: &[&str]) -> Vec<String> {
    let read =
        |f: &str| std::fs::read_to_string(format!("/lib/modules/{rel}/{f}")).unwrap_or_default();
    xtask::initrd::ModuleDeps::parse(&read("modules.dep"), &read("modules.builtin"))
        .unwrap()
        .closure(&[], want)
        .unwrap()
}

/// A busybox initrd: prints the kernel command line, mounts the CD and
/// prints `/cdrom/nocloud/user-data` between markers, then powers off.
pub fn busybox_initrd(dest: &Utf8Path) {
    let rel = kernel_release();
    let mods = modules(&rel, &["isofs", "sr_mod", "ata_piix", "ahci"]);
    let mut init = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         echo \"KILN-INIT cmdline: $(cat /proc/cmdline)\"\n",
    );
    for m in &mods {
        let f = m.rsplit('/').next().unwrap();
        init.push_str(&format!("insmod /lib/modules/{f} 2>/dev/null\n"));
    }
    init.push_str(
        "i=0; while [ ! -b /dev/sr0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
         if mount -t iso9660 -o ro /dev/sr0 /cdrom; then\n\
           echo KILN-USERDATA-BEGIN; cat /cdrom/nocloud/user-data; echo KILN-USERDATA-END\n\
         else\n  echo KILN-NO-CDROM; ls /dev\nfi\npoweroff -f\n",
    );
    let mut c = xtask::initrd::Cpio::new(0);
    for d in ["bin", "dev", "proc", "sys", "cdrom", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.char_node("dev/console", 5, 1);
    c.file(
        "bin/busybox",
        0o755,
        &std::fs::read("/bin/busybox").unwrap(),
    );
    c.file("init", 0o755, init.as_bytes());
    for m in &mods {
        let f = m.rsplit('/').next().unwrap();
        c.file(
            &format!("lib/modules/{f}"),
            0o644,
            &std::fs::read(format!("/lib/modules/{rel}/{m}")).unwrap(),
        );
    }
    std::fs::write(dest, c.finish()).unwrap();
}
