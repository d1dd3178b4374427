//! `cargo xtask ova`: builds real OVAs from disks made here, reads them back
//! with the system's tar, qemu-img and xmllint, lints good and hand-broken
//! OVAs, checks reproducibility, boots the extracted VMDK under OVMF.

mod support;

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use support::{sh, Project};

const TOOLS: &[&str] = &[
    "qemu-img",
    "tar",
    "xmllint",
    "sgdisk",
    "sha256sum",
    "vmdkinfo",
];
const DISK_BYTES: u64 = 64 << 20;

/// Deterministic bytes that do not compress away (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write_at(path: &Utf8Path, offset: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

/// A 64 MiB raw GPT disk: an EFI system partition (optionally holding
/// `esp_image` at its start) and a Linux partition with scattered data.
fn make_disk(dir: &Utf8Path, name: &str, esp_image: Option<&Utf8Path>) -> Utf8PathBuf {
    let disk = dir.join(name);
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(DISK_BYTES).unwrap();
    drop(f);
    sh(
        "sgdisk",
        &[
            "-n1:2048:+16M",
            "-t1:ef00",
            "-n2:0:0",
            "-t2:8300",
            disk.as_str(),
        ],
    );
    if let Some(esp) = esp_image {
        write_at(&disk, 2048 * 512, &std::fs::read(esp).unwrap());
    }
    for (i, off) in [20u64 << 20, 33 << 20, 50 << 20].iter().enumerate() {
        write_at(&disk, *off, &noise(i as u64 + 7, 1 << 20));
    }
    write_at(&disk, 40 << 20, b"kiln ova test payload");
    disk
}

fn the_ova(p: &Project) -> Utf8PathBuf {
    let outs = p.outputs();
    let ova: Vec<_> = outs.iter().filter(|n| n.ends_with(".ova")).collect();
    assert_eq!(ova.len(), 1, "{outs:?}");
    p.path("output").join(ova[0])
}

fn extract(ova: &Utf8Path, dir: &Utf8Path) {
    std::fs::create_dir_all(dir).unwrap();
    sh("tar", &["-xf", ova.as_str(), "-C", dir.as_str()]);
}

/// A field of the descriptor's hardware `Item` of one CIM resource type
/// (3 CPU, 4 memory, 6 SCSI controller, 10 NIC, ...).
fn item(ovf: &Utf8Path, resource_type: u32, field: &str) -> String {
    xpath(
        ovf,
        &format!(
            "string(//*[local-name()='Item'][*[local-name()='ResourceType']='{resource_type}']/*[local-name()='{field}'])"
        ),
    )
}

fn xpath(file: &Utf8Path, expr: &str) -> String {
    sh("xmllint", &["--xpath", expr, file.as_str()])
        .trim()
        .to_string()
}

fn attr(file: &Utf8Path, element: &str, name: &str) -> String {
    xpath(
        file,
        &format!("string(//*[local-name()='{element}']/@*[local-name()='{name}'])"),
    )
}

