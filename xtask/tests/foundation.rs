//! The foundation: CLI, recipes, plans, the step cache, staging, doctor and
//! interruption. Everything here runs without external tools except where
//! `support::require` says otherwise.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{stderr, stdout, Project};

#[test]
fn no_verb_lists_the_verbs() {
    let p = Project::demo();
    let out = p.kiln().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out) + &stdout(&out);
    for verb in [
        "recipe", "doctor", "stage", "seed", "iso", "qcow2", "ova", "pi", "scan", "build", "test",
    ] {
        assert!(
            text.contains(&format!("  {verb} ")),
            "verb {verb} missing from:\n{text}"
        );
    }
}

#[test]
fn every_verb_has_help() {
    let p = Project::demo();
    for verb in [
        "recipe", "doctor", "stage", "seed", "iso", "qcow2", "ova", "pi", "scan", "build", "test",
        "bench",
    ] {
        let out = p.run(&[verb, "--help"]);
        let text = stdout(&out);
        assert!(
            text.contains("Usage: cargo xtask"),
            "{verb} --help:\n{text}"
        );
        assert!(
            text.contains("--recipe"),
            "{verb} --help lacks the global options:\n{text}"
        );
    }
}

#[test]
fn recipe_show_fills_defaults() {
    let p = Project::demo();
    let out = p.run(&["recipe", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recipe"]["appliance"]["name"], "demo");
    // Not a git repository and no version in the recipe: the documented fallback.
    assert_eq!(v["version"], "0.0.0-dev");
    assert_eq!(v["epoch"], support::epoch());
    assert_eq!(v["epoch_source"], "SOURCE_DATE_EPOCH");
    assert_eq!(v["recipe"]["architectures"], serde_json::json!(["amd64"]));
    assert_eq!(v["recipe"]["seed"]["autoinstall"]["locale"], "en_US.UTF-8");
    // YAML form parses back to the same document.
    let y = p.run(&["recipe", "show"]);
    let back: serde_json::Value = yaml_serde::from_slice(&y.stdout).unwrap();
    assert_eq!(back["recipe"]["appliance"]["name"], "demo");
    // Positional recipe argument.
    let o = p.run(&["recipe", "show", "--json", "recipes/demo.yaml"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["version"],
        "0.0.0-dev"
    );
}

/// The values `recipe show` prints for settings whose defaults come from
/// elsewhere (git, the appliance name, the build host's apt sources) are the
/// ones the plan uses.
#[test]
fn recipe_show_prints_the_values_the_plan_uses() {
    let p = Project::demo();
    let shown: serde_json::Value =
        serde_json::from_slice(&p.run(&["recipe", "show", "--json"]).stdout).unwrap();
    let recipe = &shown["recipe"];
    let plan: serde_json::Value =
        serde_json::from_slice(&p.run(&["--dry-run", "--json", "qcow2"]).stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    };

    // Version: from git, else the fallback; the same in build-info and file names.
    let version = recipe["appliance"]["version"].as_str().expect("a version");
    assert_eq!(version, shown["version"]);
    assert_eq!(
        step("stage-amd64")["actions"][0]["op"]["stage"]["build_info"]["version"],
        version
    );
    assert_eq!(
        plan["publish"][0]["name"],
        format!("demo-{version}-amd64.qcow2")
    );

    // Host name: the appliance name, written into the disk and the seed.
    let hostname = recipe["qcow2"]["hostname"].as_str().expect("a hostname");
    assert_eq!(hostname, "demo");
    assert_eq!(
        step("qcow2-disk-amd64")["actions"][0]["op"]["qcow2-disk"]["hostname"],
        hostname
    );
    let seed_host = recipe["seed"]["cloud_init"]["hostname"]
        .as_str()
        .expect("a seed hostname");
    let r = xtask::recipe::load_resolved(&p.path("recipes/demo.yaml"), &p.root).unwrap();
    let seed = xtask::seed::generate(&r, xtask::seed::SeedTarget::Qcow2).unwrap();
    let meta: serde_json::Value = yaml_serde::from_str(&seed.meta_data).unwrap();
    assert_eq!(meta["local-hostname"], seed_host);

    // Mirror: the build host's apt source, in mmdebstrap's source lines.
    let mirror = recipe["qcow2"]["mirror"].as_str().expect("a mirror");
    let args: Vec<String> =
        serde_json::from_value(step("qcow2-rootfs-amd64")["actions"][0]["cmd"]["args"].clone())
            .unwrap();
    assert!(
        args.contains(&format!("deb {mirror} bookworm main")),
        "{args:?}"
    );
    if let Some(security) = recipe["qcow2"]["security_mirror"].as_str() {
        assert!(
            args.contains(&format!("deb {security} bookworm-security main")),
            "{args:?}"
        );
    }
}

#[test]
fn recipe_errors_name_file_line_and_column() {
    let p = Project::demo();
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "appliance:\n  name: x\n  colour: red\n",
            "bad.yaml:3:3: appliance: unknown field `colour`",
        ),
        (
            "wrong type",
            "appliance:\n  name: x\narchitectures: amd64\n",
            "bad.yaml:3:16: architectures: invalid type: string \"amd64\", expected a sequence",
        ),
        (
            "unknown arch",
            "appliance:\n  name: x\narchitectures: [riscv]\n",
            "bad.yaml:3:17: architectures[0]: unknown variant `riscv`",
        ),
        (
            "missing name",
            "appliance:\n  version: '1'\n",
            "bad.yaml:2:3: appliance: missing field `name`",
        ),
        (
            "broken yaml",
            "appliance:\n  name: \"x\n",
            "bad.yaml:3:1: found unexpected end of stream",
        ),
        (
            "bad name",
            "appliance:\n  name: My App\n",
            "appliance.name `My App` must be lower-case",
        ),
    ];
    for (what, text, want) in cases {
        p.write("recipes/bad.yaml", text);
        let err = p.fail(&["recipe", "show", "--recipe", "recipes/bad.yaml"]);
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
    }
    let err = p.fail(&["recipe", "show", "--recipe", "recipes/missing.yaml"]);
    assert!(
        err.contains("missing.yaml") && err.contains("--recipe"),
        "{err}"
    );
}

/// Replace what varies between machines and content versions: the project
/// root, and every hex digest or key (runs of 20+ hex digits).
fn normalize_plan(p: &Project, text: &str) -> serde_json::Value {
    fn mask(s: &str) -> String {
        let mut out = String::new();
        let mut run = String::new();
        for c in s.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
                run.push(c);
                continue;
            }
            if run.len() >= 20 && run.chars().any(|c| c.is_ascii_digit()) {
                out.push_str("<hex>");
            } else {
                out.push_str(&run);
            }
            run.clear();
            out.push(c);
        }
        out.pop();
        out
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            // The epoch is the tests' (the last commit's time).
            serde_json::Value::String(s) => {
                *s = mask(s).replace(&support::epoch().to_string(), "<epoch>")
            }
            serde_json::Value::Number(n) if n.as_i64() == Some(support::epoch()) => {
                *v = "<epoch>".into()
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => {
                // A tool's version is the host's (backports move on): the
                // snapshot keeps that the key holds one, not which.
                if o.get("kind").and_then(|k| k.as_str()) == Some("tool") {
                    if let Some(v) = o.get_mut("version") {
                        *v = "<the installed version>".into();
                    }
                }
                o.values_mut().for_each(walk)
            }
            _ => {}
        }
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&text.replace(p.root.as_str(), "<root>")).unwrap();
    walk(&mut v);
    v
}

