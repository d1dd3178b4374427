//! What a scan reports, and the publish gate built on it: findings (always
//! redacted), per-artifact reports, their text rendering, and [`gate`],
//! which refuses to publish an artifact with a blocking finding or a part
//! that could not be read.

use anyhow::{bail, Result};
use camino::Utf8Path;
use serde::Serialize;

use super::{scan_artifact, Options};
use crate::recipe::Resolved;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub artifact: String,
    /// Nested path inside the artifact, levels joined by `!` (empty for a plain file).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub rule: String,
    pub description: String,
    pub fix: String,
    /// Redacted: never the secret itself.
    pub excerpt: String,
    /// sha256 of the matched content, for the allowlist (withheld for short secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The allowlist entry's reason, when an entry accepts this finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
}

impl Finding {
    /// `artifact!path:line`.
    pub fn location(&self) -> String {
        let mut s = self.artifact.clone();
        if !self.path.is_empty() {
            s.push('!');
            s.push_str(&self.path);
        }
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactReport {
    pub artifact: String,
    pub findings: Vec<Finding>,
    /// Set when part of the artifact could not be read: the scan failed closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files whose content was scanned (at every nesting level).
    pub files: u64,
    /// Bytes of file content scanned (decompressed).
    pub bytes: u64,
}

impl ArtifactReport {
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.allowed.is_none())
    }
    /// Clean: everything was read and every finding is allowed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.blocking().next().is_none()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub artifacts: Vec<ArtifactReport>,
}

/// The build gate: scans one artifact with the recipe's allowlist before it
/// is published, and fails (listing redacted findings) if anything is found
/// or anything could not be read. Pass it as `exec::Options.gate`.
/// Its passes are remembered by the executor (see
/// [`crate::exec::gate_remembered`]), keyed by the artifact's bytes, the
/// allowlist, the versions of the tools the scan runs and kiln's code.
pub fn gate(r: &Resolved) -> Gate {
    Gate {
        opts: Options::from_recipe(r),
    }
}

/// See [`gate`].
pub struct Gate {
    opts: Options,
}

impl crate::exec::Check for Gate {
    fn check(&self, path: &Utf8Path, name: &str) -> Result<()> {
        gate_with(&self.opts, path, name)
    }
    fn verdict_inputs(&self) -> Option<serde_json::Value> {
        // The tools the walker runs on nested images (see `walk.rs`).
        let tools: std::collections::BTreeMap<&str, String> = ["mcopy", "qemu-img"]
            .into_iter()
            .map(|t| (t, crate::doctor::version(t)))
            .collect();
        Some(serde_json::json!({ "allow": self.opts.allow, "tools": tools }))
    }
}

/// [`gate`] with explicit options.
pub fn gate_with(opts: &Options, path: &Utf8Path, name: &str) -> Result<()> {
    crate::ui::info(&format!(
        "scanning {name} for baked secrets and instance identity"
    ));
    let rep = scan_artifact(path, name, opts);
    let blocking: Vec<&Finding> = rep.blocking().collect();
    if rep.error.is_none() && blocking.is_empty() {
        let allowed = rep.findings.len();
        crate::ui::info(&format!(
            "scan of {name}: clean ({} files, {}{})",
            rep.files,
            human_bytes(rep.bytes),
            if allowed > 0 {
                format!(", {allowed} allowed by the recipe")
            } else {
                String::new()
            }
        ));
        return Ok(());
    }
    let mut msg = format!("the secret scan refused {name}; nothing was published");
    for f in &blocking {
        msg.push_str(&format!(
            "\n  {} [{}] {}\n    fix: {}",
            f.location(),
            f.rule,
            f.excerpt,
            f.fix
        ));
    }
    if let Some(e) = &rep.error {
        msg.push_str(&format!(
            "\n  could not read all of it (a partial scan is not a pass): {e}"
        ));
    }
    bail!(msg)
}

pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl Report {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for a in &self.artifacts {
            let blocking = a.blocking().count();
            let _ = writeln!(
                s,
                "{}: {} files, {} scanned; {} finding(s){}{}",
                a.artifact,
                a.files,
                human_bytes(a.bytes),
                blocking,
                match a.findings.len() - blocking {
                    0 => String::new(),
                    n => format!(", {n} allowed"),
                },
                if a.error.is_some() {
                    "; INCOMPLETE (fails closed)"
                } else {
                    ""
                }
            );
            for f in &a.findings {
                let tag = if f.allowed.is_some() {
                    "allowed"
                } else {
                    "FOUND"
                };
                let _ = writeln!(s, "  {tag} {} {}", f.rule, f.location());
                let _ = writeln!(s, "      {}", f.excerpt);
                if let Some(h) = &f.sha256 {
                    let _ = writeln!(s, "      sha256 {h}");
                }
                match &f.allowed {
                    Some(r) => {
                        let _ = writeln!(s, "      allowed: {r}");
                    }
                    None => {
                        let _ = writeln!(s, "      {}; fix: {}", f.description, f.fix);
                    }
                }
            }
            if let Some(e) = &a.error {
                let _ = writeln!(s, "  ERROR could not read all of it: {e}");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            if self.ok {
                "scan: clean"
            } else {
                "scan: FAILED"
            }
        );
        s
    }
}