#[test]
fn builds_an_ova_that_reads_back_with_system_tools() {
    if !support::require(TOOLS) {
        return;
    }
    let p = Project::demo();
    let disk = make_disk(&p.root, "disk.raw", None);
    p.run(&["ova", "--disk", disk.as_str()]);
    let ova = the_ova(&p);
    let name = ova.file_name().unwrap().to_string();
    assert!(
        name.starts_with("demo-") && name.ends_with("-amd64.ova"),
        "{name}"
    );
    assert_eq!(p.outputs(), [name.clone(), format!("{name}.sha256")]);
    support::assert_published_sha256(&ova);

    // Member order, ownership, modes, no directories: as GNU tar lists them.
    let listing = sh("tar", &["--numeric-owner", "-tvf", ova.as_str()]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(names, ["demo.ovf", "demo.mf", "demo-disk1.vmdk"]);
    // The tests' epoch as a date (tar lists in UTC here, as in CI).
    let day = format!(" {} ", &xtask::export::rfc3339(support::epoch())[..10]);
    for l in &lines {
        assert!(l.starts_with("-rw-r--r-- 0/0 "), "{l}");
        assert!(l.contains(&day), "mtime is SOURCE_DATE_EPOCH: {l}");
    }

    let x = p.path("x");
    extract(&ova, &x);
    let vmdk = x.join("demo-disk1.vmdk");
    let ovf = x.join("demo.ovf");
    let info: serde_json::Value = serde_json::from_str(&sh(
        "qemu-img",
        &["info", "--output=json", "-f", "vmdk", vmdk.as_str()],
    ))
    .unwrap();
    assert_eq!(info["virtual-size"], DISK_BYTES, "{info}");
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"], true,
        "{info}"
    );
    sh("qemu-img", &["check", "-f", "vmdk", vmdk.as_str()]);

    // A second, independent VMDK reader (libvmdk) agrees: stream-optimized,
    // the right size, and the content identifier kiln wrote in place of
    // qemu-img's random one (a corrupt descriptor rewrite fails here).
    let vi = sh("vmdkinfo", &[vmdk.as_str()]);
    assert!(vi.contains("Stream optimized"), "{vi}");
    assert!(vi.contains(&format!("({DISK_BYTES} bytes)")), "{vi}");
    let descriptor =
        String::from_utf8_lossy(&std::fs::read(&vmdk).unwrap()[512..4096]).into_owned();
    let cid = descriptor
        .lines()
        .find_map(|l| l.strip_prefix("CID="))
        .expect("a CID= line in the descriptor");
    assert!(
        vi.contains(&format!("Content identifier:\t\t0x{cid}")),
        "vmdkinfo reads another CID than {cid}:\n{vi}"
    );

    // The VMDK holds exactly the source disk.
    let back = p.path("back.raw");
    support::qemu_convert(&vmdk, "vmdk", &back, "raw");
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&disk).unwrap(),
        "round trip differs"
    );

    // The descriptor: well-formed, and says what the recipe and the disk say.
    sh("xmllint", &["--noout", ovf.as_str()]);
    let vmdk_len = std::fs::metadata(&vmdk).unwrap().len();
    assert_eq!(attr(&ovf, "File", "href"), "demo-disk1.vmdk");
    assert_eq!(attr(&ovf, "File", "size"), vmdk_len.to_string());
    assert_eq!(attr(&ovf, "Disk", "capacity"), DISK_BYTES.to_string());
    assert_eq!(
        attr(&ovf, "OperatingSystemSection", "osType"),
        "debian12_64Guest"
    );
    assert_eq!(attr(&ovf, "OperatingSystemSection", "id"), "96");
    assert_eq!(
        xpath(&ovf, "string(//*[local-name()='VirtualSystemType'])"),
        "vmx-14"
    );
    assert_eq!(item(&ovf, 3, "VirtualQuantity"), "2");
    assert_eq!(item(&ovf, 4, "VirtualQuantity"), "4096");
    assert_eq!(item(&ovf, 10, "ResourceSubType"), "E1000");
    assert_eq!(item(&ovf, 6, "ResourceSubType"), "lsilogic");
    // The disk is UEFI-only (GPT + ESP, no BIOS boot partition): EFI firmware.
    assert_eq!(attr(&ovf, "Config", "value"), "efi");
    assert_eq!(
        xpath(&ovf, "string(//*[local-name()='Product'])"),
        "kiln demo appliance"
    );
    assert_eq!(
        xpath(&ovf, "string(//*[local-name()='ProductUrl'])"),
        "https://demo.example/"
    );
    let text = std::fs::read_to_string(&ovf).unwrap();
    assert!(
        !text.to_lowercase().contains("uuid"),
        "no UUIDs (an importer assigns them):\n{text}"
    );
    assert_eq!(
        xpath(&ovf, "count(//*[local-name()='Item'][*[local-name()='ResourceType']='10']/*[local-name()='Address'])"),
        "0",
        "no MAC address (an importer assigns one per VM)"
    );

    // The manifest matches what sha256sum computes.
    let mf = std::fs::read_to_string(x.join("demo.mf")).unwrap();
    let want = format!(
        "SHA256(demo.ovf)= {}\nSHA256(demo-disk1.vmdk)= {}\n",
        support::sha256(&ovf),
        support::sha256(&vmdk)
    );
    assert_eq!(mf, want);

    let out = p.run(&["ova", "lint", ova.as_str()]);
    assert!(
        support::stdout(&out).contains(": ok"),
        "{}",
        support::stdout(&out)
    );

    // Unchanged inputs: both steps come from the cache.
    let again = p.run(&["ova", "--disk", disk.as_str()]);
    let err = support::stderr(&again);
    assert!(
        err.contains("ova-vmdk-amd64: cached") && err.contains("ova-amd64: cached"),
        "{err}"
    );
}

