//! Computes kiln's code fingerprint: the sha256 of every source file of the
//! xtask crate (by path relative to the crate, and content), its manifest and
//! the workspace's Cargo.lock. Steps that run kiln's own code key on it (see
//! `plan::code_fingerprint`), so a changed kiln never reuses a step that the
//! old code built. Paths are relative, so the fingerprint does not depend on
//! where the checkout lives.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut files = Vec::new();
    collect(&crate_dir.join("src"), &mut files);
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        add(&mut h, &crate_dir, f);
    }
    add(&mut h, &crate_dir, &crate_dir.join("Cargo.toml"));
    let lock = crate_dir.join("../Cargo.lock");
    if lock.is_file() {
        add(&mut h, &crate_dir, &lock);
        println!("cargo:rerun-if-changed=../Cargo.lock");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=KILN_CODE_FINGERPRINT={hex}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for e in entries {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn add(h: &mut Sha256, base: &Path, file: &Path) {
    let rel = file.strip_prefix(base).unwrap_or(file);
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("reading {file:?}: {e}"));
    h.update(rel.to_string_lossy().as_bytes());
    h.update([0]);
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(&bytes);
}
