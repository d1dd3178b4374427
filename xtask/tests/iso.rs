//! `cargo xtask iso` against a fabricated Ubuntu-like hybrid ISO: boot records
//! preserved (xorriso reports, MBR code, EFI partition bytes), files added and
//! read back, GRUB patched, reproducible, bad inputs, URL download with
//! resume, and boots under SeaBIOS and OVMF.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use camino::{Utf8Path, Utf8PathBuf};
use support::iso_fixture::{self, Fixture, Layout, Options};
use support::{sh, sha256, Project};

const ARGS: &str = r"autoinstall ds=nocloud\;s=/cdrom/nocloud/";

fn tools() -> bool {
    support::require(iso_fixture::TOOLS)
}

/// The one `.iso` in output/.
fn built_iso(p: &Project) -> Utf8PathBuf {
    let isos: Vec<_> = p
        .outputs()
        .into_iter()
        .filter(|f| f.ends_with(".iso"))
        .collect();
    assert_eq!(isos.len(), 1, "{:?}", p.outputs());
    p.path("output").join(&isos[0])
}

fn build(p: &Project, f: &Fixture) -> Utf8PathBuf {
    p.run(&[
        "iso",
        "--base-iso",
        f.iso.as_str(),
        "--base-sha256",
        &f.sha256,
    ]);
    built_iso(p)
}

fn report(iso: &Utf8Path, what: &str, how: &str) -> Vec<String> {
    sh("xorriso", &["-no_rc", "-indev", iso.as_str(), what, how])
        .lines()
        .map(str::to_string)
        .collect()
}

/// xorriso's `-report_el_torito as_mkisofs` and `-report_system_area plain`
/// of `iso`, with what must differ between a base and its remaster masked
/// ([`mask`]).
fn reports(iso: &Utf8Path) -> Vec<String> {
    let mut lines = report(iso, "-report_el_torito", "as_mkisofs");
    lines.extend(report(iso, "-report_system_area", "plain"));
    lines.iter().map(|l| mask(l)).collect()
}

/// One report line with the image's own path, block addresses and sizes,
/// dates and GUIDs masked; everything else (options, cylinder alignment,
/// partition table kinds, partition numbers, names, types and flags, the
/// length of each interval) stays. Intervals keep their length:
/// `--interval:local_fs:6448d-14639d::'base.iso'` becomes
/// `--interval:local_fs:8192d::'ISO'`.
fn mask(line: &str) -> String {
    use regex::Regex;
    let interval = Regex::new(r"--interval:local_fs:(\d+)([ds]?)-(\d+)([ds]?):").unwrap();
    let l = interval.replace_all(line, |c: &regex::Captures| {
        let (a, b): (u64, u64) = (c[1].parse().unwrap(), c[3].parse().unwrap());
        assert_eq!(c[2], c[4], "{line}");
        format!("--interval:local_fs:{}{}:", b - a + 1, &c[2])
    });
    let l = Regex::new(r"(--interval:[^']*):'[^']*'")
        .unwrap()
        .replace_all(&l, "$1:'ISO'");
    let l = Regex::new(r"_start_\d+s_")
        .unwrap()
        .replace_all(&l, "_start_LBA_");
    let l = Regex::new(r"--modification-date='\d+'")
        .unwrap()
        .replace_all(&l, "--modification-date=DATE");
    let Some((key, values)) = l.split_once(" : ") else {
        return l.into_owned();
    };
    let mut v: Vec<&str> = values.split_whitespace().collect();
    // Which values are positions, sizes or GUIDs, by line.
    let masked: &[usize] = match key.trim_end() {
        "ISO image size/512" | "GPT disk GUID" | "GPT lba range" => &[0, 1, 2],
        "GPT partition GUID" => &[1],
        "GPT start and size" => &[1, 2],
        "MBR partition" => &[3, 4],
        _ => &[],
    };
    for &i in masked {
        if let Some(w) = v.get_mut(i) {
            *w = "#";
        }
    }
    format!("{key} : {}", v.join(" "))
}

