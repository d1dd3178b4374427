//! Container images from Debian packages (`source: { debian: … }`): built
//! with mmdebstrap for amd64 and arm64 in two separate caches, byte-identical,
//! read back with skopeo; and the recipe mistakes that must be named (file
//! and line) and leave nothing behind.

mod support;

use std::io::Read;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{json, Value};
use support::{sh, Project};

const RECIPE_HEAD: &str = "appliance:\n  name: t\n  version: '1'\n";

fn recipe(p: &Project, arches: &str, images: &str) -> String {
    let text = format!("{RECIPE_HEAD}architectures: [{arches}]\npayloads:\n  images:\n{images}");
    p.write("recipes/demo.yaml", &text);
    text
}

/// The 1-based line of the first line of `text` holding `needle`.
fn line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{text}"))
        + 1
}

/// The staged tree of the latest `stage` run for `arch`.
fn stage_tree(p: &Project, arch: &str) -> Utf8PathBuf {
    let dir = p.cache_dir().join(format!("stage-{arch}"));
    let latest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    dir.join(&latest["key"].as_str().unwrap()[..20])
        .join("tree")
}

const WEB: &str = "    - name: demo-web
      source:
        debian:
          packages: [busybox-static]
          variant: extract
          overlay: payloads/demo-web
      cmd: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /srv/www]
      exposed_ports: [\"8080\"]
      workdir: /srv/www
      user: \"65534:65534\"
      env: { DEMO: web }
      format: docker-archive
      dest: /opt/demo/images
";

fn web_project() -> Project {
    let p = Project::empty();
    p.write("payloads/demo-web/srv/www/index.html", "<h1>demo</h1>\n");
    p.write("payloads/demo-web/srv/www/healthz", "ok");
    recipe(&p, "amd64, arm64", WEB);
    p
}

/// (path, mode, uid, gid, content for small files) of each entry of the one
/// layer of a docker-archive.
fn layer_entries(archive: &Utf8Path) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let open = || tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut manifest = String::new();
    let mut a = open();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            e.read_to_string(&mut manifest).unwrap();
        }
    }
    let m: Value = serde_json::from_str(&manifest).unwrap();
    let layers = m[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    let name = layers[0].as_str().unwrap();
    let mut a = open();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() != Some(name) {
            continue;
        }
        let mut inner = tar::Archive::new(e);
        return inner
            .entries()
            .unwrap()
            .map(|x| {
                let mut x = x.unwrap();
                let h = x.header().clone();
                let path = x.path().unwrap().to_str().unwrap().to_string();
                let mut body = Vec::new();
                if h.size().unwrap() < 4096 {
                    x.read_to_end(&mut body).unwrap();
                }
                (
                    path,
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    body,
                )
            })
            .collect();
    }
    panic!("{archive}: no layer {name}");
}

