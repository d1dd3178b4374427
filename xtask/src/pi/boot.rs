//! What goes on the Pi's FAT boot partition: the GPU firmware of each board
//! family, the boards' device trees, the kernel, kiln's initrd,
//! `config.txt` and a one-line `cmdline.txt`. Everything is read out of the
//! image's own root file system (Debian's `raspi-firmware` and
//! `linux-image-arm64`), so the boot files match the packages in the image.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::recipe::pi::Board;

/// Where Debian's raspi-firmware keeps the GPU firmware, as
/// [`crate::qcow2::merge::read_from_rootfs`] names it (merged /usr dropped).
pub const FIRMWARE_DIR: &str = "lib/raspi-firmware/";

/// The kernel and initrd file names on the boot partition.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const CONFIG: &str = "config.txt";
pub const CMDLINE: &str = "cmdline.txt";

/// A firmware file (`start*.elf`, `fixup*.dat`, `bootcode.bin`) of `board`'s
/// family: the Pi 3 boots `start.elf`/`start_*.elf`, the Pi 4
/// `start4*.elf`, each with the `fixup` of the same suffix.
pub fn firmware_of(board: Board, file: &str) -> bool {
    let stem = |prefix: &str, ext: &str| -> Option<String> {
        Some(file.strip_prefix(prefix)?.strip_suffix(ext)?.to_string())
    };
    let suffix = stem("start", ".elf").or_else(|| stem("fixup", ".dat"));
    match board {
        Board::Pi3 => {
            file == "bootcode.bin" || suffix.is_some_and(|s| s.is_empty() || s.starts_with('_'))
        }
        Board::Pi4 => suffix.is_some_and(|s| s.starts_with('4')),
        Board::Pi5 => false,
    }
}

/// The kernel command line of the card: the UART and the screen as
/// consoles (`serial0` is the firmware's alias for the board's GPIO UART,
/// rewritten before the kernel sees it), the root by PARTUUID.
pub fn cmdline(root_partuuid: &str, extra: &[String]) -> String {
    let mut c = format!(
        "console=serial0,115200 console=tty1 root=PARTUUID={root_partuuid} rootfstype=ext4 \
         fsck.repair=yes rootwait"
    );
    for e in extra {
        c.push(' ');
        c.push_str(e);
    }
    c
}

/// `config.txt`: 64-bit mode, the UART on, kiln's kernel and initrd, one
/// section per board family.
pub fn config_txt(name: &str, boards: &[Board]) -> String {
    let mut s = format!(
        "# Written by kiln for {name}; the Raspberry Pi firmware reads it at power-on.\n\
         # Reference: https://www.raspberrypi.com/documentation/computers/config_txt.html\n"
    );
    for b in boards {
        s.push_str(&format!("\n[{}]\n", b.section()));
        match b {
            Board::Pi3 => s.push_str(
                "# Pi 3B/3B+/3A+, CM3, Zero 2 W (BCM2837): bootcode.bin, start.elf, fixup.dat.\n",
            ),
            Board::Pi4 => s.push_str(
                "# Pi 4B, 400, CM4 (BCM2711): start4.elf, fixup4.dat.\n\
                 # Run the CPU at the highest clock the board's firmware allows.\n\
                 arm_boost=1\n",
            ),
            Board::Pi5 => s.push_str("# Pi 5 (BCM2712): the firmware is in the board's EEPROM.\n"),
        }
    }
    s.push_str(&format!(
        "\n[all]\n\
         # A 64-bit kernel, Debian's (upstream device-tree names), and kiln's initrd.\n\
         arm_64bit=1\n\
         upstream_kernel=1\n\
         kernel={KERNEL}\n\
         initramfs {INITRD} followkernel\n\
         cmdline={CMDLINE}\n\
         # The UART on GPIO 14/15 (serial0), with a fixed core clock.\n\
         enable_uart=1\n"
    ));
    s
}

