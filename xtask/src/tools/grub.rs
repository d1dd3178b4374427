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