#[test]
fn stage_plan_snapshot() {
    let p = Project::demo();
    let out = p.run(&["stage", "--dry-run", "--json"]);
    let got = normalize_plan(&p, &stdout(&out));
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    support::golden("stage-plan.json", &text);
    // The human-readable plan names the step and where the artifact goes.
    let human = stdout(&p.run(&["stage", "--dry-run"]));
    assert!(
        human.contains("6. stage-amd64 — stage the overlay tree for amd64"),
        "{human}"
    );
    assert!(
        human.contains("demo-0.0.0-dev-amd64.overlay.tar.zst (+ .sha256)"),
        "{human}"
    );
    // A dry run builds nothing.
    assert!(p.outputs().is_empty());
    assert!(!p.path("cache").exists());
}

fn tar_listing(path: &camino::Utf8Path) -> Vec<(String, u32, u64, u64, String)> {
    let mut a = xtask::archive::open_tar(path).unwrap();
    let mut v = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        v.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.mtime().unwrap(),
            link,
        ));
    }
    v
}

#[test]
fn stage_is_deterministic_and_cached() {
    let p = Project::demo();
    let first = p.run(&["stage"]);
    assert!(
        stderr(&first).contains("stage-amd64: running"),
        "{}",
        stderr(&first)
    );
    assert!(
        stderr(&first).contains("not built before"),
        "{}",
        stderr(&first)
    );
    let name = "demo-0.0.0-dev-amd64.overlay.tar.zst";
    assert_eq!(
        p.outputs(),
        vec![name.to_string(), format!("{name}.sha256")]
    );
    let sum1 = std::fs::read_to_string(p.path(&format!("output/{name}.sha256"))).unwrap();
    assert!(
        sum1.ends_with(&format!("  {name}\n")),
        "basename in sha256 file: {sum1}"
    );
    support::assert_published_sha256(&p.path(&format!("output/{name}")));

    let second = p.run(&["stage"]);
    assert!(
        stderr(&second).contains("stage-amd64: cached"),
        "{}",
        stderr(&second)
    );
    let sum2 = std::fs::read_to_string(p.path(&format!("output/{name}.sha256"))).unwrap();
    assert_eq!(sum1, sum2);

    // A fresh cache rebuilds byte-identical output.
    let out = p
        .kiln()
        .args(["stage", "--cache-dir"])
        .arg(p.path("cache2"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("stage-amd64: running"));
    assert_eq!(
        std::fs::read_to_string(p.path(&format!("output/{name}.sha256"))).unwrap(),
        sum1
    );

    // Changing one overlay file re-runs the step and says why.
    p.write("overlay/etc/demo/README", "changed\n");
    let third = p.run(&["stage"]);
    assert!(
        stderr(&third).contains("changed: ") && stderr(&third).contains("overlay"),
        "{}",
        stderr(&third)
    );

    // The archive: sorted, root-owned, epoch mtimes, modes kept, enablement links, masks.
    let list = tar_listing(&p.path(&format!("output/{name}")));
    let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    assert!(
        list.iter()
            .all(|e| e.2 == 0 && e.3 == support::epoch() as u64),
        "uid 0, mtime = epoch"
    );
    let get = |n: &str| {
        list.iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("{n} not in {names:?}"))
    };
    assert_eq!(get("opt/demo/bin/firstboot").1, 0o755);
    assert_eq!(get("etc/systemd/system/demo-firstboot.service").1, 0o644);
    assert_eq!(
        get("etc/systemd/system/multi-user.target.wants/demo-firstboot.service").4,
        "/etc/systemd/system/demo-firstboot.service"
    );
    assert_eq!(get("etc/systemd/system/apt-daily.timer").4, "/dev/null");
    assert_eq!(get("usr/lib/sysusers.d/demo.conf").1, 0o644);
    let info = get("etc/demo/build-info.json");
    assert_eq!(info.1, 0o644);
}

