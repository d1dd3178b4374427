//! `cargo xtask pi`: the demo's Raspberry Pi image, built once per test
//! binary ([`built`]) from the suite-wide cache (its arm64 root is the one
//! the arm64 qcow2 test builds), read back with real tools (sfdisk, mtools,
//! the lint), booted the way a Pi boots on qemu's `raspi3b` from its own SD
//! card (twice the image's size, so its root grows); broken by hand for the lint;
//! built again elsewhere for byte-identity.

mod support;

use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};
use support::{sh, stderr, tail, Project};

const PI_TOOLS: &[&str] = &[
    "mmdebstrap",
    "mkfs.ext4",
    "mkfs.vfat",
    "mcopy",
    "mmd",
    "sfdisk",
    "/usr/lib/binfmt.d/qemu-aarch64.conf",
    "arch-test",
];

fn ready() -> bool {
    support::require(PI_TOOLS) && support::arm64_programs_run()
}

struct Built {
    project: Project,
    /// The published `.img.zst`.
    published: Utf8PathBuf,
    /// It unpacked (sparse), for reading and copying.
    raw: Utf8PathBuf,
}

/// The demo's Pi image, built once in the suite-wide cache and unpacked.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        // A long test's slot: the raspi3b boot, the suite's longest, waits
        // for this build; as a short test's it would wait behind every
        // long test and then boot alone at the suite's end.
        let _g = support::heavy_long();
        let p = Project::demo_for_process().share_cache();
        p.run(&["pi"]);
        let name = p
            .outputs()
            .into_iter()
            .find(|n| n.ends_with("-arm64-pi.img.zst"))
            .unwrap_or_else(|| panic!("no Pi image in output/: {:?}", p.outputs()));
        let published = p.path("output").join(&name);
        support::assert_published_sha256(&published);
        let raw = p.path("pi.img");
        sh(
            "bash",
            &[
                "-c",
                r#"zstd -dcq "$1" | cp --sparse=always /dev/stdin "$2""#,
                "unzstd",
                published.as_str(),
                raw.as_str(),
            ],
        );
        Built {
            project: p,
            published,
            raw,
        }
    })
}

/// `sfdisk --json` of an image: (label, id, [(start, size, type)]).
fn table(img: &Utf8Path) -> (String, String, Vec<(u64, u64, String)>) {
    let j: serde_json::Value =
        serde_json::from_str(&sh("sfdisk", &["--json", img.as_str()])).unwrap();
    let t = &j["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (
        t["label"].as_str().unwrap().into(),
        t["id"].as_str().unwrap().into(),
        parts,
    )
}

/// The FAT boot partition of `img` for mtools (`IMG@@OFFSET`).
fn fat(img: &Utf8Path) -> String {
    let (_, _, parts) = table(img);
    format!("{img}@@{}", parts[0].0 * 512)
}

fn mtype(img: &Utf8Path, file: &str) -> String {
    sh("mtype", &["-i", &fat(img), &format!("::/{file}")])
}

