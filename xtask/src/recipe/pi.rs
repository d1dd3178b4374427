//! `pi:` — the Raspberry Pi image (arm64). (Build: `crate::pi`.)
//!
//! The section's presence asks for the image (`pi: {}` takes every default):
//!
//! ```yaml
//! pi:
//!   size: 2G              # whole image; default: the smallest power of two that fits
//!   boot_size: 512M       # FAT32 boot partition (/boot/firmware), 4 MiB aligned
//!   boot_label: BOOT      # its FAT label
//!   boards: [pi3, pi4]    # DTBs, firmware and config.txt sections to include
//!   compression: zst      # zst | xz | none
//!   cmdline: []           # extra kernel arguments for cmdline.txt
//! ```

use anyhow::{bail, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use super::qcow2::parse_size;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiOptions {
    /// Size of the uncompressed image (`2G`, `1536M`), a multiple of 4 MiB;
    /// the root partition grows to fill the card at first boot. Default: the
    /// smallest power of two the content fits in (emulators want one).
    #[serde(default)]
    pub size: Option<String>,
    /// Size of the FAT32 boot partition.
    #[serde(default = "default_boot_size")]
    pub boot_size: String,
    /// FAT label of the boot partition (at most 11 characters).
    #[serde(default = "default_label")]
    pub boot_label: String,
    /// Boards the image boots on.
    #[serde(default = "default_boards")]
    pub boards: Vec<Board>,
    /// How the published image is compressed.
    #[serde(default)]
    pub compression: Compression,
    /// Extra kernel command-line arguments (after `console=… root=PARTUUID=…`).
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// `size` in bytes, when given (filled by `resolve`).
    #[serde(default, skip_deserializing)]
    pub size_bytes: Option<u64>,
    /// `boot_size` in bytes (filled by `resolve`).
    #[serde(default, skip_deserializing)]
    pub boot_bytes: u64,
}

impl Default for PiOptions {
    fn default() -> Self {
        PiOptions {
            size: None,
            boot_size: default_boot_size(),
            boot_label: default_label(),
            boards: default_boards(),
            compression: Compression::default(),
            cmdline: Vec::new(),
            size_bytes: None,
            boot_bytes: 0,
        }
    }
}

fn default_boot_size() -> String {
    "512M".into()
}
fn default_label() -> String {
    "BOOT".into()
}
fn default_boards() -> Vec<Board> {
    vec![Board::Pi3, Board::Pi4]
}

/// A family of boards that share firmware files and a device-tree prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Board {
    /// Pi 3B, 3B+, 3A+, CM3, Zero 2 W (BCM2837).
    Pi3,
    /// Pi 4B, 400, CM4 (BCM2711).
    Pi4,
    /// Pi 5 (BCM2712): firmware in EEPROM; needs a kernel with its DTBs.
    Pi5,
}

impl Board {
    /// The `config.txt` conditional section of the family.
    pub fn section(self) -> &'static str {
        match self {
            Board::Pi3 => "pi3",
            Board::Pi4 => "pi4",
            Board::Pi5 => "pi5",
        }
    }
    /// Device-tree file name prefix of the family's SoC.
    pub fn dtb_prefix(self) -> &'static str {
        match self {
            Board::Pi3 => "bcm2837-",
            Board::Pi4 => "bcm2711-",
            Board::Pi5 => "bcm2712",
        }
    }
    /// The firmware files the family boots with (beside `config.txt`).
    pub fn firmware(self) -> &'static [&'static str] {
        match self {
            Board::Pi3 => &["bootcode.bin", "start.elf", "fixup.dat"],
            Board::Pi4 => &["start4.elf", "fixup4.dat"],
            Board::Pi5 => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `.img.zst` (Raspberry Pi Imager and `zstdcat | dd` read it).
    #[default]
    Zst,
    /// `.img.xz`.
    Xz,
    /// `.img`.
    None,
}

impl Compression {
    /// The published file's extension after `.img`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Zst => ".zst",
            Compression::Xz => ".xz",
            Compression::None => "",
        }
    }
}

impl PiOptions {
    pub fn resolve(&mut self, file: &Utf8Path) -> Result<()> {
        let four = 4 * MIB;
        if let Some(s) = &self.size {
            let b = parse_size(s).map_err(|e| anyhow::anyhow!("{file}: pi.size: {e}"))?;
            if !b.is_multiple_of(four) {
                bail!(
                    "{file}: pi.size `{s}` must be a multiple of 4 MiB (SD cards and \
                     Raspberry Pi Imager expect it), e.g. `{}M`",
                    b.div_ceil(four) * 4
                );
            }
            self.size_bytes = Some(b);
        }
        let b = parse_size(&self.boot_size)
            .map_err(|e| anyhow::anyhow!("{file}: pi.boot_size: {e}"))?;
        if !b.is_multiple_of(four) || b < 64 * MIB {
            bail!(
                "{file}: pi.boot_size `{}` must be at least 64M and a multiple of 4 MiB \
                 (FAT32 needs the room; 256M–512M is usual)",
                self.boot_size
            );
        }
        self.boot_bytes = b;
        let l = &self.boot_label;
        if l.is_empty()
            || l.len() > 11
            || !l
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            bail!(
                "{file}: pi.boot_label `{l}` must be 1-11 upper-case letters, digits, `-` or `_` \
                 (a FAT volume label)"
            );
        }
        if self.boards.is_empty() {
            bail!("{file}: pi.boards is empty: name at least one of pi3, pi4, pi5");
        }
        self.boards.sort();
        self.boards.dedup();
        for a in &self.cmdline {
            if a.is_empty() || a.contains(['\n', '"', '\'', ' ']) {
                bail!("{file}: pi.cmdline entry `{a}` must be one word without quotes");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> Result<PiOptions> {
        let mut p: PiOptions = yaml_serde::from_str(yaml)?;
        p.resolve(Utf8Path::new("r.yaml"))?;
        Ok(p)
    }

    #[test]
    fn defaults_and_checks() {
        let p = resolve("{}").unwrap();
        assert_eq!(p.boot_bytes, 512 * MIB);
        assert_eq!(p.size_bytes, None);
        assert_eq!(p.boards, [Board::Pi3, Board::Pi4]);
        assert_eq!(p.compression, Compression::Zst);
        let p = resolve("{size: 2G, boards: [pi4, pi3, pi4], compression: xz}").unwrap();
        assert_eq!(p.size_bytes, Some(2048 * MIB));
        assert_eq!(p.boards, [Board::Pi3, Board::Pi4]);
        for (bad, says) in [
            (
                "{size: 1030M}",
                "multiple of 4 MiB (SD cards and Raspberry Pi Imager expect it), e.g. `1032M`",
            ),
            ("{boot_size: 32M}", "at least 64M"),
            ("{boot_label: boot}", "upper-case"),
            ("{boards: []}", "name at least one"),
            ("{cmdline: ['a b']}", "one word"),
        ] {
            let e = format!("{:#}", resolve(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(resolve("{boards: [pi2]}").is_err());
    }
}
