//! The offline installer ISO's payload: kiln compresses the appliance's
//! disk in process (zstd on every core, with the frame's content checksum,
//! and the sha256 of the raw bytes taken on the way) against `zstd -T0` of
//! the same file at the same level, in the same run. Compression is most of
//! the ISO step's time. Goal: <= 1.25x.

use anyhow::Result;

use super::{alternating, timed, BenchCx, Measurement};
use crate::iso::installer;
use crate::tools::{self, zstd};

/// kiln also hashes every byte (sha256) while it compresses.
const GOAL: f64 = 1.25;
const ROUNDS: usize = 3;

pub fn payload(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let size = (bcx.bytes(1 << 30) / (1 << 20)).max(8) << 20;
    let disk = bcx.scratch.join("installer-bench-disk.raw");
    super::ova::make_disk(&disk, size)?;
    let by_zstd = bcx.scratch.join("installer-bench-zstd.zst");
    let by_kiln = bcx.scratch.join("installer-bench-kiln.zst");
    let (_, kiln, base) = alternating(
        ROUNDS,
        || {
            let ((), t) = timed(|| {
                tools::run(&zstd::compress_file(&disk, &by_zstd, installer::ZSTD_LEVEL))?;
                Ok(())
            })?;
            Ok(t)
        },
        || timed(|| installer::compress(&disk, &by_kiln)),
    )?;
    for f in [&disk, &by_zstd, &by_kiln] {
        let _ = std::fs::remove_file(f);
    }
    Ok(vec![Measurement::time(
        "installer-payload",
        "installer payload (zstd + sha256, in process)",
        kiln,
        &format!("zstd -T0 -{}", installer::ZSTD_LEVEL),
        base,
        GOAL,
    )])
}