#[test]
fn two_builds_are_byte_identical() {
    if !support::require(TOOLS) {
        return;
    }
    let (a, b) = (Project::demo(), Project::demo());
    let disk = make_disk(&a.root, "disk.raw", None);
    a.run(&["ova", "--disk", disk.as_str()]);
    b.run(&["ova", "--disk", disk.as_str()]);
    let (oa, ob) = (the_ova(&a), the_ova(&b));
    assert!(
        std::fs::read(&oa).unwrap() == std::fs::read(&ob).unwrap(),
        "{oa} and {ob} differ"
    );
    // A forced rebuild (qemu-img runs again, with a new random CID) too.
    b.run(&["--force", "ova", "--disk", disk.as_str()]);
    assert!(
        std::fs::read(&oa).unwrap() == std::fs::read(the_ova(&b)).unwrap(),
        "forced rebuild differs"
    );
}

fn retar(dir: &Utf8Path, out: &Utf8Path, members: &[&str]) {
    let mut args = vec![
        "--format=ustar",
        "--owner=0",
        "--group=0",
        "-cf",
        out.as_str(),
        "-C",
        dir.as_str(),
    ];
    args.extend(members);
    sh("tar", &args);
}

#[test]
fn lint_rejects_hand_broken_ovas() {
    if !support::require(TOOLS) {
        return;
    }
    let p = Project::demo();
    let disk = make_disk(&p.root, "disk.raw", None);
    p.run(&["ova", "--disk", disk.as_str()]);
    let ova = the_ova(&p);
    let good = p.path("good");
    extract(&ova, &good);
    let (ovf, mf, vmdk) = ("demo.ovf", "demo.mf", "demo-disk1.vmdk");
    let lint_fails = |file: &Utf8Path, want: &str| {
        let err = p.fail(&["ova", "lint", file.as_str()]);
        assert!(err.contains(want), "expected `{want}` in:\n{err}");
    };

    // Re-archived by GNU tar in the right order: still passes (the linter is
    // not tied to kiln's own writer).
    let retarred = p.path("retarred.ova");
    retar(&good, &retarred, &[ovf, mf, vmdk]);
    p.run(&["ova", "lint", retarred.as_str()]);

    let wrong_order = p.path("order.ova");
    retar(&good, &wrong_order, &[vmdk, ovf, mf]);
    lint_fails(&wrong_order, "must come first");
    let mf_in_middle = p.path("mf-middle.ova");
    std::fs::copy(good.join(vmdk), good.join("extra.vmdk")).unwrap();
    retar(&good, &mf_in_middle, &[ovf, vmdk, mf, "extra.vmdk"]);
    lint_fails(&mf_in_middle, "must follow the .ovf");
    lint_fails(
        &mf_in_middle,
        "`extra.vmdk` is in the archive but not in the descriptor's References",
    );

    let missing = p.path("missing.ova");
    retar(&good, &missing, &[ovf, mf]);
    lint_fails(
        &missing,
        "`demo-disk1.vmdk` (id file1) is not in the archive",
    );

    // A bad digest: one hex digit of the VMDK's line changed.
    let bad = p.path("bad-digest");
    support::copy_tree(&good, &bad);
    let text = std::fs::read_to_string(bad.join(mf)).unwrap();
    let i = text.find("vmdk)= ").unwrap() + 7;
    let flipped = if &text[i..i + 1] == "0" { "1" } else { "0" };
    std::fs::write(
        bad.join(mf),
        format!("{}{flipped}{}", &text[..i], &text[i + 1..]),
    )
    .unwrap();
    let bad_digest = p.path("bad-digest.ova");
    retar(&bad, &bad_digest, &[ovf, mf, vmdk]);
    lint_fails(&bad_digest, "digest mismatch for `demo-disk1.vmdk`");

    // Wrong declared size (and capacity), with the manifest kept consistent,
    // so only the size checks can catch it.
    let sized = p.path("wrong-size");
    support::copy_tree(&good, &sized);
    let len = std::fs::metadata(good.join(vmdk)).unwrap().len();
    let text = std::fs::read_to_string(sized.join(ovf)).unwrap();
    let text = text
        .replace(
            &format!("ovf:size=\"{len}\""),
            &format!("ovf:size=\"{}\"", len + 1),
        )
        .replace(
            &format!("ovf:capacity=\"{DISK_BYTES}\""),
            &format!("ovf:capacity=\"{}\"", DISK_BYTES * 2),
        );
    std::fs::write(sized.join(ovf), text).unwrap();
    let mft = std::fs::read_to_string(good.join(mf)).unwrap();
    let first = mft.lines().next().unwrap().to_string();
    let mft = mft.replace(
        &first,
        &format!("SHA256(demo.ovf)= {}", support::sha256(&sized.join(ovf))),
    );
    std::fs::write(sized.join(mf), mft).unwrap();
    let wrong_size = p.path("wrong-size.ova");
    retar(&sized, &wrong_size, &[ovf, mf, vmdk]);
    let err = p.fail(&["ova", "lint", wrong_size.as_str()]);
    assert!(
        err.contains(&format!("declares ovf:size {}", len + 1)),
        "{err}"
    );
    assert!(err.contains("has a virtual size of"), "{err}");
    assert!(!err.contains("digest mismatch"), "{err}");

    // Not an archive at all.
    let junk = p.write("junk.ova", "hello\n");
    lint_fails(&junk, "USTAR");

    // SHA1 manifest: built on request; rejected when SHA256 is asked (the default).
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}\nova:\n  digest: sha1\n"),
    );
    p.run(&["ova", "--disk", disk.as_str()]);
    let sha1_ova = the_ova(&p);
    let x = p.path("sha1");
    extract(&sha1_ova, &x);
    let mf1 = std::fs::read_to_string(x.join(mf)).unwrap();
    assert!(
        mf1.starts_with("SHA1(demo.ovf)= ") && mf1.lines().all(|l| l.starts_with("SHA1(")),
        "{mf1}"
    );
    lint_fails(
        &sha1_ova,
        "uses SHA1 for `demo.ovf`, but SHA256 is required",
    );
    p.run(&["ova", "lint", "--digest", "sha1", sha1_ova.as_str()]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    if !support::require(TOOLS) {
        return;
    }
    let p = Project::demo();
    let err = p.fail(&["ova", "--disk", "no-such-disk.raw"]);
    assert!(
        err.contains("no-such-disk.raw") && err.contains("does not exist"),
        "{err}"
    );
    let text = p.write("notes.txt", "just some text, not a disk\n");
    let err = p.fail(&["ova", "--disk", text.as_str()]);
    assert!(err.contains("is not a disk image"), "{err}");
    // Without --disk the OVA wraps the qcow2 builder's disk: its steps join the plan.
    let plan = support::stdout(&p.run(&["--dry-run", "ova"]));
    for step in ["qcow2-disk-amd64", "ova-vmdk-amd64", "ova-amd64"] {
        assert!(
            plan.contains(&format!(". {step} ")),
            "{step} missing from:\n{plan}"
        );
    }

    let disk = make_disk(&p.root, "disk.raw", None);
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}\nova:\n  os_type: windows99Guest\n"),
    );
    let err = p.fail(&["ova", "--disk", disk.as_str()]);
    assert!(
        err.contains("recipes/demo.yaml")
            && err.contains("windows99Guest")
            && err.contains("debian12_64Guest"),
        "{err}"
    );
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}\nova:\n  nic: rtl8139\n"),
    );
    let err = p.fail(&["ova", "--disk", disk.as_str()]);
    assert!(
        err.contains("recipes/demo.yaml") && err.contains("rtl8139") && err.contains("vmxnet3"),
        "{err}"
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
    p.assert_no_leftovers();
}

