//! Format sniffing: what a blob of bytes is, from its first bytes. The
//! partition-table and FAT checks are the disk reader's ([`super::disk`]),
//! so a disk is recognized by the same rules that read it.

use super::disk;

/// Bytes kept from the start of every file for sniffing (an ISO's volume
/// descriptor sits at 32 KiB).
pub const HEAD: usize = 40 * 1024;

/// What a blob of bytes is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Zstd,
    Xz,
    Tar,
    Cpio,
    Iso,
    Zip,
    /// A partitioned disk (GPT or MBR).
    Disk,
    Ext,
    Fat,
    /// A qemu-readable container: the `-f` name.
    Qemu(&'static str),
    /// A format kiln cannot open: its name.
    Opaque(&'static str),
    /// Anything else: scanned byte for byte as a file.
    Leaf,
}

pub fn sniff(h: &[u8], len: u64) -> Format {
    let at = |o: usize, m: &[u8]| h.len() >= o + m.len() && &h[o..o + m.len()] == m;
    if at(0, b"\x1f\x8b") {
        return Format::Gzip;
    }
    if at(0, b"\x28\xb5\x2f\xfd") {
        return Format::Zstd;
    }
    if at(0, b"\xfd7zXZ\0") {
        return Format::Xz;
    }
    if at(0, b"070701") || at(0, b"070702") || at(0, b"070707") {
        return Format::Cpio;
    }
    if at(257, b"ustar") && tar_checksum_ok(h) {
        return Format::Tar;
    }
    if at(0, b"QFI\xfb") {
        return Format::Qemu("qcow2");
    }
    if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        return Format::Qemu("vmdk");
    }
    if at(0, b"vhdxfile") {
        return Format::Qemu("vhdx");
    }
    if at(64, b"\x7f\x10\xda\xbe") {
        return Format::Qemu("vdi");
    }
    if at(0, b"conectix") {
        return Format::Qemu("vpc");
    }
    if at(32769, b"CD001") {
        return Format::Iso;
    }
    if disk::is_gpt(h) {
        return Format::Disk;
    }
    if disk::is_fat(h) {
        return Format::Fat;
    }
    if disk::is_mbr(h, len) {
        return Format::Disk;
    }
    if at(1080, b"\x53\xef") && h.len() > 1100 {
        return Format::Ext;
    }
    if at(0, b"hsqs") || at(0, b"sqsh") {
        return Format::Opaque("squashfs");
    }
    if at(0, b"BZh") && at(4, b"\x31\x41\x59\x26\x53\x59") {
        return Format::Opaque("bzip2");
    }
    if at(0, b"\x04\x22\x4d\x18") {
        return Format::Opaque("lz4");
    }
    if at(0, b"\x89LZO") {
        return Format::Opaque("lzop");
    }
    if at(0, b"PK\x03\x04") {
        return Format::Zip;
    }
    if at(0, b"7z\xbc\xaf\x27\x1c") {
        return Format::Opaque("7z");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Format::Opaque("LUKS");
    }
    if at(0, b"\x5d\0\0") && h.len() > 13 && (h[5..13].iter().all(|&b| b == 0xff) || h[12] == 0) {
        return Format::Opaque("lzma");
    }
    Format::Leaf
}

fn tar_checksum_ok(h: &[u8]) -> bool {
    if h.len() < 512 {
        return false;
    }
    let field = &h[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = h[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == want
}
