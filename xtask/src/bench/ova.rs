//! OVA packaging overhead: `qemu-img convert` to a streamOptimized VMDK
//! alone (the baseline) against kiln's whole OVA build of the same disk
//! (the same conversion, the CID rewrite, descriptor, manifest, the archive
//! with the VMDK hashed while it is copied, and the lint pass).
//! Goal: <= 1.15x.

use std::io::{Seek, SeekFrom, Write};

use anyhow::{Context, Result};

use super::{timed, BenchCx, Measurement};
use crate::ova::{self, DigestAlgo, Members};
use crate::tools::{self, qemu_img};

/// A raw disk of `size` bytes that compresses like a system disk: a quarter
/// incompressible, a quarter repetitive text, the rest zeros (free space).
pub(super) fn make_disk(path: &camino::Utf8Path, size: u64) -> Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
    f.set_len(size)?;
    let chunk = 1u64 << 20;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text = b"Package: kiln-demo\nVersion: 1.0\nDescription: a line of text like the ones a root file system holds\n";
    let mut at = 0;
    while at + chunk <= size {
        let kind = (at / chunk) % 4;
        if kind < 2 {
            let buf: Vec<u8> = if kind == 0 {
                (0..chunk)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    })
                    .collect()
            } else {
                text.iter().copied().cycle().take(chunk as usize).collect()
            };
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&buf)?;
        }
        at += chunk;
    }
    f.sync_all()?;
    Ok(())
}

pub fn ova_build(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let size = (bcx.bytes(1 << 30) / (1 << 20)).max(8) << 20;
    let disk = bcx.scratch.join("ova-bench-disk.raw");
    make_disk(&disk, size)?;
    let members = Members::for_appliance("bench");

    let bare = bcx.scratch.join("ova-bench-bare.vmdk");
    let dir = bcx.scratch.join("ova-bench-kiln");
    std::fs::create_dir_all(&dir)?;
    let vmdk = dir.join(&members.vmdk);
    let dest = dir.join("bench.ova");
    let params = ova::ovf::Params {
        name: "bench".into(),
        product: "bench".into(),
        vendor: None,
        version: "1".into(),
        url: None,
        description: None,
        os_type: "debian12_64Guest".into(),
        os_id: 96,
        cpus: 2,
        memory_mb: 4096,
        nic: "E1000".into(),
        virtual_system_type: "vmx-14".into(),
        efi: true,
        disk_file: members.vmdk.clone(),
    };
    // Alternating rounds, medians: the machines are shared and noisy.
    let (vmdk_size, kiln, base) = crate::bench::alternating(
        3,
        || {
            let _ = std::fs::remove_file(&bare);
            let (_, t) = timed(|| tools::run(&qemu_img::convert_stream_vmdk(&disk, "raw", &bare)))?;
            Ok(t)
        },
        || {
            let _ = std::fs::remove_file(&vmdk);
            let _ = std::fs::remove_file(&dest);
            let (built, t) = timed(|| {
                tools::run(&qemu_img::convert_stream_vmdk(&disk, "raw", &vmdk))?;
                ova::vmdk::set_cid(&vmdk, ova::vmdk::cid_from("bench"))?;
                ova::write_ova(&vmdk, &dest, &members, &params, DigestAlgo::Sha256, 0)
            })?;
            Ok((built.vmdk_size, t))
        },
    )?;
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&bare);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![Measurement::time(
        "ova-build",
        &format!(
            "kiln OVA of a {} MiB disk ({} MiB VMDK, linted)",
            size >> 20,
            vmdk_size >> 20
        ),
        kiln,
        "qemu-img convert -O vmdk streamOptimized",
        base,
        1.15,
    )])
}

#[cfg(test)]
mod tests {
    /// The case runs end to end on a small disk (no timing asserted).
    #[test]
    fn runs_small() {
        if !crate::testing::require(&["qemu-img"]) {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let scratch = camino::Utf8Path::from_path(t.path()).unwrap();
        // KILN_OVA_BENCH_SCALE=1 measures the full 1 GiB case by hand.
        let scale = std::env::var("KILN_OVA_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.01);
        let m = super::ova_build(&super::BenchCx {
            scratch,
            cache: scratch,
            scale,
        })
        .unwrap();
        eprintln!("{}", crate::bench::render(&m));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].case, "ova-build");
        assert!(m[0].kiln.contains("linted"), "{}", m[0].kiln);
    }
}