/// The card as `dd` would write it, read back: an MBR (dos) table with the
/// disk id the build derived, FAT32 at 4 MiB, the Linux root after it to
/// the end of a power-of-two image; on the FAT partition the firmware pairs
/// of both board families, their device trees, the kernel, kiln's initrd,
/// `config.txt` and a one-line `cmdline.txt` naming partition 2 by
/// PARTUUID. `pi lint` passes on the published file.
#[test]
fn the_card_has_an_mbr_a_fat_boot_partition_and_an_ext4_root() {
    if !ready() {
        return;
    }
    let b = built();
    let len = std::fs::metadata(&b.raw).unwrap().len();
    assert!(len.is_power_of_two(), "{len} is not a power of two");
    let (label, id, parts) = table(&b.raw);
    assert_eq!(label, "dos");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        (parts[0].0, parts[0].1, parts[0].2.as_str()),
        (8192, 1048576, "c")
    );
    assert_eq!(parts[1].0, 8192 + 1048576);
    assert_eq!(
        parts[1].0 + parts[1].1,
        len / 512,
        "the root ends at the end of the card"
    );
    assert_eq!(parts[1].2, "83");
    let id = id.trim_start_matches("0x").to_string();
    let cmdline = mtype(&b.raw, "cmdline.txt");
    assert_eq!(cmdline.lines().count(), 1, "{cmdline:?}");
    assert!(
        cmdline.contains(&format!("root=PARTUUID={id}-02")) && cmdline.contains("console=tty1"),
        "{cmdline}"
    );
    let config = mtype(&b.raw, "config.txt");
    for want in [
        "arm_64bit=1",
        "enable_uart=1",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
        "[pi3]",
        "[pi4]",
    ] {
        assert!(config.contains(want), "{want} not in config.txt:\n{config}");
    }
    let dir = sh("mdir", &["-b", "-i", &fat(&b.raw), "::/"]);
    for want in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start4.elf",
        "fixup4.dat",
        "bcm2837-rpi-3-b.dtb",
        "bcm2711-rpi-4-b.dtb",
        "vmlinuz",
        "initrd.img",
        "overlays",
    ] {
        assert!(
            dir.lines()
                .any(|l| l.trim_end_matches('/').ends_with(&format!("/{want}"))),
            "{want} not on the card:\n{dir}"
        );
    }
    // The FAT is FAT32 with the recipe's label.
    let info = sh("minfo", &["-i", &fat(&b.raw), "::"]);
    assert!(
        info.contains("disk label=\"BOOT ") && info.contains("disk type=\"FAT32"),
        "{info}"
    );
    let out = b.project.run(&["pi", "lint", b.published.as_str()]);
    let said = support::stdout(&out);
    assert!(said.contains(": ok (boards pi3, pi4;"), "{said}");
}

/// The recipe's smoke of the card on qemu's `raspi3b` (the way a Pi 3B
/// boots: the kernel, device tree and initrd read out of its FAT partition,
/// `cmdline.txt` as is plus the PL011 console `ttyAMA0`, the card as its SD
/// card, no network, the config carrier written onto its FAT boot
/// partition), its first boot ([`support::first_boot_only`]): kiln's initrd finds
/// the root by PARTUUID, the appliance's first boot runs and takes the
/// carrier's setting. The smoke's card is twice the image's size, and first
/// boot grows the root partition to its end.
#[test]
fn the_card_boots_on_raspi3b_from_its_sd_card_and_grows_to_fill_it() {
    if !ready() || !support::require(&["qemu-system-aarch64"]) {
        return;
    }
    let b = built();
    let _g = support::heavy_long();
    let demo = std::fs::read_to_string(b.project.path("recipes/demo.yaml")).unwrap();
    let recipe = "recipes/pi-first-boot.yaml";
    b.project.write(recipe, &support::first_boot_only(&demo));
    b.project.run(&[
        "--recipe",
        recipe,
        "smoke",
        b.published.as_str(),
        "--instances",
        "1",
    ]);
    let first = support::smoke_log(&b.project, &b.published, 1, "raspi3b", 1);
    let report = std::fs::read_to_string(b.project.path("output/smoke/smoke.json")).unwrap();
    // Every check passed (the run succeeded), these among them: the carrier
    // on the card's FAT boot partition reached the appliance; one boot only.
    assert!(
        !b.project
            .path("output/smoke")
            .join(b.published.file_name().unwrap())
            .join("instance-1-raspi3b-boot-2.log")
            .exists(),
        "a second boot ran"
    );
    assert!(
        report.contains("carrier setting DEMO_API_TOKEN reached the appliance")
            && report.contains("skipped: qemu's raspi3b gives the guest no network"),
        "{report}"
    );
    assert!(
        first.contains("demo: provisioned DEMO_API_TOKEN sha256="),
        "{}",
        tail(&first)
    );
    assert!(first.contains("mmcblk0: p1 p2"), "{}", tail(&first));
    assert!(
        !first.contains("initrd: "),
        "kiln's initrd complained:\n{}",
        tail(&first)
    );
    assert!(
        !first.contains("First Boot Wizard") && !first.contains("Failed to start"),
        "{}",
        tail(&first)
    );

    // The smoke's card is twice the image's size: first boot grew the root
    // partition to its end.
    assert!(
        report.contains("the root partition grew to the end of a larger card"),
        "{report}"
    );
    assert!(
        first.contains("kiln-grow-root: /dev/mmcblk0p2 grown from"),
        "{}",
        tail(&first)
    );
}

