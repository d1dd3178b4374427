//! `cargo xtask qcow2`: plans (cheap), then real builds read back with real
//! tools and booted under qemu (TCG) with OVMF and SeaBIOS.
//!
//! The demo image is built once per test binary ([`built`]) and shared; every
//! boot works on its own copy or a `-snapshot`.

mod support;

use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};
use support::{sh, tail, Project};

const BOOT_TOOLS: &[&str] = &["qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd"];

struct Built {
    project: Project,
    qcow2: Utf8PathBuf,
}

/// Build the demo qcow2 once (mmdebstrap + assembly), shared by the tests.
/// The project lives in a static, which is never dropped, so it is one the
/// test process removes when it exits ([`Project::demo_for_process`]).
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        // The suite-wide cache: the OVA tests' demo disk has the same Debian
        // root, so mmdebstrap runs once per suite.
        let p = Project::demo_for_process().share_cache();
        let recipe = support::small_recipe(&p, "");
        p.run(&["--recipe", &recipe, "qcow2"]);
        let name = p
            .outputs()
            .into_iter()
            .find(|n| n.ends_with(".qcow2"))
            .expect("a qcow2 in output/");
        let qcow2 = p.path("output").join(name);
        Built { project: p, qcow2 }
    })
}

fn step_keys(p: &Project, recipe: &str) -> serde_json::Value {
    let out = p.run(&["--recipe", recipe, "--dry-run", "--json", "qcow2"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys = serde_json::Map::new();
    for s in plan["steps"].as_array().unwrap() {
        keys.insert(s["name"].as_str().unwrap().into(), s["key"].clone());
    }
    let rootfs = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "qcow2-rootfs-amd64")
        .expect("a rootfs step");
    keys.insert("mmdebstrap".into(), rootfs["actions"][0]["cmd"].clone());
    serde_json::Value::Object(keys)
}

#[test]
fn plan_keys_rootfs_by_packages_not_overlay() {
    let p = Project::demo();
    let recipe = support::small_recipe(&p, "");
    let a = step_keys(&p, &recipe);
    let cmd = &a["mmdebstrap"];
    assert_eq!(cmd["program"], "mmdebstrap");
    let args: Vec<String> = serde_json::from_value(cmd["args"].clone()).unwrap();
    // Mirror lines come from the host's apt sources, with -updates and -security.
    let host = xtask::hostapt::sources(Utf8Path::new("/etc/apt")).unwrap();
    let mirror = xtask::hostapt::debian_mirror(&host, "bookworm").unwrap();
    assert!(
        args.contains(&format!("deb {mirror} bookworm main")),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("deb {mirror} bookworm-updates main")),
        "{args:?}"
    );
    assert!(args
        .iter()
        .any(|a| a.starts_with("--include=") && a.contains("linux-image-amd64")));
    assert_eq!(
        cmd["env"]["SOURCE_DATE_EPOCH"],
        support::epoch().to_string()
    );

    // An overlay change re-keys the disk, never the Debian root.
    p.write("overlay/etc/demo/extra.conf", "x=1\n");
    let b = step_keys(&p, &recipe);
    assert_eq!(a["qcow2-rootfs-amd64"], b["qcow2-rootfs-amd64"]);
    assert_ne!(a["qcow2-disk-amd64"], b["qcow2-disk-amd64"]);
    // A package change re-keys the root; a mirror override shows up in the command.
    let recipe2 = support::small_recipe(
        &p,
        "  packages: [systemd, systemd-sysv]\n  mirror: http://mirror.example/debian\n",
    );
    let c = step_keys(&p, &recipe2);
    assert_ne!(a["qcow2-rootfs-amd64"], c["qcow2-rootfs-amd64"]);
    let args: Vec<String> = serde_json::from_value(c["mmdebstrap"]["args"].clone()).unwrap();
    assert!(
        args.contains(&"deb http://mirror.example/debian bookworm main".to_string()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.contains(&mirror)), "{args:?}");
}

/// The demo recipe's seed section (the operator's config carrier).
const DEMO_SEED: &str = "seed:\n  cloud_init:\n    provision_env: nocloud/provision.env\n    network_config: nocloud/network-config\n";

