//! The unified kernel image of amd64 disks: systemd's EFI stub,
//! os-release, command line, kernel and Debian's initrd, added as sections
//! with objcopy, the PE time stamp pinned and its checksum recomputed.

use anyhow::{ensure, Context, Result};
use camino::Utf8Path;

use super::merge::Boot;
use crate::tools;

/// The end of the last section of a PE image (image base included), so
/// added sections can follow it.
pub fn pe_end(pe: &[u8]) -> Result<u64> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            pe.get(o..o + 2).context("truncated PE")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            pe.get(o..o + 4).context("truncated PE")?.try_into()?,
        ))
    };
    ensure!(pe.starts_with(b"MZ"), "not a PE image (no MZ header)");
    let pe_off = u32_at(0x3c)? as usize;
    ensure!(
        pe.get(pe_off..pe_off + 4) == Some(b"PE\0\0"),
        "not a PE image (no PE signature)"
    );
    let coff = pe_off + 4;
    let nsec = u16_at(coff + 2)? as usize;
    let opt_size = u16_at(coff + 16)? as usize;
    let opt = coff + 20;
    ensure!(u16_at(opt)? == 0x20b, "not a PE32+ image");
    let image_base = u64::from_le_bytes(
        pe.get(opt + 24..opt + 32)
            .context("truncated PE")?
            .try_into()?,
    );
    let sect = opt + opt_size;
    let mut end = 0u64;
    for i in 0..nsec {
        let s = sect + i * 40;
        let vsize = u32_at(s + 8)? as u64;
        let va = u32_at(s + 12)? as u64;
        end = end.max(va + vsize);
    }
    Ok(image_base + end)
}

pub(super) fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

/// Build the UKI with objcopy: `.osrel`, `.cmdline`, `.linux`, `.initrd`
/// after the stub's own sections, 4 KiB aligned.
pub(super) fn build_uki(work: &Utf8Path, boot: &Boot, cmdline: &str, epoch: i64) -> Result<()> {
    let stub = Utf8Path::new(tools::objcopy::EFI_STUB_X64);
    if !stub.is_file() {
        return Err(tools::missing_tool(stub.as_str()));
    }
    let stub_bytes = std::fs::read(stub).with_context(|| format!("reading {stub}"))?;
    let (_, kernel) = boot.kernel.as_ref().context(
        "the root file system has no /boot/vmlinuz-*: is a linux-image package installed?",
    )?;
    let (_, initrd) = boot
        .initrd
        .as_ref()
        .context("the root file system has no /boot/initrd.img-*: is initramfs-tools installed?")?;
    let osrel = boot
        .os_release
        .as_ref()
        .context("the root file system has no /usr/lib/os-release")?;
    let cmdline_file = work.join("cmdline");
    std::fs::write(&cmdline_file, cmdline)?;
    let files: [(&str, &Utf8Path); 4] = [
        (".osrel", osrel),
        (".cmdline", &cmdline_file),
        (".linux", kernel),
        (".initrd", initrd),
    ];
    let mut vma = align(
        pe_end(&stub_bytes).with_context(|| format!("reading {stub}"))?,
        4096,
    );
    let mut sections = Vec::new();
    for (name, file) in files {
        sections.push(tools::objcopy::Section {
            name,
            file,
            vma: Some(vma),
        });
        vma = align(vma + std::fs::metadata(file)?.len(), 4096);
    }
    let out = work.join("BOOTX64.EFI");
    tools::run(&tools::objcopy::add_sections(stub, &sections, &out, epoch))?;
    // objcopy stamps the build time; pin it to the epoch and fix the checksum.
    let mut pe = std::fs::read(&out)?;
    pin_pe_timestamp(&mut pe, epoch)?;
    std::fs::write(&out, pe)?;
    Ok(())
}

/// Set a PE image's COFF time stamp to `epoch` and recompute its checksum.
pub fn pin_pe_timestamp(pe: &mut [u8], epoch: i64) -> Result<()> {
    ensure!(pe.len() > 0x40 && pe.starts_with(b"MZ"), "not a PE image");
    let pe_off = u32::from_le_bytes(pe[0x3c..0x40].try_into()?) as usize;
    ensure!(
        pe.get(pe_off..pe_off + 4) == Some(b"PE\0\0"),
        "not a PE image"
    );
    let stamp = u32::try_from(epoch.max(0)).unwrap_or(u32::MAX);
    pe[pe_off + 8..pe_off + 12].copy_from_slice(&stamp.to_le_bytes());
    let ck = pe_off + 24 + 64;
    ensure!(pe.len() > ck + 4, "truncated PE image");
    pe[ck..ck + 4].fill(0);
    let mut sum: u64 = 0;
    for (i, c) in pe.chunks(2).enumerate() {
        if i * 2 >= ck && i * 2 < ck + 4 {
            continue;
        }
        let w = if c.len() == 2 {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            c[0] as u16
        };
        sum += w as u64;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let total = (sum as u32).wrapping_add(pe.len() as u32);
    pe[ck..ck + 4].copy_from_slice(&total.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_layout() {
        let stub = Utf8Path::new(tools::objcopy::EFI_STUB_X64);
        if !crate::testing::require(&[stub.as_str()]) {
            return;
        }
        let end = pe_end(&std::fs::read(stub).unwrap()).unwrap();
        assert!(end > 0x1000);
        assert!(pe_end(b"not a pe").is_err());
        // Pinning is idempotent and reproduces the stub's own checksum.
        let mut a = std::fs::read(stub).unwrap();
        let orig = a.clone();
        pin_pe_timestamp(&mut a, 0).unwrap();
        assert_eq!(a, orig, "the stub has time stamp 0 and a valid checksum");
    }
}