#[test]
fn recipe_options_reach_the_descriptor() {
    if !support::require(TOOLS) {
        return;
    }
    let p = Project::demo();
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}\nova:\n  cpus: 4\n  memory_mb: 2048\n  nic: vmxnet3\n  os_type: ubuntu64Guest\n  virtual_system_type: vmx-19\n"),
    );
    let disk = make_disk(&p.root, "disk.raw", None);
    p.run(&["ova", "--disk", disk.as_str(), "--firmware", "bios"]);
    let x = p.path("x");
    extract(&the_ova(&p), &x);
    let ovf = x.join("demo.ovf");
    assert_eq!(
        attr(&ovf, "OperatingSystemSection", "osType"),
        "ubuntu64Guest"
    );
    assert_eq!(attr(&ovf, "OperatingSystemSection", "id"), "94");
    assert_eq!(
        xpath(&ovf, "string(//*[local-name()='VirtualSystemType'])"),
        "vmx-19"
    );
    assert_eq!(item(&ovf, 10, "ResourceSubType"), "VmxNet3");
    assert_eq!(item(&ovf, 3, "VirtualQuantity"), "4");
    assert_eq!(item(&ovf, 4, "VirtualQuantity"), "2048");
    assert_eq!(
        attr(&ovf, "Config", "value"),
        "",
        "--firmware bios: no EFI config"
    );
}

