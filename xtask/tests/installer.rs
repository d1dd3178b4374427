//! The offline installer ISO (`iso.mode: installer`, the demo's default):
//! built once per test process and read back with real tools, then booted
//! under qemu (TCG) with OVMF and SeaBIOS onto throw-away disks.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use support::{sh, Project};
use xtask::iso::installer::{DONE_MARKER, FAIL_MARKER};
use xtask::tools::qemu_system::{Boot, Firmware};
use xtask::tools::{run_until, Watch};

const BUILD_TOOLS: &[&str] = &[
    "xorriso",
    "mmdebstrap",
    "grub-mkimage",
    "mkfs.vfat",
    "mcopy",
];
const BOOT_TOOLS: &[&str] = &["qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd"];
/// An install under TCG on a shared two-core machine, with room to spare.
const INSTALL_LIMIT: Duration = Duration::from_secs(2400);

struct Built {
    project: Project,
    iso: Utf8PathBuf,
}

/// `cargo xtask iso` of the demo once (the demo recipe has no base ISO,
/// so it builds the installer), on the suite's shared cache.
fn built() -> Option<&'static Built> {
    if !xtask::testing::require(BUILD_TOOLS) {
        return None;
    }
    static B: OnceLock<Built> = OnceLock::new();
    Some(B.get_or_init(|| {
        let p = Project::demo_for_process().share_cache();
        p.run(&["iso"]);
        let name = p
            .outputs()
            .into_iter()
            .find(|n| n.ends_with(".iso"))
            .expect("an ISO in output/");
        let iso = p.path("output").join(name);
        Built { project: p, iso }
    }))
}

/// The payload partition as `sgdisk` reads the ISO's GPT: (number, first
/// byte, bytes), found by its name; its type must be kiln's payload type.
fn payload_partition(iso: &Utf8Path) -> (u32, u64, u64) {
    let table = sh("sgdisk", &["-p", iso.as_str()]);
    let number: u32 = table
        .lines()
        .find(|l| l.trim_end().ends_with(xtask::iso::installer::PAYLOAD_NAME))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no payload partition in the ISO's GPT:\n{table}"));
    let info = sh("sgdisk", &["-i", &number.to_string(), iso.as_str()]);
    assert!(
        info.to_lowercase()
            .contains(xtask::iso::installer::PAYLOAD_TYPE),
        "{info}"
    );
    let sector = |key: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in {info}"))
    };
    let (first, last) = (sector("First sector:"), sector("Last sector:"));
    (number, first * 512, (last + 1 - first) * 512)
}

fn extract(iso: &Utf8Path, from: &str, to: &Utf8Path) {
    xtask::tools::run(&xtask::tools::xorriso::extract(
        iso,
        &[(from.to_string(), to.to_string())],
    ))
    .unwrap();
}

