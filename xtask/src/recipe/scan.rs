//! `scan:` — options of the scan target.

use anyhow::Result;
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanOptions {}

impl ScanOptions {
    pub fn resolve(&mut self, _file: &Utf8Path) -> Result<()> {
        Ok(())
    }
}