/// A recipe with `seed.cloud_init` puts cloud-init into the Debian root
/// (its packages, so its key) and has the disk write kiln's NoCloud
/// drop-in; a recipe without gets neither. (The OVA wraps the same disk.)
#[test]
fn cloud_init_is_in_the_root_when_the_recipe_has_a_seed() {
    let p = Project::demo();
    let plan = |recipe: &str| -> serde_json::Value {
        let out = p.run(&["--recipe", recipe, "--dry-run", "--json", "qcow2"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let step = |plan: &serde_json::Value, name: &str| -> serde_json::Value {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} step"))
            .clone()
    };
    let packages = |plan: &serde_json::Value| -> Vec<String> {
        let args: Vec<String> = serde_json::from_value(
            step(plan, "qcow2-rootfs-amd64")["actions"][0]["cmd"]["args"].clone(),
        )
        .unwrap();
        let include = args
            .iter()
            .find_map(|a| a.strip_prefix("--include="))
            .expect("--include=");
        include.split(',').map(str::to_string).collect()
    };
    let with = support::small_recipe(&p, "");
    let demo = std::fs::read_to_string(p.path(&with)).unwrap();
    assert!(demo.contains(DEMO_SEED), "the demo's seed section moved");
    // Without the seed, the demo's smoke carrier (which writes the seed's
    // provision.env) goes too.
    let no_carrier = support::with_smoke(&demo, "smoke: {}\n");
    p.write("recipes/no-seed.yaml", &no_carrier.replace(DEMO_SEED, ""));
    let (a, b) = (plan(&with), plan("recipes/no-seed.yaml"));
    assert!(
        packages(&a).contains(&"cloud-init".to_string()),
        "{:?}",
        packages(&a)
    );
    assert!(
        !packages(&b).contains(&"cloud-init".to_string()),
        "{:?}",
        packages(&b)
    );
    assert_ne!(
        step(&a, "qcow2-rootfs-amd64")["key"],
        step(&b, "qcow2-rootfs-amd64")["key"]
    );
    let carrier = |plan: &serde_json::Value| {
        step(plan, "qcow2-disk-amd64")["actions"][0]["op"]["qcow2-disk"]["carrier"].clone()
    };
    assert_eq!(carrier(&a), "attached");
    assert_eq!(carrier(&b), serde_json::Value::Null);
    // An empty section is a seed too (every default).
    p.write(
        "recipes/empty-seed.yaml",
        &no_carrier.replace(DEMO_SEED, "seed:\n  cloud_init: {}\n"),
    );
    assert!(packages(&plan("recipes/empty-seed.yaml")).contains(&"cloud-init".to_string()));
}

#[test]
fn bad_recipe_values_fail_before_work() {
    let p = Project::demo();
    for (extra, want) in [
        ("  suite: bookwrm\n", "bookwrm"),
        ("  packages: ['bad name']\n", "bad name"),
        ("  firmware: efi\n", "`uefi`"),
        (
            "  base: {image: {path: nope.qcow2, sha256: abc}}\n",
            "sha256",
        ),
    ] {
        let recipe = support::small_recipe(&p, extra);
        let err = p.fail(&["--recipe", &recipe, "--dry-run", "qcow2"]);
        assert!(err.contains(want), "{extra}: {err}");
    }
    let recipe = support::small_recipe(&p, "").replace("small", "tiny");
    p.write(
        &recipe,
        &std::fs::read_to_string(p.path("recipes/small.yaml"))
            .unwrap()
            .replace("size: 2G", "size: 1M"),
    );
    assert!(p
        .fail(&["--recipe", &recipe, "--dry-run", "qcow2"])
        .contains("too small"));
    assert!(p.outputs().is_empty());
}

#[test]
fn builder1_image_is_clean_and_laid_out() {
    if !support::require(support::qcow2_build_tools())
        || !support::require(&["sgdisk", "debugfs", "sha256sum"])
    {
        return;
    }
    let _g = support::heavy();
    let b = built();
    let q = &b.qcow2;
    // qemu-img check: clean.
    let check = sh("qemu-img", &["check", "-f", "qcow2", q.as_str()]);
    assert!(check.contains("No errors were found"), "{check}");
    let info: serde_json::Value =
        serde_json::from_str(&sh("qemu-img", &["info", "--output=json", q.as_str()])).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 2u64 << 30);
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd");
    // The .sha256 names the basename and verifies.
    support::assert_published_sha256(q);

    // Read the disk back: GPT with BIOS boot, ESP and a root-x86-64 partition.
    let (_d, dir) = support::tempdir("kiln-qcow2-");
    let raw = dir.join("disk.raw");
    support::qemu_convert(q, "qcow2", &raw, "raw");
    let gpt = sh("sgdisk", &["-p", raw.as_str()]);
    assert!(
        gpt.contains("EF02") && gpt.contains("EF00") && gpt.contains("8304"),
        "{gpt}"
    );
    let verify = sh("sgdisk", &["-v", raw.as_str()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let fs = format!("{raw}?offset={}", support::partition_offset(&raw, 3));
    let dbg = |req: &str| sh("debugfs", &["-R", req, &fs]);
    // Identity reset.
    assert_eq!(dbg("cat /etc/machine-id"), "");
    assert!(dbg("stat /etc/machine-id").contains("Size: 0"));
    let ssh = dbg("ls -l /etc/ssh");
    assert!(
        ssh.contains("sshd_config") && !ssh.contains("ssh_host_"),
        "{ssh}"
    );
    // The build host's resolv.conf is gone; DNS comes from DHCP through
    // systemd-resolved's stub.
    assert!(
        dbg("stat /etc/resolv.conf")
            .contains("Fast link dest: \"../run/systemd/resolve/stub-resolv.conf\""),
        "{}",
        dbg("stat /etc/resolv.conf")
    );
    assert!(
        dbg("stat /etc/systemd/system/multi-user.target.wants/systemd-resolved.service")
            .contains("Type: symlink")
    );
    for gone in ["/var/lib/systemd/random-seed", "/var/lib/dbus/machine-id"] {
        let o = std::process::Command::new("debugfs")
            .args(["-R", &format!("stat {gone}"), &fs])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("File not found"),
            "{gone} is in the image"
        );
    }
    let lists = dbg("ls /var/lib/apt/lists");
    assert!(
        !lists.contains("InRelease") && !lists.contains("Packages"),
        "{lists}"
    );
    assert!(dbg("cat /etc/systemd/system/systemd-firstboot.service").is_empty());
    assert!(dbg("stat /etc/systemd/system/systemd-firstboot.service")
        .contains("Fast link dest: \"/dev/null\""));
    // fstab by UUID/PARTUUID, growing root; the staged tree is there.
    let fstab = dbg("cat /etc/fstab");
    assert!(
        fstab.contains("UUID=")
            && fstab.contains("x-systemd.growfs")
            && fstab.contains("PARTUUID="),
        "{fstab}"
    );
    assert!(dbg("cat /opt/demo/bin/firstboot").contains("first boot complete"));
    // cloud-init reads the config carrier: disk-borne sources only, and no state of a
    // boot (instance, data, semaphores) nor its logs in the image.
    let cfg = dbg("cat /etc/cloud/cloud.cfg.d/90-kiln-nocloud.cfg");
    assert!(
        cfg.contains("datasource_list: [ NoCloud, ConfigDrive, None ]"),
        "{cfg}"
    );
    assert!(cfg.contains("\nlocale: C.UTF-8\n"), "{cfg}");
    assert!(dbg("stat /usr/bin/cloud-init").contains("Type: regular"));
    let state = dbg("ls -l /var/lib/cloud");
    for gone in ["instance", "data", "sem", "handlers"] {
        assert!(
            !state.split_whitespace().any(|w| w.starts_with(gone)),
            "/var/lib/cloud holds {gone}:\n{state}"
        );
    }
    let logs = dbg("ls -l /var/log");
    assert!(!logs.contains("cloud-init"), "{logs}");
    // ssl-cert (the demo lists it) made a snakeoil pair at build time: the
    // image holds no key, certificate or hash link, and kiln's first-boot
    // unit makes this instance's. (The smoke's two instances report
    // different digests of it: tests/smoke.rs.)
    let private = dbg("ls -l /etc/ssl/private");
    assert!(!private.contains("snakeoil"), "{private}");
    let certs = dbg("ls -l /etc/ssl/certs");
    assert!(
        certs.contains("ca-certificates.crt") && !certs.contains("snakeoil"),
        "{certs}"
    );
    let unit = dbg("cat /etc/systemd/system/kiln-ssl-cert-snakeoil.service");
    assert!(
        unit.contains(
            "ExecStart=/usr/sbin/make-ssl-cert generate-default-snakeoil --force-overwrite"
        ),
        "{unit}"
    );
    assert!(
        dbg("stat /etc/systemd/system/multi-user.target.wants/kiln-ssl-cert-snakeoil.service")
            .contains("Type: symlink")
    );
    assert!(
        dbg("stat /etc/systemd/system/multi-user.target.wants/demo-firstboot.service")
            .contains("Type: symlink")
    );
    // Files keep Debian's owners (merged in process, no root needed).
    let st = dbg("stat /var/lib/apt/lists/partial");
    let uid: u32 = st
        .split("User:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no owner in {st}"));
    assert_ne!(
        uid, 0,
        "apt's partial directory should belong to _apt:\n{st}"
    );
}

#[test]
fn builder1_two_builds_are_identical() {
    if !support::require(support::qcow2_build_tools()) {
        return;
    }
    let _g = support::heavy();
    let b = built();
    // A second project with its own cache and output. mmdebstrap's tarball is
    // byte-identical for the same SOURCE_DATE_EPOCH (see environment notes);
    // set KILN_TEST_FULL_REBUILD=1 to re-run it here too, otherwise its cache
    // entry is shared and every kiln step after it runs again.
    let p = Project::demo();
    let recipe = support::small_recipe(&p, "");
    if std::env::var("KILN_TEST_FULL_REBUILD").as_deref() != Ok("1") {
        let from = b.project.cache_dir().join("qcow2-rootfs-amd64");
        support::link_tree(&from, &p.path("cache/qcow2-rootfs-amd64"));
    }
    p.run(&["--recipe", &recipe, "qcow2"]);
    let name = b.qcow2.file_name().unwrap();
    let a = std::fs::read_to_string(format!("{}.sha256", b.qcow2)).unwrap();
    let c = std::fs::read_to_string(p.path("output").join(format!("{name}.sha256"))).unwrap();
    assert_eq!(a, c, "two builds of the same inputs differ");
    // A no-op rebuild reuses every step.
    let out = p.run(&["--recipe", &recipe, "--json", "qcow2"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["outcome"], "cached", "{s}");
    }
}

#[test]
fn builder1_size_too_small_says_how_much_is_needed() {
    if !support::require(support::qcow2_build_tools()) {
        return;
    }
    let _g = support::heavy();
    let b = built();
    // Same Debian root as the fixture (cached), a disk too small for it.
    let p = &b.project;
    let text = std::fs::read_to_string(p.path("recipes/small.yaml"))
        .unwrap()
        .replace("size: 2G", "size: 300M");
    p.write("recipes/tiny.yaml", &text);
    let before = p.outputs();
    let err = p.fail(&["--recipe", "recipes/tiny.yaml", "qcow2"]);
    assert!(
        err.contains("too small") && err.contains("needs at least"),
        "{err}"
    );
    assert_eq!(
        p.outputs(),
        before,
        "a failed build left something in output/"
    );
}

#[test]
fn builder1_unknown_package_and_unreachable_mirror() {
    if !support::require(&["mmdebstrap"]) {
        return;
    }
    let _g = support::heavy();
    let p = Project::demo();
    let recipe = support::small_recipe(&p, "  packages: [systemd, kiln-no-such-package]\n");
    let err = p.fail(&["--recipe", &recipe, "qcow2"]);
    // apt's own words, from mmdebstrap's stderr tail (not just our command line).
    assert!(
        err.contains("Unable to locate package kiln-no-such-package"),
        "{err}"
    );
    let recipe = support::small_recipe(&p, "  mirror: http://127.0.0.1:9/debian\n");
    let err = p.fail(&["--recipe", &recipe, "qcow2"]);
    assert!(
        err.contains("127.0.0.1:9") && err.contains("index files failed to download"),
        "{err}"
    );
    assert!(p.outputs().is_empty());
    p.assert_no_leftovers();
    // Nothing partial in the cache either.
    let cache = p.path("cache/qcow2-rootfs-amd64");
    if cache.exists() {
        for e in std::fs::read_dir(&cache).unwrap() {
            let e = e.unwrap().path();
            assert!(
                !e.is_dir() || e.join(".kiln-step.json").exists(),
                "partial cache entry {}",
                e.display()
            );
        }
    }
}

const CUSTOMIZE_TOOLS: &[&str] = &["virt-customize", "virt-sparsify", "guestfish"];

/// A project whose base is the builder-1 image, with a changed bootstrap
/// script so the boot shows the customization happened.
fn customize_project(base: &Utf8Path, sha256: &str) -> (Project, String) {
    let p = Project::demo();
    let script = p.path("overlay/opt/demo/bin/bootstrap");
    let text = std::fs::read_to_string(&script)
        .unwrap()
        .replace("demo: bootstrap ok", "demo: bootstrap ok (customized)");
    std::fs::write(&script, text).unwrap();
    // The vendor image is kiln's demo disk: nothing to install on top.
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let text = support::with_qcow2(
        &support::with_qcow2_packages(&demo, &[]),
        &format!("  size: 3G\n  base:\n    image:\n      path: {base}\n      sha256: {sha256}\n"),
    );
    let recipe = "recipes/customize.yaml";
    p.write(recipe, &text);
    (p, recipe.into())
}

#[test]
fn builder2_customizes_a_vendor_image_and_it_boots() {
    if !support::require(support::qcow2_build_tools())
        || !support::require(BOOT_TOOLS)
        || !support::require(CUSTOMIZE_TOOLS)
    {
        return;
    }
    let _g = support::heavy_long();
    let b = built();
    let sha = support::sha256(&b.qcow2);
    let (p, recipe) = customize_project(&b.qcow2, &sha);
    let built = p.run(&["--recipe", &recipe, "qcow2"]);
    // The base (kiln's demo disk) has cloud-init: no warning about the carrier.
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(!log.contains("has no cloud-init"), "{log}");
    let name = p
        .outputs()
        .into_iter()
        .find(|n| n.ends_with(".qcow2"))
        .unwrap();
    let q = p.path("output").join(name);
    let info: serde_json::Value =
        serde_json::from_str(&sh("qemu-img", &["info", "--output=json", q.as_str()])).unwrap();
    assert_eq!(info["virtual-size"], 3u64 << 30);
    // The customized image boots (one instance, UEFI): its first boot runs
    // and the changed bootstrap reports.
    let text = std::fs::read_to_string(p.path(&recipe)).unwrap();
    let smoke = "smoke:\n  boot:\n    - console: \"demo: first boot complete\"\n      within: 420\n    - console: 'demo: bootstrap ok \\(customized\\)'\n      within: 240\n";
    std::fs::write(p.path(&recipe), support::with_smoke(&text, smoke)).unwrap();
    p.run(&[
        "--recipe",
        &recipe,
        "smoke",
        q.as_str(),
        "--instances",
        "1",
        "--firmware",
        "uefi",
        "--no-carrier",
    ]);
    let out = support::smoke_log(&p, &q, 1, "uefi", 1);
    assert!(
        !out.contains("First Boot Wizard"),
        "systemd-firstboot prompted"
    );
    let (_d, dir) = support::tempdir("kiln-qcow2-");

    // Bad inputs: checksum mismatch, corrupt base, virt-customize failure.
    let (p2, r2) = customize_project(&b.qcow2, &"0".repeat(64));
    let err = p2.fail(&["--recipe", &r2, "qcow2"]);
    assert!(err.contains("sha256") && err.contains(&sha), "{err}");
    let corrupt = dir.join("corrupt.qcow2");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", corrupt.as_str(), "64M"],
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&corrupt)
            .unwrap();
        // Point the refcount table far beyond the end of the file.
        f.write_all_at(&0x7fff_0000_0000u64.to_be_bytes(), 48)
            .unwrap();
    }
    let csha = support::sha256(&corrupt);
    let (p3, r3) = customize_project(&corrupt, &csha);
    let err = p3.fail(&["--recipe", &r3, "qcow2"]);
    assert!(err.contains("corrupt") && err.contains("qemu-img"), "{err}");
    let (p4, r4) = customize_project(&b.qcow2, &sha);
    let t = std::fs::read_to_string(p4.path(&r4))
        .unwrap()
        .replace("packages: []", "packages: [kiln-no-such-package]");
    std::fs::write(p4.path(&r4), t).unwrap();
    let err = p4.fail(&["--recipe", &r4, "qcow2"]);
    assert!(
        err.contains("virt-customize failed") && err.contains("log (last lines)"),
        "{err}"
    );
    for q in [&p2, &p3, &p4] {
        assert!(q.outputs().is_empty());
        q.assert_no_leftovers();
    }
}