/// The VMDK taken out of the OVA boots: OVMF finds the ESP on it and runs
/// the EFI program there (a GRUB image that prints a line).
#[test]
fn extracted_vmdk_boots_under_ovmf() {
    let ovmf = xtask::tools::qemu_system::OVMF_CODE;
    if !support::require(&[
        "qemu-img",
        "tar",
        "sgdisk",
        "grub-mkimage",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "qemu-system-x86_64",
        ovmf,
    ]) {
        return;
    }
    let _g = support::heavy();
    let p = Project::demo();
    let marker = "kiln-ova: the EFI program on the VMDK ran";
    let cfg = p.write("embed.cfg", &format!("echo \"{marker}\"\nhalt\n"));
    let efi = p.path("BOOTX64.EFI");
    sh(
        "grub-mkimage",
        &[
            "-O",
            "x86_64-efi",
            "-o",
            efi.as_str(),
            "-c",
            cfg.as_str(),
            "-p",
            "/EFI/BOOT",
            "normal",
            "echo",
            "halt",
        ],
    );
    let esp = p.path("esp.img");
    sh("mkfs.vfat", &["-C", esp.as_str(), "16384"]);
    sh("mmd", &["-i", esp.as_str(), "::/EFI", "::/EFI/BOOT"]);
    sh(
        "mcopy",
        &["-i", esp.as_str(), efi.as_str(), "::/EFI/BOOT/BOOTX64.EFI"],
    );
    let disk = make_disk(&p.root, "disk.raw", Some(&esp));
    p.run(&["ova", "--disk", disk.as_str()]);
    let x = p.path("x");
    extract(&the_ova(&p), &x);
    let vars = support::uefi_vars(&p.root, xtask::recipe::Arch::Amd64);
    let mut boot = xtask::tools::qemu_system::Boot::new(xtask::tools::qemu_system::Firmware::Uefi)
        .disk(&x.join("demo-disk1.vmdk"), "vmdk")
        .vars(&vars);
    boot.memory_mib = 512;
    boot.snapshot = true;
    support::boot(&boot.cmd(), &[marker], Duration::from_secs(240));
}