/// Pick the files for `boards` out of what the root file system holds:
/// `firmware` (file name to bytes, from [`FIRMWARE_DIR`]) and `dtbs` (file
/// name to bytes, the kernel's `broadcom/` device trees). Fails naming the
/// board whose files are missing.
pub fn select(
    boards: &[Board],
    release: &str,
    firmware: &BTreeMap<String, Vec<u8>>,
    dtbs: &BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for &b in boards {
        let dt: Vec<_> = dtbs
            .iter()
            .filter(|(n, _)| n.starts_with(b.dtb_prefix()))
            .collect();
        if dt.is_empty() {
            match b {
                Board::Pi5 => bail!(
                    "pi.boards names pi5, but kernel {release} has no bcm2712-*.dtb (Debian \
                     bookworm's 6.1 kernel does not support the Pi 5; trixie's does): set \
                     `qcow2.suite: trixie` or drop pi5 from pi.boards"
                ),
                _ => bail!(
                    "kernel {release} has no {}*.dtb for the {} boards (looked in \
                     /usr/lib/linux-image-{release}/broadcom/)",
                    b.dtb_prefix(),
                    b.section()
                ),
            }
        }
        for (n, d) in dt {
            out.insert(n.clone(), d.clone());
        }
        for f in b.firmware() {
            if !firmware.contains_key(*f) {
                bail!(
                    "the root file system has no /usr/{FIRMWARE_DIR}{f} for the {} boards: \
                     install Debian's raspi-firmware (component non-free-firmware; kiln adds \
                     it to the mirror lines of a Pi's root)",
                    b.section()
                );
            }
        }
        for (n, d) in firmware.iter().filter(|(n, _)| firmware_of(b, n)) {
            out.insert(n.clone(), d.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_families_and_pairs() {
        for f in [
            "bootcode.bin",
            "start.elf",
            "fixup.dat",
            "start_cd.elf",
            "fixup_x.dat",
        ] {
            assert!(firmware_of(Board::Pi3, f), "{f}");
            assert!(!firmware_of(Board::Pi4, f), "{f}");
        }
        for f in ["start4.elf", "fixup4.dat", "start4x.elf", "fixup4cd.dat"] {
            assert!(firmware_of(Board::Pi4, f), "{f}");
            assert!(!firmware_of(Board::Pi3, f), "{f}");
        }
        assert!(!firmware_of(Board::Pi3, "LICENCE.broadcom"));
    }

    #[test]
    fn config_and_cmdline() {
        let c = config_txt("demo", &[Board::Pi3, Board::Pi4]);
        let sections: Vec<&str> = c.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(sections, ["[pi3]", "[pi4]", "[all]"]);
        assert!(
            c.contains("\narm_64bit=1\n") && c.contains("\ninitramfs initrd.img followkernel\n")
        );
        let l = cmdline("1a2b3c4d-02", &["quiet".into()]);
        assert!(!l.contains('\n'));
        assert!(
            l.contains(" root=PARTUUID=1a2b3c4d-02 ") && l.ends_with(" quiet"),
            "{l}"
        );
    }

    #[test]
    fn a_board_without_files_is_named() {
        let fw: BTreeMap<String, Vec<u8>> = ["bootcode.bin", "start.elf", "fixup.dat"]
            .iter()
            .map(|n| (n.to_string(), vec![1]))
            .collect();
        let dtbs: BTreeMap<String, Vec<u8>> = [
            ("bcm2837-rpi-3-b.dtb".to_string(), vec![2]),
            ("bcm2711-rpi-4-b.dtb".to_string(), vec![3]),
        ]
        .into_iter()
        .collect();
        let got = select(&[Board::Pi3], "6.1", &fw, &dtbs).unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            [
                "bcm2837-rpi-3-b.dtb",
                "bootcode.bin",
                "fixup.dat",
                "start.elf"
            ]
        );
        let e = select(&[Board::Pi4], "6.1", &fw, &dtbs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("start4.elf for the pi4 boards") && e.contains("raspi-firmware"),
            "{e}"
        );
        let e = select(&[Board::Pi5], "6.1", &fw, &dtbs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no bcm2712-*.dtb") && e.contains("trixie"),
            "{e}"
        );
    }
}
