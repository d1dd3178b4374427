//! `cargo xtask ova`.

use anyhow::Result;

use crate::cx::Cx;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_cx: &Cx, _a: Args) -> Result<()> {
    anyhow::bail!("`ova` is not implemented yet")
}