/// The demo appliance end to end: the qcow2 builder's UEFI-only disk, wrapped
/// by `cargo xtask ova` (no --disk), asks for EFI firmware, and the VMDK
/// taken out of the OVA boots under OVMF to the appliance's first-boot line.
#[test]
fn demo_ova_boots_to_first_boot() {
    let ovmf = xtask::tools::qemu_system::OVMF_CODE;
    let mut need: Vec<&str> = TOOLS.to_vec();
    need.extend(support::qcow2_build_tools());
    need.extend(["qemu-system-x86_64", ovmf]);
    if !support::require(&need) {
        return;
    }
    let _g = support::heavy();
    let p = Project::demo().share_cache();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/small.yaml",
        &support::with_qcow2(&demo, "  size: 2G\n  firmware: uefi\n"),
    );
    p.run(&["--recipe", "recipes/small.yaml", "ova"]);
    let ova = the_ova(&p);
    p.run(&["ova", "lint", ova.as_str()]);
    let x = p.path("x");
    extract(&ova, &x);
    let ovf = x.join("demo.ovf");
    assert_eq!(
        attr(&ovf, "Config", "value"),
        "efi",
        "a UEFI-only disk asks for EFI firmware"
    );
    assert_eq!(attr(&ovf, "Disk", "capacity"), (2u64 << 30).to_string());
    // The smoke boots the OVA's VMDK (taken out of the OVA) under OVMF, as
    // its descriptor asks: the appliance's first boot and its web container.
    // One boot: the second boot and two instances are the qcow2 smoke's.
    // The config carrier rides along as an operator attaches cidata.img to
    // a VM: a FAT disk labelled CIDATA, the VM's second disk; the first
    // boot must report the digest of the token the smoke put on it.
    let text = std::fs::read_to_string(p.path("recipes/small.yaml")).unwrap();
    let smoke =
        "smoke:\n  boot:\n    - console: \"demo: first boot complete\"\n      within: 420\n    \
                 - console: \"demo: bootstrap ok\"\n      within: 240\n    \
                 - http: /healthz\n      body: \"^ok\"\n      within: 240\n  \
                 carrier:\n    set: [DEMO_API_TOKEN]\n    \
                 report: 'demo: provisioned (?P<name>\\w+) sha256=(?P<digest>[0-9a-f]{64})'\n";
    p.write("recipes/small.yaml", &support::with_smoke(&text, smoke));
    let run = p.run(&[
        "--recipe",
        "recipes/small.yaml",
        "smoke",
        ova.as_str(),
        "--instances",
        "1",
        "--carrier-as",
        "disk",
    ]);
    let err = support::stderr(&run);
    assert!(
        err.contains("booting under tcg with the config carrier as a disk"),
        "{err}"
    );
    let (_, failures, cases) = support::junit(&p.path("output/smoke/junit.xml"));
    assert_eq!(failures, 0, "{cases:#?}");
    support::case(
        &cases,
        "#1 uefi boot 1",
        "carrier setting DEMO_API_TOKEN reached the appliance",
    );
    let out = support::smoke_log(&p, &ova, 1, "uefi", 1);
    assert!(
        out.contains("demo: first boot complete")
            && out.contains("demo: provisioned DEMO_API_TOKEN sha256=")
            && out.contains("demo: minted DEMO_DB_PASSWORD")
            && !out.contains("not applied"),
        "{}",
        support::tail(&out)
    );
}

/// qemu-img writes its random CID with `%x`, so it has 1 to 8 digits; the
/// rewrite gives the same bytes whatever the length was.
#[test]
fn cid_rewrite_does_not_depend_on_the_random_cid_length() {
    if !support::require(&["qemu-img", "sgdisk"]) {
        return;
    }
    let p = Project::empty();
    let disk = make_disk(&p.root, "disk.raw", None);
    let a = p.path("a/d.vmdk");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            disk.as_str(),
            a.as_str(),
        ],
    );
    let b = p.path("b/d.vmdk");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::copy(&a, &b).unwrap();
    // Make b's CID 1 digit long, as qemu-img does for a small random value,
    // the way qemu rewrites it (vmdk_write_cid): the shorter text, its NUL,
    // then the old text's last bytes left behind in the region.
    let mut bytes = std::fs::read(&b).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\nCID=").unwrap() + 5;
    let end = at + bytes[at..].iter().position(|&c| c == b'\n').unwrap();
    let region_end = at + bytes[at..].iter().position(|&c| c == 0).unwrap();
    let old = bytes[..region_end].to_vec();
    let mut desc = old.clone();
    desc.splice(at..end, b"a".iter().copied());
    let n = desc.len();
    assert!(end - at >= 2, "qemu-img wrote a 1-digit CID (odds 2^-28)");
    desc.push(0);
    desc.extend_from_slice(&old[n + 1..]);
    assert_eq!(desc.len(), region_end);
    assert_ne!(desc[n + 1..].iter().filter(|&&c| c != 0).count(), 0);
    bytes[..region_end].copy_from_slice(&desc);
    std::fs::write(&b, &bytes).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..4096]).contains("\nCID=a\n"));
    for f in [&a, &b] {
        xtask::ova::vmdk::set_cid(f, 0x0123abcd).unwrap();
    }
    let (ra, rb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(ra == rb, "the rewritten VMDKs differ");
    assert!(String::from_utf8_lossy(&ra[..4096]).contains("\nCID=0123abcd\n"));
    sh("qemu-img", &["check", "-f", "vmdk", a.as_str()]);
}