/// Masked reports equal, line by line, with the differing lines named.
fn assert_reports_equal(base: &[String], out: &[String]) {
    let differ: Vec<String> = (0..base.len().max(out.len()))
        .filter(|&i| base.get(i) != out.get(i))
        .map(|i| format!("line {i}: base {:?} / output {:?}", base.get(i), out.get(i)))
        .collect();
    assert!(
        differ.is_empty(),
        "reports differ:\n{}\nbase:\n{}",
        differ.join("\n"),
        base.join("\n")
    );
}

/// (start, size) in 512-byte blocks of GPT partition `n`.
fn gpt_part(iso: &Utf8Path, n: u32) -> (u64, u64) {
    for l in report(iso, "-report_system_area", "plain") {
        if let Some(rest) = l.strip_prefix("GPT start and size :") {
            let w: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            if w[0] == n as u64 {
                return (w[1], w[2]);
            }
        }
    }
    panic!("no GPT partition {n} in {iso}");
}

fn bytes(iso: &Utf8Path, start: u64, len: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(iso).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut v = vec![0; len as usize];
    f.read_exact(&mut v).unwrap();
    v
}

fn extract(iso: &Utf8Path, path: &str) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("f");
    sh(
        "xorriso",
        &[
            "-no_rc",
            "-osirrox",
            "on",
            "-indev",
            iso.as_str(),
            "-extract",
            path,
            dest.to_str().unwrap(),
        ],
    );
    std::fs::read(dest).unwrap()
}

fn text(iso: &Utf8Path, path: &str) -> String {
    String::from_utf8(extract(iso, path)).unwrap()
}