/// The demo recipe built for arm64 only, with a small disk.
fn arm64_recipe(p: &Project) -> String {
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    assert!(demo.contains("architectures: [amd64]"));
    p.write(
        "recipes/arm64.yaml",
        &support::with_qcow2(
            &demo.replace("architectures: [amd64]", "architectures: [arm64]"),
            "  size: 2G\n",
        ),
    );
    "recipes/arm64.yaml".into()
}

/// arm64 from packages on this (x86-64) host: Debian's arm64 root under
/// qemu-user, kiln's own initrd, systemd-boot on the ESP, no BIOS partition.
/// Read back, then booted under qemu-system-aarch64 with AAVMF through the
/// smoke's first boot ([`support::first_boot_only`]: the appliance's
/// first-boot unit, its bootstrap, the web container through a forwarded
/// port). A second assembly from the same root is byte-identical.
#[test]
fn builder1_arm64_disk_boots_uefi_with_kiln_initrd() {
    const ARM64_TOOLS: &[&str] = &[
        "mmdebstrap",
        "mkfs.ext4",
        "mkfs.vfat",
        "mcopy",
        "mtype",
        "qemu-img",
        "sgdisk",
        "gzip",
        "qemu-system-aarch64",
        "/usr/share/AAVMF/AAVMF_CODE.fd",
        "/usr/lib/binfmt.d/qemu-aarch64.conf",
        "arch-test",
    ];
    if !support::require(ARM64_TOOLS) || !support::arm64_programs_run() {
        return;
    }
    let _g = support::heavy_long();
    let p = Project::demo().share_cache();
    let recipe = arm64_recipe(&p);
    // The plan: an arm64 root without Debian's initramfs run, no GRUB.
    let plan = p.run(&["--recipe", &recipe, "--dry-run", "qcow2"]);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("--arch=arm64") && plan.contains("dpkg-divert"),
        "{plan}"
    );
    assert!(plan.contains("ESP+systemd-boot, kiln initrd"), "{plan}");
    p.run(&["--recipe", &recipe, "qcow2"]);
    let name = p
        .outputs()
        .into_iter()
        .find(|n| n.ends_with("-arm64.qcow2"))
        .unwrap_or_else(|| panic!("no arm64 qcow2 in output/: {:?}", p.outputs()));
    let q = p.path("output").join(&name);
    let check = sh("qemu-img", &["check", "-f", "qcow2", q.as_str()]);
    assert!(check.contains("No errors were found"), "{check}");

    // GPT: ESP and a root-arm64 partition (sgdisk code 8305), no BIOS boot.
    let (_d, dir) = support::tempdir("kiln-qcow2-");
    let raw = dir.join("disk.raw");
    support::qemu_convert(&q, "qcow2", &raw, "raw");
    let gpt = sh("sgdisk", &["-p", raw.as_str()]);
    assert!(
        gpt.contains("EF00") && gpt.contains("8305") && !gpt.contains("EF02"),
        "{gpt}"
    );
    let esp = format!("{raw}@@{}", support::partition_offset(&raw, 1));
    let mtype = |f: &str| sh("mtype", &["-i", &esp, &format!("::{f}")]);
    let entry = mtype("/loader/entries/demo.conf");
    assert!(
        entry.contains("linux /demo/linux")
            && entry.contains("initrd /demo/initrd")
            && entry.contains("root=UUID=")
            && entry.contains("console=ttyAMA0"),
        "{entry}"
    );
    assert!(mtype("/loader/loader.conf").contains("editor no"));
    // The loader is systemd-boot for arm64 (PE32+, machine 0xaa64).
    let loader = dir.join("BOOTAA64.EFI");
    sh(
        "mcopy",
        &["-i", &esp, "::/EFI/BOOT/BOOTAA64.EFI", loader.as_str()],
    );
    let pe = std::fs::read(&loader).unwrap();
    let off = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&pe[off..off + 4], b"PE\0\0");
    assert_eq!(u16::from_le_bytes([pe[off + 4], pe[off + 5]]), 0xaa64);
    // kiln's initrd: gzip'd newc with busybox, init and the root disk's modules.
    let initrd = dir.join("initrd");
    sh("mcopy", &["-i", &esp, "::/demo/initrd", initrd.as_str()]);
    let cpio = std::process::Command::new("gzip")
        .args(["-dc", initrd.as_str()])
        .output()
        .unwrap();
    assert!(cpio.status.success());
    let mut r = cpio.stdout.as_slice();
    let mut pos = 0;
    let mut names = Vec::new();
    while let Some(h) = xtask::scan::cpio::next(&mut r, &mut pos).unwrap() {
        r = &r[h.size as usize..];
        pos += h.size;
        xtask::scan::cpio::skip_pad(&mut r, &mut pos).unwrap();
        names.push(h.name);
    }
    for want in ["init", "bin/busybox", "dev/console"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("lib/modules/virtio_blk.ko"))
            || names.iter().any(|n| n.starts_with("lib/modules/ext4.ko")),
        "no root-disk modules in {names:?}"
    );

    // The recipe's smoke, one instance, its first boot.
    let once = "recipes/arm64-first-boot.yaml";
    p.write(
        once,
        &support::first_boot_only(&std::fs::read_to_string(p.path(&recipe)).unwrap()),
    );
    p.run(&[
        "--recipe",
        once,
        "smoke",
        q.as_str(),
        "--instances",
        "1",
        "--no-carrier",
    ]);
    let first = support::smoke_log(&p, &q, 1, "uefi", 1);
    assert!(
        first.contains("Kernel command line:") && !first.contains("initrd: "),
        "kiln's initrd complained:\n{}",
        tail(&first)
    );

    // Reproducible: a second project, same cached root, same bytes.
    let p2 = Project::demo();
    let recipe2 = arm64_recipe(&p2);
    support::link_tree(
        &p.cache_dir().join("qcow2-rootfs-arm64"),
        &p2.path("cache/qcow2-rootfs-arm64"),
    );
    p2.run(&["--recipe", &recipe2, "qcow2"]);
    let a = std::fs::read_to_string(format!("{q}.sha256")).unwrap();
    let b = std::fs::read_to_string(p2.path("output").join(format!("{name}.sha256"))).unwrap();
    assert_eq!(a, b, "two arm64 builds of the same inputs differ");
}

#[test]
fn arm64_with_bios_only_firmware_is_refused_before_work() {
    let p = Project::demo();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/bios.yaml",
        &support::with_qcow2(
            &demo.replace("architectures: [amd64]", "architectures: [arm64]"),
            "  firmware: bios\n",
        ),
    );
    let e = p.fail(&["--recipe", "recipes/bios.yaml", "--dry-run", "qcow2"]);
    assert!(
        e.contains("cannot boot arm64") && e.contains("firmware: uefi"),
        "{e}"
    );
    assert!(p.outputs().is_empty());
}