/// The payload partition after the ISO file system (as `sgdisk` reads the
/// GPT kiln extended, which it verifies clean) passes `sha256sum -c` of the
/// checksum in the ISO and decompresses to the appliance's disk (its GPT;
/// its size on the install entry's command line with the payload's
/// sha256); the ISO has BIOS and UEFI El Torito entries and the ESP as an
/// appended partition.
#[test]
fn the_iso_is_hybrid_and_carries_the_verified_disk() {
    let Some(b) = built() else { return };
    // `two_builds_are_byte_identical` publishes the ISO again.
    let _g = support::heavy();
    support::assert_published_sha256(&b.iso);
    let report = sh(
        "xorriso",
        &[
            "-no_rc",
            "-indev",
            b.iso.as_str(),
            "-report_el_torito",
            "plain",
            "-report_system_area",
            "plain",
        ],
    );
    assert!(
        report.contains("El Torito boot img :   1  BIOS"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img :   2  UEFI"),
        "{report}"
    );
    assert!(report.contains("GPT partition name :   2"), "{report}");
    let (_d, dir) = support::tempdir("kiln-installer-");
    let verified = sh("sgdisk", &["-v", b.iso.as_str()]);
    assert!(verified.contains("No problems found"), "{verified}");
    let (_, start, len) = payload_partition(&b.iso);
    {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(&b.iso).unwrap();
        f.seek(std::io::SeekFrom::Start(start)).unwrap();
        let mut zst = std::fs::File::create(dir.join("disk.img.zst")).unwrap();
        std::io::copy(&mut f.take(len), &mut zst).unwrap();
    }
    extract(
        &b.iso,
        "/kiln/disk.img.zst.sha256",
        &dir.join("disk.img.zst.sha256"),
    );
    extract(&b.iso, "/boot/grub/grub.cfg", &dir.join("grub.cfg"));
    let raw = dir.join("disk.img");
    sh(
        "zstd",
        &["-dq", dir.join("disk.img.zst").as_str(), "-o", raw.as_str()],
    );
    let checked = std::process::Command::new("sha256sum")
        .args(["-c", "disk.img.zst.sha256"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        checked.status.success()
            && String::from_utf8_lossy(&checked.stdout).contains("disk.img.zst: OK"),
        "{checked:?}"
    );
    let recorded = std::fs::read_to_string(dir.join("disk.img.zst.sha256")).unwrap();
    let sha = recorded.split_whitespace().next().unwrap();
    let raw_bytes = std::fs::metadata(&raw).unwrap().len();
    let gpt = sh("sgdisk", &["-p", raw.as_str()]);
    for name in ["bios", "esp", "root"] {
        assert!(gpt.contains(name), "{gpt}");
    }
    // Sized to its content, far below the qcow2's 20 GiB.
    assert!(std::fs::metadata(&raw).unwrap().len() < 4 << 30);
    let cfg = std::fs::read_to_string(dir.join("grub.cfg")).unwrap();
    for entry in [
        "--id install",
        "'Boot installed system'",
        "'Rescue shell'",
        "set default=install",
    ] {
        assert!(cfg.contains(entry), "{cfg}");
    }
    let install = cfg
        .lines()
        .find(|l| l.contains("kiln.action=install"))
        .expect("the install entry's linux line");
    for arg in [
        format!("kiln.image={sha}"),
        format!("kiln.bytes={raw_bytes}"),
    ] {
        assert!(
            install.split_whitespace().any(|w| w == arg),
            "{arg}: {install}"
        );
    }
}

/// The ISO step and its boot parts' step run again from the same inputs
/// write the same bytes.
#[test]
fn two_builds_are_byte_identical() {
    let Some(b) = built() else { return };
    let _g = support::heavy();
    let p = &b.project;
    let (_d, dir) = support::tempdir("kiln-installer-");
    let first = dir.join("first.iso");
    std::fs::copy(&b.iso, &first).unwrap();
    // Drop the ISO step's cache entry (the one the published file links
    // to) and the boot parts' entry it was built from, so both steps run
    // again on the cached disk, root and tools.
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&b.iso).unwrap().ino();
    let name = b.iso.file_name().unwrap();
    let entry = std::fs::read_dir(p.cache_dir().join("iso-amd64"))
        .unwrap()
        .map(|e| Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap())
        .find(|d| std::fs::metadata(d.join(name)).is_ok_and(|m| m.ino() == ino))
        .expect("the cache entry of the published ISO");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join(".kiln-step.json")).unwrap()).unwrap();
    let boot_key = record["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "installer-boot-amd64")
        .and_then(|i| i["key"].as_str())
        .expect("the ISO step's record names its boot parts' step");
    let boot = p
        .cache_dir()
        .join("installer-boot-amd64")
        .join(&boot_key[..20]);
    assert!(boot.join("initrd.img").is_file(), "{boot}");
    std::fs::remove_dir_all(&entry).unwrap();
    std::fs::remove_dir_all(&boot).unwrap();
    let out = support::stderr(&p.run(&["iso"]));
    assert!(out.contains("installer-boot-amd64: running"), "{out}");
    assert!(out.contains("iso-amd64: running"), "{out}");
    assert_eq!(support::sha256(&first), support::sha256(&b.iso));
}