/// The one cache entry of a step.
fn step_out(p: &Project, step: &str) -> Utf8PathBuf {
    let d = p.path("cache").join(step);
    let e: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

#[test]
fn remaster_keeps_boot_records_and_adds_files() {
    if !tools() {
        return;
    }
    let f = iso_fixture::build(&Options::default());
    let p = Project::demo();
    let out = build(&p, &f);
    let name = out.file_name().unwrap();
    assert!(
        name.starts_with("demo-") && name.ends_with("-amd64.iso"),
        "{name}"
    );
    // sha256sum -c with the basename.
    support::assert_published_sha256(&out);

    // Boot records: BIOS + UEFI El Torito entries, MBR type, partition offset,
    // GPT partition types all as in the base.
    let (rb, ro) = (reports(&f.iso), reports(&out));
    assert!(
        rb.iter().any(|l| l.starts_with("-b ")) && rb.iter().any(|l| l.starts_with("-e ")),
        "{rb:?}"
    );
    assert!(
        rb.iter().any(|l| l.starts_with("Partition offset   : 16")),
        "{rb:?}"
    );
    assert!(
        rb.iter()
            .any(|l| l == "GPT type GUID      : 2 28732ac11ff8d211ba4b00a0c93ec93b"),
        "{rb:?}"
    );
    assert_reports_equal(&rb, &ro);
    // A session was added to a copy of the base: past the system area and
    // the volume descriptors (at LBA 16 and, for the partition, at LBA 32),
    // every byte of the base is where it was; the image is longer.
    let (nb, no) = (
        std::fs::metadata(&f.iso).unwrap().len(),
        std::fs::metadata(&out).unwrap().len(),
    );
    assert!(no > nb, "{no} <= {nb}");
    assert!(
        bytes(&f.iso, 48 * 2048, nb - 48 * 2048) == bytes(&out, 48 * 2048, nb - 48 * 2048),
        "the base's bytes moved"
    );
    // MBR boot code (before the boot-info patch field at 432) identical.
    assert_eq!(bytes(&f.iso, 0, 432), bytes(&out, 0, 432));
    // The EFI partition's bytes identical.
    let (pb, po) = (gpt_part(&f.iso, 2), gpt_part(&out, 2));
    assert_eq!(pb.1, po.1);
    assert_eq!(
        bytes(&f.iso, pb.0 * 512, pb.1 * 512),
        bytes(&out, po.0 * 512, po.1 * 512)
    );

    // Added files, byte for byte what the seed and stage steps produced.
    let seed = step_out(&p, "seed-iso");
    let stage = step_out(&p, "stage-amd64");
    assert_eq!(
        extract(&out, "/nocloud/user-data"),
        std::fs::read(seed.join("user-data")).unwrap()
    );
    assert_eq!(
        extract(&out, "/nocloud/meta-data"),
        std::fs::read(seed.join("meta-data")).unwrap()
    );
    assert_eq!(
        extract(&out, "/kiln/overlay.tar.zst"),
        std::fs::read(stage.join("overlay.tar.zst")).unwrap()
    );
    assert!(text(&out, "/.disk/info").contains("demo"));
    // Untouched files stay.
    assert_eq!(
        extract(&out, "/casper/vmlinuz"),
        std::fs::read("/vmlinuz").unwrap()
    );

    // GRUB: the exact argument string, `\;` included, in both files.
    for cfg in ["/boot/grub/grub.cfg", "/boot/grub/loopback.cfg"] {
        let t = text(&out, cfg);
        let line = format!("\tlinux\t/casper/vmlinuz  console=ttyS0,115200 {ARGS} ---\n");
        assert_eq!(t.matches(&line).count(), 2, "{cfg}:\n{t}");
        assert!(
            t.contains("menuentry 'Install kiln demo appliance' --id 'kiln-demo' {"),
            "{t}"
        );
        assert!(
            t.contains("if search --no-floppy --file --set=installed '/etc/demo/installed'; then"),
            "{t}"
        );
        assert!(t.contains("configfile ($installed)/boot/grub/grub.cfg"));
        assert!(
            t.contains("set timeout=5\n") && t.contains("set default=kiln-demo\n"),
            "{t}"
        );
    }
    // md5sum.txt lists the changed and added files with their new sums.
    let md5 = text(&out, "/md5sum.txt");
    for f in [
        "boot/grub/grub.cfg",
        "nocloud/user-data",
        "kiln/overlay.tar.zst",
        ".disk/info",
        "casper/vmlinuz",
    ] {
        let got = md5::compute_hex(&extract(&out, &format!("/{f}")));
        assert!(
            md5.contains(&format!("{got}  ./{f}\n")),
            "{f} {got}:\n{md5}"
        );
    }
}

/// The base's whole system area survives the remaster, on a base shaped
/// like Ubuntu 22.04/24.04 (appended EFI partition, cylinder alignment off,
/// trailing `Gap1` partition) and on an older one (EFI image inside the ISO,
/// cylinder alignment on): the full reports of base and output are equal
/// once masked, for the image kiln builds (a session added where xorriso
/// can, else the image written whole) and for the image written whole.
#[test]
fn output_reports_equal_the_base_on_both_layouts() {
    if !tools() {
        return;
    }
    for (layout, align) in [(Layout::Appended, "off"), (Layout::Embedded, "on")] {
        let f = iso_fixture::build(&Options {
            layout,
            ..Default::default()
        });
        let base = reports(&f.iso);
        // What the comparison must cover is in the masked base report.
        for want in [
            format!("-partition_cyl_align {align}"),
            "GPT partname local : 3 Gap1".to_string(),
            "GPT type GUID      : 2 28732ac11ff8d211ba4b00a0c93ec93b".to_string(),
        ] {
            assert!(base.contains(&want), "{layout:?}: no {want:?} in {base:#?}");
        }
        let summary = base
            .iter()
            .find(|l| l.starts_with("System area summary:"))
            .unwrap();
        assert!(
            summary.contains("protective-msdos-label")
                && summary.ends_with(&format!("cyl-align-{align} GPT")),
            "{summary}"
        );
        let p = Project::demo();
        let run = p.run(&[
            "iso",
            "--base-iso",
            f.iso.as_str(),
            "--base-sha256",
            &f.sha256,
        ]);
        // Which path kiln took: xorriso cannot add a session to a base whose
        // GPT exposes an EFI image inside the ISO, so that one is written whole.
        let whole_written = support::stderr(&run).contains("writing the whole image instead");
        assert_eq!(whole_written, layout == Layout::Embedded, "{layout:?}");
        assert_reports_equal(&base, &reports(&built_iso(&p)));
        let tmp = tempfile::tempdir().unwrap();
        let whole = Utf8Path::from_path(tmp.path()).unwrap();
        let iso = xtask::iso::remaster_into(
            &f.iso,
            Some(&f.sha256),
            &step_out(&p, "seed-iso"),
            &step_out(&p, "stage-amd64"),
            whole,
            support::epoch(),
            true,
            None,
        )
        .unwrap();
        assert_reports_equal(&base, &reports(&iso));
    }
}

mod md5 {
    pub fn compute_hex(b: &[u8]) -> String {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b).unwrap();
        super::sh("md5sum", &[p.to_str().unwrap()])[..32].to_string()
    }
}

