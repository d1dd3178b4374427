//! `SOURCE_DATE_EPOCH`: the one timestamp every artifact carries. It flows to
//! tar headers, ISO volume dates, file-system timestamps, UUIDs and hash seeds.

use anyhow::{Context, Result};
use camino::Utf8Path;

/// The epoch and where it came from: the environment, else the time of the
/// project's last commit that changed more than kiln's own code
/// ([`crate::tools::git::last_commit_time`]), else 0.
pub fn resolve(root: &Utf8Path) -> Result<(i64, String)> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        let e = v.trim().parse::<i64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970")
        })?;
        anyhow::ensure!(e >= 0, "SOURCE_DATE_EPOCH must not be negative");
        return Ok((e, "SOURCE_DATE_EPOCH".into()));
    }
    if let Some(t) = crate::tools::git::last_commit_time(root) {
        if crate::tools::git::is_shallow(root) {
            crate::ui::warn(
                "SOURCE_DATE_EPOCH: this is a shallow clone, so the last commit that changed the \
                 appliance may be out of reach and the epoch later than a full clone's (other \
                 bytes): fetch the history (`git fetch --unshallow`) or set SOURCE_DATE_EPOCH",
            );
            return Ok((t, "last commit time in a shallow clone".into()));
        }
        return Ok((t, "last commit time (kiln's own code aside)".into()));
    }
    Ok((0, "default (no SOURCE_DATE_EPOCH, no git history)".into()))
}

/// A deterministic 16-byte id (UUID/GUID material) derived from the epoch and
/// a purpose string, so every build with the same inputs gets the same ids.
pub fn derived_id(epoch: i64, purpose: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(b"kiln-id\0")
        .chain_update(epoch.to_le_bytes())
        .chain_update(purpose.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    // RFC 4122 version 4 / variant 1 bits, so tools accept it as a UUID.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// [`derived_id`] formatted as a lower-case UUID string.
pub fn derived_uuid(epoch: i64, purpose: &str) -> String {
    let b = derived_id(epoch, purpose);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
