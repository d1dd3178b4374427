//! `scan:` — the secret scan's allowlist.
//!
//! ```yaml
//! scan:
//!   allow:
//!     # by path (inside the artifact) and rule
//!     - path: /usr/share/demo/test-ca.key
//!       rule: private-key
//!       reason: public test CA from the vendor's documentation
//!     # by sha256 of the matched content (printed in every report)
//!     - sha256: 0123…cdef
//!       reason: documented sample key
//! ```
//!
//! A path is matched against the finding's path inside its innermost
//! archive or file system (`/etc/x`) and against its whole nested path
//! (`/kiln/overlay.tar.zst!/etc/x`); `*` matches within one path component,
//! `**` across components.

use anyhow::{bail, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanOptions {
    /// Findings that are known and accepted, each with a reason shown in reports.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Path pattern inside the artifact (needs `rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Rule id (see `cargo xtask scan --rules`); optional with `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// sha256 (hex) of the matched content, as printed in a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why this is not a secret (shown in every report).
    pub reason: String,
}

impl ScanOptions {
    pub fn resolve(&mut self, file: &Utf8Path) -> Result<()> {
        for (i, a) in self.allow.iter_mut().enumerate() {
            let at = format!("{file}: scan.allow[{i}]");
            if a.reason.trim().is_empty() {
                bail!("{at}: `reason` must say why this finding is acceptable");
            }
            if a.path.is_none() && a.sha256.is_none() {
                bail!("{at}: give `path` (with `rule`) or `sha256`");
            }
            if a.path.is_some() && a.rule.is_none() {
                bail!("{at}: a `path` entry needs a `rule` (allowing every rule on a path would hide new secrets)");
            }
            if let Some(r) = &a.rule {
                if crate::scan::rules::find(r).is_none() {
                    let ids: Vec<&str> = crate::scan::rules::RULES.iter().map(|r| r.id).collect();
                    bail!("{at}: unknown rule `{r}` (rules: {})", ids.join(", "));
                }
            }
            if let Some(h) = &mut a.sha256 {
                *h = h.trim().to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("{at}: `sha256` must be 64 hex digits (copy it from a scan report)");
                }
            }
            if let Some(p) = &a.path {
                if p.is_empty() {
                    bail!("{at}: `path` is empty");
                }
            }
        }
        Ok(())
    }
}

impl AllowEntry {
    /// Does this entry accept a finding of `rule` at `inner` (innermost path)
    /// / `full` (nested path) with matched-content digest `sha256`?
    pub fn accepts(&self, rule: &str, inner: &str, full: &str, sha256: &str) -> bool {
        if self.rule.as_deref().is_some_and(|r| r != rule) {
            return false;
        }
        if let Some(h) = &self.sha256 {
            if h != sha256 {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !(glob(p, inner) || glob(p, full)) {
                return false;
            }
        }
        true
    }
}

/// `*` matches within a path component, `**` across components.
pub fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| go(&p[2..], &s[i..])),
            Some(b'*') => {
                let mut i = 0;
                loop {
                    if go(&p[1..], &s[i..]) {
                        return true;
                    }
                    if i >= s.len() || s[i] == b'/' || s[i] == b'!' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/etc/ssh/ssh_host_*_key", "/etc/ssh/ssh_host_rsa_key"));
        assert!(!glob("/etc/*", "/etc/ssh/x"));
        assert!(glob("/etc/**", "/etc/ssh/x"));
        assert!(glob(
            "**/test-ca.key",
            "/kiln/overlay.tar.zst!/usr/share/test-ca.key"
        ));
        assert!(!glob("/etc/x", "/etc/xy"));
    }

    #[test]
    fn entries_are_checked() {
        let f = Utf8Path::new("r.yaml");
        let mut o = ScanOptions {
            allow: vec![AllowEntry {
                path: Some("/x".into()),
                rule: None,
                sha256: None,
                reason: "r".into(),
            }],
        };
        assert!(format!("{:#}", o.resolve(f).unwrap_err()).contains("needs a `rule`"));
        o.allow[0].rule = Some("no-such-rule".into());
        assert!(format!("{:#}", o.resolve(f).unwrap_err()).contains("unknown rule"));
        o.allow[0].rule = Some("private-key".into());
        o.allow[0].reason = " ".into();
        assert!(format!("{:#}", o.resolve(f).unwrap_err()).contains("reason"));
        o.allow[0].reason = "test CA".into();
        o.resolve(f).unwrap();
        let mut s = ScanOptions {
            allow: vec![AllowEntry {
                path: None,
                rule: None,
                sha256: Some("abc".into()),
                reason: "r".into(),
            }],
        };
        assert!(format!("{:#}", s.resolve(f).unwrap_err()).contains("64 hex"));
    }
}
