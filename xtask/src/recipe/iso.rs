//! `iso:` — the remastered Ubuntu installer ISO. (Build: `crate::iso`.)

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsoOptions {
    /// The base live-server ISO (overridden by `--base-iso`).
    #[serde(default)]
    pub base: Option<Source>,
}

/// A file kiln does not build: a local path or a URL, always with its sha256.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub path: Option<Utf8PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    pub sha256: String,
}

impl IsoOptions {
    pub fn resolve(&mut self, file: &Utf8Path) -> Result<()> {
        if let Some(b) = &self.base {
            b.check(file, "iso.base")?;
        }
        Ok(())
    }
}

impl Source {
    pub fn check(&self, file: &Utf8Path, key: &str) -> Result<()> {
        anyhow::ensure!(
            self.path.is_some() != self.url.is_some(),
            "{file}: {key} needs exactly one of `path` or `url`"
        );
        anyhow::ensure!(
            self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{file}: {key}.sha256 must be 64 hex digits (the sha256 of the file)"
        );
        Ok(())
    }
}