#[test]
fn build_info_has_no_wall_clock() {
    let p = Project::demo();
    p.run(&["stage"]);
    let tree = walk_find(&p.path("cache"), "build-info.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tree).unwrap()).unwrap();
    assert_eq!(v["name"], "demo");
    assert_eq!(v["version"], "0.0.0-dev");
    assert_eq!(v["source_date_epoch"], support::epoch());
    assert_eq!(
        v.as_object().unwrap().len(),
        5,
        "only name, version, revision, epoch, arch: {v}"
    );
}

fn walk_find(root: &camino::Utf8Path, name: &str) -> camino::Utf8PathBuf {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_name() == name {
            return camino::Utf8PathBuf::from_path_buf(e.into_path()).unwrap();
        }
    }
    panic!("{name} not found under {root}");
}

#[test]
fn overlay_symlinks_are_copied_as_links() {
    let p = Project::demo();
    std::os::unix::fs::symlink("/etc/hostname", p.path("overlay/etc/demo/host-link")).unwrap();
    // A link that points outside the overlay is never followed.
    std::os::unix::fs::symlink(
        "../../../../../etc/shadow",
        p.path("overlay/etc/demo/escape"),
    )
    .unwrap();
    p.run(&["stage"]);
    let list = tar_listing(&p.path("output/demo-0.0.0-dev-amd64.overlay.tar.zst"));
    let l = list.iter().find(|e| e.0 == "etc/demo/host-link").unwrap();
    assert_eq!(l.4, "/etc/hostname");
    let l = list.iter().find(|e| e.0 == "etc/demo/escape").unwrap();
    assert_eq!(l.4, "../../../../../etc/shadow");
}