#[test]
fn overlay_as_tree_under_custom_dir() {
    if !tools() {
        return;
    }
    let f = iso_fixture::build(&Options {
        loopback: false,
        md5sum: false,
        ..Default::default()
    });
    let p = Project::demo();
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write("recipes/demo.yaml", &format!("{recipe}\niso:\n  overlay_dir: appliance\n  overlay_format: tree\n  timeout: 0\n  menu_title: \"Demo's installer\"\n"));
    let out = build(&p, &f);
    let stage = step_out(&p, "stage-amd64");
    assert_eq!(
        extract(&out, "/appliance/etc/demo/build-info.json"),
        std::fs::read(stage.join("tree/etc/demo/build-info.json")).unwrap()
    );
    let t = text(&out, "/boot/grub/grub.cfg");
    assert!(
        t.contains(r"menuentry 'Demo'\''s installer' --id 'kiln-demo' {"),
        "{t}"
    );
    assert!(t.contains("set timeout=0\n"));
    let ls = sh(
        "xorriso",
        &[
            "-no_rc",
            "-indev",
            out.as_str(),
            "-lsd",
            "/boot/grub/loopback.cfg",
            "/md5sum.txt",
        ],
    );
    assert!(
        ls.trim().is_empty(),
        "no loopback.cfg/md5sum.txt added: {ls}"
    );
}

#[test]
fn two_builds_are_identical() {
    if !tools() {
        return;
    }
    let f = iso_fixture::build(&Options::default());
    let (a, b) = (Project::demo(), Project::demo());
    let (ia, ib) = (build(&a, &f), build(&b, &f));
    assert_eq!(sha256(&ia), sha256(&ib));
    // And again with --force in the same project.
    a.run(&["--force", "iso", "--base-iso", f.iso.as_str()]);
    assert_eq!(sha256(&built_iso(&a)), sha256(&ib));
}

#[test]
fn dry_run_prints_grub_diff_and_xorriso_command() {
    if !tools() {
        return;
    }
    let f = iso_fixture::build(&Options::default());
    let p = Project::demo();
    let out = support::stdout(&p.run(&["--dry-run", "iso", "--base-iso", f.iso.as_str()]));
    assert!(
        out.contains("--- a/boot/grub/grub.cfg\n+++ b/boot/grub/grub.cfg\n"),
        "{out}"
    );
    assert!(out.contains("--- a/boot/grub/loopback.cfg"), "{out}");
    assert!(
        out.contains(&format!(
            "+\tlinux\t/casper/vmlinuz  console=ttyS0,115200 {ARGS} ---"
        )),
        "{out}"
    );
    assert!(
        out.contains("-set timeout=1\n") && out.contains("+set timeout=5\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "$ SOURCE_DATE_EPOCH={} xorriso -no_rc -stdio_sync off -dev",
            support::epoch()
        )),
        "{out}"
    );
    // The base's boot setup, replayed with its intervals read from the base.
    assert!(out.contains("-boot_image any discard -volid"), "{out}");
    // What the replay drops, read from the base and set after it.
    assert!(
        out.contains("system area layout of the base") && out.contains("cylinder alignment off"),
        "{out}"
    );
    assert!(
        out.contains("-boot_image any partition_cyl_align=off -padding "),
        "{out}"
    );
    assert!(out.contains(" -padding included -alter_date_r"), "{out}");
    assert!(
        out.contains(&format!(
            "--interval:local_fs:0s-15s:zero_mbrpt,zero_gpt:{}",
            f.iso
        )),
        "{out}"
    );
    assert!(p.outputs().is_empty());
}

