//! `cargo xtask smoke`: the verb's command line (cheap, no boots), then real
//! smoke runs of the small demo qcow2 under qemu (TCG) with OVMF and
//! SeaBIOS: two instances on both firmwares pass every check of the demo's
//! `smoke:` section, the first with the config carrier; a broken first boot, a disk with a baked machine-id,
//! a qemu killed mid-boot and a SIGTERM to kiln each fail the way a user
//! can act on. Every run must leave the artifact unwritten and nothing
//! behind: no work directory, no partial report, no qemu.
//!
//! The demo qcow2 is built once per test binary ([`built`]) in the
//! suite-wide step cache and shared; the heavy tests take
//! [`support::heavy`] so that one guest set boots at a time.
//! The failure runs pass `--no-carrier` (the carrier is not their point),
//! except the baked machine-id run, whose two like instances, one with the
//! carrier and one without, are where the summary compares first-boot times.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use support::{case, junit, sh, stderr, stdout, Project};

/// The small recipe with `smoke` as its `smoke:` section (YAML, indented
/// under the key).
fn recipe_with_smoke(p: &Project, name: &str, smoke: &str) -> String {
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let rel = format!("recipes/{name}.yaml");
    let text = support::with_smoke(&demo, &format!("smoke:\n{smoke}"));
    p.write(&rel, &support::with_qcow2(&text, "  size: 2G\n"));
    rel
}

/// What the heavy tests need: the demo disk's build tools, qemu and OVMF.
fn boot_tools() -> bool {
    support::require(support::qcow2_build_tools())
        && support::require(&["qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd"])
}

struct Built {
    project: Project,
    recipe: String,
    qcow2: Utf8PathBuf,
}

/// Build the small demo qcow2 once, shared by the tests of this binary
/// (the project is removed when the test process exits).
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let p = Project::demo_for_process().share_cache();
        let recipe = support::small_recipe(&p, "");
        p.run(&["--recipe", &recipe, "qcow2"]);
        let name = p
            .outputs()
            .into_iter()
            .find(|n| n.ends_with(".qcow2"))
            .expect("a qcow2 in output/");
        let qcow2 = p.path("output").join(name);
        Built {
            project: p,
            recipe,
            qcow2,
        }
    })
}

// ---- nothing left behind ---------------------------------------------------

/// Processes (other than this one) whose command line contains any of
/// `needles`, as `pid: cmdline`.
fn processes_mentioning(needles: &[&str]) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if needles.iter().any(|n| cmdline.contains(n)) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Whether process `pid` descends from this test process, which makes it
/// the work of a test still running beside this one (a sibling's
/// `qemu-img convert` of the shared fixture's disk, a sibling's kiln and its
/// qemu), never a leftover: a process left behind by a kiln that exited is
/// reparented away from this process's tree.
fn started_here(pid: &str) -> bool {
    let me = std::process::id().to_string();
    let mut pid = pid.to_string();
    for _ in 0..64 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let Some(parent) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|v| v.trim().to_string())
        else {
            return false;
        };
        if parent == me {
            return true;
        }
        if parent == "0" || parent == "1" {
            return false;
        }
        pid = parent;
    }
    false
}

/// The first qemu process whose command line contains `dir`.
fn qemu_in(dir: &str) -> Option<i32> {
    processes_mentioning(&[dir]).into_iter().find_map(|p| {
        let (pid, cmdline) = p.split_once(": ").unwrap();
        cmdline
            .split(' ')
            .next()
            .is_some_and(|argv0| argv0.contains("qemu-system"))
            .then(|| pid.parse().unwrap())
    })
}

