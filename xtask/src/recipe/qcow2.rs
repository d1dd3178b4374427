//! `qcow2:` — options of the qcow2 target.

use anyhow::Result;
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Options {}

impl Qcow2Options {
    pub fn resolve(&mut self, _file: &Utf8Path) -> Result<()> {
        Ok(())
    }
}