fn blank_disk(dir: &Utf8Path, name: &str, size: &str) -> Utf8PathBuf {
    let d = dir.join(name);
    sh("qemu-img", &["create", "-f", "raw", d.as_str(), size]);
    d
}

/// Boot the installer from `iso` (a CD-ROM, or with `usb` a USB stick)
/// with `disk` attached; returns what `run_until` saw for `patterns`.
fn boot_installer(
    firmware: Firmware,
    iso: &Utf8Path,
    disk: &Utf8Path,
    dir: &Utf8Path,
    usb: bool,
    patterns: &[&str],
) -> Watch {
    let mut b = Boot::new(firmware).disk(disk, "raw");
    if firmware == Firmware::Uefi {
        b = b.vars(&support::uefi_vars(dir, xtask::recipe::Arch::Amd64));
    }
    let mut cmd = if usb {
        b.cmd().args([
            "-drive".to_string(),
            format!("if=none,id=stick,format=raw,readonly=on,file={iso}"),
            "-device".into(),
            "qemu-xhci".into(),
            "-device".into(),
            "usb-storage,drive=stick,bootindex=0".into(),
        ])
    } else {
        b.cdrom(iso).cmd()
    };
    cmd = cmd.args(["-nic", "none"]);
    run_until(&cmd, patterns, INSTALL_LIMIT).unwrap()
}

/// `cargo xtask smoke` of the installer ISO, two instances: #1 installs
/// from the CD-ROM under OVMF onto a blank virtio disk, #2 under SeaBIOS
/// onto its own; each disk then boots alone through the demo recipe's
/// checks (first boot, the web container over HTTP, the identity report;
/// #1 with the config carrier and a second boot), and the two installed
/// appliances have distinct identities. The ISO is not written.
#[test]
fn installs_under_uefi_and_bios_and_the_disk_boots() {
    if built().is_none() || !xtask::testing::require(BOOT_TOOLS) {
        return;
    }
    let _g = support::heavy_long();
    let b = built().unwrap();
    let p = &b.project;
    let before = support::sha256(&b.iso);
    let out = p.run(&[
        "smoke",
        b.iso.as_str(),
        "--firmware",
        "both",
        "--instances",
        "2",
    ]);
    let err = support::stderr(&out);
    assert!(err.contains("smoke: all "), "{err}");
    let dir = p.path("output/smoke");
    let (_, failures, cases) = support::junit(&dir.join("junit.xml"));
    assert_eq!(failures, 0, "{cases:#?}");
    for (guest, check) in [
        ("#1 uefi install", format!("console /{DONE_MARKER}/")),
        ("#2 bios install", format!("console /{DONE_MARKER}/")),
        (
            "#1 uefi boot 1",
            "console /demo: first boot complete/".into(),
        ),
        (
            "#2 bios boot 1",
            "console /demo: first boot complete/".into(),
        ),
        (
            "#1 uefi boot 1",
            "GET /healthz (port 80) -> 200, body /^ok/".into(),
        ),
        (
            "#1 uefi boot 1",
            "carrier setting DEMO_API_TOKEN reached the appliance".into(),
        ),
        (
            "#1 uefi boot 2",
            "identity unchanged since the first boot".into(),
        ),
        ("", "2 instances have distinct identities".into()),
    ] {
        support::case(&cases, guest, &check);
    }
    let logs = dir.join(b.iso.file_name().unwrap());
    let install = std::fs::read_to_string(logs.join("instance-1-uefi-install.log")).unwrap();
    assert!(
        install.contains("kiln-installer: installing ") && !install.contains(FAIL_MARKER),
        "{}",
        support::tail(&install)
    );
    // Both CD-ROM installs open the tray before the reboot.
    for log in ["instance-1-uefi-install.log", "instance-2-bios-install.log"] {
        let install = std::fs::read_to_string(logs.join(log)).unwrap();
        assert!(
            install.contains("kiln-installer: ejected the install medium /dev/sr0"),
            "{log}:\n{}",
            support::tail(&install)
        );
    }
    assert!(logs.join("instance-2-bios-boot-1.log").is_file());
    assert_eq!(support::sha256(&b.iso), before, "smoke wrote the ISO");
}