/// A broken copy of the card for the lint: `edit` gets its FAT (`IMG@@OFF`)
/// and a scratch directory.
fn broken(b: &Built, dir: &Utf8Path, name: &str, edit: impl Fn(&str, &Utf8Path)) -> Utf8PathBuf {
    let img = dir.join(format!("{name}.img"));
    sh("cp", &["--sparse=always", b.raw.as_str(), img.as_str()]);
    edit(&fat(&img), dir);
    img
}

/// `pi lint` names each hand-made problem: a missing `start4.elf`, a
/// `fixup` without its `start`, a PARTUUID of another disk, a two-line
/// `cmdline.txt`.
#[test]
fn lint_names_what_would_not_boot() {
    if !ready() {
        return;
    }
    let b = built();
    let (_d, dir) = support::tempdir("kiln-pi-");
    let put = |fat: &str, dir: &Utf8Path, name: &str, text: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        sh(
            "mcopy",
            &["-o", "-i", fat, f.as_str(), &format!("::/{name}")],
        );
    };
    let cmdline = mtype(&b.raw, "cmdline.txt");
    let cases: Vec<(Utf8PathBuf, &str)> = vec![
        (
            broken(b, &dir, "no-start4", |fat, _| {
                sh("mdel", &["-i", fat, "::/start4.elf"]);
            }),
            "start4.elf is missing: the pi4 boards",
        ),
        (
            broken(b, &dir, "fixup", |fat, _| {
                sh("mdel", &["-i", fat, "::/start4x.elf"]);
            }),
            "fixup4x.dat has no matching start4x.elf",
        ),
        (
            broken(b, &dir, "partuuid", |fat, dir| {
                let other: Vec<&str> = cmdline
                    .split_whitespace()
                    .map(|w| {
                        if w.starts_with("root=") {
                            "root=PARTUUID=deadbeef-02"
                        } else {
                            w
                        }
                    })
                    .collect();
                put(fat, dir, "cmdline.txt", &format!("{}\n", other.join(" ")));
            }),
            "root=PARTUUID=deadbeef-02 is not a partition of this image",
        ),
        (
            broken(b, &dir, "two-lines", |fat, dir| {
                put(
                    fat,
                    dir,
                    "cmdline.txt",
                    &format!("{}\nquiet\n", cmdline.trim()),
                );
            }),
            "cmdline.txt has 2 lines",
        ),
    ];
    for (img, says) in cases {
        let e = b.project.fail(&["pi", "lint", img.as_str()]);
        assert!(e.contains(says), "{img}: expected `{says}` in:\n{e}");
        assert!(e.contains("would not boot on a Raspberry Pi"), "{e}");
    }
    // A GPT disk is not a Pi card.
    let gpt = dir.join("gpt.img");
    sh("truncate", &["-s", "64M", gpt.as_str()]);
    sh(
        "sgdisk",
        &["-n", "1:2048:+16M", "-t", "1:ef00", gpt.as_str()],
    );
    let e = b.project.fail(&["pi", "lint", gpt.as_str()]);
    assert!(e.contains("boots only from an MBR table"), "{e}");
}