/// A smoke run left nothing: no work directory (`smoke.tmp-<pid>`) in the
/// cache, no partial report in output/, no process (qemu) naming the
/// project or a smoke work directory, other than the work of tests still
/// running in this process ([`started_here`]). The cache may be the suite's shared
/// one, where smokes of other test binaries run at the same time: a work
/// directory (or a process naming one) counts only when the kiln that owned
/// it (its pid) is gone.
fn assert_smoke_left_nothing(p: &Project) {
    let cache = p.cache_dir();
    let orphaned = |pid: &str| {
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Utf8Path::new("/proc").join(pid).exists()
    };
    let work: Vec<String> = std::fs::read_dir(&cache)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.strip_prefix("smoke.tmp-").is_some_and(orphaned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        work.is_empty(),
        "smoke work directories left in {cache}: {work:?}"
    );
    assert!(
        !p.path("output/.smoke.kiln-partial").exists(),
        "the partial report output/.smoke.kiln-partial was left"
    );
    let prefix = format!("{cache}/smoke.tmp-");
    let procs: Vec<String> = processes_mentioning(&[p.root.as_str(), &prefix])
        .into_iter()
        .filter(|line| !started_here(line.split(':').next().unwrap_or_default()))
        .filter(|line| {
            line.contains(p.root.as_str())
                || line.split(&prefix).skip(1).any(|rest| {
                    let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    orphaned(&pid)
                })
        })
        .collect();
    assert!(procs.is_empty(), "processes left running: {procs:#?}");
}

// ---- cheap: the command line -----------------------------------------------

#[test]
fn help_names_the_recipe_keys() {
    let p = Project::demo();
    let help = stdout(&p.run(&["smoke", "--help"]));
    for key in [
        "boot:",
        "again:",
        "once:",
        "identity:",
        "carrier:",
        "fail:",
        "iso:",
    ] {
        assert!(
            help.contains(key),
            "`smoke --help` does not name `{key}`:\n{help}"
        );
    }
    assert!(
        help.contains("--no-carrier") && help.contains("--firmware"),
        "{help}"
    );
    // The carrier's two ways onto a VM and the bad-seed check are taught.
    for taught in [
        "--carrier-as <HOW>",
        "- cdrom:",
        "- disk:  `cidata.img` (FAT, label `CIDATA`) as a second, read-only virtio disk",
        "--carrier-broken",
        "malformed",
        "(`refused`)",
    ] {
        assert!(
            help.contains(taught),
            "`smoke --help` does not teach `{taught}`:\n{help}"
        );
    }
}

#[test]
fn an_unknown_file_is_refused_by_name() {
    let p = Project::demo();
    p.write("x.tar", "not a disk");
    let e = p.fail(&["smoke", "x.tar"]);
    assert!(
        e.contains("x.tar") && e.contains("not an artifact smoke can boot"),
        "{e}"
    );
    assert!(!p.path("output/smoke").exists());
    assert_smoke_left_nothing(&p);
}

/// The demo builds the offline installer ISO: the smoke's plan for it is an
/// install boot per instance (the installer's done line), then the disk's
/// own boots. (`tests/installer.rs` runs it.)
#[test]
fn the_offline_installer_iso_is_installed_then_booted() {
    let p = Project::demo();
    let out = p.run(&["--dry-run", "smoke", "--format", "iso"]);
    let text = stdout(&out);
    assert!(text.contains("-amd64.iso"), "no ISO listed:\n{text}");
    for check in [
        "install: console /kiln-installer: install complete/ within 2400s",
        "first boot: console /demo: first boot complete/",
    ] {
        assert!(text.contains(check), "`{check}` not listed:\n{text}");
    }
    assert!(!p.path("output/smoke").exists());
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
}

#[test]
fn dry_run_lists_artifacts_and_checks_and_boots_nothing() {
    let p = Project::demo();
    let recipe = support::small_recipe(&p, "");
    let out = p.run(&[
        "--recipe",
        &recipe,
        "--dry-run",
        "smoke",
        "--format",
        "qcow2",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("smoke: 1 artifact(s) after the build"),
        "{text}"
    );
    assert!(text.contains("-amd64.qcow2"), "no qcow2 listed:\n{text}");
    for check in [
        "first boot: console /demo: first boot complete/ within 900s",
        "first boot: GET /healthz (port 80) -> 200, body /^ok/ within 60s",
        "second boot: console /demo: image demo-web:latest already loaded/ within 900s",
    ] {
        assert!(text.contains(check), "`{check}` not listed:\n{text}");
    }
    // Nothing was built or booted.
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    assert_smoke_left_nothing(&p);
    p.assert_no_leftovers();
}

#[test]
fn a_bad_smoke_section_fails_before_any_work() {
    let p = Project::demo();
    let recipe = recipe_with_smoke(
        &p,
        "bad",
        "  boot:\n    - console: \"demo: bootstrap ok\"\n      http: /healthz\n",
    );
    let e = p.fail(&["--recipe", &recipe, "smoke", "--format", "qcow2"]);
    assert!(
        e.contains("recipes/bad.yaml")
            && e.contains("smoke.boot[0]")
            && e.contains("exactly one of `console: PATTERN` or `http: /PATH`"),
        "{e}"
    );
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    let cache = p.cache_dir();
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "work was done in {cache}: {entries:?}");
}