#[test]
fn staging_refuses_bad_input() {
    type Setup = fn(&Project);
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "fifo in overlay",
            |p| {
                let path =
                    std::ffi::CString::new(p.path("overlay/etc/demo/pipe").as_str()).unwrap();
                assert_eq!(unsafe { libc_mkfifo(path.as_ptr(), 0o644) }, 0);
            },
            "device nodes, sockets and FIFOs are not allowed in an overlay",
        ),
        (
            "unit does not parse",
            |p| {
                p.write(
                    "systemd/demo-bootstrap.service",
                    "[Unit]\nDescription=x\nthis is not a key value line\n",
                );
            },
            "demo-bootstrap.service:3: `this is not a key value line` is neither",
        ),
        (
            "enable unknown unit",
            |p| {
                let r = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
                p.write(
                    "recipes/demo.yaml",
                    &r.replace(
                        "    - demo-bootstrap.service\n  # Appliances",
                        "    - demo-bootstrap.service\n    - nope.service\n  # Appliances",
                    ),
                );
            },
            "systemd.enable names `nope.service`, which is not among systemd.units",
        ),
        (
            "mask unknown unit",
            |p| {
                let r = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
                p.write(
                    "recipes/demo.yaml",
                    &r.replace("  mask: [apt-daily.timer,", "  mask: [apt-dialy.timer,"),
                );
            },
            "systemd.mask names `apt-dialy.timer`",
        ),
        (
            "two overlays provide a file",
            |p| {
                p.write("site/etc/demo/README", "site\n");
                let r = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
                p.write(
                    "recipes/demo.yaml",
                    &r.replace("  - path: overlay\n", "  - path: overlay\n  - path: site\n"),
                );
            },
            "/etc/demo/README is provided by both overlay",
        ),
        (
            "overlay clashes with a unit",
            |p| {
                p.write(
                    "overlay/etc/systemd/system/demo-bootstrap.service",
                    "[Unit]\n",
                );
            },
            "/etc/systemd/system/demo-bootstrap.service is provided by both",
        ),
        (
            "missing overlay dir",
            |p| {
                std::fs::rename(p.path("overlay"), p.path("overlay-moved")).unwrap();
            },
            "overlay directory",
        ),
        (
            "enable a unit without [Install]",
            |p| {
                p.write(
                    "systemd/demo-bootstrap.service",
                    "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n",
                );
            },
            "has no WantedBy=/RequiredBy=",
        ),
    ];
    for (what, setup, want) in cases {
        let p = Project::demo();
        setup(&p);
        let err = p.fail(&["stage"]);
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
        assert!(p.outputs().is_empty(), "{what}: output/ must stay empty");
        p.assert_no_leftovers();
    }
    // With `wins`, the later overlay's file is taken.
    let p = Project::demo();
    p.write("site/etc/demo/README", "site wins\n");
    let r = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/demo.yaml",
        &r.replace(
            "  - path: overlay\n",
            "  - path: overlay\n  - path: site\n    wins: [/etc/demo/README]\n",
        ),
    );
    p.run(&["stage"]);
    let readme = walk_find(&p.path("cache"), "README");
    assert_eq!(std::fs::read_to_string(readme).unwrap(), "site wins\n");
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

