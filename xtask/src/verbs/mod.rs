//! One module per verb; `run` dispatches.

use anyhow::Result;

use crate::cx::Cx;
use crate::flags::Verb;

pub mod bench;
pub mod build;
pub mod iso;
pub mod ova;
pub mod pi;
pub mod qcow2;
pub mod recipe;
pub mod release;
pub mod scan;
pub mod seed;
pub mod smoke;
pub mod stage;
pub mod test;

pub fn run(cx: &Cx, verb: Verb) -> Result<()> {
    match verb {
        Verb::Recipe(c) => recipe::run(cx, c),
        Verb::Doctor(d) => crate::doctor::run(d.target, d.install, cx.json),
        Verb::Stage(s) => stage::run(cx, s),
        Verb::Test(t) => test::run(cx, t),
        Verb::Build(a) => build::run(cx, a),
        Verb::Release(a) => release::run(cx, *a),
        Verb::Seed(a) => seed::run(cx, a),
        Verb::Iso(a) => iso::run(cx, a),
        Verb::Qcow2(a) => qcow2::run(cx, a),
        Verb::Ova(a) => ova::run(cx, a),
        Verb::Pi(a) => pi::run(cx, a),
        Verb::Scan(a) => scan::run(cx, a),
        Verb::Bench(a) => bench::run(cx, a),
        Verb::Smoke(a) => smoke::run(cx, a),
    }
}