/// The ISO written to a raw file used as a USB stick boots the installer
/// under OVMF: it finds its medium on the stick and starts writing onto the
/// virtio disk. (The write itself and the installed disk's boot are the
/// CD-ROM installs' test; a full install from the stick costs CI minutes
/// and proves nothing more about the stick.)
#[test]
fn the_installer_boots_from_a_usb_stick_under_uefi() {
    if built().is_none() || !xtask::testing::require(BOOT_TOOLS) {
        return;
    }
    let _g = support::heavy();
    let b = built().unwrap();
    let (_d, dir) = support::tempdir("kiln-installer-");
    let disk = blank_disk(&dir, "target.raw", "4G");
    let started = "kiln-installer: installing ";
    match boot_installer(Firmware::Uefi, &b.iso, &disk, &dir, true, &[started]) {
        Watch::Matched { output } => {
            let medium = output
                .lines()
                .find(|l| l.contains("kiln-installer: install medium: "))
                .unwrap_or_else(|| panic!("no install medium named:\n{}", support::tail(&output)));
            assert!(medium.contains("/dev/sd"), "not the USB stick: {medium}");
            let target = output.lines().find(|l| l.contains(started)).unwrap();
            assert!(target.contains("onto /dev/vda"), "{target}");
        }
        other => panic!("the installer did not start from the USB stick: {other:?}"),
    }
}

/// A refusal: the console shows the failure with `reason`, qemu is still
/// running (nothing rebooted), and the disk's first MiB is as it was.
fn refuses(firmware: Firmware, iso: &Utf8Path, disk: &Utf8Path, dir: &Utf8Path, reason: &str) {
    let before = support::sha256(disk);
    match boot_installer(firmware, iso, disk, dir, false, &[FAIL_MARKER, reason]) {
        Watch::Matched { output } => {
            assert!(!output.contains(DONE_MARKER), "{}", support::tail(&output))
        }
        other => panic!("no refusal `{reason}`: {other:?}"),
    }
    if reason.contains("partitions") || reason.contains("no target disk") {
        assert_eq!(before, support::sha256(disk), "the disk was written to");
    } else {
        let mut head = vec![0u8; 1 << 20];
        std::io::Read::read_exact(&mut std::fs::File::open(disk).unwrap(), &mut head).unwrap();
        assert!(
            head.iter().all(|&b| b == 0),
            "a partition table was written"
        );
    }
}

/// A disk that holds partitions is left untouched; a disk smaller than
/// the image is not picked; a damaged payload stops before any partition
/// table is written.
#[test]
fn refusals_leave_the_disk_unbootable_and_do_not_reboot() {
    let Some(b) = built() else { return };
    if !xtask::testing::require(BOOT_TOOLS) || !xtask::testing::require(&["sgdisk"]) {
        return;
    }
    let _g = support::heavy();
    let (_d, dir) = support::tempdir("kiln-installer-");
    let parted = blank_disk(&dir, "parted.raw", "4G");
    sh("sgdisk", &["-n", "1:0:+100M", parted.as_str()]);
    let small = blank_disk(&dir, "small.raw", "256M");
    // A damaged payload: bytes in the middle of the zstd stream changed.
    let damaged = dir.join("damaged.iso");
    std::fs::copy(&b.iso, &damaged).unwrap();
    let (_, start, size) = payload_partition(&damaged);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&damaged)
            .unwrap();
        f.write_all_at(&[0x55; 4096], start + size / 2).unwrap();
    }
    let target = blank_disk(&dir, "target.raw", "4G");
    std::thread::scope(|s| {
        let d = dir.clone();
        let (iso, p2, sm) = (&b.iso, &parted, &small);
        let a = s.spawn(move || refuses(Firmware::Bios, iso, p2, &d, "holds partitions"));
        let d2 = dir.clone();
        let c = s.spawn(move || refuses(Firmware::Bios, iso, sm, &d2, "no target disk"));
        a.join().unwrap();
        c.join().unwrap();
    });
    refuses(
        Firmware::Bios,
        &damaged,
        &target,
        &dir,
        "nothing was made bootable",
    );
}

