//! `cargo xtask release`: one directory per version with the artifacts,
//! `SHA256SUMS`, a manifest, an SPDX SBOM per root file system and an
//! in-toto/SLSA provenance statement; reproducible, whole or absent.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use support::{require, sha256, Project};

/// `SHA256SUMS` as name → sha256.
fn sums(dir: &Utf8Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    text.lines()
        .map(|l| {
            let (hex, name) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert_eq!(hex.len(), 64, "{l}");
            (name.to_string(), hex.to_string())
        })
        .collect()
}

fn json(path: &Utf8Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The one release directory in the project's output (and nothing else:
/// no partial directory beside it).
fn release_dir(p: &Project) -> Utf8PathBuf {
    let outputs = p.outputs();
    assert_eq!(outputs.len(), 1, "output/ holds {outputs:?}");
    assert!(outputs[0].starts_with("demo-"), "{outputs:?}");
    p.path("output").join(&outputs[0])
}

/// The release's documents (everything but the artifacts), by name.
fn documents(dir: &Utf8Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") || n == "SHA256SUMS")
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

#[test]
fn a_release_of_the_qcow2_and_overlay_is_complete_verifiable_and_reproducible() {
    let mut tools = support::qcow2_build_tools().to_vec();
    tools.extend(["sha256sum", "pyspdxtools"]);
    require(&tools);
    let _slot = support::heavy();
    let p = Project::demo().share_cache();
    p.run(&["release", "--targets", "qcow2,overlay"]);
    let dir = release_dir(&p);
    let name = dir.file_name().unwrap().to_string();

    // SHA256SUMS lists every other file, and verifies in another directory.
    let listed = sums(&dir);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    files.sort();
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), files);
    for want in [
        format!("{name}-amd64.qcow2"),
        format!("{name}-amd64.overlay.tar.zst"),
        format!("{name}.manifest.json"),
        format!("{name}-amd64.spdx.json"),
        format!("{name}.provenance.json"),
    ] {
        assert!(listed.contains_key(&want), "{want} not in {listed:?}");
    }
    let (_elsewhere, copy) = support::tempdir("kiln-release-copy-");
    for f in listed.keys().chain(["SHA256SUMS".to_string()].iter()) {
        if std::fs::hard_link(dir.join(f), copy.join(f)).is_err() {
            std::fs::copy(dir.join(f), copy.join(f)).unwrap();
        }
    }
    let out = Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The artifacts are the cache's files, not copies.
    use std::os::unix::fs::MetadataExt;
    let qcow2 = std::fs::metadata(dir.join(format!("{name}-amd64.qcow2"))).unwrap();
    assert!(qcow2.nlink() >= 2, "the qcow2 is a copy, not a link");

    // The manifest's digests are the files'.
    let m = json(&dir.join(format!("{name}.manifest.json")));
    let artifacts = m["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    for a in artifacts {
        let f = dir.join(a["name"].as_str().unwrap());
        assert_eq!(a["sha256"].as_str().unwrap(), sha256(&f), "{f}");
        assert_eq!(
            a["size"].as_u64().unwrap(),
            std::fs::metadata(&f).unwrap().len()
        );
    }
    assert_eq!(m["source_date_epoch"].as_i64().unwrap(), support::epoch());
    assert_eq!(m["targets"], serde_json::json!(["overlay", "qcow2"]));
    assert_eq!(
        m["recipe"]["sha256"].as_str().unwrap(),
        sha256(&p.path("recipes/demo.yaml"))
    );
    assert!(
        m["tools"]["mmdebstrap"].as_str().is_some(),
        "{}",
        m["tools"]
    );
    assert_eq!(m["kiln"]["code_fingerprint"].as_str().unwrap().len(), 64);
    let steps = m["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|s| s["name"] == "qcow2-rootfs-amd64" && s["key"].as_str().unwrap().len() == 64));
    let root = &m["roots"][0];
    assert_eq!(root["architecture"], "amd64");
    assert!(root["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "linux-image-amd64"));
    assert_eq!(m["images"][0]["name"], "demo-web");
    assert_eq!(m["models"][0]["name"], "demo-embed");
    // No location of this machine is in any document.
    for (n, bytes) in documents(&dir) {
        let text = String::from_utf8(bytes).unwrap();
        for place in [p.root.as_str(), p.cache_dir().as_str()] {
            assert!(!text.contains(place), "{n} names {place}");
        }
    }

    // The SBOM: SPDX 2.3, with the kernel and the container image, valid
    // for the SPDX project's own validator.
    let sbom_path = dir.join(format!("{name}-amd64.spdx.json"));
    let sbom = json(&sbom_path);
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let kernel = packages
        .iter()
        .find(|p| p["name"] == "linux-image-amd64")
        .expect("the SBOM lists the kernel package");
    let purl = kernel["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap();
    assert!(
        purl.starts_with("pkg:deb/debian/linux-image-amd64@") && purl.ends_with("?arch=amd64"),
        "{purl}"
    );
    let image = packages
        .iter()
        .find(|p| p["name"] == "demo-web")
        .expect("the SBOM lists the demo's container image");
    assert_eq!(
        image["checksums"][0]["checksumValue"],
        m["images"][0]["sha256"]
    );
    assert!(packages.iter().any(|p| p["name"] == "demo-embed"));
    // Declared licenses from the packages' DEP-5 copyright files: SPDX ids
    // where Debian's short names have one, references declared once where
    // not (systemd's `public-domain`).
    let podman = packages.iter().find(|p| p["name"] == "podman").unwrap();
    let declared = podman["licenseDeclared"].as_str().unwrap();
    assert!(
        declared.contains("Apache-2.0") && declared.contains("MIT"),
        "{declared}"
    );
    let systemd = packages.iter().find(|p| p["name"] == "systemd").unwrap();
    let declared = systemd["licenseDeclared"].as_str().unwrap();
    assert!(
        declared.contains("LGPL-2.1-or-later") && declared.contains("LicenseRef-deb-public-domain"),
        "{declared}"
    );
    assert!(sbom["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["licenseId"] == "LicenseRef-deb-public-domain"));
    let out = Command::new("pyspdxtools")
        .args(["-i", sbom_path.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyspdxtools refused {sbom_path}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The provenance's subjects are exactly SHA256SUMS' other entries.
    let prov = json(&dir.join(format!("{name}.provenance.json")));
    assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects: BTreeMap<String, String> = prov["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut expected = listed.clone();
    expected.remove(&format!("{name}.provenance.json"));
    assert_eq!(subjects, expected);
    let params = &prov["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(params["targets"], serde_json::json!(["overlay", "qcow2"]));
    assert!(prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["digest"].as_object().is_some_and(|o| !o.is_empty())));

    // The same inputs again: byte-identical documents, the directory
    // replaced whole.
    let before = documents(&dir);
    p.run(&["release", "--targets", "qcow2,overlay"]);
    assert_eq!(release_dir(&p), dir);
    assert_eq!(documents(&dir), before, "a second release differs");
}

#[test]
fn a_target_the_recipe_does_not_have_is_refused_naming_the_valid_ones() {
    let p = Project::demo();
    let err = p.fail(&["release", "--targets", "nothing-real", "--dry-run"]);
    assert!(
        err.contains("unknown target `nothing-real`")
            && err.contains("overlay, iso, qcow2, ova, pi"),
        "{err}"
    );
    let mut text = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    text = text.replace("pi: {}\n", "");
    p.write("recipes/nopi.yaml", &text);
    let err = p.fail(&[
        "--recipe",
        "recipes/nopi.yaml",
        "release",
        "--targets",
        "pi",
    ]);
    assert!(
        err.contains("target `pi`")
            && err.contains("no `pi:` section")
            && err.contains("builds overlay, iso, qcow2, ova"),
        "{err}"
    );
    // A recipe that builds nothing for the architecture asked for: refused,
    // naming what it builds for which.
    let err = p.fail(&[
        "--recipe",
        "recipes/nopi.yaml",
        "release",
        "--arch",
        "arm64",
        "--dry-run",
    ]);
    assert!(
        err.contains("builds nothing for arm64") && err.contains("overlay (amd64)"),
        "{err}"
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
}

fn git(p: &Project, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=kiln test",
            "-c",
            "user.email=test@kiln.invalid",
        ])
        .args(args)
        .current_dir(&p.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_dirty_work_tree_is_refused_without_allow_dirty() {
    require(&["git"]);
    let p = Project::demo();
    p.write(".gitignore", "/output/\n/cache/\n");
    git(&p, &["init", "-q"]);
    git(&p, &["add", "-A"]);
    git(&p, &["commit", "-q", "-m", "demo"]);
    // Clean: the check passes (shown by the plan being printed).
    p.run(&["release", "--targets", "overlay", "--dry-run"]);
    p.write("overlay/etc/motd", "changed after the commit\n");
    let err = p.fail(&["release", "--targets", "overlay", "--dry-run"]);
    assert!(
        err.contains("overlay/etc/motd") && err.contains("--allow-dirty"),
        "{err}"
    );
    let out = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--dry-run",
        "--allow-dirty",
    ]);
    assert!(
        support::stderr(&out).contains("dirty"),
        "{}",
        support::stderr(&out)
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
}

#[test]
fn a_failing_target_publishes_nothing_and_names_the_step() {
    let p = Project::demo();
    p.write("payloads/broken.tar", "not a docker archive\n");
    let text = std::fs::read_to_string(p.path("recipes/demo.yaml"))
        .unwrap()
        .replace(
            "  images:\n",
            "  images:\n    - name: broken\n      source: { docker-archive: payloads/broken.tar }\n      dest: /opt/demo/images\n",
        );
    p.write("recipes/broken.yaml", &text);
    let err = p.fail(&[
        "--recipe",
        "recipes/broken.yaml",
        "release",
        "--targets",
        "overlay",
    ]);
    assert!(err.contains("step `image-broken-amd64`"), "{err}");
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    p.assert_no_leftovers();
}

#[test]
fn dry_run_shows_the_second_build_with_the_same_keys_in_a_fresh_cache() {
    let p = Project::demo();
    let args = [
        "release",
        "--targets",
        "qcow2,overlay",
        "--check-reproducible",
        "--dry-run",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = p.run(&json_args);
    let plan: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let check = &plan["check_reproducible"];
    let work = Utf8PathBuf::from(check["work"].as_str().unwrap());
    assert!(
        work.starts_with(p.cache_dir()) && work.file_name().unwrap().starts_with("reproduce.tmp-"),
        "{work}"
    );
    // Every step again, under the same key, in the fresh cache, from a copy
    // of the project; published into the check's own output.
    let (first, second) = (
        support::plan_steps(&plan),
        support::plan_steps(&check["plan"]),
    );
    assert!(first.contains_key("qcow2-rootfs-amd64"), "{first:?}");
    assert_eq!(
        first.iter().map(|(n, s)| (n, &s.0)).collect::<Vec<_>>(),
        second.iter().map(|(n, s)| (n, &s.0)).collect::<Vec<_>>(),
        "the second build's keys depend on where it works"
    );
    assert!(second
        .values()
        .all(|(_, out, _)| out.starts_with(work.join("cache").as_str())));
    assert_eq!(
        check["plan"]["recipe"].as_str().unwrap(),
        work.join("root/recipes/demo.yaml").as_str()
    );
    assert_eq!(
        check["plan"]["output"].as_str().unwrap(),
        work.join("output").as_str()
    );
    let human = support::stdout(&p.run(&args));
    assert!(
        human.contains("reproducibility check (--check-reproducible)")
            && human.contains("plan for `release --check-reproducible (second build)`"),
        "{human}"
    );
    // Planning copied the project and removed the copy; nothing was built.
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
    p.assert_no_leftovers();
    let cached: Vec<_> = std::fs::read_dir(p.cache_dir())
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(cached.is_empty(), "{cached:?}");
}

/// Run kiln and return its output and its process id (its temporary
/// directories are named after it).
fn run_with_pid(p: &Project, args: &[&str]) -> (std::process::Output, u32) {
    let child = p
        .kiln()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

#[test]
fn check_reproducible_publishes_identical_bytes_and_names_a_file_that_differs_inside_the_disk() {
    let mut tools = support::qcow2_build_tools().to_vec();
    tools.extend(["sha256sum", "qemu-img"]);
    if !require(&tools) {
        return;
    }
    // One of the suite's longest tests (two fresh Debian roots): it starts
    // early, or the suite ends on it running alone.
    let _slot = support::heavy_long();
    // The first build reuses the suite's cache; the second is a fresh one
    // (its Debian root is built again: minutes).
    let p = Project::demo().share_cache();
    let args = [
        "release",
        "--targets",
        "qcow2,overlay",
        "--check-reproducible",
    ];
    let (out, pid) = run_with_pid(&p, &args);
    let err = support::stderr(&out);
    assert!(out.status.success(), "the check failed:\n{err}");
    let work = p.cache_dir().join(format!("reproduce.tmp-{pid}"));
    assert!(!work.exists(), "{work} was left behind");
    let dir = release_dir(&p);
    let name = dir.file_name().unwrap().to_string();
    let listed = sums(&dir);
    assert!(err.contains("reproducibility check passed"), "{err}");
    for artifact in [
        format!("{name}-amd64.qcow2"),
        format!("{name}-amd64.overlay.tar.zst"),
    ] {
        let line = format!("  identical  sha256 {}", listed[&artifact]);
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&artifact) && l.ends_with(&line)),
            "no `{artifact} … {line}` in:\n{err}"
        );
    }
    let m = json(&dir.join(format!("{name}.manifest.json")));
    let r = &m["reproducibility"];
    assert_eq!(r["checked"], true, "{r}");
    assert_eq!(r["identical"], true, "{r}");
    let checked: BTreeMap<String, String> = r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let artifacts: BTreeMap<String, String> = listed
        .iter()
        .filter(|(n, _)| !n.ends_with(".json"))
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    assert_eq!(checked, artifacts);

    // A planted non-reproducible input: a sysusers file that is a link to
    // the kernel's random UUID reads other bytes every time (as a
    // generator that embeds a build's time or randomness would), and ends
    // up in the disk's root file system as /usr/lib/sysusers.d/nonce.conf.
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        "/proc/sys/kernel/random/uuid",
        p.path("systemd/nonce.sysusers"),
    )
    .unwrap();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let planted = demo.replace(
        "    - systemd/demo.sysusers\n",
        "    - systemd/demo.sysusers\n    - systemd/nonce.sysusers\n",
    );
    assert_ne!(planted, demo);
    p.write("recipes/nonce.yaml", &planted);
    let mut nonce_args = vec!["--recipe", "recipes/nonce.yaml"];
    nonce_args.extend(args);
    let (out, pid) = run_with_pid(&p, &nonce_args);
    let err = support::stderr(&out);
    assert!(!out.status.success(), "a planted difference passed:\n{err}");
    // The report, as an operator reads it, in the test's log.
    eprintln!("{err}");
    let qcow2 = format!("{name}-amd64.qcow2");
    let file = "/usr/lib/sysusers.d/nonce.conf";
    assert!(
        err.contains(&format!("{qcow2} differs: first differing byte at offset ")),
        "{err}"
    );
    let named = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("first differing member: {qcow2}!"))
        })
        .unwrap_or_else(|| panic!("no member of {qcow2} named:\n{err}"));
    let (partition, path) = named.split_once('!').unwrap();
    assert!(
        partition.starts_with('p') && partition[1..].parse::<u32>().is_ok(),
        "{named}"
    );
    assert_eq!(path, file, "{err}");
    assert!(
        err.contains(&format!(
            "({qcow2} (qcow2 disk) → partition {} (ext file system) → {file})",
            &partition[1..]
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "first differing member: {name}-amd64.overlay.tar.zst!{file}"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was published"), "{err}");
    // The key of the step that read it differs too, and says why.
    assert!(
        err.contains("stage-amd64 (changed: @ROOT@/systemd/nonce.sysusers"),
        "{err}"
    );
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    let work = p.cache_dir().join(format!("reproduce.tmp-{pid}"));
    assert!(!work.exists(), "{work} was left behind");
}

/// The demo project built for amd64 and arm64: its overlay archive is light
/// (a stage, a busybox image and a model, no disk), so a release of it per
/// architecture makes two real parts of one release.
fn two_architectures() -> Project {
    let p = Project::demo().share_cache();
    let recipe = p.path("recipes/demo.yaml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let two = text.replace("architectures: [amd64]", "architectures: [amd64, arm64]");
    assert_ne!(
        text, two,
        "the demo recipe names its architectures differently"
    );
    std::fs::write(&recipe, two).unwrap();
    p
}

/// The one release directory under `dir`.
fn only_release(dir: &Utf8Path) -> Utf8PathBuf {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{dir} holds {names:?}");
    dir.join(&names[0])
}

fn sha256sum_check(dir: &Utf8Path) {
    let out = Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c failed in {dir}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hard links of every file of `from` in a new directory `to` (a part as a
/// runner would download it; splitting the copy unlinks, never writes, the
/// files it shares with the cache).
fn link_copy(from: &Utf8Path, to: &Utf8Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        std::fs::hard_link(from.join(&name), to.join(&name)).unwrap();
    }
}

/// The arguments of `release assemble PART…` with its `options`
/// (`--verify-key`, `--sign-key`), into the output directory `out`.
fn assemble_args<'a>(out: &'a str, options: &[&'a str], parts: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--output-dir", out, "release", "assemble"];
    a.extend(options);
    a.extend(parts);
    a
}

/// `release assemble` of `parts` into `out` (in the project, or a path
/// outside it): the release it made there, the only entry, its
/// `SHA256SUMS` checked with `sha256sum`.
fn assembled(p: &Project, out: &str, options: &[&str], parts: &[&str]) -> Utf8PathBuf {
    p.run(&assemble_args(out, options, parts));
    let dir = only_release(&p.path(out));
    sha256sum_check(&dir);
    dir
}

/// `release assemble` of `parts` into `out`, which must fail and leave
/// nothing there (no release, no partial directory): its error.
fn refused(p: &Project, out: &str, options: &[&str], parts: &[&str]) -> String {
    let err = p.fail(&assemble_args(out, options, parts));
    let out = p.path(out);
    let left: Vec<_> = match std::fs::read_dir(&out) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "a refused assembly left {left:?} in {out}");
    err
}

#[test]
fn parts_built_per_architecture_assemble_into_the_release_built_at_once() {
    require(&["sha256sum", "pyspdxtools"]);
    let p = two_architectures();
    for arch in ["amd64", "arm64"] {
        let out = format!("parts/{arch}");
        p.run(&[
            "--output-dir",
            &out,
            "release",
            "--targets",
            "overlay",
            "--arch",
            arch,
        ]);
    }
    p.run(&["--output-dir", "whole", "release", "--targets", "overlay"]);
    let amd64 = only_release(&p.path("parts/amd64"));
    let arm64 = only_release(&p.path("parts/arm64"));
    let whole = only_release(&p.path("whole"));
    let name = whole.file_name().unwrap().to_string();
    // Each part holds its own architecture's archive and SBOM only.
    assert!(amd64
        .join(format!("{name}-amd64.overlay.tar.zst"))
        .is_file());
    assert!(!amd64.join(format!("{name}-arm64.overlay.tar.zst")).exists());
    assert!(!amd64.join(format!("{name}-arm64.spdx.json")).exists());

    // --dry-run reads and checks the parts, says what would be copied and
    // written where, and writes nothing.
    let plan = p.run(&assemble_args(
        "preview",
        &["--dry-run"],
        &[arm64.as_str(), amd64.as_str()],
    ));
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    for arch in ["amd64", "arm64"] {
        let artifact = format!("copy {name}-{arch}.overlay.tar.zst (");
        assert!(plan.contains(&artifact), "{artifact} not in:\n{plan}");
    }
    assert!(
        plan.contains(&format!("into place: {}", p.path("preview").join(&name))),
        "{plan}"
    );
    assert!(
        !p.path("preview").exists(),
        "assemble --dry-run wrote into preview/"
    );

    // Given in either order, the parts make one release, in output/.
    let dir = assembled(&p, "output", &[], &[arm64.as_str(), amd64.as_str()]);
    assert_eq!(dir.file_name().unwrap(), name);
    let m = json(&dir.join(format!("{name}.manifest.json")));
    let artifacts: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        artifacts,
        [
            format!("{name}-amd64.overlay.tar.zst"),
            format!("{name}-arm64.overlay.tar.zst")
        ]
    );
    assert_eq!(m["architectures"], serde_json::json!(["amd64", "arm64"]));
    let sboms: Vec<&str> = m["sboms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        sboms,
        [
            format!("{name}-amd64.spdx.json"),
            format!("{name}-arm64.spdx.json")
        ]
    );
    let listed = sums(&dir);
    let prov = json(&dir.join(format!("{name}.provenance.json")));
    let subjects: BTreeMap<String, String> = prov["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut expected = listed.clone();
    expected.remove(&format!("{name}.provenance.json"));
    assert_eq!(subjects, expected, "the provenance covers every file");
    let arm64_sbom = dir.join(format!("{name}-arm64.spdx.json"));
    let out = Command::new("pyspdxtools")
        .args(["-i", arm64_sbom.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyspdxtools refused {arm64_sbom}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Byte for byte the release of both architectures made at once: the
    // same documents, the same artifacts.
    assert_eq!(documents(&dir), documents(&whole));
    assert_eq!(listed, sums(&whole));

    // Split as the workflow carries them (tiny parts here), joined again by
    // assemble: the same release.
    let (_tmp, carried) = support::tempdir("kiln-release-carried-");
    link_copy(&amd64, &carried.join("amd64"));
    link_copy(&arm64, &carried.join("arm64"));
    let archive = format!("{name}-arm64.overlay.tar.zst");
    let size = std::fs::metadata(arm64.join(&archive)).unwrap().len();
    assert!(size > 64 * 1024, "{archive} is only {size} bytes");
    p.run(&[
        "release",
        "split",
        carried.join("arm64").as_str(),
        "--max-size",
        "64K",
    ]);
    let split_dir = carried.join("arm64");
    assert!(!split_dir.join(&archive).exists());
    assert_eq!(
        std::fs::metadata(split_dir.join(format!("{archive}.part-000")))
            .unwrap()
            .len(),
        64 * 1024
    );
    // The originals (the cache's files) are untouched.
    assert_eq!(sha256(&arm64.join(&archive)), listed[&archive]);
    // An operator joins them with cat and checks the whole file.
    let joined = Command::new("bash")
        .args([
            "-c",
            &format!("cat {archive}.part-* > {archive} && sha256sum --strict -c SHA256SUMS"),
        ])
        .current_dir(&split_dir)
        .output()
        .unwrap();
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stdout)
    );
    std::fs::remove_file(split_dir.join(&archive)).unwrap();
    let again = assembled(
        &p,
        carried.join("assembled").as_str(),
        &[],
        &[carried.join("amd64").as_str(), split_dir.as_str()],
    );
    assert_eq!(documents(&again), documents(&whole));
    let left = support::leftovers(&[&p.path("output"), &carried]);
    assert!(left.is_empty(), "temporary state left behind: {left:#?}");
}

#[test]
fn parts_of_different_releases_and_damaged_parts_are_refused() {
    require(&["sha256sum"]);
    let p = two_architectures();
    p.run(&[
        "--output-dir",
        "parts/amd64",
        "release",
        "--targets",
        "overlay",
        "--arch",
        "amd64",
    ]);
    let amd64 = only_release(&p.path("parts/amd64"));
    // The arm64 part of another version.
    let text = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/other.yaml",
        &text.replace("  name: demo\n", "  name: demo\n  version: 9.9.9\n"),
    );
    p.run(&[
        "--recipe",
        "recipes/other.yaml",
        "--output-dir",
        "parts/other",
        "release",
        "--targets",
        "overlay",
        "--arch",
        "arm64",
    ]);
    let other = only_release(&p.path("parts/other"));
    assert_eq!(other.file_name().unwrap(), "demo-9.9.9");
    let err = refused(&p, "output", &[], &[amd64.as_str(), other.as_str()]);
    let version = amd64.file_name().unwrap().strip_prefix("demo-").unwrap();
    assert!(
        err.contains("not parts of one release")
            && err.contains(&format!("the version is `{version}` in {amd64}"))
            && err.contains(&format!("`9.9.9` in {other}")),
        "{err}"
    );

    // A part damaged in transit: a copy (not a link: the part's files are
    // the cache's) with one byte changed.
    let (_tmp, damaged) = support::tempdir("kiln-release-damaged-");
    for e in std::fs::read_dir(&amd64).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        std::fs::copy(amd64.join(&name), damaged.join(&name)).unwrap();
    }
    let name = amd64.file_name().unwrap();
    let archive = damaged.join(format!("{name}-amd64.overlay.tar.zst"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let err = refused(&p, "output", &[], &[damaged.as_str()]);
    assert!(
        err.contains(archive.as_str()) && err.contains("damaged"),
        "{err}"
    );
    // A file the part's SHA256SUMS does not list.
    std::fs::write(damaged.join("notes.txt"), "x").unwrap();
    let err = refused(&p, "output", &[], &[damaged.as_str()]);
    assert!(
        err.contains("notes.txt") && err.contains("does not list"),
        "{err}"
    );
}

/// `minisign` itself, run in `dir`; its output.
fn minisign(dir: &Utf8Path, args: &[&str]) -> std::process::Output {
    Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The arguments of a `release` of the overlay for amd64 signed with `key`,
/// after the global options `before`.
fn signed_release<'a>(before: &[&'a str], key: &'a str) -> Vec<&'a str> {
    let mut a = before.to_vec();
    a.extend([
        "release",
        "--targets",
        "overlay",
        "--arch",
        "amd64",
        "--sign-key",
        key,
    ]);
    a
}

#[test]
fn a_signed_release_verifies_with_minisign_is_reproducible_and_refuses_tampering() {
    if !require(&["minisign", "sha256sum"]) {
        return;
    }
    let p = Project::demo().share_cache();
    // A key pair made by the reference minisign (unencrypted, as CI uses).
    let (_keys, keys) = support::tempdir("kiln-release-keys-");
    let out = minisign(&keys, &["-G", "-W", "-p", "ref.pub", "-s", "ref.key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = keys.join("ref.key");
    let public = keys.join("ref.pub");

    // The plan says it will sign, naming the key file, never its content.
    let plan = p.run(&signed_release(&["--dry-run"], key.as_str()));
    let plan = support::stdout(&plan);
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret_line = secret.lines().nth(1).unwrap();
    assert!(
        plan.contains("sign: ")
            && plan.contains(key.as_str())
            && plan.contains("SHA256SUMS.minisig"),
        "{plan}"
    );
    assert!(!plan.contains(secret_line), "the plan shows the secret key");

    p.run(&signed_release(&[], key.as_str()));
    let dir = release_dir(&p);
    let name = dir.file_name().unwrap().to_string();
    sha256sum_check(&dir);
    let out = minisign(&dir, &["-V", "-m", "SHA256SUMS", "-p", public.as_str()]);
    assert!(
        out.status.success(),
        "minisign -V refused kiln's signature:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = std::fs::read_to_string(dir.join("SHA256SUMS.minisig")).unwrap();
    assert!(
        sig.contains(&format!(
            "trusted comment: timestamp:{}\t",
            support::epoch()
        )),
        "the timestamp is SOURCE_DATE_EPOCH: {sig}"
    );
    // The manifest records the key id (minisign's, from its public key file).
    let m = json(&dir.join(format!("{name}.manifest.json")));
    let pub_text = std::fs::read_to_string(&public).unwrap();
    let id = m["signature"]["key_id"].as_str().unwrap().to_string();
    // minisign's comment ends in the id without leading zeros; kiln writes
    // all 16 digits: the same number.
    let minisign_id = pub_text.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(
        u64::from_str_radix(&id, 16).ok(),
        u64::from_str_radix(minisign_id, 16).ok(),
        "{pub_text} / {id}"
    );
    assert_eq!(m["signature"]["file"], "SHA256SUMS.minisig");
    // The signature is not one of the files SHA256SUMS lists, nor a subject.
    assert!(!sums(&dir).contains_key("SHA256SUMS.minisig"));

    // The same inputs and key: the same signature, byte for byte.
    p.run(&signed_release(&["--output-dir", "again"], key.as_str()));
    let again = only_release(&p.path("again"));
    assert_eq!(
        std::fs::read(dir.join("SHA256SUMS.minisig")).unwrap(),
        std::fs::read(again.join("SHA256SUMS.minisig")).unwrap()
    );
    assert_eq!(documents(&dir), documents(&again));

    // Assembled with --verify-key (the part's signature checked) and signed
    // again by kiln's own keygen key: minisign verifies the result.
    let (_k2, k2) = support::tempdir("kiln-release-keygen-");
    p.run(&["release", "keygen", "--out", k2.as_str()]);
    let assembled = assembled(
        &p,
        "assembled",
        &[
            "--verify-key",
            public.as_str(),
            "--sign-key",
            k2.join("kiln.key").as_str(),
        ],
        &[dir.as_str()],
    );
    let out = minisign(
        &assembled,
        &["-V", "-m", "SHA256SUMS", "-p", k2.join("kiln.pub").as_str()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `release assemble --verify-key KEY PART` into `refused/`, which must fail.
    let refused_assembly =
        |key: &str, part: &str| refused(&p, "refused", &["--verify-key", key], &[part]);
    // Tampered with: minisign and kiln refuse it.
    let (_t, tampered) = support::tempdir("kiln-release-tampered-");
    let tampered = tampered.join(&name);
    link_copy(&dir, &tampered);
    let sums_path = tampered.join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums_path).unwrap();
    std::fs::remove_file(&sums_path).unwrap();
    std::fs::write(&sums_path, text.replacen('0', "1", 1)).unwrap();
    let out = minisign(
        &tampered,
        &["-V", "-m", "SHA256SUMS", "-p", public.as_str()],
    );
    assert!(
        !out.status.success(),
        "minisign accepted a tampered SHA256SUMS"
    );
    let err = refused_assembly(public.as_str(), tampered.as_str());
    assert!(
        err.contains("does not verify") && err.contains(public.as_str()),
        "{err}"
    );
    // Unsigned, or signed by another key: refused too.
    std::fs::remove_file(tampered.join("SHA256SUMS.minisig")).unwrap();
    let err = refused_assembly(public.as_str(), tampered.as_str());
    assert!(err.contains("not signed"), "{err}");
    let err = refused_assembly(k2.join("kiln.pub").as_str(), dir.as_str());
    assert!(err.contains("made by the key"), "{err}");

    // A key file that is not a minisign secret key: named, with what is
    // expected, and nothing is published.
    let bad = keys.join("bad.key");
    std::fs::write(&bad, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
    for k in [bad.as_str(), public.as_str(), "/nonexistent/kiln.key"] {
        let err = p.fail(&signed_release(&["--output-dir", "bad"], k));
        assert!(
            err.contains(k) && err.contains("minisign secret key"),
            "{k}: {err}"
        );
    }
    assert!(!p.path("bad").exists() || std::fs::read_dir(p.path("bad")).unwrap().next().is_none());
    let left = support::leftovers(&[&p.path("output"), &p.path("again"), &p.path("assembled")]);
    assert!(left.is_empty(), "temporary state left behind: {left:#?}");
}