#[test]
fn a_debian_package_image_is_reproducible_and_reads_back_with_skopeo() {
    if !support::require(&["mmdebstrap", "skopeo"]) {
        return;
    }
    let _heavy = support::heavy();
    let a = web_project();
    let b = web_project();
    a.run(&["stage"]);
    b.run(&["stage"]);
    for arch in ["amd64", "arm64"] {
        let rel = format!("opt/demo/images/demo-web-{arch}.tar");
        let (fa, fb) = (
            stage_tree(&a, arch).join(&rel),
            stage_tree(&b, arch).join(&rel),
        );
        assert_eq!(
            support::sha256(&fa),
            support::sha256(&fb),
            "{arch}: two caches, two archives"
        );
        let transport = format!("docker-archive:{fa}");
        let info: Value = serde_json::from_str(&sh("skopeo", &["inspect", &transport])).unwrap();
        assert_eq!(info["Os"], "linux");
        assert_eq!(info["Architecture"], arch);
        let cfg: Value =
            serde_json::from_str(&sh("skopeo", &["inspect", "--config", &transport])).unwrap();
        assert_eq!(cfg["architecture"], arch);
        if arch == "arm64" {
            assert_eq!(cfg["variant"], "v8");
        }
        let c = &cfg["config"];
        assert_eq!(
            c["Cmd"],
            json!([
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                "/srv/www"
            ])
        );
        assert_eq!(c["ExposedPorts"], json!({ "8080/tcp": {} }));
        assert_eq!(c["WorkingDir"], "/srv/www");
        assert_eq!(c["User"], "65534:65534");
        assert!(
            c["Env"].as_array().unwrap().contains(&json!("DEMO=web")),
            "{c}"
        );
        let entries = layer_entries(&fa);
        let get = |p: &str| {
            entries
                .iter()
                .find(|e| e.0 == p)
                .unwrap_or_else(|| panic!("{arch}: no {p} in the layer"))
        };
        let busybox = get("bin/busybox");
        assert_eq!((busybox.1 & 0o111, busybox.2), (0o111, 0), "{busybox:?}");
        let healthz = get("srv/www/healthz");
        assert_eq!((healthz.1, healthz.2, healthz.3), (0o644, 0, 0));
        assert_eq!(healthz.4, b"ok");
        assert_eq!(get("srv/www/index.html").2, 0);
        // What a container does not need is gone; the copyright stays.
        get("usr/share/doc/busybox-static/copyright");
        for gone in [
            "etc/hostname",
            "etc/resolv.conf",
            "usr/share/man/man1/busybox.1.gz",
        ] {
            assert!(
                entries.iter().all(|e| e.0 != gone),
                "{arch}: {gone} is in the layer"
            );
        }
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(stage_tree(&a, arch).join("opt/demo/images/images.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            rec["images"][0]["source"],
            "debian busybox-static (extract, bookworm)"
        );
    }
    serves_healthz(&stage_tree(&a, "amd64").join("opt/demo/images/demo-web-amd64.tar"));
    a.assert_no_leftovers();
    b.assert_no_leftovers();
    // `recipe show` prints the effective defaults.
    let shown = support::stdout(&a.run(&["recipe", "show"]));
    for s in ["variant: extract", "suite: bookworm", "docs: false"] {
        assert!(shown.contains(s), "{s}:\n{shown}");
    }
}

/// The amd64 image's root runs its command: the layer unpacked, its static
/// `bin/busybox httpd` serves the overlay's `srv/www` on a loopback port
/// (bounded: 100 tries, 50 ms apart), and `/healthz` answers `ok`.
fn serves_healthz(archive: &Utf8Path) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    let unpacked = root.join("archive");
    std::fs::create_dir_all(&unpacked).unwrap();
    sh("tar", &["-xf", archive.as_str(), "-C", unpacked.as_str()]);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(unpacked.join("manifest.json")).unwrap())
            .unwrap();
    let layer = unpacked.join(m[0]["Layers"][0].as_str().unwrap());
    let rootfs = root.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    sh("tar", &["-xf", layer.as_str(), "-C", rootfs.as_str()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let www = rootfs.join("srv/www");
    let mut child = std::process::Command::new(rootfs.join("bin/busybox"))
        .args([
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            www.as_str(),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("running the layer's bin/busybox");
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            answer.clear();
            if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.")
            {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answer.split_whitespace().nth(1) == Some("200") && answer.ends_with("\r\n\r\nok"),
        "busybox httpd from the image answered: {answer:?}"
    );
}

#[test]
fn recipe_mistakes_are_named_with_their_line() {
    let p = Project::empty();
    let file = "recipes/demo.yaml";
    // An unknown variant: serde's error, with line and column.
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source:\n        debian:\n          packages: [busybox-static]\n          variant: bogus\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "variant: bogus"));
    assert!(
        err.contains(&at) && err.contains("unknown variant `bogus`"),
        "{err}"
    );
    // `cmd` must be a list of strings.
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source: { debian: { packages: [busybox-static] } }\n      cmd: /bin/sh\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "cmd: /bin/sh"));
    assert!(err.contains(&at) && err.contains("cmd"), "{err}");
    // The other new fields are typed as strictly.
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source: { debian: { packages: [busybox-static] } }\n      env: [A=b]\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "env: [A=b]"));
    assert!(err.contains(&at), "{err}");
    // An empty package list.
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source:\n        debian:\n          packages: []\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "packages: []"));
    assert!(
        err.contains(&at) && err.contains("source.debian.packages is empty"),
        "{err}"
    );
    // A bad port.
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source: { debian: { packages: [busybox-static] } }\n      exposed_ports: [\"8080/tcpx\"]\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "8080/tcpx"));
    assert!(
        err.contains(&at) && err.contains("PORT[/tcp|udp|sctp]"),
        "{err}"
    );
    // Config fields on a source that carries its own config.
    let digest = "a".repeat(64);
    let text = recipe(
        &p,
        "amd64",
        &format!("    - name: r\n      source: {{ registry: registry.local/web@sha256:{digest} }}\n      exposed_ports: [\"80\"]\n      dest: /opt/img\n"),
    );
    let err = p.fail(&["stage", "--dry-run"]);
    let at = format!("{file}:{}:", line(&text, "exposed_ports:"));
    assert!(
        err.contains(&at)
            && err.contains("image `r`")
            && err.contains("`exposed_ports` is only for a `rootfs-dir` or `debian` source"),
        "{err}"
    );
    support::assert_nothing_left(&p);
}

#[test]
fn an_unknown_package_is_named_with_its_recipe_line_and_leaves_nothing() {
    if !support::require(&["mmdebstrap"]) {
        return;
    }
    let _heavy = support::heavy();
    let p = Project::empty();
    let text = recipe(
        &p,
        "amd64",
        "    - name: w\n      source:\n        debian:\n          packages:\n            - busybox-static\n            - no-such-package-kiln\n          variant: extract\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage"]);
    let at = format!(
        "recipes/demo.yaml:{}:",
        line(&text, "- no-such-package-kiln")
    );
    assert!(
        err.contains(&at)
            && err.contains("image `w`")
            && err.contains("no package `no-such-package-kiln`"),
        "{err}"
    );
    support::assert_nothing_left(&p);
}
