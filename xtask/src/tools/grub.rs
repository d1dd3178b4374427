//! GRUB: core images for BIOS boot (`grub-mkimage -O i386-pc`).

use camino::Utf8Path;

use super::Cmd;

/// GRUB's BIOS modules and boot sector (package `grub-pc-bin`).
pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";
pub const BOOT_IMG: &str = "/usr/lib/grub/i386-pc/boot.img";

/// Modules a core image needs to read an ext4 root on a GPT disk and boot Linux.
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "ext2",
    "search",
    "search_fs_uuid",
    "linux",
    "normal",
    "echo",
    "serial",
    "terminal",
];

/// `grub-mkimage -O i386-pc -c CONFIG -p PREFIX -o OUT MODULES…`.
pub fn mkimage_i386_pc(config: &Utf8Path, prefix: &str, out: &Utf8Path) -> Cmd {
    Cmd::new("grub-mkimage", "GRUB core image for BIOS boot")
        .args(["-d", I386_PC_DIR, "-O", "i386-pc", "-C", "none"])
        .args(["-c", config.as_str(), "-p", prefix, "-o", out.as_str()])
        .args(BIOS_MODULES)
}

// --- installer ISO (crate::iso::installer) ---

/// GRUB's EFI modules (package `grub-efi-amd64-bin`).
pub const X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// A file of that package, for the plan's needs.
pub const X86_64_EFI_LINUX_MOD: &str = "/usr/lib/grub/x86_64-efi/linux.mod";
/// The MBR of a hybrid ISO that also boots from a disk (`--grub2-mbr`).
pub const BOOT_HYBRID_IMG: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// Modules of the installer ISO's GRUB (both platforms): its menu, the
/// ISO 9660 medium, the installed disk's ext4 root (to boot it), serial
/// and screen.
pub const ISO_MODULES: &[&str] = &[
    "normal",
    "linux",
    "search",
    "search_fs_file",
    "search_fs_uuid",
    "iso9660",
    "ext2",
    "fat",
    "part_gpt",
    "part_msdos",
    "test",
    "echo",
    "serial",
    "terminal",
    "reboot",
    "halt",
];

/// `grub-mkimage -O i386-pc-eltorito` (BIOS, CD and hybrid disk) or
/// `-O x86_64-efi` (`efi`: the removable-media loader), with `config`
/// built in and prefix `/boot/grub`.
pub fn mkimage_iso(efi: bool, config: &Utf8Path, out: &Utf8Path) -> Cmd {
    let (dir, format, extra) = if efi {
        (X86_64_EFI_DIR, "x86_64-efi", "efi_gop")
    } else {
        (I386_PC_DIR, "i386-pc-eltorito", "biosdisk")
    };
    Cmd::new(
        "grub-mkimage",
        format!("GRUB image for the installer ISO ({format})"),
    )
    .args(["-d", dir, "-O", format, "-C", "none"])
    .args([
        "-c",
        config.as_str(),
        "-p",
        "/boot/grub",
        "-o",
        out.as_str(),
    ])
    .args(ISO_MODULES)
    .arg(extra)
}