/// The payload carries zstd's content checksum, so the installer's
/// `zstd -d` verifies every byte it writes, and its sha256 is the written
/// file's (taken on the writer's thread), padding and all: `zstd -lv`
/// names XXH64, and a changed byte in the stream makes `zstd -t` fail. (The installer bench,
/// `cargo xtask bench --case installer`, builds the demo's ISO and installs
/// it under TCG: too heavy for a test.)
#[test]
fn the_payload_carries_a_content_checksum() {
    if !support::require(&["zstd"]) {
        return;
    }
    let (_d, dir) = support::tempdir("kiln-installer-");
    let raw = dir.join("disk.raw");
    // Bytes that do not compress (xorshift), so the stream's middle is in
    // zstd's frame, not in the padding after it.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let text: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&raw, &text).unwrap();
    let zst = dir.join("disk.img.zst");
    let payload =
        xtask::iso::installer::compress_into(&raw, std::fs::File::create(&zst).unwrap()).unwrap();
    assert_eq!(payload.bytes, text.len() as u64);
    assert_eq!(payload.sha256, support::sha256(&zst));
    assert_eq!(payload.zst_bytes, std::fs::metadata(&zst).unwrap().len());
    // Padded to whole CD blocks by a skippable frame `zstd` reads past.
    assert_eq!(payload.zst_bytes % 2048, 0);
    let listing = sh("zstd", &["-lv", zst.as_str()]);
    assert!(listing.contains("XXH64"), "{listing}");
    sh("zstd", &["-tq", zst.as_str()]);
    let mut bytes = std::fs::read(&zst).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    let bad = dir.join("bad.zst");
    std::fs::write(&bad, &bytes).unwrap();
    let out = std::process::Command::new("zstd")
        .args(["-tq", bad.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "zstd accepted a changed payload");
}

/// The payload appended after xorriso's image is found and read back by
/// the installer's own shell part ([`FIND_PAYLOAD`], run by busybox as in
/// the initramfs, the ISO file standing for the medium) and by `sgdisk`,
/// which finds the GPT kiln extended clean; without the payload partition
/// the installer stops. A small hybrid ISO built here, no appliance.
#[test]
fn the_installer_finds_its_payload_partition_on_the_medium() {
    if !support::require(&[
        "xorriso",
        "zstd",
        "sgdisk",
        "/bin/busybox",
        xtask::tools::grub::BOOT_HYBRID_IMG,
    ]) {
        return;
    }
    use xtask::iso::installer::{add_payload_partition, compress_into, FIND_PAYLOAD, PAYLOAD_TYPE};
    let (_d, dir) = support::tempdir("kiln-installer-");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    // Big enough for xorriso to patch its GRUB boot info (zeros: nothing boots it).
    std::fs::write(tree.join("boot/grub/eltorito.img"), vec![0u8; 64 << 10]).unwrap();
    let esp = dir.join("esp.img");
    std::fs::write(&esp, vec![0u8; 1 << 20]).unwrap();
    let iso = dir.join("small.iso");
    xtask::tools::run(&xtask::tools::xorriso::installer_iso(
        &tree,
        &esp,
        "SMALL",
        &iso,
        1_700_000_000,
    ))
    .unwrap();
    let bare = dir.join("bare.iso");
    std::fs::copy(&iso, &bare).unwrap();
    // The "disk": a tar with a machine-id planted in it, for the scan.
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
    )
    .unwrap();
    let filler: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(root.join("filler"), &filler).unwrap();
    let raw = dir.join("disk.raw");
    sh(
        "tar",
        &["-cf", raw.as_str(), "-C", root.as_str(), "etc", "filler"],
    );
    let zst = dir.join("disk.img.zst");
    let payload = compress_into(&raw, std::fs::File::create(&zst).unwrap()).unwrap();
    // After xorriso's image, as the ISO step writes it.
    let at = std::fs::metadata(&iso).unwrap().len();
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&iso).unwrap();
        std::io::copy(&mut std::fs::File::open(&zst).unwrap(), &mut f).unwrap();
    }
    add_payload_partition(&iso, at, payload.zst_bytes, 1_700_000_000).unwrap();
    let verified = sh("sgdisk", &["-v", iso.as_str()]);
    assert!(verified.contains("No problems found"), "{verified}");
    // xorriso reads the extended system area as it wrote it: the same MBR
    // geometry (the protective entry's CHS end kept in it), the GPT's new range.
    let report = |iso: &Utf8Path| {
        sh(
            "xorriso",
            &[
                "-no_rc",
                "-indev",
                iso.as_str(),
                "-report_system_area",
                "plain",
            ],
        )
    };
    let (before, after) = (report(&bare), report(&iso));
    for key in [
        "MBR heads per cyl",
        "MBR secs per head",
        "System area summary",
    ] {
        let line = |r: &str| r.lines().find(|l| l.starts_with(key)).map(str::to_string);
        assert!(line(&before).is_some(), "{before}");
        assert_eq!(line(&before), line(&after), "{before}\n{after}");
    }
    let (number, start, len) = payload_partition(&iso);
    assert_eq!(len, payload.zst_bytes);
    assert_eq!(start % 2048, 0);
    assert_eq!(std::fs::metadata(&iso).unwrap().len() % 2048, 0);
    // The installer's part, with `/dev/$medium` naming the ISO file.
    let ty = xtask::qcow2::gpt::Guid::parse(PAYLOAD_TYPE)
        .unwrap()
        .to_disk();
    let find = |medium: &Utf8Path, out: &Utf8Path| {
        let script = format!(
            "say() {{ echo \"kiln-installer: $*\"; }}\n\
             stop() {{ echo \"FAILED: $*\"; exit 3; }}\n\
             medium=..{medium}\nPAYLOAD_TYPE={}\n{FIND_PAYLOAD}payload | zstd -dcq > {out}\n",
            hex::encode(ty)
        );
        std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", &script])
            .output()
            .unwrap()
    };
    let back = dir.join("back.raw");
    let ran = find(&iso, &back);
    let said = String::from_utf8_lossy(&ran.stdout).to_string();
    assert!(
        ran.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        said.contains(&format!(
            "payload: partition {number} of /dev/..{iso}, {len} bytes"
        )),
        "{said}"
    );
    assert_eq!(support::sha256(&back), support::sha256(&raw));
    // The secret scan reads the payload partition like any partition
    // appended after the ISO file system: the planted machine-id is found.
    let scanned = xtask::scan::scan_artifact(&iso, "small.iso", &Default::default());
    assert!(
        scanned.findings.iter().any(|f| f.rule == "machine-id"
            && f.path.contains(&format!("p{number}"))
            && f.path.ends_with("etc/machine-id")),
        "{scanned:#?}"
    );
    // xorriso's image alone has no payload partition: the installer stops.
    let ran = find(&bare, &dir.join("none.raw"));
    let said = String::from_utf8_lossy(&ran.stdout).to_string();
    assert_eq!(ran.status.code(), Some(3), "{said}");
    assert!(said.contains("has no payload partition"), "{said}");
}
