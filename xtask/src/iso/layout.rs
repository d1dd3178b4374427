//! What the base's system area needs beyond `-boot_image any replay`.
//!
//! Replaying the base's boot setup (`-boot_image any replay`, or its
//! `-report_el_torito cmd` words when growing) restores the El Torito
//! entries, the MBR code, the partition offset and the appended partitions,
//! but two layout settings are xorriso's own run settings, not boot
//! settings, and are not carried across `-indev`/`-outdev`:
//!
//! - the cylinder alignment (`-partition_cyl_align`): set again explicitly
//!   as `-boot_image any partition_cyl_align=MODE`, the mode read from the
//!   base's `-report_el_torito as_mkisofs`;
//! - the padding after the appended partitions: `xorriso -as mkisofs` (how
//!   Ubuntu builds its ISOs) writes its 300 KiB of padding after them, where
//!   the GPT lists it as a trailing `Gap` partition, while native xorriso
//!   appends it after the image end or not at all. The base's padding is the
//!   room between the end of its last appended partition and the end of the
//!   usable area (the GPT's last usable block, or the image size without
//!   GPT); it is set again as `-padding BYTES -padding included`.
//!
//! Both are read from the reports [`super::inspect`] already runs, so they are
//! a function of the base's bytes (its digest is in the step's key).

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::tools::xorriso;

/// The base's layout settings the replay drops, to be set explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// `-partition_cyl_align` of the base (`on`, `off`, `all`, `auto`).
    pub cyl_align: Option<String>,
    /// Bytes of padding after the appended partitions, when the base has any.
    pub padding: Option<u64>,
}

impl Kept {
    /// Read from the base's `-report_el_torito as_mkisofs` and
    /// `-report_system_area plain` lines.
    pub fn from_reports(el_torito: &[String], system_area: &[String]) -> Result<Kept> {
        let mut kept = Kept::default();
        let mut appended_end: Option<u64> = None;
        for l in el_torito {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                ["-partition_cyl_align", mode] => {
                    anyhow::ensure!(
                        ["on", "off", "all", "auto"].contains(mode),
                        "xorriso reported an unknown cylinder alignment: {l}"
                    );
                    kept.cyl_align = Some(mode.to_string());
                }
                ["-append_partition", _, _, interval, ..] => {
                    let end = interval_end(interval)
                        .with_context(|| format!("reading xorriso's report line {l}"))?;
                    appended_end = Some(appended_end.map_or(end, |e| e.max(end)));
                }
                _ => {}
            }
        }
        if let Some(end) = appended_end {
            let usable_end = match field(system_area, "GPT lba range") {
                // first usable, end of the usable area, backup header
                Some(v) => number(&v, 1, "GPT lba range")?,
                None => match field(system_area, "ISO image size/512") {
                    Some(v) => number(&v, 0, "ISO image size/512")?,
                    None => bail!("xorriso's system area report has no image size"),
                },
            };
            kept.padding = Some(usable_end.saturating_sub(end) * 512);
        }
        Ok(kept)
    }

    /// One line for people (`--dry-run`).
    pub fn describe(&self) -> String {
        let align = match &self.cyl_align {
            Some(m) => format!("cylinder alignment {m}"),
            None => "no cylinder alignment reported".to_string(),
        };
        let pad = match self.padding {
            Some(p) => format!("{p} bytes of padding after the appended partitions"),
            None => "no appended partitions".to_string(),
        };
        format!("{align}; {pad} (`{}`)", self.args().join(" "))
    }

    /// As xorriso arguments, placed after the replayed boot setup.
    pub fn args(&self) -> Vec<String> {
        xorriso::keep_layout(self.cyl_align.as_deref(), self.padding)
    }
}

/// The values of the report line `key : values`.
fn field(lines: &[String], key: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn number(values: &str, i: usize, what: &str) -> Result<u64> {
    values
        .split_whitespace()
        .nth(i)
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("xorriso reported `{what} : {values}`, kiln cannot read it"))
}

/// The end (exclusive, in 512-byte blocks) of an interval reader string
/// `--interval:FLAGS:STARTd-ENDd:ZEROIZERS:SOURCE` (`d` = 512 bytes, `s` =
/// 2048 bytes, no suffix = bytes).
fn interval_end(interval: &str) -> Result<u64> {
    let mut parts = interval.splitn(4, ':');
    let (Some("--interval"), Some(_), Some(range)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("not an interval reader string: {interval}");
    };
    let (_, last) = range
        .split_once('-')
        .with_context(|| format!("interval without an end: {interval}"))?;
    let digits = last.trim_end_matches(char::is_alphabetic);
    let unit = &last[digits.len()..];
    let n: u64 = digits
        .parse()
        .with_context(|| format!("interval end is not a number: {interval}"))?;
    Ok(match unit {
        "d" => n + 1,
        "s" => (n + 1) * 4,
        "" => (n + 1).div_ceil(512),
        _ => bail!("unknown unit in interval {interval}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(|l| l.trim().to_string()).collect()
    }

    /// Ubuntu 22.04/24.04's shape (as xorriso 1.5.4 reports a base built
    /// like it): EFI partition appended after the ISO, GPT, alignment off,
    /// 600 blocks of padding listed as the `Gap1` partition.
    #[test]
    fn appended_partition_base_keeps_alignment_and_padding() {
        let et = lines(
            "-partition_cyl_align off
             -partition_offset 16
             -append_partition 2 28732ac11ff8d211ba4b00a0c93ec93b --interval:local_fs:6448d-14639d::'b.iso'
             -appended_part_as_gpt",
        );
        let sa = lines(
            "System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off GPT
             ISO image size/512 : 15304
             GPT lba range      :      64  15240  15303
             GPT start and size :   3  14640  600",
        );
        let k = Kept::from_reports(&et, &sa).unwrap();
        assert_eq!(
            k,
            Kept {
                cyl_align: Some("off".into()),
                padding: Some(600 * 512),
            }
        );
        assert_eq!(
            k.args(),
            [
                "-boot_image",
                "any",
                "partition_cyl_align=off",
                "-padding",
                "307200",
                "-padding",
                "included"
            ]
        );
    }

    /// EFI image inside the ISO (no appended partition): only the alignment;
    /// without GPT the image size bounds the padding.
    #[test]
    fn embedded_efi_base_keeps_alignment_only() {
        let et = lines("-partition_cyl_align on\n-e '/boot/grub/efi.img'");
        let k = Kept::from_reports(&et, &lines("ISO image size/512 : 16384")).unwrap();
        assert_eq!(k.cyl_align.as_deref(), Some("on"));
        assert_eq!(k.padding, None);
        let mbr = lines(
            "-partition_cyl_align all
             -append_partition 2 0xef --interval:local_fs:16384d-24575d::'t.iso'",
        );
        let k = Kept::from_reports(&mbr, &lines("ISO image size/512 : 25176")).unwrap();
        assert_eq!(k.padding, Some(600 * 512));
        assert!(Kept::from_reports(&lines("-partition_cyl_align sideways"), &[]).is_err());
        assert!(Kept::from_reports(&mbr, &[]).is_err());
    }

    #[test]
    fn interval_ends_in_blocks() {
        assert_eq!(
            interval_end("--interval:local_fs:0s-15s:zero_mbrpt:x").unwrap(),
            64
        );
        assert_eq!(
            interval_end("--interval:local_fs:6448d-14639d::/a:b.iso").unwrap(),
            14640
        );
        assert_eq!(interval_end("--interval:local_fs:0-1023::x").unwrap(), 2);
        assert!(interval_end("/boot/grub/efi.img").is_err());
    }
}
