//! Bench: remaster a generated 2.5 GB base ISO and compare kiln's wall time
//! with `cp` of the same file plus `sync`, in the same run: the session added
//! to a copy of the base (what kiln does), and the whole image written anew
//! (the fallback).
//!
//! The base is built with xorriso alone (El Torito BIOS + EFI entries over
//! placeholder boot images, a grub.cfg with a `linux` line, one large file):
//! replay copies boot images as bytes, so their content does not matter here.

use std::io::Write;

use anyhow::{Context, Result};
use camino::Utf8Path;

use std::time::Duration;

use crate::bench::{median, timed, BenchCx, Measurement};
use crate::tools::{self, xorriso};

/// Size of the large file in the generated base (scaled by `BenchCx::scale`).
pub const BASE_BYTES: u64 = 2_500_000_000;
/// Adding a session writes the base's bytes once, as `cp` does.
const GOAL: f64 = 1.0;
/// Writing the image whole goes through xorriso byte by byte.
const GOAL_WHOLE: f64 = 1.5;
/// Rounds of cp and kiln's two ways, in turn (medians are compared).
const ROUNDS: usize = 3;

fn write(p: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, bytes).with_context(|| format!("writing {p}"))
}

/// Generate the base ISO at `dir/base.iso`.
pub fn generate_base(dir: &Utf8Path, big: u64) -> Result<camino::Utf8PathBuf> {
    let root = dir.join("root");
    write(
        &root.join("boot/grub/grub.cfg"),
        b"set timeout=30\nmenuentry \"Try or Install Ubuntu Server\" {\n\tlinux\t/casper/vmlinuz  ---\n\tinitrd\t/casper/initrd\n}\n",
    )?;
    write(
        &root.join("boot/grub/loopback.cfg"),
        b"menuentry \"x\" {\n\tlinux\t/casper/vmlinuz iso-scan/filename=${iso_path} ---\n}\n",
    )?;
    write(
        &root.join("boot/grub/i386-pc/eltorito.img"),
        &[0u8; 2048 * 4],
    )?;
    write(&root.join("casper/vmlinuz"), b"kernel")?;
    write(
        &root.join(".disk/info"),
        b"Ubuntu-Server 24.04 bench base\n",
    )?;
    write(&dir.join("efi.img"), &vec![0u8; 4 << 20])?;
    // Incompressible-looking but cheap content: a counter pattern.
    let big_path = root.join("casper/filesystem.squashfs");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big_path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut left = big;
    let mut n: u64 = 0;
    while left > 0 {
        for (i, c) in block.chunks_mut(8).enumerate() {
            c.copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64).to_le_bytes());
        }
        n += 1;
        let k = left.min(block.len() as u64) as usize;
        f.write_all(&block[..k])?;
        left -= k as u64;
    }
    f.flush()?;
    drop(f);
    let iso = dir.join("base.iso");
    tools::run(&xorriso::bench_base(&root, &dir.join("efi.img"), &iso))?;
    std::fs::remove_dir_all(&root)?;
    Ok(iso)
}

/// The case: `iso_remaster_2.5g`.
pub fn remaster(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let dir = bcx.scratch.join("iso-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let guard = crate::exec::TempDir::new(dir.clone())?;
    let base = generate_base(&dir, bcx.bytes(BASE_BYTES))?;
    let sha = crate::digest::file_sha256(&base)?;
    // Inputs the remaster maps in: a seed and a small staged overlay.
    let seed = dir.join("seed");
    write(
        &seed.join("user-data"),
        b"#cloud-config\nautoinstall:\n  version: 1\n",
    )?;
    write(&seed.join("meta-data"), b"instance-id: bench\n")?;
    let stage = dir.join("stage");
    write(&stage.join(crate::stage::TARBALL), &vec![7u8; 1 << 20])?;
    write(
        &stage.join(format!("{}.sha256", crate::stage::TARBALL)),
        b"x  overlay.tar.zst\n",
    )?;

    let sync = || -> Result<()> {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    };
    sync()?;
    // As on a rebuild with the same base: its sha256 check is remembered by
    // file identity (the first round reads it).
    let memo = dir.join("digests");
    let copy = dir.join("copy.iso");
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    let cp = || -> Result<Duration> {
        let ((), t) = timed(|| {
            tools::run(
                &tools::Cmd::new("cp", "baseline copy").args([base.as_str(), copy.as_str()]),
            )?;
            sync()
        })?;
        std::fs::remove_file(&copy)?;
        sync()?;
        Ok(t)
    };
    let kiln = |whole: bool| -> Result<(camino::Utf8PathBuf, Duration)> {
        let _ = std::fs::remove_file(out.join("bench.iso"));
        sync()?;
        timed(|| {
            let iso = crate::iso::remaster_into(
                &base,
                Some(&sha),
                &seed,
                &stage,
                &out,
                1_700_000_000,
                whole,
                Some(&memo),
            )?;
            sync()?;
            Ok(iso)
        })
    };
    let (mut t_cp, mut t_x, mut t_whole) = (Vec::new(), Vec::new(), Vec::new());
    let mut iso = None;
    // Each round starts with a different side, so none always runs first
    // (after the clean-up's sync) or last.
    for round in 0..ROUNDS {
        for side in 0..3 {
            match (round + side) % 3 {
                0 => t_cp.push(cp()?),
                1 => t_whole.push(kiln(true)?.1),
                _ => {
                    let (i, t) = kiln(false)?;
                    t_x.push(t);
                    iso = Some(i);
                }
            }
        }
    }
    let iso = iso.expect("at least one round");
    let (t_cp, t_x, t_whole) = (median(t_cp), median(t_x), median(t_whole));
    // What `cargo xtask iso` adds on top: the secret-scan gate over the whole
    // ISO, run as the executor runs it (the sha256 is already remembered).
    let opts = crate::scan::Options {
        allow: Vec::new(),
        tmp: Some(dir.clone()),
    };
    let gate = |p: &Utf8Path, name: &str| crate::scan::gate_with(&opts, p, name);
    let (_, t_publish) =
        timed(|| crate::exec::gate_and_digest(&iso, "bench.iso", Some(&gate), true))?;
    drop(guard);
    Ok(vec![
        Measurement::time(
            "iso_remaster_2.5g",
            "session added to a copy of the base (base sha256 check remembered after round 1, as on a rebuild), output sha256 overlapped with the flush, + sync; median of 3",
            t_x,
            "cp + sync, median of 3",
            t_cp,
            GOAL,
        ),
        Measurement::time(
            "iso_remaster_whole_2.5g",
            "the fallback: the whole image written by xorriso (replay), same checks, + sync; median of 3",
            t_whole,
            "cp + sync, median of 3",
            t_cp,
            GOAL_WHOLE,
        ),
        Measurement::time(
            "iso_full_verb",
            "the remaster above + the secret-scan gate (all of `cargo xtask iso`)",
            t_x + t_publish,
            "cp + sync, median of 3",
            t_cp,
            GOAL,
        ),
    ])
}