// ---- heavy: real boots -----------------------------------------------------

/// The demo qcow2, two instances at once: #1 with UEFI, the config carrier
/// (a CD-ROM) and a second boot, #2 with SeaBIOS and a broken carrier
/// (`--carrier-broken`: malformed user-data). Every check passes: #1 took
/// DEMO_API_TOKEN from the carrier; #2's first boot completed, said the
/// carrier was not applied and minted its own; the summary gives each first
/// boot's time; the report and the console logs are in output/smoke/; the
/// artifact is not written.
#[test]
fn demo_qcow2_passes_on_uefi_and_bios() {
    if !boot_tools() {
        return;
    }
    let _g = support::heavy_long();
    let b = built();
    let p = &b.project;
    let before = support::sha256(&b.qcow2);
    let out = p.run(&[
        "--recipe",
        &b.recipe,
        "smoke",
        "--format",
        "qcow2",
        "--firmware",
        "both",
        "--carrier-broken",
    ]);
    let err = stderr(&out);
    assert!(err.contains("smoke: all "), "{err}");
    assert!(
        err.contains("#2 bios boot 1: booting under tcg with a broken config carrier (malformed user-data) as a cdrom"),
        "{err}"
    );
    // Both first boots' times are reported (never checked), and that no
    // instance booted without a carrier to compare with.
    for guest in ["#1 uefi boot 1", "#2 bios boot 1"] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{guest}: first boot ")) && l.contains("carrier: ")),
            "{guest}: no first-boot time in\n{err}"
        );
    }

    let dir = p.path("output/smoke");
    let (tests, failures, cases) = junit(&dir.join("junit.xml"));
    assert_eq!(failures, 0, "{cases:#?}");
    for (guest, check) in [
        ("#1 uefi boot 1", "console /demo: first boot complete/"),
        (
            "#1 uefi boot 1",
            "GET / (port 80) -> 200, body /(?i)<!doctype html>/",
        ),
        (
            "#1 uefi boot 1",
            "GET /healthz (port 80) -> 200, body /^ok/",
        ),
        ("#1 uefi boot 1", "identity report"),
        (
            "#1 uefi boot 1",
            "carrier setting DEMO_API_TOKEN reached the appliance",
        ),
        (
            "#1 uefi boot 2",
            "console /demo: image demo-web:latest already loaded/",
        ),
        ("#1 uefi boot 2", "identity unchanged since the first boot"),
        ("#1 uefi boot 2", "once /demo: first boot complete/"),
        ("#2 bios boot 1", "console /demo: bootstrap ok/"),
        (
            "#2 bios boot 1",
            "GET /healthz (port 80) -> 200, body /^ok/",
        ),
        ("#2 bios boot 1", "identity report"),
        ("#2 bios boot 1", "broken carrier reported as not applied"),
        (
            "#2 bios boot 1",
            "broken carrier: DEMO_API_TOKEN minted, not taken",
        ),
        ("", "2 instances have distinct identities"),
    ] {
        case(&cases, guest, check);
    }
    // Two boots of #1 and one of #2, no more: `--firmware both` alone
    // makes the two instances.
    assert!(
        !cases
            .iter()
            .any(|c| c.name.starts_with("#3 ") || c.name.starts_with("#2 bios boot 2")),
        "{cases:#?}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("smoke.json")).unwrap()).unwrap();
    assert_eq!(json["ok"], true, "{json:#}");
    assert_eq!(json["checks"], tests);

    let logs = dir.join(b.qcow2.file_name().unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "instance-1-uefi-boot-1.log",
            "instance-1-uefi-boot-2.log",
            "instance-2-bios-boot-1.log"
        ]
    );
    // The machine-id, and the snakeoil key ssl-cert's pair has (kiln's
    // first-boot unit makes it per instance): kept by a reboot, never shared
    // by two instances.
    for what in ["machine-id", "ssl-cert-snakeoil"] {
        let mut ids = BTreeMap::new();
        for n in &names {
            let log = std::fs::read_to_string(logs.join(n)).unwrap();
            let id = log
                .lines()
                .find_map(|l| l.split(&format!("demo: identity {what} sha256=")).nth(1))
                .unwrap_or_else(|| panic!("{n}: no {what} digest:\n{}", support::tail(&log)))
                .trim()
                .to_string();
            ids.insert(n.clone(), id);
        }
        assert_eq!(
            ids["instance-1-uefi-boot-1.log"], ids["instance-1-uefi-boot-2.log"],
            "the second boot reported another {what}"
        );
        assert_ne!(
            ids["instance-1-uefi-boot-1.log"], ids["instance-2-bios-boot-1.log"],
            "two instances reported one {what}"
        );
    }
    // #1 read the token from the carrier (the smoke checked the digest),
    // #2, whose carrier could not be applied, said so and minted it.
    let log = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap();
    let first = log("instance-1-uefi-boot-1.log");
    assert!(
        first.contains("demo: provisioned DEMO_API_TOKEN sha256=")
            && first.contains("demo: minted DEMO_DB_PASSWORD"),
        "{}",
        support::tail(&first)
    );
    let other = log("instance-2-bios-boot-1.log");
    assert!(
        other.contains("demo: minted DEMO_API_TOKEN") && !other.contains("provisioned"),
        "{}",
        support::tail(&other)
    );
    assert!(
        other.contains("demo: config carrier not applied: a disk labelled cidata is attached"),
        "{}",
        support::tail(&other)
    );
    assert!(!first.contains("not applied"), "{}", support::tail(&first));
    let junit_text = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(
        junit_text.contains("name=\"first boot secs: #2 bios boot 1 (carrier: broken cdrom)\""),
        "{junit_text}"
    );

    assert_eq!(
        support::sha256(&b.qcow2),
        before,
        "smoke wrote the artifact"
    );
    assert_smoke_left_nothing(p);
}