#[test]
fn interrupt_leaves_output_and_cache_clean() {
    let p = Project::demo().private_tmp();
    // A large sparse file keeps the staging step busy for a few seconds.
    let f = std::fs::File::create(p.path("overlay/opt/demo/big.img")).unwrap();
    f.set_len(4 << 30).unwrap();
    drop(f);
    let mut child = p
        .kiln()
        .arg("stage")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs, then SIGINT the process.
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    use std::io::Read;
    while !String::from_utf8_lossy(&seen).contains("stage-amd64: running") {
        let n = err.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "kiln exited before the step ran: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exit code after SIGINT; stderr: {rest}"
    );
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(
        p.outputs().is_empty(),
        "output/ must hold nothing: {:?}",
        p.outputs()
    );
    // No temporary step directory or partial file is left behind, in the
    // cache, output/ or kiln's temporary directory.
    p.assert_no_leftovers();
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn doctor_names_packages_of_missing_tools() {
    let p = Project::demo();
    let empty = tempfile::tempdir().unwrap();
    let out = p
        .kiln()
        .args(["doctor", "--target", "iso"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("xorriso") && text.contains("MISSING"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("doctor --target iso --install"),
        "{}",
        stderr(&out)
    );
    let j = p
        .kiln()
        .args(["doctor", "--target", "qcow2", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let mk = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "mmdebstrap")
        .unwrap();
    assert_eq!(mk["package"], "mmdebstrap");
    assert_eq!(mk["backports"], true);
}

#[test]
fn doctor_reports_versions_when_present() {
    if !support::require(&["xorriso"]) {
        return;
    }
    let p = Project::demo();
    let out = p.run(&["doctor", "--target", "iso"]);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("xorriso"))
        .unwrap()
        .to_string();
    assert!(line.contains("ok") && line.contains("xorriso 1."), "{line}");
}

#[test]
fn scripts_are_executable_in_the_repository() {
    for s in [
        "overlay/opt/demo/bin/firstboot",
        "overlay/opt/demo/bin/bootstrap",
        ".ci/run",
    ] {
        let m = std::fs::metadata(support::workspace().join(s)).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o111,
            0o111,
            "{s} must be executable"
        );
    }
}

#[test]
fn a_baked_secret_fails_the_build_and_publishes_nothing() {
    let p = Project::demo().private_tmp();
    // A real-looking value, made at test time.
    let value: String = std::fs::read("/proc/sys/kernel/random/uuid")
        .map(|b| String::from_utf8_lossy(&b).trim().replace('-', ""))
        .unwrap();
    p.write(
        "overlay/etc/demo/leak.env",
        &format!("DEMO_DB_PASSWORD={value}\n"),
    );
    let err = p.fail(&["stage"]);
    assert!(err.contains("etc/demo/leak.env"), "{err}");
    assert!(
        !err.contains(&value),
        "the secret itself must never be printed:\n{err}"
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
    p.assert_no_leftovers();
}

/// The leftover check knows the executor's real temporary names: while a
/// step runs, its directory is one, and so is a file written beside its
/// destination; once the step has failed, neither remains.
#[test]
fn leftover_check_sees_the_executors_temporary_names() {
    use camino::Utf8PathBuf;
    use std::sync::{Arc, Mutex};
    use xtask::plan::{Op, OpCx, Plan, StepBuilder};

    type Seen = Arc<Mutex<Option<(Utf8PathBuf, Utf8PathBuf, Vec<Utf8PathBuf>)>>>;
    struct Probe {
        cache: Utf8PathBuf,
        output: Utf8PathBuf,
        seen: Seen,
    }
    impl Op for Probe {
        fn describe(&self) -> serde_json::Value {
            serde_json::json!({ "probe": "leftovers" })
        }
        fn run(&self, cx: &OpCx) -> anyhow::Result<()> {
            std::fs::create_dir_all(&self.output)?;
            let partial = xtask::exec::TempFile::beside(&self.output.join("demo.img"));
            std::fs::write(&partial.path, b"half an image")?;
            let found = support::leftovers(&[&self.cache, &self.output]);
            *self.seen.lock().unwrap() = Some((cx.out.to_owned(), partial.path.clone(), found));
            anyhow::bail!("the probe fails on purpose")
        }
    }

    let p = Project::demo();
    let seen: Seen = Arc::default();
    let mut plan = Plan::new(
        "test",
        &p.path("recipes/demo.yaml"),
        &p.root,
        &p.cache_dir(),
        &p.path("output"),
    );
    plan.add(
        StepBuilder::new("probe", "list leftovers while it runs").op(Probe {
            cache: p.cache_dir(),
            output: p.path("output"),
            seen: seen.clone(),
        }),
    );
    let err = xtask::exec::execute(&plan, &xtask::exec::Options::default())
        .err()
        .expect("the probe fails");
    assert!(
        format!("{err:#}").contains("the probe fails on purpose"),
        "{err:#}"
    );
    let (step_dir, partial, found) = seen.lock().unwrap().take().expect("the probe ran");
    let mut want = vec![step_dir, partial];
    want.sort();
    assert_eq!(found, want, "the running step's temporary names");
    p.assert_no_leftovers();
}

/// The console helper (`tools::run_until`, on `tools::console`) stops the
/// watched program at the markers: a fake console prints the markers and a
/// line much later.
#[test]
fn console_helper_stops_at_the_markers() {
    use std::time::Duration;
    let console = xtask::tools::Cmd::new("sh", "a fake serial console").args([
        "-c",
        "echo Booting; echo 'demo: ready'; sleep 600; echo too-late",
    ]);
    let t = std::time::Instant::now();
    let out = support::boot(
        &console,
        &["booting", "DEMO: READY"],
        Duration::from_secs(300),
    );
    assert!(out.contains("demo: ready"), "{out}");
    assert!(
        !out.contains("too-late") && t.elapsed() < Duration::from_secs(300),
        "not stopped at the markers: {out}"
    );
}

/// Run by [`a_process_wide_project_is_removed_when_the_process_exits`] in
/// a child process: makes a process-wide project and prints where it is.
#[test]
#[ignore = "a helper process of a_process_wide_project_is_removed_when_the_process_exits"]
fn process_wide_project_child() {
    let p = Project::demo_for_process();
    assert!(p.path("recipes/demo.yaml").is_file());
    println!("KILN-PROJECT={}", p.root);
}

/// A project shared through a static is never dropped; it is removed when
/// its test process exits, and one left by a killed process (its pid no
/// longer runs) is removed by the next process that makes one.
#[test]
fn a_process_wide_project_is_removed_when_the_process_exits() {
    // A directory as a killed test process would leave it.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = std::env::temp_dir().join(format!("kiln-test-shared-{dead}-stale"));
    std::fs::create_dir_all(stale.join("output")).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "process_wide_project_child",
            "--nocapture",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("KILN-PROJECT="))
        .unwrap_or_else(|| panic!("the child made no project: {text}"));
    assert!(
        !std::path::Path::new(root).exists(),
        "{root} outlived its process"
    );
    assert!(
        !stale.exists(),
        "{} (its process is gone) was not removed",
        stale.display()
    );
}