/// `ova.converter: vmdk-convert`: VMware's converter writes the VMDK (from a
/// raw disk directly, from a qcow2 through a raw copy that is not kept); its
/// random content ids are set from the disk, so builds are identical; the
/// OVA lints and its VMDK reads back, with qemu-img and with libvmdk, to the
/// source disk's bytes; VMware's parser reads the default (qemu-img) VMDK too.
#[test]
fn vmware_converter_writes_a_reproducible_vmdk() {
    if !support::require(&[TOOLS, &["curl", "make", "gcc", "xz", "vmdkinfo"]].concat()) {
        return;
    }
    let bin = support::vmdk_convert_dir();
    let run = |p: &Project, args: &[&str]| {
        let out = p
            .kiln()
            .env("PATH", support::path_with(&bin))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?}:\n{}",
            support::stderr(&out)
        );
        support::stdout(&out)
    };
    let projects = [Project::demo(), Project::demo(), Project::demo()];
    for p in &projects {
        let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
        p.write(
            "recipes/demo.yaml",
            &format!("{recipe}\nova:\n  converter: vmdk-convert\n"),
        );
    }
    let [a, b, c] = &projects;
    let disk = make_disk(&a.root, "disk.raw", None);
    let plan = run(a, &["--dry-run", "ova", "--disk", disk.as_str()]);
    assert!(
        plan.contains(&format!("$ vmdk-convert {disk} ")),
        "the plan names VMware's converter:\n{plan}"
    );
    assert!(!plan.contains("subformat=streamOptimized"), "{plan}");

    run(a, &["ova", "--disk", disk.as_str()]);
    run(b, &["--force", "ova", "--disk", disk.as_str()]);
    let (oa, ob) = (the_ova(a), the_ova(b));
    assert!(
        std::fs::read(&oa).unwrap() == std::fs::read(&ob).unwrap(),
        "{oa} and {ob} differ"
    );
    a.run(&["ova", "lint", oa.as_str()]);

    let x = a.path("x");
    extract(&oa, &x);
    let vmdk = x.join("demo-disk1.vmdk");
    let info = sh("vmdkinfo", &[vmdk.as_str()]);
    assert!(info.contains("Stream optimized"), "{info}");
    let desc = sh(
        bin.join("vmdk-convert").as_str(),
        &["--get-descriptor", vmdk.as_str()],
    );
    let cid = desc
        .lines()
        .find_map(|l| l.strip_prefix("CID="))
        .unwrap_or_else(|| panic!("no CID in\n{desc}"));
    assert!(
        desc.contains("ddb.longContentID = \"") && desc.contains(&format!("{cid}\"")),
        "the long content id ends in the CID:\n{desc}"
    );
    let back = x.join("back.raw");
    support::qemu_convert(&vmdk, "vmdk", &back, "raw");
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&disk).unwrap(),
        "the VMDK does not read back to the source disk"
    );

    // VMware's parser also reads the VMDK qemu-img writes (the default).
    let d = Project::demo();
    d.run(&["ova", "--disk", disk.as_str()]);
    let z = d.path("z");
    extract(&the_ova(&d), &z);
    let info = sh(
        bin.join("vmdk-convert").as_str(),
        &["-i", z.join("demo-disk1.vmdk").as_str()],
    );
    let info: serde_json::Value = serde_json::from_str(info.trim())
        .unwrap_or_else(|e| panic!("vmdk-convert -i: {e}: {info}"));
    assert_eq!(info["capacity"], DISK_BYTES, "{info}");

    // A qcow2 source goes through a raw copy, which the step does not keep.
    let q = c.path("disk.qcow2");
    support::qemu_convert(&disk, "raw", &q, "qcow2");
    run(c, &["ova", "--disk", q.as_str()]);
    let y = c.path("y");
    extract(&the_ova(c), &y);
    let back = y.join("back.raw");
    support::qemu_convert(&y.join("demo-disk1.vmdk"), "vmdk", &back, "raw");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&disk).unwrap());
    let leftovers: Vec<_> = walkdir::WalkDir::new(c.cache_dir())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "disk.raw")
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(
        leftovers.is_empty(),
        "raw copies left in the cache: {leftovers:?}"
    );
    c.assert_no_leftovers();
}
