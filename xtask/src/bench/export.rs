//! Payload export benchmarks: a generated model directory (2 GiB at scale
//! 1.0) exported as kiln's deterministic tar.zst (zstd level
//! [`models::ZSTD_LEVEL`], 1) versus `tar -cf - DIR | zstd -T0 -3 > out` (the
//! issue's goal, at zstd's default level) and versus the same pipeline at
//! kiln's level (like for like), and kiln's hashing versus `sha256sum`, all
//! measured in the same run on the same (page-cached) files, in alternating
//! rounds whose medians are compared.

use std::io::Write;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{timed, BenchCx, Measurement};
use crate::export::models;

/// Full size of the generated model.
pub const MODEL_BYTES: u64 = 2 << 30;

/// Goal for `model-export`: kiln's time at most this many times the pipeline's.
const EXPORT_GOAL: f64 = 1.2;
/// Goal for `model-hash`: at least this many times `sha256sum`'s speed.
const HASH_GOAL: f64 = 3.0;
/// Alternating rounds of baseline and kiln (medians are compared).
const ROUNDS: usize = 3;

/// The cases on one generated model: `model-export` (goal <= 1.2x the time
/// of the pipeline at `zstd -3`), `model-export-same-level` (the same goal
/// against the pipeline at kiln's level) and `model-hash` (goal >= 3x
/// `sha256sum`'s speed).
pub fn model_export(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    crate::tools::require(&["bash", "tar", "zstd", "sha256sum"])?;
    let dir = bcx.scratch.join("bench-model");
    let _ = std::fs::remove_dir_all(&dir);
    generate(&dir, bcx.bytes(MODEL_BYTES))?;
    let files = models::scan("bench", &dir)?;
    let baseline_out = bcx.scratch.join("bench-model.baseline.tar.zst");
    let kiln_out = bcx.scratch.join("bench-model.kiln.tar.zst");
    // Read everything once so both sides start from the page cache, and
    // write the generated files back so neither side pays for that.
    models::hash_files(&files)?;
    sync();
    // Each side starts with the previous output gone and nothing left to
    // write back (outside the timing).
    let fresh = |p: &Utf8Path| {
        let _ = std::fs::remove_file(p);
        sync();
    };
    // kiln against the pipeline at `level`, alternating rounds.
    let versus = |level: i32| {
        super::alternating(
            ROUNDS,
            || {
                fresh(&baseline_out);
                let (_, t) = timed(|| {
                    let c = crate::tools::zstd::tar_pipeline(&dir, &baseline_out, level);
                    crate::tools::run(&c)
                })?;
                Ok(t)
            },
            || {
                fresh(&kiln_out);
                timed(|| models::write_tar_zst(&kiln_out, "bench", &files, 0, None))
            },
        )
    };
    let level = models::ZSTD_LEVEL;
    // The comparison: the obvious pipeline at zstd's default level.
    let (written, kiln, base) = versus(3)?;
    let (_, size, entries) = written;
    anyhow::ensure!(
        entries.len() == files.len() && size > 0,
        "kiln wrote an incomplete archive"
    );
    let export = Measurement::time(
        "model-export",
        &format!(
            "kiln model tar.zst at zstd level {level}, not 3 (read + hash, tar + zstd, \
             hash + write; median of {ROUNDS})"
        ),
        kiln,
        "tar -cf - DIR | zstd -T0 -3",
        base,
        EXPORT_GOAL,
    );
    // Like for like: the pipeline at kiln's level.
    let (_, kiln, base) = versus(level)?;
    let same_level = Measurement::time(
        "model-export-same-level",
        &format!("the same kiln export (median of {ROUNDS})"),
        kiln,
        &format!("tar -cf - DIR | zstd -T0 -{level}"),
        base,
        EXPORT_GOAL,
    );
    let paths: Vec<&Utf8Path> = files.iter().map(|f| f.src.as_path()).collect();
    let (digests, kiln, base) = super::alternating(
        ROUNDS,
        || {
            let (_, t) = timed(|| crate::tools::run(&crate::tools::sha256sum::files(&paths)))?;
            Ok(t)
        },
        || timed(|| models::hash_files(&files)),
    )?;
    anyhow::ensure!(digests.len() == files.len());
    let hash = Measurement::speedup(
        "model-hash",
        &format!("kiln sha256 (sha2, all cores; median of {ROUNDS})"),
        kiln,
        "sha256sum FILES",
        base,
        HASH_GOAL,
    );
    for p in [&baseline_out, &kiln_out] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![export, same_level, hash])
}

fn sync() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

/// A model-like directory: a config, a tokenizer and `total` bytes of
/// weight shards (pseudo-random, mildly compressible like float weights).
pub fn generate(dir: &Utf8Path, total: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    std::fs::write(
        dir.join("config.json"),
        "{\"hidden_size\": 1024, \"num_hidden_layers\": 24}\n",
    )?;
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {}}}\n",
    )?;
    let shards = 4u64;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut buf = vec![0u8; 1 << 20];
    for s in 0..shards {
        let path: Utf8PathBuf = dir.join(format!("model-{:05}-of-{shards:05}.safetensors", s + 1));
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {path}"))?,
        );
        let mut left = total / shards + if s == 0 { total % shards } else { 0 };
        while left > 0 {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Two of every eight bytes low-entropy, like exponents of small floats.
                let mut b = x.to_le_bytes();
                b[3] = 0x3c | (b[3] & 1);
                b[7] = 0xbc | (b[7] & 1);
                w.copy_from_slice(&b);
            }
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    Ok(())
}
