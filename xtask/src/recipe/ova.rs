//! `ova:` — options of the ova target.

use anyhow::Result;
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OvaOptions {}

impl OvaOptions {
    pub fn resolve(&mut self, _file: &Utf8Path) -> Result<()> {
        Ok(())
    }
}
