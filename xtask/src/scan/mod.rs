//! The secret scan: proves that no secret and no per-instance identity is
//! baked into an artifact. It reads directories, tars (plain, gzip, zstd,
//! xz), cpio (initramfs), ISO 9660, partitioned disks (GPT/MBR; ext2/3/4
//! read in-process, FAT through mtools), qcow2/VMDK/VHDX/VDI (through
//! `qemu-img`), OVAs, and anything nested in those, without mounting and
//! without root. [`rules`] says what is looked for.
//!
//! Every finding names the artifact, the nested path inside it (levels
//! joined by `!`, e.g. `x.iso!/kiln/overlay.tar.zst!/etc/shadow`), the rule
//! and a redacted excerpt: a report never contains the secret itself.
//!
//! Fail closed: a part of an artifact that cannot be read (truncated,
//! corrupt, unknown container) makes the scan an error, never a pass.
//! Content in a format kiln cannot open is an `opaque-content` finding.
//!
//! `walk.rs` is the one walker: it opens the containers and hands every
//! member to a visitor. `secrets.rs` is the scan's visitor (it applies the
//! rules to every file), [`inventory`] the reproducibility check's (every
//! member's digest and metadata). `report.rs` holds the findings, the
//! reports and the publish [`gate`]. [`scan_artifact`] joins them: the
//! scan's hits, judged against the allowlist and dpkg's records, become an
//! [`ArtifactReport`].

pub mod cpio;
pub mod disk;
pub mod dpkg;
pub mod ext4;
pub mod inventory;
pub mod iso9660;
mod report;
pub mod rules;
mod secrets;
pub mod sniff;
pub mod source;
mod walk;
pub mod zip;

use camino::{Utf8Path, Utf8PathBuf};

use crate::recipe::scan::AllowEntry;
use crate::recipe::Resolved;
pub use report::{gate, gate_with, human_bytes, ArtifactReport, Finding, Report};

/// What to accept, and where temporary files go.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub allow: Vec<AllowEntry>,
    /// Directory for temporary copies (converted disks, FAT extractions);
    /// default: the system temporary directory.
    pub tmp: Option<Utf8PathBuf>,
}

impl Options {
    pub fn from_recipe(r: &Resolved) -> Options {
        Options {
            allow: r.recipe.scan.allow.clone(),
            tmp: None,
        }
    }
}

/// Scan each path (a directory or a file of any supported format).
pub fn scan(paths: &[Utf8PathBuf], opts: &Options) -> Report {
    let artifacts: Vec<ArtifactReport> = paths
        .iter()
        .map(|p| scan_artifact(p, p.as_str(), opts))
        .collect();
    Report {
        ok: artifacts.iter().all(ArtifactReport::ok),
        artifacts,
    }
}

/// Scan one artifact; `label` names it in findings (e.g. its published name).
pub fn scan_artifact(path: &Utf8Path, label: &str, opts: &Options) -> ArtifactReport {
    let tmp = opts.tmp.clone().unwrap_or_else(|| {
        Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap_or_else(|_| "/tmp".into())
    });
    let w = secrets::scan(path, tmp);
    let findings = w
        .hits
        .into_iter()
        .map(|(full, inner, h, md5)| {
            let rule = rules::find(h.rule).expect("hits name known rules");
            let fs = full.rsplit_once('!').map_or("", |(fs, _)| fs);
            let allowed = opts
                .allow
                .iter()
                .find(|a| a.accepts(h.rule, &inner, &full, &h.sha256))
                .map(|a| a.reason.clone())
                .or_else(|| {
                    let pkg = w.shipped.package(fs, &inner, md5.as_ref()?)?;
                    Some(format!(
                        "shipped unchanged by the Debian package {pkg} (dpkg md5sums): \
                         the same bytes on every Debian system, not this appliance's secret"
                    ))
                });
            Finding {
                artifact: label.to_string(),
                path: full,
                line: h.line,
                rule: h.rule.to_string(),
                description: rule.description.to_string(),
                fix: rules::fix(rule, &inner),
                excerpt: h.excerpt,
                sha256: h.hash_public.then_some(h.sha256),
                allowed,
            }
        })
        .collect();
    ArtifactReport {
        artifact: label.to_string(),
        findings,
        error: w.result.err().map(|e| format!("{e:#}")),
        files: w.files,
        bytes: w.bytes,
    }
}