/// No ISO, .sha256 or partial file in output/, no temporary step directory
/// or file anywhere in the cache, no complete ISO entry.
fn nothing_written(p: &Project) {
    let outs = p.outputs();
    assert!(outs.iter().all(|f| !f.contains(".iso")), "{outs:?}");
    p.assert_no_leftovers();
    let d = p.path("cache/iso-amd64");
    if d.exists() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            assert!(
                !e.join(".kiln-step.json").exists(),
                "a failed step left a complete entry: {e:?}"
            );
        }
    }
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    if !tools() {
        return;
    }
    let good = iso_fixture::build(&Options::default());
    let p = Project::demo();
    let junk = p.write("junk.iso", &"x".repeat(70_000));
    let demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/remaster.yaml",
        &format!("{demo}\niso:\n  mode: remaster\n"),
    );
    let no_grub = iso_fixture::build(&Options {
        grub: false,
        ..Default::default()
    });
    let no_linux = iso_fixture::build(&Options {
        grub_cfg: Some("set timeout=1\nmenuentry 'Memtest' {\n\tlinux16 /boot/memtest\n}\n".into()),
        ..Default::default()
    });
    let missing = p.path("nope.iso");
    let wrong = "0".repeat(64);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "missing base",
            vec!["iso", "--base-iso", missing.as_str()],
            "missing or unreadable",
        ),
        (
            "checksum mismatch",
            vec![
                "iso",
                "--base-iso",
                good.iso.as_str(),
                "--base-sha256",
                &wrong,
            ],
            "sha256 mismatch",
        ),
        (
            "not an ISO",
            vec!["iso", "--base-iso", junk.as_str()],
            "not an ISO 9660 image",
        ),
        (
            "no grub.cfg",
            vec!["iso", "--base-iso", no_grub.iso.as_str()],
            "has no /boot/grub/grub.cfg",
        ),
        (
            "no linux lines",
            vec!["iso", "--base-iso", no_linux.iso.as_str()],
            "no `linux` command",
        ),
        (
            "remaster mode without a base",
            vec!["--recipe", "recipes/remaster.yaml", "iso"],
            "no base ISO",
        ),
    ];
    for (what, args, msg) in cases {
        let err = p.fail(&args);
        assert!(err.contains(msg), "{what}: expected `{msg}` in:\n{err}");
        nothing_written(&p);
    }
    // Recipe base with a wrong checksum.
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    p.write(
        "recipes/bad.yaml",
        &format!(
            "{recipe}\niso:\n  base: {{path: {}, sha256: '{wrong}'}}\n",
            good.iso
        ),
    );
    let err = p.fail(&["--recipe", "recipes/bad.yaml", "iso"]);
    assert!(
        err.contains("sha256 mismatch") && err.contains(&good.sha256),
        "{err}"
    );
    nothing_written(&p);

    // Output directory not writable (a file where the directory should be).
    let q = Project::demo();
    q.write("blocker", "not a directory");
    let out = q
        .kiln()
        .env("KILN_OUTPUT", q.path("blocker/output"))
        .args(["iso", "--base-iso", good.iso.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("output directory"),
        "{}",
        support::stderr(&out)
    );

    // Disk full while the image is written: a file-size limit below the ISO's size.
    let limit = std::fs::metadata(&good.iso).unwrap().len() / 2;
    let mut cmd = p.kiln();
    cmd.args(["iso", "--base-iso", good.iso.as_str()]);
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; no allocation in the closure.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", support::stderr(&out));
    // The write that fails is the copy of the base or xorriso's session.
    let err = support::stderr(&out);
    assert!(
        err.contains("File too large") && (err.contains("copying") || err.contains("xorriso")),
        "{}",
        support::stderr(&out)
    );
    nothing_written(&p);
}