/// A first boot that fails: the run fails on the first check, naming it,
/// the console line that failed it and the console's last lines; junit.xml
/// records the failure and the later checks as not run. Asked for KVM, the
/// smoke probes it first and boots under what the probe found.
#[test]
fn a_broken_first_boot_fails_with_the_console_tail() {
    if !boot_tools() {
        return;
    }
    let _g = support::heavy();
    let p = Project::demo().share_cache();
    let planted = "demo: first boot FAILED: planted by the test";
    p.write(
        "overlay/opt/demo/bin/firstboot",
        &format!("#!/bin/sh\necho '{planted}' >&2\nexit 1\n"),
    );
    let recipe = support::small_recipe(&p, "");
    let out = p
        .kiln()
        .args([
            "--recipe",
            &recipe,
            "smoke",
            "--format",
            "qcow2",
            "--instances",
            "1",
            "--firmware",
            "uefi",
            "--no-carrier",
            // The KVM probe runs first: whatever it finds on this host,
            // the boot runs under the accelerator it names.
            "--accel",
            "kvm",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "smoke passed a broken first boot:\n{err}"
    );
    let used = if err.contains("booting under KVM") {
        "kvm"
    } else {
        let why = err
            .lines()
            .find(|l| l.contains("--accel kvm:") && l.ends_with("under TCG instead"))
            .unwrap_or_else(|| panic!("no verdict of the KVM probe:\n{err}"));
        assert!(
            why.contains("/dev/kvm cannot be opened")
                || why.contains("no kernel time past 1 s")
                || why.contains("qemu exited"),
            "{why}"
        );
        "tcg"
    };
    assert!(
        err.contains(&format!("#1 uefi boot 1: booting under {used}")),
        "{err}"
    );
    assert!(
        err.contains(
            "#1 uefi boot 1: console /demo: first boot complete/: FAILED: the console showed a failure first"
        ),
        "{err}"
    );
    let tail = err
        .split("--- last console lines ---")
        .nth(1)
        .unwrap_or_else(|| panic!("no console tail:\n{err}"));
    assert!(tail.contains(planted), "the tail lacks the failure:\n{err}");

    let dir = p.path("output/smoke");
    let (_, failures, cases) = junit(&dir.join("junit.xml"));
    let first = case(
        &cases,
        "#1 uefi boot 1",
        "console /demo: first boot complete/",
    );
    assert!(
        first
            .failure
            .as_deref()
            .is_some_and(|m| m.starts_with("the console showed a failure first")),
        "{first:?}"
    );
    let later = case(&cases, "#1 uefi boot 1", "console /demo: bootstrap ok/");
    assert_eq!(
        later.failure.as_deref(),
        Some("not run: an earlier check failed")
    );
    // The four checks of the first boot; no second boot after a failure.
    assert_eq!(failures, 4, "{cases:#?}");
    assert!(
        !cases.iter().any(|c| c.name.contains("boot 2")),
        "{cases:#?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("smoke.json")).unwrap()).unwrap();
    assert_eq!(json["ok"], false);
    assert_smoke_left_nothing(&p);
}

/// Two instances of a disk whose image holds a machine-id: the run fails
/// on the distinct-identity check naming machine-id, and only machine-id
/// (the SSH host keys and the secrets are minted per instance). #1 boots
/// with the config carrier and #2 without, both UEFI, side by side: the
/// summary reports what the carrier adds to the first boot (the one run
/// that compares like with like; the time is reported, never checked).
#[test]
fn a_baked_machine_id_fails_the_two_instance_check() {
    if !boot_tools() || !support::require(&["debugfs", "sgdisk"]) {
        return;
    }
    let _g = support::heavy();
    let b = built();
    let d = tempfile::Builder::new()
        .prefix("kiln-smoke-")
        .tempdir()
        .unwrap();
    let dir = Utf8Path::from_path(d.path()).unwrap();
    let raw = dir.join("disk.raw");
    support::qemu_convert(&b.qcow2, "qcow2", &raw, "raw");
    let id = dir.join("machine-id");
    std::fs::File::create(&id)
        .unwrap()
        .write_all(b"0123456789abcdef0123456789abcdef\n")
        .unwrap();
    let fs = format!("{raw}?offset={}", support::partition_offset(&raw, 3));
    let script = dir.join("debugfs.cmd");
    std::fs::write(
        &script,
        format!(
            "rm /etc/machine-id\nwrite {id} /etc/machine-id\n\
             sif /etc/machine-id mode 0100444\nsif /etc/machine-id uid 0\nsif /etc/machine-id gid 0\n"
        ),
    )
    .unwrap();
    sh("debugfs", &["-w", "-f", script.as_str(), &fs]);
    let cat = sh("debugfs", &["-R", "cat /etc/machine-id", &fs]);
    assert_eq!(cat, "0123456789abcdef0123456789abcdef\n");
    let baked = dir.join(b.qcow2.file_name().unwrap());
    support::qemu_convert(&raw, "raw", &baked, "qcow2");
    std::fs::remove_file(&raw).unwrap();

    let p = Project::demo();
    let recipe = recipe_with_smoke(
        &p,
        "identity",
        "  boot: [{console: \"demo: bootstrap ok\", within: 420}]\n\
         \x20 fail: ['\\[FAILED\\]', \"demo: .*FAILED\", \"Kernel panic\"]\n\
         \x20 identity: 'demo: identity (?P<name>\\S+) sha256=(?P<digest>[0-9a-f]{64})'\n\
         \x20 carrier: {set: [DEMO_API_TOKEN], report: 'demo: provisioned (?P<name>\\w+) sha256=(?P<digest>[0-9a-f]{64})'}\n",
    );
    let out = p
        .kiln()
        .args(["--recipe", &recipe, "smoke", baked.as_str()])
        .args(["--instances", "2", "--firmware", "uefi"])
        .output()
        .unwrap();
    let err = stderr(&out);
    let cost = err
        .lines()
        .find(|l| l.contains("the carrier (cdrom) adds"))
        .unwrap_or_else(|| panic!("no report of what the carrier adds:\n{err}"));
    eprintln!("{cost}");
    assert!(
        cost.contains("s with, ") && cost.contains("s without)"),
        "{cost}"
    );
    assert!(
        !out.status.success(),
        "two instances sharing a machine-id passed:\n{err}"
    );
    let shared = err
        .lines()
        .find(|l| l.contains("2 instances have distinct identities: FAILED"))
        .unwrap_or_else(|| panic!("the identity check did not fail:\n{err}"));
    assert!(shared.contains("#1 and #2 share machine-id"), "{shared}");
    for other in ["ssh_host", "secrets"] {
        assert!(
            !shared.contains(&format!("share {other}")),
            "{other} reported as shared: {shared}"
        );
    }
    let (_, failures, cases) = junit(&p.path("output/smoke/junit.xml"));
    assert_eq!(failures, 1, "only the identity check fails: {cases:#?}");
    // The other checks ran: both instances booted and reported.
    for guest in ["#1 uefi boot 1", "#2 uefi boot 1"] {
        assert!(case(&cases, guest, "identity report").failure.is_none());
    }
    assert_smoke_left_nothing(&p);
    p.assert_no_leftovers();
}

/// Start a smoke of the built disk in the background, stderr into a file;
/// returns the child, the smoke's work directory and the stderr file.
fn smoke_in_background(
    p: &Project,
    qcow2: &Utf8Path,
    log: &Utf8Path,
) -> (std::process::Child, String) {
    let child = p
        .kiln()
        .args(["smoke", qcow2.as_str()])
        .args(["--instances", "1", "--firmware", "bios", "--no-carrier"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let work = format!("{}/smoke.tmp-{}", p.cache_dir(), child.id());
    (child, work)
}

/// The qemu of the smoke whose work directory is `work`, once it runs.
fn wait_for_qemu(child: &mut std::process::Child, work: &str, log: &Utf8Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(pid) = qemu_in(work) {
            return pid;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "smoke exited ({st}) before starting qemu:\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        if t.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("no qemu in {work} after 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait for kiln to exit (killing it after 120 s, a test failure).
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("kiln did not exit within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// qemu killed mid-boot fails the run with a report; SIGTERM to kiln
/// stops it with 143. Either way nothing is left: no qemu, no work
/// directory, no partial report.
#[test]
fn a_killed_qemu_and_sigterm_leave_nothing() {
    if !boot_tools() {
        return;
    }
    let _g = support::heavy();
    let b = built();
    let p = Project::demo();
    let d = tempfile::tempdir().unwrap();
    let log = Utf8Path::from_path(d.path()).unwrap().join("stderr");

    // qemu dies under kiln.
    let (mut child, work) = smoke_in_background(&p, &b.qcow2, &log);
    let qemu = wait_for_qemu(&mut child, &work, &log);
    assert_eq!(unsafe { libc::kill(qemu, libc::SIGKILL) }, 0);
    let st = wait_exit(&mut child);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!st.success(), "smoke passed with its qemu killed:\n{err}");
    assert!(
        err.contains("#1 bios boot 1: console /demo: first boot complete/: FAILED: qemu exited"),
        "{err}"
    );
    let (_, failures, cases) = junit(&p.path("output/smoke/junit.xml"));
    assert!(failures >= 1, "{cases:#?}");
    let first = case(
        &cases,
        "#1 bios boot 1",
        "console /demo: first boot complete/",
    );
    assert!(
        first
            .failure
            .as_deref()
            .is_some_and(|m| m.starts_with("qemu exited")),
        "{first:?}"
    );
    assert!(!Utf8Path::new(&work).exists(), "{work} was left");
    assert_smoke_left_nothing(&p);
    p.assert_no_leftovers();

    // SIGTERM to kiln while its guest boots.
    let (mut child, work) = smoke_in_background(&p, &b.qcow2, &log);
    wait_for_qemu(&mut child, &work, &log);
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let st = wait_exit(&mut child);
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(143), "{st}:\n{err}");
    // No qemu comes back or lingers for a while after kiln is gone.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert_eq!(qemu_in(&work), None, "qemu outlived kiln");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!Utf8Path::new(&work).exists(), "{work} was left");
    assert_smoke_left_nothing(&p);
    p.assert_no_leftovers();
}
