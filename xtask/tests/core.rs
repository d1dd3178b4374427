//! The core every format stands on: the whole plan's tools are checked
//! before any work, step keys cover kiln's own code and name no location,
//! and artifacts do not depend on where the checkout or the cache lives.

mod support;

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;
use support::{stderr, stdout, Project};

#[test]
fn build_names_every_missing_tool_of_every_target_at_once() {
    let p = Project::demo();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/both.yaml",
        &demo.replace("architectures: [amd64]", "architectures: [amd64, arm64]"),
    );
    let base = p.write("base.iso", "not looked at before the tool check");
    // A PATH without the tools (kiln also looks in the sbin directories,
    // where mkfs.* live, so those are not among the missing).
    let empty = p.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = p
        .kiln()
        .env("PATH", &empty)
        .args(["--recipe", "recipes/both.yaml", "--no-install", "build"])
        .args(["--base-iso", base.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    // One error, naming the tools of the ISO, the disks (both
    // architectures) and the OVA, with their packages.
    assert_eq!(err.matches("kiln: error:").count(), 1, "{err}");
    for (tool, package) in [
        ("xorriso", "xorriso"),
        ("mmdebstrap", "mmdebstrap"),
        ("qemu-img", "qemu-utils"),
        ("objcopy", "binutils"),
        ("grub-mkimage", "grub-common"),
        ("mmd", "mtools"),
        ("mcopy", "mtools"),
        ("arch-test", "arch-test"),
    ] {
        assert!(
            err.contains(&format!("  - {tool} (")) && err.contains(&format!("package {package}")),
            "{tool} ({package}) missing from:\n{err}"
        );
    }
    assert!(err.contains("cargo xtask doctor --install"), "{err}");
    // Nothing ran.
    assert!(p.outputs().is_empty());
    let steps: Vec<_> = std::fs::read_dir(p.path("cache"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        steps.iter().all(|n| n == "digests"),
        "no step ran: {steps:?}"
    );
}

#[test]
fn dry_run_lists_every_command_and_the_code_fingerprint() {
    let p = Project::demo();
    let plan: Value =
        serde_json::from_str(&stdout(&p.run(&["--dry-run", "--json", "build"]))).unwrap();
    let step = |name: &str| -> &Value {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    // The disk step's op declares the tools it runs; they are its needs and
    // are keyed by version.
    let disk = step("qcow2-disk-amd64");
    let cmds: Vec<&str> = disk["actions"][0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["program"].as_str().unwrap())
        .collect();
    for t in [
        "mkfs.ext4",
        "objcopy",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "grub-mkimage",
    ] {
        assert!(cmds.contains(&t), "{t} not in {cmds:?}");
        assert!(disk["needs"].as_array().unwrap().contains(&Value::from(t)));
        assert!(disk["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "tool" && i["name"] == t));
    }
    let code = |s: &Value| {
        s["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "code")
            .map(|i| i["fingerprint"].as_str().unwrap().to_string())
    };
    assert_eq!(code(disk).map(|f| f.len()), Some(64));
    // An external command alone does not key on kiln's code.
    assert_eq!(code(step("qcow2-rootfs-amd64")), None);
    let human = stdout(&p.run(&["--dry-run", "build"]));
    assert!(human.contains("kiln code "), "{human}");
    assert!(
        human.contains(" mkfs.ext4 -q -F -t ext4 -L root "),
        "{human}"
    );
}

/// `--dry-run --json` of `build`: step name to (key, output directory, has an op).
fn plan_of(p: &Project, recipe: &str, extra: &[&str]) -> BTreeMap<String, (String, String, bool)> {
    let mut args = vec!["--recipe", recipe];
    args.extend_from_slice(extra);
    args.extend(["--dry-run", "--json", "build"]);
    let v: Value = serde_json::from_str(&stdout(&p.run(&args))).unwrap();
    support::plan_steps(&v)
}

/// Run `VERB --json`; step name to outcome (`ran` or `cached`).
fn run(
    p: &Project,
    verb: &str,
    recipe: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut c = p.kiln();
    c.args(["--recipe", recipe])
        .args(extra)
        .args(["--json", verb]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{verb} failed:\n{}", stderr(&out));
    support::outcomes(&out)
}

fn outputs(p: &Project) -> BTreeMap<String, String> {
    p.outputs()
        .into_iter()
        .map(|n| {
            let h = support::sha256(&p.path("output").join(&n));
            (n, h)
        })
        .collect()
}

#[test]
fn the_same_commit_built_anywhere_gives_the_same_keys_and_bytes() {
    let mut need = support::qcow2_build_tools().to_vec();
    need.push("cp");
    if !support::require(&need) {
        return;
    }
    let _g = support::heavy_long();
    // Checkout A builds in the suite-wide cache.
    let a = Project::demo().share_cache();
    let recipe = support::small_recipe(&a, "");
    let plan_a = plan_of(&a, &recipe, &[]);
    run(&a, "build", &recipe, &[], &[]);

    // Checkout B lives elsewhere and has a cache of its own. Only the
    // Debian root is carried over (hard links), under the key B computes
    // for it: mmdebstrap's own reproducibility is the qcow2 tests' subject;
    // here B must compute the same key and find it.
    let b = Project::demo();
    support::small_recipe(&b, "");
    let plan_b = plan_of(&b, &recipe, &[]);
    assert_ne!(a.root, b.root);
    assert_ne!(a.cache_dir(), b.cache_dir());
    assert_eq!(
        plan_a.iter().map(|(n, s)| (n, &s.0)).collect::<Vec<_>>(),
        plan_b.iter().map(|(n, s)| (n, &s.0)).collect::<Vec<_>>(),
        "step keys depend on where the project or the cache lives"
    );
    // The amd64 root, and the arm64 root of the demo's Raspberry Pi image.
    let roots = ["qcow2-rootfs-amd64", "qcow2-rootfs-arm64"];
    for rootfs in roots {
        let (from, to) = (&plan_a[rootfs].1, Utf8PathBuf::from(&plan_b[rootfs].1));
        support::link_tree(Utf8Path::new(from), &to);
    }
    let ran = run(&b, "build", &recipe, &[], &[]);
    for rootfs in roots {
        assert_eq!(ran[rootfs], "cached");
    }
    assert!(
        ran.iter()
            .filter(|(n, _)| !roots.contains(&n.as_str()))
            .all(|(_, o)| o == "ran"),
        "B built in its own cache: {ran:?}"
    );
    let (out_a, out_b) = (outputs(&a), outputs(&b));
    assert!(out_a.keys().any(|n| n.ends_with(".ova")), "{out_a:?}");
    assert!(out_a.keys().any(|n| n.ends_with(".qcow2")), "{out_a:?}");
    assert!(
        out_a.keys().any(|n| n.ends_with("-pi.img.zst")),
        "{out_a:?}"
    );
    assert_eq!(out_a, out_b, "artifacts differ between the two checkouts");

    // B's cache moved to another path (as a CI cache is restored): every
    // step is found.
    let moved = b.path("restored/cache");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(b.cache_dir(), &moved).unwrap();
    let flag = ["--cache-dir", moved.as_str()];
    let again = run(&b, "build", &recipe, &flag, &[]);
    assert!(again.values().all(|o| o == "cached"), "{again:?}");
    assert_eq!(outputs(&b), out_a);

    // A changed kiln: every step that runs kiln's code gets a new key, so
    // it runs again, and so does what reads its output; the Debian root file
    // systems, external commands, keep theirs and are reused. (The executor
    // reuses an entry by key alone, as the moved-cache build above shows.)
    let plan_c = {
        let mut c = b.kiln();
        c.args(["--recipe", &recipe])
            .args(flag)
            .args(["--dry-run", "--json", "build"]);
        c.env("KILN_CODE_FINGERPRINT", "a-changed-kiln");
        let v: Value = serde_json::from_slice(&c.output().unwrap().stdout).unwrap();
        v
    };
    let steps = plan_c["steps"].as_array().unwrap();
    let key_c = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name} in the changed plan"))["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let disk = steps
        .iter()
        .find(|s| s["name"] == "qcow2-disk-amd64")
        .unwrap();
    assert!(disk["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["kind"] == "code" && i["fingerprint"] == "a-changed-kiln"));
    for rootfs in roots {
        assert_eq!(
            key_c(rootfs),
            plan_b[rootfs].0,
            "{rootfs} depends on kiln's code"
        );
    }
    for (name, (key, _, op)) in &plan_b {
        if *op {
            assert_ne!(
                &key_c(name),
                key,
                "{name} runs kiln's code but keeps its key"
            );
        }
    }
    assert_ne!(
        key_c("qcow2-convert-amd64"),
        plan_b["qcow2-convert-amd64"].0,
        "it reads the new disk"
    );
}