#[test]
fn bios_only_base_warns() {
    if !tools() {
        return;
    }
    let f = iso_fixture::build(&Options {
        efi: false,
        ..Default::default()
    });
    let p = Project::demo();
    let out = p.run(&["iso", "--base-iso", f.iso.as_str()]);
    assert!(
        support::stderr(&out).contains("BIOS-only"),
        "{}",
        support::stderr(&out)
    );
    let iso = built_iso(&p);
    assert_reports_equal(&reports(&f.iso), &reports(&iso));
}

/// A tiny HTTP/1.1 server for one file with Range support. The first GET is
/// cut off after `cut` bytes (a dropped connection); later GETs are whole.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(body: Vec<u8>, cut: usize) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let reqs = requests.clone();
    std::thread::spawn(move || {
        let mut gets = 0;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            reqs.lock().unwrap().push(head.clone());
            let range = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("range: bytes=")
                        .map(str::to_string)
                })
                .and_then(|r| r.trim_end_matches('-').trim().parse::<usize>().ok());
            let from = range.unwrap_or(0).min(body.len());
            let status = if range.is_some() {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let mut hdr = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len() - from
            );
            if range.is_some() {
                hdr.push_str(&format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                ));
            }
            hdr.push_str("\r\n");
            let _ = s.write_all(hdr.as_bytes());
            if head.starts_with("HEAD") {
                continue;
            }
            gets += 1;
            let end = if gets == 1 {
                cut.min(body.len())
            } else {
                body.len()
            };
            let _ = s.write_all(&body[from..end.max(from)]);
            let _ = s.flush();
        }
    });
    Server { port, requests }
}

#[test]
fn url_base_is_downloaded_once_resumed_and_verified() {
    if !tools() || !support::require(&["curl"]) {
        return;
    }
    let f = iso_fixture::build(&Options::default());
    let body = std::fs::read(&f.iso).unwrap();
    let srv = serve(body.clone(), body.len() / 3);
    let p = Project::demo();
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/ubuntu-24.04-live-server-amd64.iso",
        srv.port
    );
    p.write(
        "recipes/demo.yaml",
        &format!(
            "{recipe}\niso:\n  base: {{url: '{url}', sha256: {}}}\n",
            f.sha256
        ),
    );
    let run = |p: &Project| {
        p.kiln()
            .env("no_proxy", "127.0.0.1")
            .env("NO_PROXY", "127.0.0.1")
            .args(["iso"])
            .output()
            .unwrap()
    };
    // 1: the connection drops; the partial file stays for a resume.
    let o = run(&p);
    assert!(!o.status.success());
    assert!(
        support::stderr(&o).contains("run again to resume"),
        "{}",
        support::stderr(&o)
    );
    nothing_written(&p);
    let part = p.path(&format!(
        "cache/downloads/{}/ubuntu-24.04-live-server-amd64.iso.part",
        f.sha256
    ));
    assert_eq!(
        std::fs::metadata(&part).unwrap().len() as usize,
        body.len() / 3
    );
    // 2: resumed with a Range request, verified, built.
    let o = run(&p);
    assert!(o.status.success(), "{}", support::stderr(&o));
    let reqs = srv.requests.lock().unwrap().clone();
    assert!(
        reqs.iter().any(|r| r
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={}-", body.len() / 3))),
        "{reqs:?}"
    );
    assert_eq!(
        sha256(&p.path(&format!(
            "cache/downloads/{}/ubuntu-24.04-live-server-amd64.iso",
            f.sha256
        ))),
        f.sha256
    );
    built_iso(&p);
    // 3: cached: no new request.
    let n = srv.requests.lock().unwrap().len();
    let o = run(&p);
    assert!(o.status.success());
    assert_eq!(srv.requests.lock().unwrap().len(), n);

    // A wrong checksum: the download is deleted, nothing published.
    let q = Project::demo();
    q.write(
        "recipes/demo.yaml",
        &format!(
            "{recipe}\niso:\n  base: {{url: '{url}', sha256: '{}'}}\n",
            "1".repeat(64)
        ),
    );
    let o = run(&q);
    assert!(!o.status.success());
    assert!(
        support::stderr(&o).contains("sha256 mismatch"),
        "{}",
        support::stderr(&o)
    );
    nothing_written(&q);
    assert!(!q
        .path(&format!("cache/downloads/{}", "1".repeat(64)))
        .join("ubuntu-24.04-live-server-amd64.iso.part")
        .exists());
}