/// The same commit built in another directory with another cache (only the
/// Debian root carried over, as a CI cache restore would) gives the same
/// bytes.
#[test]
fn a_second_build_elsewhere_is_byte_identical() {
    if !ready() {
        return;
    }
    let b = built();
    let _g = support::heavy();
    let p2 = Project::demo();
    let root = b.project.cache_dir().join("qcow2-rootfs-arm64");
    support::link_tree(&root, &p2.path("cache/qcow2-rootfs-arm64"));
    p2.run(&["pi"]);
    let name = b.published.file_name().unwrap();
    assert_eq!(
        support::sha256(&b.published),
        support::sha256(&p2.path("output").join(name)),
        "two Pi builds of the same inputs differ"
    );
}

/// The secret scan reads the card (zstd, MBR, ext4 root; FAT boot): a key
/// planted in the overlay stops the build before anything is published, and
/// the report names where in the image it is. A key copied onto the FAT
/// partition of a card is found by `scan`.
#[test]
fn the_secret_scan_reads_the_card() {
    if !ready() {
        return;
    }
    let b = built();
    let _g = support::heavy();
    let p = Project::demo().share_cache();
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    p.write("overlay/root/.ssh/id_ed25519", key);
    let out = p.kiln().args(["pi"]).output().unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("root/.ssh/id_ed25519"), "{}", tail(&e));
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());

    let (_d, dir) = support::tempdir("kiln-pi-");
    let img = broken(b, &dir, "planted", |fat, dir| {
        let f = dir.join("id_rsa");
        std::fs::write(&f, key).unwrap();
        sh("mcopy", &["-i", fat, f.as_str(), "::/id_rsa"]);
    });
    let out = b
        .project
        .kiln()
        .args(["scan", img.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!("{}{}", support::stdout(&out), stderr(&out));
    assert!(said.contains("id_rsa"), "{}", tail(&said));
}

/// Recipe errors before any work, and a card too small for the root after
/// the root is counted: each says what to set; nothing lands in `output/`.
#[test]
fn bad_pi_settings_say_what_to_set() {
    let p = Project::demo();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    for (setting, says) in [
        ("pi: {size: 1030M}", "multiple of 4 MiB"),
        ("pi: {boot_label: boot}", "upper-case"),
        ("pi: {boards: [pi2]}", "pi2"),
        ("pi: {compression: gzip}", "gzip"),
    ] {
        p.write("recipes/bad.yaml", &demo.replace("pi: {}", setting));
        let e = p.fail(&["--recipe", "recipes/bad.yaml", "--dry-run", "pi"]);
        assert!(e.contains(says), "{setting}: {e}");
    }
    p.write("recipes/none.yaml", &demo.replace("pi: {}", ""));
    let e = p.fail(&["--recipe", "recipes/none.yaml", "--dry-run", "pi"]);
    assert!(e.contains("add `pi: {}`"), "{e}");
    assert!(p.outputs().is_empty());
    if !ready() {
        return;
    }
    let _g = support::heavy();
    let p = Project::demo().share_cache();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/tiny.yaml",
        &demo.replace("pi: {}", "pi: {size: 256M}"),
    );
    let e = p.fail(&["--recipe", "recipes/tiny.yaml", "pi"]);
    assert!(
        e.contains("pi.size (256 MiB) is too small") && e.contains("set `pi.size: "),
        "{e}"
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
}

/// With cloud-init in the image (listed, or asked for by the recipe's
/// `seed.cloud_init`), the plan writes the Pi's NoCloud seed and the image
/// step reads it (for the boot partition) and writes the drop-in naming the
/// boot partition's label; without, neither.
#[test]
fn with_cloud_init_the_seed_rides_on_the_boot_partition() {
    let p = Project::demo();
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let mut packages: Vec<&str> = xtask::recipe::qcow2::DEFAULT_PACKAGES.to_vec();
    packages.push("cloud-init");
    p.write(
        "recipes/ci.yaml",
        &support::with_qcow2_packages(&demo, &packages),
    );
    let steps = |recipe: &str| -> Vec<serde_json::Value> {
        let out = p.run(&["--recipe", recipe, "--dry-run", "--json", "pi"]);
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        plan["steps"].as_array().unwrap().clone()
    };
    let image_step = |steps: &[serde_json::Value]| -> String {
        steps
            .iter()
            .find(|s| s["name"] == "pi-image")
            .expect("a pi-image step")
            .to_string()
    };
    let with = steps("recipes/ci.yaml");
    assert!(
        with.iter().any(|s| s["name"] == "seed-pi"),
        "no seed-pi step"
    );
    let img = image_step(&with);
    assert!(
        img.contains("\"seed_dir\":\"@CACHE@/seed-pi/") || img.contains("/seed-pi/"),
        "{img}"
    );
    assert!(
        img.contains("\"carrier\":{\"boot-partition\":{\"label\":\"BOOT\"}}"),
        "{img}"
    );
    // The demo's seed section alone puts cloud-init into the root.
    let demo_steps = steps("recipes/demo.yaml");
    assert!(demo_steps.iter().any(|s| s["name"] == "seed-pi"));
    // Neither the package nor a seed section: no seed, no drop-in.
    let seed = "seed:\n  cloud_init:\n    provision_env: nocloud/provision.env\n    network_config: nocloud/network-config\n";
    assert!(demo.contains(seed), "the demo's seed section moved");
    // (The demo's smoke carrier needs the seed's provision.env: a recipe
    // without a seed has a smoke section without a carrier.)
    let no_seed = support::with_smoke(&demo.replace(seed, ""), "smoke: {}\n");
    p.write("recipes/no-seed.yaml", &no_seed);
    let without = steps("recipes/no-seed.yaml");
    assert!(!without.iter().any(|s| s["name"] == "seed-pi"));
    assert!(image_step(&without).contains("\"seed_dir\":null"));
    assert!(image_step(&without).contains("\"carrier\":null"));
}

/// A mirror without the firmware's component: mmdebstrap's error comes with
/// the advice to add it (a stand-in mmdebstrap fails the way apt does).
#[test]
fn a_mirror_without_the_firmware_component_is_named() {
    if !ready() {
        return;
    }
    let p = Project::demo();
    let bin = p.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("mmdebstrap");
    // Only the root with the Pi's firmware fails; the demo's container
    // image root is built by the real mmdebstrap.
    let real = xtask::tools::registry::which("mmdebstrap").expect("mmdebstrap is installed");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'mmdebstrap 1.5.5'; exit 0; fi\n\
             case \"$*\" in *raspi-firmware*) \
             echo 'E: Unable to locate package raspi-firmware' >&2; exit 1;; esac\n\
             exec {} \"$@\"\n",
            real
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = p
        .kiln()
        .env("PATH", support::path_with(&bin))
        .args(["--no-install", "pi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("Unable to locate package raspi-firmware")
            && e.contains("hint: raspi-firmware is in Debian's `non-free-firmware` component")
            && e.contains("main non-free-firmware"),
        "{}",
        tail(&e)
    );
    assert!(p.outputs().is_empty());
    p.assert_no_leftovers();
}

/// `pi.compression: none` publishes the raw card (sparse), which lints and
/// is the same card as the `.img.zst` unpacked; only the compression step
/// runs again.
#[test]
fn an_uncompressed_card_is_the_same_card() {
    if !ready() {
        return;
    }
    let b = built();
    let _g = support::heavy();
    let p = Project::demo().share_cache();
    // The same recipe file (its name is in the seed's user-data, which the
    // card carries), with the one setting changed.
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/demo.yaml",
        &demo.replace("pi: {}", "pi: {compression: none}"),
    );
    let out = p.run(&["--json", "pi"]);
    let ran = support::outcomes(&out);
    assert_eq!(ran["pi-image"], "cached", "{ran:?}");
    let name = p
        .outputs()
        .into_iter()
        .find(|n| n.ends_with("-arm64-pi.img"))
        .unwrap_or_else(|| panic!("no raw Pi image in output/: {:?}", p.outputs()));
    let raw = p.path("output").join(&name);
    assert_eq!(support::sha256(&raw), support::sha256(&b.raw));
    support::assert_published_sha256(&raw);
    p.run(&["pi", "lint", raw.as_str()]);
}
