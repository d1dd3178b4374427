//! qemu-system-*: smoke boots under TCG (KVM hangs on the build machines, so
//! TCG is the default; `accel` lets a caller choose).

use camino::{Utf8Path, Utf8PathBuf};

use super::Cmd;
use crate::recipe::Arch;

/// UEFI firmware for amd64 guests (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// UEFI firmware for arm64 guests (package `qemu-efi-aarch64`).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// No display, the serial console on stdout (what a smoke watches), no
/// monitor, and a reboot ends qemu.
const HEADLESS: [&str; 7] = [
    "-display",
    "none",
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (qemu's default for `pc`).
    Bios,
    /// OVMF; needs a writable copy of the variable store.
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Boot from a CD-ROM image.
    Cdrom(Utf8PathBuf),
    /// A disk image (format: raw, qcow2, vmdk) on virtio.
    Disk { path: Utf8PathBuf, format: String },
    /// A read-only data image the guest reads but never boots from (a
    /// NoCloud seed): a CD-ROM on amd64 (after the disks in boot order), a
    /// read-only virtio disk on arm64's `virt` (which has no IDE).
    Seed(Utf8PathBuf),
    /// A read-only data image attached as a second disk (virtio), as an
    /// operator attaches `cidata.img` (a FAT file system labelled
    /// `CIDATA`) to a VM: never booted from, after the boot disk.
    SeedDisk(Utf8PathBuf),
}

/// One boot with the serial console on stdout: amd64 (`q35` with OVMF, or
/// `pc` with SeaBIOS) or arm64 (`virt` with AAVMF; UEFI only).
#[derive(Debug, Clone)]
pub struct Boot {
    pub arch: Arch,
    pub firmware: Firmware,
    pub media: Vec<Media>,
    pub memory_mib: u32,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// A writable OVMF_VARS copy (required for UEFI).
    pub vars: Option<Utf8PathBuf>,
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`).
    pub kernel: Option<(Utf8PathBuf, Option<Utf8PathBuf>, String)>,
    /// Boot without writing to the disks (`-snapshot`).
    pub snapshot: bool,
    /// TCP ports of the guest reachable from the host: (host port on
    /// 127.0.0.1, guest port). With any, the guest's user network is
    /// restricted to qemu's own (`restrict=on`): the guest is offline, the
    /// forwarded ports still work.
    pub forward: Vec<(u16, u16)>,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
}

impl Boot {
    pub fn new(firmware: Firmware) -> Boot {
        Boot {
            arch: Arch::Amd64,
            firmware,
            media: Vec::new(),
            memory_mib: 1024,
            accel: "tcg".into(),
            vars: None,
            kernel: None,
            snapshot: false,
            forward: Vec::new(),
            cpus: 2,
        }
    }
    pub fn cdrom(mut self, p: &Utf8Path) -> Boot {
        self.media.push(Media::Cdrom(p.to_owned()));
        self
    }
    pub fn disk(mut self, p: &Utf8Path, format: &str) -> Boot {
        self.media.push(Media::Disk {
            path: p.to_owned(),
            format: format.into(),
        });
        self
    }
    /// Attach a NoCloud seed ([`Media::Seed`] or [`Media::SeedDisk`]).
    pub fn seed(mut self, m: Media) -> Boot {
        self.media.push(m);
        self
    }
    pub fn vars(mut self, p: &Utf8Path) -> Boot {
        self.vars = Some(p.to_owned());
        self
    }
    /// Forward 127.0.0.1:`host` to the guest's `guest` port (TCP), and
    /// keep the guest offline otherwise.
    pub fn forward(mut self, host: u16, guest: u16) -> Boot {
        self.forward.push((host, guest));
        self
    }
    /// Boot an arm64 guest (firmware must be UEFI).
    pub fn arm64(mut self) -> Boot {
        self.arch = Arch::Arm64;
        self
    }

    /// The `-nic` value: user networking, restricted when ports are forwarded.
    fn nic(&self) -> String {
        let mut nic = "user,model=virtio-net-pci".to_string();
        if !self.forward.is_empty() {
            nic.push_str(",restrict=on");
        }
        for (host, guest) in &self.forward {
            nic.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        nic
    }

    pub fn cmd(&self) -> Cmd {
        let program = format!("qemu-system-{}", self.arch.uname());
        let mut c = Cmd::new(&program, "smoke-boot the image under qemu")
            .args(["-accel", &self.accel, "-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(HEADLESS)
            .args(["-nic", &self.nic()]);
        let code = match self.arch {
            Arch::Amd64 => OVMF_CODE,
            Arch::Arm64 => AAVMF_CODE,
        };
        if self.arch == Arch::Arm64 {
            // TCG runs cortex-a72 faster than `max` (no pointer
            // authentication to emulate).
            c = c.args(["-M", "virt", "-cpu", "cortex-a72"]);
        } else if self.firmware == Firmware::Uefi {
            c = c.args(["-M", "q35"]);
        }
        if self.firmware == Firmware::Uefi {
            c = c.args([
                "-drive".to_string(),
                format!("if=pflash,format=raw,readonly=on,file={code}"),
            ]);
            if let Some(v) = &self.vars {
                c = c.args([
                    "-drive".to_string(),
                    format!("if=pflash,format=raw,file={v}"),
                ]);
            }
        }
        if self.snapshot {
            c = c.arg("-snapshot");
        }
        let mut has_cd = false;
        for m in &self.media {
            match m {
                Media::Cdrom(p) => {
                    has_cd = true;
                    c = c.args([
                        "-drive".to_string(),
                        format!("file={p},media=cdrom,readonly=on,if=ide,index=2"),
                    ]);
                }
                // A guest writing zeros (an installer streaming an image
                // onto a blank disk, mkfs) punches holes instead of
                // allocating them: throw-away disks stay small.
                Media::Disk { path, format } => {
                    c = c.args([
                        "-drive".to_string(),
                        format!("file={path},format={format},if=virtio,discard=unmap,detect-zeroes=unmap"),
                    ]);
                }
                Media::SeedDisk(path) => {
                    c = c.args([
                        "-drive".to_string(),
                        format!("file={path},format=raw,if=virtio,readonly=on"),
                    ]);
                }
                Media::Seed(path) if self.arch == Arch::Arm64 => {
                    c = c.args([
                        "-drive".to_string(),
                        format!("file={path},format=raw,if=virtio,readonly=on"),
                    ]);
                }
                Media::Seed(path) => {
                    c = c.args([
                        "-drive".to_string(),
                        format!("file={path},format=raw,media=cdrom,readonly=on,if=ide,index=3"),
                    ]);
                }
            }
        }
        if has_cd && self.firmware == Firmware::Bios {
            c = c.args(["-boot", "d"]);
        }
        if let Some((k, i, append)) = &self.kernel {
            c = c.args(["-kernel", k.as_str()]);
            if let Some(i) = i {
                c = c.args(["-initrd", i.as_str()]);
            }
            c = c.args(["-append", append]);
        }
        c
    }
}

/// A Raspberry Pi 3B (`-M raspi3b`: 4 cores, 1 GiB, fixed) booting the
/// way the Pi's firmware would hand over: `kernel`, the board's `dtb` and
/// `initrd` (all read out of the card's boot partition) with the card's
/// command line, and the card as the SD card. qemu needs the card's size to
/// be a power of two. The GPU firmware itself is not emulated, and neither
/// is a network the guest can use: qemu's `usb-net` on the board's dwc2
/// USB is found by Debian's kernel but no driver binds it (`cdc_subset:
/// probe … failed with error -22`), so a Pi guest is offline.
pub fn raspi3b(
    sd: &Utf8Path,
    sd_format: &str,
    kernel: &Utf8Path,
    dtb: &Utf8Path,
    initrd: &Utf8Path,
    append: &str,
) -> Cmd {
    Cmd::new(
        "qemu-system-aarch64",
        "boot the card on qemu's Raspberry Pi 3B",
    )
    .args(["-M", "raspi3b", "-accel", "tcg", "-m", "1024"])
    .args(HEADLESS)
    .args([
        "-drive".to_string(),
        format!("file={sd},format={sd_format},if=sd"),
    ])
    .args(["-kernel", kernel.as_str(), "-dtb", dtb.as_str()])
    .args(["-initrd", initrd.as_str(), "-append", append])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raspi3b_boots_the_card_as_its_sd_card() {
        let c = raspi3b(
            Utf8Path::new("/w/pi.img"),
            "raw",
            Utf8Path::new("/w/vmlinuz"),
            Utf8Path::new("/w/bcm2837-rpi-3-b.dtb"),
            Utf8Path::new("/w/initrd.img"),
            "root=PARTUUID=1-02",
        )
        .to_string();
        assert!(c.starts_with("qemu-system-aarch64 -M raspi3b"), "{c}");
        assert!(c.contains("file=/w/pi.img,format=raw,if=sd"), "{c}");
        assert!(c.contains("-dtb /w/bcm2837-rpi-3-b.dtb"), "{c}");
    }

    #[test]
    fn arm64_boots_virt_with_aavmf_and_amd64_keeps_q35_with_ovmf() {
        let disk = Utf8Path::new("/w/d.qcow2");
        let vars = Utf8Path::new("/w/vars.fd");
        let a = Boot::new(Firmware::Uefi)
            .arm64()
            .disk(disk, "qcow2")
            .vars(vars)
            .cmd()
            .to_string();
        assert!(a.starts_with("qemu-system-aarch64 -accel tcg"), "{a}");
        assert!(a.contains("-M virt -cpu cortex-a72"), "{a}");
        assert!(a.contains(&format!("readonly=on,file={AAVMF_CODE}")), "{a}");
        assert!(a.contains("if=pflash,format=raw,file=/w/vars.fd"), "{a}");
        let x = Boot::new(Firmware::Uefi)
            .disk(disk, "qcow2")
            .cmd()
            .to_string();
        assert!(
            x.starts_with("qemu-system-x86_64 ") && x.contains("-M q35"),
            "{x}"
        );
        assert!(x.contains(OVMF_CODE), "{x}");
    }

    /// The carrier as a CD-ROM (after the boot disk, on IDE) or as a second
    /// virtio disk, read-only either way; arm64's `virt` has no IDE, so its
    /// seed is always a disk.
    #[test]
    fn seeds_attach_as_cdrom_or_second_disk() {
        let disk = Utf8Path::new("/w/d.qcow2");
        let cd = Boot::new(Firmware::Bios)
            .disk(disk, "qcow2")
            .seed(Media::Seed("/w/cidata.iso".into()))
            .cmd()
            .to_string();
        assert!(
            cd.contains("file=/w/cidata.iso,format=raw,media=cdrom,readonly=on,if=ide,index=3"),
            "{cd}"
        );
        // A seed CD-ROM is not booted from.
        assert!(!cd.contains("-boot d"), "{cd}");
        let second = Boot::new(Firmware::Uefi)
            .disk(disk, "qcow2")
            .seed(Media::SeedDisk("/w/cidata.img".into()))
            .cmd()
            .args;
        let drives: Vec<&String> = second
            .iter()
            .filter(|a| a.starts_with("file=/w/"))
            .collect();
        assert_eq!(
            drives,
            [
                "file=/w/d.qcow2,format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap",
                "file=/w/cidata.img,format=raw,if=virtio,readonly=on",
            ],
            "the boot disk first, the carrier the second disk"
        );
        let arm = Boot::new(Firmware::Uefi)
            .arm64()
            .disk(disk, "qcow2")
            .seed(Media::Seed("/w/cidata.iso".into()))
            .cmd()
            .to_string();
        assert!(
            arm.contains("file=/w/cidata.iso,format=raw,if=virtio,readonly=on"),
            "{arm}"
        );
    }

    #[test]
    fn forwarded_ports_keep_the_guest_offline() {
        let open = Boot::new(Firmware::Bios).cmd().to_string();
        assert!(
            open.contains("-nic user,model=virtio-net-pci") && !open.contains("restrict"),
            "{open}"
        );
        let c = Boot::new(Firmware::Bios)
            .forward(40080, 80)
            .forward(40022, 22)
            .cmd()
            .to_string();
        assert!(
            c.contains(
                "-nic user,model=virtio-net-pci,restrict=on,\
                 hostfwd=tcp:127.0.0.1:40080-:80,hostfwd=tcp:127.0.0.1:40022-:22"
            ),
            "{c}"
        );
    }
}