#[test]
fn boots_under_seabios_and_ovmf_to_autoinstall() {
    if !tools() || !support::require(&["qemu-system-x86_64", xtask::tools::qemu_system::OVMF_CODE])
    {
        return;
    }
    let f = iso_fixture::build(&Options::default());
    let p = Project::demo();
    let iso = build(&p, &f);
    let ud = std::fs::read_to_string(step_out(&p, "seed-iso").join("user-data")).unwrap();
    let _g = support::heavy();
    // The smoke boots the ISO under both firmwares at once: kiln's own check
    // (the kernel command line carries the autoinstall words), then the
    // fixture's initrd prints the user-data it read from /cdrom/nocloud/.
    let recipe = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    let smoke =
        "smoke:\n  iso:\n    - console: KILN-USERDATA-END\n      within: 300\n  memory: 512\n";
    p.write("recipes/demo.yaml", &support::with_smoke(&recipe, smoke));
    p.run(&["smoke", iso.as_str(), "--firmware", "both"]);
    // An ISO boots once per firmware: instance 1 UEFI, instance 2 BIOS.
    for (i, fw) in [(1, "uefi"), (2, "bios")] {
        let out = support::smoke_log(&p, &iso, i, fw, 1);
        let cmdline = out.lines().find(|l| l.contains("Command line:")).unwrap();
        assert!(
            cmdline.contains("console=ttyS0,115200 autoinstall ds=nocloud;s=/cdrom/nocloud/ ---"),
            "{fw}: {cmdline}"
        );
        let a = out.find("KILN-USERDATA-BEGIN").unwrap() + "KILN-USERDATA-BEGIN".len();
        let b = out.find("KILN-USERDATA-END").unwrap();
        let got = out[a..b].replace('\r', "");
        assert_eq!(
            got.trim(),
            ud.trim(),
            "{fw}: user-data read in the guest from /cdrom/nocloud/"
        );
    }
}

/// The benchmark case runs (small by default; `KILN_ISO_BENCH_SCALE=1` for
/// the 2.5 GB base) and reports its ratios. Never asserts on time.
#[test]
fn bench_case_runs() {
    if !support::require(&["xorriso"]) {
        return;
    }
    let scale = std::env::var("KILN_ISO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.01);
    let d = tempfile::tempdir().unwrap();
    let scratch = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
    let _g = support::heavy();
    let ms = xtask::bench::iso::remaster(&xtask::bench::BenchCx {
        scratch: &scratch,
        cache: &scratch,
        scale,
    })
    .unwrap();
    eprintln!("{}", xtask::bench::render(&ms));
    assert_eq!(
        ms.iter().map(|m| m.case.as_str()).collect::<Vec<_>>(),
        [
            "iso_remaster_2.5g",
            "iso_remaster_whole_2.5g",
            "iso_full_verb"
        ]
    );
    let report = xtask::bench::render(&ms);
    assert!(
        ms.iter()
            .all(|m| report.contains(&m.baseline) && report.contains(&m.goal)),
        "{report}"
    );
    assert!(!scratch.join("iso-bench").exists(), "bench scratch removed");
}
