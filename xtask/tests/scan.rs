//! The secret scan: a corpus of planted secrets (generated here — keys with
//! ssh-keygen/openssl, tokens from /dev/urandom; nothing secret-looking is
//! committed) covering every rule, planted (a) in the overlay and scanned in
//! the staged tree and tarball, (b) inside payload archives (a tar and a
//! tar.zst inside the overlay tarball), (c) in disk images (raw GPT with ext4
//! and FAT partitions, its qcow2, an OVA with a streamOptimized VMDK, an
//! ISO with an initrd). Each finding must carry the right nested path and
//! rule, and the secrets must never appear in any output.

mod support;

use xtask::exec::Check;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use support::{sh, Project};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

/// `n` random characters from `alphabet`. When the alphabet has letters and
/// digits, the result starts with a letter and ends with a digit, so a
/// planted secret always looks like one (a 40-character draw without any
/// digit is rare, but not rare enough for a test that runs on every push).
fn random_str(alphabet: &str, n: usize) -> String {
    let a = alphabet.as_bytes();
    let mut s: Vec<u8> = random_bytes(n)
        .iter()
        .map(|b| a[*b as usize % a.len()])
        .collect();
    let letters: Vec<u8> = a.iter().copied().filter(u8::is_ascii_alphabetic).collect();
    let digits: Vec<u8> = a.iter().copied().filter(u8::is_ascii_digit).collect();
    if n >= 2 && !letters.is_empty() && !digits.is_empty() {
        let r = random_bytes(2);
        s[0] = letters[r[0] as usize % letters.len()];
        s[n - 1] = digits[r[1] as usize % digits.len()];
    }
    String::from_utf8(s).unwrap()
}

/// Letters without vowels (a random draw never spells a placeholder word such
/// as `todo` or `dummy`) and digits.
const ALNUM: &str = "BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789";
const UPPER_DIGITS: &str = "ABCDFGHJKLMNPQRSTUVWYZ0123456789"; // no E/X/I/O: never spells EXAMPLE

fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..c.len() + 1 {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn write(root: &Utf8Path, rel: &str, bytes: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// A planted corpus: files under `root`, the (path, rule) pairs the scan must
/// report, and the secret strings that must never be printed.
struct Corpus {
    expect: Vec<(String, &'static str)>,
    secrets: Vec<String>,
}

fn plant(root: &Utf8Path) -> Corpus {
    let mut c = Corpus {
        expect: Vec::new(),
        secrets: Vec::new(),
    };
    fn put(
        c: &mut Corpus,
        root: &Utf8Path,
        rel: &str,
        content: String,
        rule: &'static str,
        secret: Option<String>,
    ) {
        write(root, rel, content);
        c.expect.push((format!("/{rel}"), rule));
        if let Some(s) = secret {
            c.secrets.push(s);
        }
    }

    // Keys, generated now.
    std::fs::create_dir_all(root.join("etc/ssl/private")).unwrap();
    let pem = root.join("etc/ssl/private/app.key");
    sh(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            pem.as_str(),
        ],
    );
    c.expect
        .push(("/etc/ssl/private/app.key".into(), "private-key"));
    // ssl-cert's snakeoil key, as its maintainer script leaves it in a root
    // built from packages (`make-ssl-cert` runs `openssl req -newkey`).
    let snakeoil = root.join("etc/ssl/private/ssl-cert-snakeoil.key");
    sh(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            snakeoil.as_str(),
        ],
    );
    c.expect.push((
        "/etc/ssl/private/ssl-cert-snakeoil.key".into(),
        "private-key",
    ));
    std::fs::create_dir_all(root.join("home/demo/.ssh")).unwrap();
    let id = root.join("home/demo/.ssh/id_ed25519");
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", id.as_str()],
    );
    c.expect
        .push(("/home/demo/.ssh/id_ed25519".into(), "openssh-private-key"));
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    let hk = root.join("etc/ssh/ssh_host_ed25519_key");
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hk.as_str()],
    );
    c.expect
        .push(("/etc/ssh/ssh_host_ed25519_key".into(), "ssh-host-key"));
    for f in [&pem, &snakeoil, &id, &hk] {
        let text = std::fs::read_to_string(f).unwrap();
        let body: String = text.lines().nth(1).unwrap().to_string();
        c.secrets.push(body);
    }
    let putty_priv = random_str(ALNUM, 44);
    put(
        &mut c,
        root,
        "home/demo/putty.ppk",
        format!(
            "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: test\nPublic-Lines: 2\n{}\n{}\nPrivate-Lines: 1\n{putty_priv}\nPrivate-MAC: {}\n",
            random_str(ALNUM, 64),
            random_str(ALNUM, 16),
            hex::encode(random_bytes(32))
        ),
        "putty-private-key",
        Some(putty_priv),
    );

    // Identity.
    let mid = hex::encode(random_bytes(16));
    put(
        &mut c,
        root,
        "etc/machine-id",
        format!("{mid}\n"),
        "machine-id",
        Some(mid.clone()),
    );
    put(
        &mut c,
        root,
        "var/lib/dbus/machine-id",
        format!("{mid}\n"),
        "dbus-machine-id",
        None,
    );
    write(root, "var/lib/systemd/random-seed", random_bytes(512));
    c.expect
        .push(("/var/lib/systemd/random-seed".into(), "random-seed"));
    write(root, "var/lib/systemd/credential.secret", random_bytes(128));
    c.expect.push((
        "/var/lib/systemd/credential.secret".into(),
        "systemd-credential-secret",
    ));
    put(
        &mut c,
        root,
        "var/lib/cloud/instances/iid-demo/obj.pkl",
        "state".into(),
        "cloud-init-state",
        None,
    );
    put(
        &mut c,
        root,
        "var/lib/cloud/data/instance-id",
        "iid-demo\n".into(),
        "cloud-init-state",
        None,
    );

    // Passwords and credentials.
    let pw = random_str(ALNUM, 16);
    let hash = sh("openssl", &["passwd", "-6", &pw]).trim().to_string();
    put(
        &mut c,
        root,
        "etc/shadow",
        format!("root:{hash}:19000:0:99999:7:::\ndemo:!:19000::::::\n"),
        "shadow-password",
        Some(hash[hash.rfind('$').unwrap() + 1..].to_string()),
    );
    c.secrets.push(pw);
    let dbpw = random_str(ALNUM, 24);
    put(
        &mut c,
        root,
        "opt/demo/.env",
        format!("DEMO_NAME=demo\nDEMO_DB_PASSWORD={dbpw}\nDEMO_API_TOKEN=CHANGE_ME\n"),
        "env-secret",
        Some(dbpw),
    );
    let ccpw = random_str(ALNUM, 18);
    put(
        &mut c,
        root,
        "etc/cloud/cloud.cfg.d/50-users.cfg",
        format!("#cloud-config\nusers:\n  - name: demo\n    plain_text_passwd: {ccpw}\n"),
        "cloud-config-password",
        Some(ccpw),
    );
    let inst = random_str(ALNUM, 20);
    put(
        &mut c,
        root,
        "var/log/installer/autoinstall-user-data",
        format!("#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    username: demo\n    password: '$6$x${inst}'\n"),
        "installer-credentials",
        Some(inst),
    );
    let dauth = b64url(format!("robot:{}", random_str(ALNUM, 20)).as_bytes());
    put(
        &mut c,
        root,
        "root/.docker/config.json",
        format!("{{\"auths\": {{\"registry.invalid\": {{\"auth\": \"{dauth}\"}}}}}}\n"),
        "docker-auth",
        Some(dauth),
    );
    let ktok = random_str(ALNUM, 40);
    put(
        &mut c,
        root,
        "root/.kube/config",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://k.invalid\nusers:\n- name: admin\n  user:\n    token: {ktok}\n"
        ),
        "kubeconfig-credentials",
        Some(ktok),
    );
    let proxypw = random_str(ALNUM, 14);
    put(
        &mut c,
        root,
        "etc/apt/apt.conf.d/90proxy",
        format!("Acquire::http::Proxy \"http://builder:{proxypw}@proxy.invalid:3128/\";\n"),
        "apt-proxy-credentials",
        Some(proxypw),
    );
    put(
        &mut c,
        root,
        "root/.bash_history",
        "ls\nsudo cat /etc/shadow\n".into(),
        "shell-history",
        None,
    );

    // Tokens, one file each.
    let aws = format!("AKIA{}", random_str(UPPER_DIGITS, 16));
    put(
        &mut c,
        root,
        "opt/demo/aws.txt",
        format!("id {aws}\n"),
        "aws-access-key",
        Some(aws[4..].to_string()),
    );
    let gh = format!("ghp_{}", random_str(ALNUM, 36));
    put(
        &mut c,
        root,
        "opt/demo/gh.txt",
        format!("token: {gh}\n"),
        "github-token",
        Some(gh[4..].to_string()),
    );
    let gl = format!("glpat-{}", random_str(ALNUM, 20));
    put(
        &mut c,
        root,
        "opt/demo/gl.txt",
        format!("{gl}\n"),
        "gitlab-token",
        Some(gl[6..].to_string()),
    );
    let sl = format!(
        "xoxb-{}-{}",
        random_str("0123456789", 12),
        random_str(ALNUM, 24)
    );
    put(
        &mut c,
        root,
        "opt/demo/slack.txt",
        format!("{sl}\n"),
        "slack-token",
        Some(sl[5..].to_string()),
    );
    let gk = format!("AIza{}", random_str(ALNUM, 35));
    put(
        &mut c,
        root,
        "opt/demo/maps.js",
        format!("const k = \"{gk}\";\n"),
        "google-api-key",
        Some(gk[4..].to_string()),
    );
    let jwt = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(format!("{{\"sub\":\"{}\"}}", random_str(ALNUM, 12)).as_bytes()),
        b64url(&random_bytes(32))
    );
    put(
        &mut c,
        root,
        "opt/demo/session.txt",
        format!("{jwt}\n"),
        "jwt",
        Some(jwt[20..].to_string()),
    );
    let bearer = random_str(ALNUM, 40);
    put(
        &mut c,
        root,
        "opt/demo/curl.sh",
        format!("curl -H 'Authorization: Bearer {bearer}' https://api.invalid/\n"),
        "bearer-token",
        Some(bearer),
    );
    let hes = random_str(ALNUM, 40);
    put(
        &mut c,
        root,
        "opt/demo/config.yaml",
        format!("web:\n  signing_secret: {hes}\n"),
        "high-entropy-secret",
        Some(hes),
    );

    // A key inside a binary file.
    let mut bin = b"\x7fELF\x02\x01\x01\0\0\0".to_vec();
    bin.extend(random_bytes(4096));
    bin.extend(std::fs::read(&pem).unwrap());
    bin.extend(random_bytes(4096));
    write(root, "usr/lib/demo/blob.bin", bin);
    c.expect
        .push(("/usr/lib/demo/blob.bin".into(), "private-key"));

    // Something kiln cannot open.
    let mut sq = b"hsqs".to_vec();
    sq.extend(random_bytes(8192));
    write(root, "opt/demo/extra.squashfs", sq);
    c.expect
        .push(("/opt/demo/extra.squashfs".into(), "opaque-content"));

    c
}

fn scan_json(p: &Project, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut a = vec!["--json", "scan"];
    a.extend_from_slice(args);
    let out = p.kiln().args(&a).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scan --json printed no JSON ({e}):\n{}\n{}",
            support::stdout(&out),
            support::stderr(&out)
        )
    });
    (v, out)
}

/// (nested path, rule) of every finding in a JSON report.
fn found(v: &serde_json::Value) -> BTreeSet<(String, String)> {
    v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["findings"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn errors(v: &serde_json::Value) -> Vec<String> {
    v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["error"].as_str().map(String::from))
        .collect()
}

fn assert_all_found(v: &serde_json::Value, c: &Corpus, prefix: &str) {
    assert!(errors(v).is_empty(), "scan errors: {:?}", errors(v));
    let got = found(v);
    let missing: Vec<_> = c
        .expect
        .iter()
        .map(|(p, r)| (format!("{prefix}{p}"), r.to_string()))
        .filter(|e| !got.contains(e))
        .collect();
    assert!(
        missing.is_empty(),
        "not found: {missing:#?}\nfound: {got:#?}"
    );
    // Every rule but the (structural) ones is in the corpus.
    let rules: BTreeSet<&str> = c.expect.iter().map(|(_, r)| *r).collect();
    for r in xtask::scan::rules::RULES {
        assert!(
            rules.contains(r.id),
            "the corpus plants nothing for rule {}",
            r.id
        );
    }
}

fn assert_redacted(c: &Corpus, out: &std::process::Output) {
    let all = format!("{}{}", support::stdout(out), support::stderr(out));
    for s in &c.secrets {
        assert!(
            !all.contains(s.as_str()),
            "a planted secret was printed: {s}"
        );
    }
}

fn require_tools() -> bool {
    support::require(&["openssl", "ssh-keygen"])
}

/// Stage the project and return the stage step's output directory. With
/// planted secrets the verb itself fails at the publish gate (that is the
/// point), but the step's output is complete in the cache.
fn stage(p: &Project) -> Utf8PathBuf {
    let _ = p.kiln().arg("stage").output().unwrap();
    let dir = p.path("cache/stage-amd64");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap();
        if path.join("overlay.tar.zst").is_file() {
            found.push(path);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one complete stage entry in {dir}: {found:?}"
    );
    found.pop().unwrap()
}

#[test]
fn clean_demo_stage_has_no_findings() {
    let p = Project::demo();
    let st = stage(&p);
    let (v, out) = scan_json(
        &p,
        &[
            st.join("overlay.tar.zst").as_str(),
            st.join("tree").as_str(),
        ],
    );
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert_eq!(v["ok"], true);
    assert!(found(&v).is_empty(), "false positives: {:?}", found(&v));
    assert!(
        v["artifacts"][0]["files"].as_u64().unwrap() >= 5,
        "the staged tarball's files were read"
    );
}

#[test]
fn planted_in_overlay_found_in_staged_tree_and_tarball() {
    if !require_tools() {
        return;
    }
    let p = Project::demo();
    let c = plant(&p.path("overlay"));
    let st = stage(&p);
    let tarball = st.join("overlay.tar.zst");
    let (v, out) = scan_json(&p, &[tarball.as_str()]);
    assert!(!out.status.success());
    assert_all_found(&v, &c, "");
    assert_redacted(&c, &out);
    let (v, out) = scan_json(&p, &[st.join("tree").as_str()]);
    assert_all_found(&v, &c, "");
    assert_redacted(&c, &out);
    // Human output: nested path, rule, fix; still redacted.
    let out = p.kiln().args(["scan", tarball.as_str()]).output().unwrap();
    assert!(!out.status.success());
    let text = support::stdout(&out);
    assert!(
        text.contains("FOUND machine-id") && text.contains("overlay.tar.zst!/etc/machine-id"),
        "{text}"
    );
    assert!(text.contains("fix: truncate /etc/machine-id"), "{text}");
    // A per-install key kiln knows: the fix names the command that makes it.
    assert!(
        text.contains(
            "fix: remove it from the image and regenerate it at first boot with \
             `make-ssl-cert generate-default-snakeoil --force-overwrite` (kiln does this for \
             images it builds)"
        ),
        "{text}"
    );
    assert!(
        text.contains("regenerate it at first boot with `ssh-keygen -A`"),
        "{text}"
    );
    assert!(support::stderr(&out).contains("secret scan failed"));
    assert_redacted(&c, &out);
}

#[test]
fn planted_in_payload_archives_inside_the_overlay() {
    if !require_tools() {
        return;
    }
    let p = Project::demo();
    let corpus_dir = p.path("corpus");
    let c = plant(&corpus_dir);
    // A plain tar and a zstd tar, as payload archives inside the overlay.
    let images = p.path("overlay/opt/demo/images");
    std::fs::create_dir_all(&images).unwrap();
    {
        let f = std::fs::File::create(images.join("app.tar")).unwrap();
        let mut b = tar::Builder::new(f);
        xtask::archive::append_tree(&mut b, &corpus_dir, 1700000000).unwrap();
        b.into_inner().unwrap();
    }
    xtask::archive::write_tree_tar_zst(&corpus_dir, &images.join("app.tar.zst"), 1700000000)
        .unwrap();
    write_stored_zip(&corpus_dir, &images.join("app.jar"));
    let st = stage(&p);
    let (v, out) = scan_json(&p, &[st.join("overlay.tar.zst").as_str()]);
    assert!(!out.status.success());
    assert_all_found(&v, &c, "/opt/demo/images/app.tar!");
    assert_all_found(&v, &c, "/opt/demo/images/app.tar.zst!");
    assert_all_found(&v, &c, "/opt/demo/images/app.jar!");
    assert_all_found(&v, &c, "/opt/demo/images/app.jar!");
    assert_redacted(&c, &out);
}

/// A ZIP (stored members, as jars often are) of every file under `dir`.
fn write_stored_zip(dir: &Utf8Path, dest: &Utf8Path) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut n = 0u16;
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let name = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .as_bytes()
            .to_vec();
        let data = std::fs::read(e.path()).unwrap();
        let crc = crc32fast::hash(&data);
        let off = out.len() as u32;
        let le16 = |v: u16| v.to_le_bytes();
        let le32 = |v: u32| v.to_le_bytes();
        out.extend(le32(0x04034b50));
        out.extend(le16(10));
        out.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(le32(crc));
        out.extend(le32(data.len() as u32));
        out.extend(le32(data.len() as u32));
        out.extend(le16(name.len() as u16));
        out.extend(le16(0));
        out.extend(&name);
        out.extend(&data);
        central.extend(le32(0x02014b50));
        central.extend(le16(20));
        central.extend(le16(10));
        central.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend(le32(crc));
        central.extend(le32(data.len() as u32));
        central.extend(le32(data.len() as u32));
        central.extend(le16(name.len() as u16));
        central.extend([0; 12]);
        central.extend(le32(off));
        central.extend(&name);
        n += 1;
    }
    let cd_off = out.len() as u32;
    let cd_len = central.len() as u32;
    out.extend(central);
    out.extend(0x06054b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_off.to_le_bytes());
    out.extend([0, 0]);
    std::fs::write(dest, out).unwrap();
}

/// A raw GPT disk: p1 FAT (ESP) holding part of the corpus, p2 ext4 holding all of it.
fn build_disk(dir: &Utf8Path, corpus: &Utf8Path) -> Utf8PathBuf {
    let ext = dir.join("root.ext4");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            corpus.as_str(),
            "-E",
            "root_owner=0:0",
            ext.as_str(),
            "48M",
        ],
    );
    let fat = dir.join("esp.fat");
    sh("truncate", &["-s", "16M", fat.as_str()]);
    sh("mkfs.vfat", &["-n", "ESP", fat.as_str()]);
    let env = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-s",
            "-i",
            fat.as_str(),
            corpus.join("etc").as_str(),
            corpus.join("opt").as_str(),
            "::/",
        ])
        .status()
        .unwrap();
    assert!(env.success());
    let disk = dir.join("disk.raw");
    sh("truncate", &["-s", "80M", disk.as_str()]);
    sh(
        "sgdisk",
        &[
            "-n",
            "1:2048:+16M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+48M",
            "-t",
            "2:8300",
            disk.as_str(),
        ],
    );
    let info = sh("sgdisk", &["-i", "2", disk.as_str()]);
    let start: u64 = info
        .lines()
        .find(|l| l.starts_with("First sector:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    for (img, seek) in [(&fat, 2048u64), (&ext, start)] {
        sh(
            "dd",
            &[
                &format!("if={img}"),
                &format!("of={disk}"),
                "bs=512",
                &format!("seek={seek}"),
                "conv=notrunc",
                "status=none",
            ],
        );
    }
    disk
}

#[test]
fn planted_in_disk_images_raw_qcow2_and_ova() {
    if !require_tools()
        || !support::require(&[
            "mkfs.ext4",
            "mkfs.vfat",
            "mcopy",
            "sgdisk",
            "qemu-img",
            "debugfs",
        ])
    {
        return;
    }
    let p = Project::demo();
    let corpus_dir = p.path("corpus");
    let c = plant(&corpus_dir);
    let disk = build_disk(&p.root, &corpus_dir);

    let (v, out) = scan_json(&p, &[disk.as_str()]);
    assert!(!out.status.success());
    assert_all_found(&v, &c, "p2!");
    let got = found(&v);
    for (path, rule) in [
        ("p1!/etc/machine-id", "machine-id"),
        ("p1!/opt/demo/.env", "env-secret"),
        ("p1!/etc/ssl/private/app.key", "private-key"),
    ] {
        assert!(
            got.contains(&(path.to_string(), rule.to_string())),
            "FAT: {path} {rule} not in {got:#?}"
        );
    }
    assert_redacted(&c, &out);

    // The in-process ext4 reader sees exactly the files debugfs sees.
    let dump = p.path("rdump");
    std::fs::create_dir_all(&dump).unwrap();
    let off = 512
        * sh("sgdisk", &["-i", "2", disk.as_str()])
            .lines()
            .find(|l| l.starts_with("First sector:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .parse::<u64>()
            .unwrap();
    xtask::tools::run(&xtask::tools::debugfs::rdump_all(&disk, off, &dump)).unwrap();
    let mut dumped = BTreeSet::new();
    for e in walkdir::WalkDir::new(&dump) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(&dump).unwrap().to_str().unwrap();
            // rdump / DIR writes the root's entries directly under DIR.
            dumped.insert(format!("p2!/{rel}"));
        }
    }
    let from_corpus: BTreeSet<String> = c.expect.iter().map(|(p, _)| format!("p2!{p}")).collect();
    let findings_paths: BTreeSet<String> = got
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| p.starts_with("p2!"))
        .collect();
    assert!(from_corpus.is_subset(&dumped), "debugfs lists {dumped:?}");
    assert_eq!(
        findings_paths,
        from_corpus.intersection(&findings_paths).cloned().collect()
    );

    // qcow2 of the same disk.
    let qcow = p.path("disk.qcow2");
    support::qemu_convert(&disk, "raw", &qcow, "qcow2");
    let (v, out) = scan_json(&p, &[qcow.as_str()]);
    assert_all_found(&v, &c, "p2!");
    assert_redacted(&c, &out);

    // An OVA: descriptor + streamOptimized VMDK in a tar.
    let ova_dir = p.path("ova");
    std::fs::create_dir_all(&ova_dir).unwrap();
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
            ova_dir.join("demo-disk1.vmdk").as_str(),
        ],
    );
    std::fs::write(
        ova_dir.join("demo.ovf"),
        "<?xml version=\"1.0\"?><Envelope/>\n",
    )
    .unwrap();
    let ova = p.path("demo.ova");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&ova).unwrap());
        b.append_path_with_name(ova_dir.join("demo.ovf"), "demo.ovf")
            .unwrap();
        b.append_path_with_name(ova_dir.join("demo-disk1.vmdk"), "demo-disk1.vmdk")
            .unwrap();
        b.into_inner().unwrap();
    }
    let (v, out) = scan_json(&p, &[ova.as_str()]);
    assert_all_found(&v, &c, "/demo-disk1.vmdk!p2!");
    assert_redacted(&c, &out);
}

#[test]
fn planted_in_an_iso_with_overlay_tarball_and_initrd() {
    if !require_tools() || !support::require(&["xorriso", "/bin/busybox"]) {
        return;
    }
    let p = Project::demo();
    let corpus_dir = p.path("corpus");
    let c = plant(&corpus_dir);
    let root = p.path("isoroot");
    std::fs::create_dir_all(root.join("kiln")).unwrap();
    std::fs::create_dir_all(root.join("casper")).unwrap();
    xtask::archive::write_tree_tar_zst(&corpus_dir, &root.join("kiln/overlay.tar.zst"), 1700000000)
        .unwrap();
    // An initrd: newc cpio (busybox), gzip-compressed.
    let list: String = walkdir::WalkDir::new(&corpus_dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            format!(
                "{}\n",
                e.unwrap()
                    .path()
                    .strip_prefix(&corpus_dir)
                    .unwrap()
                    .display()
            )
        })
        .collect();
    let cpio = p.path("initrd.cpio");
    let out = Command::new("/bin/busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&corpus_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&cpio).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(list.as_bytes())?;
            ch.wait()
        })
        .unwrap();
    assert!(out.success());
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(root.join("casper/initrd")).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(&cpio).unwrap(), &mut gz).unwrap();
    gz.finish().unwrap();
    let iso = p.path("demo.iso");
    sh(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-r",
            "-J",
            "-V",
            "DEMO",
            "-o",
            iso.as_str(),
            root.as_str(),
        ],
    );

    let (v, out) = scan_json(&p, &[iso.as_str()]);
    assert!(!out.status.success());
    assert_all_found(&v, &c, "/kiln/overlay.tar.zst!");
    assert_all_found(&v, &c, "/casper/initrd!");
    assert_redacted(&c, &out);

    // The in-process ISO reader sees the files xorriso extracts.
    let x = p.path("x");
    xtask::tools::run(&xtask::tools::xorriso::extract_all(&iso, &x)).unwrap();
    assert!(x.join("kiln/overlay.tar.zst").is_file() && x.join("casper/initrd").is_file());
    let n = v["artifacts"][0]["files"].as_u64().unwrap();
    assert!(n >= 2 * c.expect.len() as u64, "only {n} files read");
}

#[test]
fn allowlist_by_path_and_rule_and_by_sha256() {
    if !require_tools() {
        return;
    }
    let p = Project::demo();
    let c = plant(&p.path("overlay"));
    let st = stage(&p);
    let tarball = st.join("overlay.tar.zst");
    let (v, _) = scan_json(&p, &[tarball.as_str()]);
    let key_sha = v["artifacts"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "private-key" && f["path"] == "/etc/ssl/private/app.key")
        .and_then(|f| f["sha256"].as_str())
        .expect("a key finding carries the sha256 of the key block")
        .to_string();
    // Allow everything the corpus plants: most by path + rule, the PEM key by sha256.
    let mut allow = String::from("scan:\n  allow:\n");
    allow.push_str(&format!(
        "    - sha256: {key_sha}\n      reason: documented sample key of the test vendor\n"
    ));
    for (path, rule) in &c.expect {
        if path == "/etc/ssl/private/app.key" {
            continue;
        }
        allow.push_str(&format!(
            "    - path: \"{path}\"\n      rule: {rule}\n      reason: planted by the test\n"
        ));
    }
    let recipe = p.path("recipes/demo.yaml");
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str(&allow);
    std::fs::write(&recipe, &text).unwrap();

    let (v, out) = scan_json(&p, &[tarball.as_str()]);
    // The same key is also embedded in blob.bin: same content, same sha256, allowed too.
    assert!(
        out.status.success(),
        "{}\n{}",
        support::stdout(&out),
        support::stderr(&out)
    );
    let fs = v["artifacts"][0]["findings"].as_array().unwrap();
    assert!(!fs.is_empty());
    assert!(fs.iter().all(|f| f["allowed"].is_string()));
    let key = fs
        .iter()
        .find(|f| f["path"] == "/etc/ssl/private/app.key")
        .unwrap();
    assert_eq!(key["allowed"], "documented sample key of the test vendor");
    let human = support::stdout(&p.run(&["scan", tarball.as_str()]));
    assert!(
        human.contains("allowed: documented sample key of the test vendor"),
        "{human}"
    );

    // A path entry allows only its rule: a different secret type at that path still fails.
    let mut text2 = text.clone();
    text2 = text2.replace(
        "    - path: \"/opt/demo/.env\"\n      rule: env-secret\n",
        "    - path: \"/opt/demo/.env\"\n      rule: jwt\n",
    );
    std::fs::write(&recipe, text2).unwrap();
    let (v, out) = scan_json(&p, &[tarball.as_str()]);
    assert!(!out.status.success());
    let blocking: Vec<_> = v["artifacts"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["allowed"].is_null())
        .collect();
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    assert_eq!(blocking[0]["rule"], "env-secret");

    // Recipe checks: a path entry without a rule is refused.
    std::fs::write(
        &recipe,
        format!(
            "{}scan:\n  allow:\n    - path: /x\n      reason: r\n",
            std::fs::read_to_string(support::workspace().join("recipes/demo.yaml")).unwrap()
        ),
    )
    .unwrap();
    let err = p.fail(&["scan", tarball.as_str()]);
    assert!(err.contains("needs a `rule`"), "{err}");
}

#[test]
fn gate_refuses_a_staged_overlay_with_a_secret() {
    if !require_tools() {
        return;
    }
    let p = Project::demo();
    write(
        &p.path("overlay"),
        "etc/machine-id",
        format!("{}\n", hex::encode(random_bytes(16))),
    );
    let st = stage(&p);
    let r = xtask::recipe::load_resolved(&p.path("recipes/demo.yaml"), &p.root).unwrap();
    let gate = xtask::scan::gate(&r);
    let err = format!(
        "{:#}",
        gate.check(&st.join("overlay.tar.zst"), "demo-overlay.tar.zst")
            .unwrap_err()
    );
    assert!(
        err.contains("demo-overlay.tar.zst!/etc/machine-id") && err.contains("[machine-id]"),
        "{err}"
    );
    assert!(err.contains("nothing was published"), "{err}");
    // The clean demo passes the same gate.
    let clean = Project::demo();
    let st = stage(&clean);
    let r = xtask::recipe::load_resolved(&clean.path("recipes/demo.yaml"), &clean.root).unwrap();
    xtask::scan::gate(&r)
        .check(&st.join("overlay.tar.zst"), "demo-overlay.tar.zst")
        .unwrap();
}

/// An op that writes a file (with or without a planted secret) to publish.
struct WriteArtifact(&'static str, String);

impl xtask::plan::Op for WriteArtifact {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "write": self.0, "len": self.1.len() })
    }
    fn run(&self, cx: &xtask::plan::OpCx) -> anyhow::Result<()> {
        let tree = cx.out.join("tree");
        write(&tree, "etc/demo/.env", &self.1);
        xtask::archive::write_tree_tar_zst(&tree, &cx.out.join(self.0), 1700000000)?;
        Ok(())
    }
}

#[test]
fn exec_with_gate_publishes_nothing_when_the_scan_fails() {
    let p = Project::demo();
    let r = xtask::recipe::load_resolved(&p.path("recipes/demo.yaml"), &p.root).unwrap();
    let output = p.path("output");
    let mut plan = xtask::plan::Plan::new("test", &r.file, &p.root, &p.path("cache"), &output);
    let secret = random_str(ALNUM, 32);
    let i = plan.add(
        xtask::plan::StepBuilder::new("artifact", "write an artifact").op(WriteArtifact(
            "a.tar.zst",
            format!("DEMO_DB_PASSWORD={secret}\n"),
        )),
    );
    let from = plan.step(i).output("a.tar.zst");
    plan.publish(from, "demo-a.tar.zst".into(), true);
    let gate = xtask::scan::gate(&r);
    let opts = xtask::exec::Options {
        force: false,
        gate: Some(&gate),
    };
    let err = format!(
        "{:#}",
        xtask::exec::execute(&plan, &opts)
            .err()
            .expect("the gate refuses")
    );
    assert!(
        err.contains("demo-a.tar.zst!/etc/demo/.env:1 [env-secret]"),
        "{err}"
    );
    assert!(!err.contains(&secret));
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    p.assert_no_leftovers();

    // Same plan shape with a placeholder: published with its checksum.
    let mut plan = xtask::plan::Plan::new("test", &r.file, &p.root, &p.path("cache"), &output);
    let i = plan.add(
        xtask::plan::StepBuilder::new("artifact", "write an artifact").op(WriteArtifact(
            "a.tar.zst",
            "DEMO_DB_PASSWORD=CHANGE_ME\n".into(),
        )),
    );
    plan.publish(
        plan.step(i).output("a.tar.zst"),
        "demo-a.tar.zst".into(),
        true,
    );
    xtask::exec::execute(&plan, &opts).unwrap();
    assert_eq!(p.outputs(), ["demo-a.tar.zst", "demo-a.tar.zst.sha256"]);
}

#[test]
fn bad_input_fails_closed_with_a_clear_error() {
    if !support::require(&[
        "mkfs.ext4",
        "mkfs.vfat",
        "mcopy",
        "sgdisk",
        "qemu-img",
        "openssl",
        "ssh-keygen",
    ]) {
        return;
    }
    let p = Project::demo();
    let corpus_dir = p.path("corpus");
    std::fs::create_dir_all(corpus_dir.join("etc")).unwrap();
    write(&corpus_dir, "etc/demo.conf", "name=demo\n".repeat(2000));
    write(&corpus_dir, "opt/big.bin", random_bytes(3 << 20));
    let disk = build_disk(&p.root, &corpus_dir);
    let clean = p.run(&["scan", disk.as_str()]);
    assert!(support::stdout(&clean).contains("scan: clean"));

    let check = |name: &str, file: &Utf8Path, want: &str| {
        let (v, out) = scan_json(&p, &[file.as_str()]);
        assert!(!out.status.success(), "{name}: scan passed");
        let e = errors(&v).join("\n");
        assert!(
            e.contains(want),
            "{name}: error {e:?} does not mention {want:?}"
        );
    };
    let cut = |from: &Utf8Path, to: &str, len: u64| -> Utf8PathBuf {
        let dst = p.path(to);
        let mut data = std::fs::read(from).unwrap();
        data.truncate(len as usize);
        std::fs::write(&dst, data).unwrap();
        dst
    };

    // Truncated raw disk: the ext4 partition runs past the end.
    let size = std::fs::metadata(&disk).unwrap().len();
    check(
        "truncated disk",
        &cut(&disk, "trunc.raw", size / 2),
        "truncated",
    );
    // Corrupt GPT: flip a byte of the primary header and the backup.
    let mut data = std::fs::read(&disk).unwrap();
    data[512 + 40] ^= 0xff;
    let last = data.len() - 512;
    data[last + 40] ^= 0xff;
    std::fs::write(p.path("corrupt-gpt.raw"), &data).unwrap();
    check("corrupt GPT", &p.path("corrupt-gpt.raw"), "CRC mismatch");
    // Corrupt ext4: wipe the superblock magic of partition 2.
    let mut data = std::fs::read(&disk).unwrap();
    let info = sh("sgdisk", &["-i", "2", disk.as_str()]);
    let start: usize = info
        .lines()
        .find(|l| l.starts_with("First sector:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    data[start * 512 + 1080] = 0;
    data[start * 512 + 1081] = 0;
    std::fs::write(p.path("corrupt-ext.raw"), &data).unwrap();
    check(
        "corrupt ext4",
        &p.path("corrupt-ext.raw"),
        "no file system kiln can read",
    );
    // Corrupt ext4 metadata: break the root directory's extent header.
    // Truncated qcow2 (qemu would read the missing clusters as zeros).
    let qcow = p.path("d.qcow2");
    support::qemu_convert(&disk, "raw", &qcow, "qcow2");
    let qsize = std::fs::metadata(&qcow).unwrap().len();
    check(
        "truncated qcow2",
        &cut(&qcow, "t.qcow2", qsize / 2),
        "corrupt or truncated",
    );
    // Truncated tar.zst.
    let st = stage(&p);
    let tz = st.join("overlay.tar.zst");
    let tsize = std::fs::metadata(&tz).unwrap().len();
    check(
        "truncated tar.zst",
        &cut(&tz, "t.tar.zst", tsize - 40),
        "zstd",
    );
    // Truncated plain tar (cut at a header boundary: no end marker).
    let plain = p.path("plain.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&plain).unwrap());
        xtask::archive::append_tree(&mut b, &corpus_dir, 0).unwrap();
        b.into_inner().unwrap();
    }
    check(
        "truncated tar (data)",
        &cut(&plain, "t1.tar", 4096),
        "truncated",
    );
    let first_entry_end = 512 * 3; // dir etc/, file header + … cut on a block boundary
    check(
        "truncated tar (header)",
        &cut(&plain, "t2.tar", first_entry_end),
        "truncated",
    );
    // Unknown format named like an image; empty file; missing file.
    write(&p.root, "random.iso", random_bytes(100_000));
    check("unknown format", &p.path("random.iso"), "unknown format");
    write(&p.root, "empty.qcow2", b"");
    check("empty", &p.path("empty.qcow2"), "empty");
    check("missing", &p.path("nope.raw"), "nope.raw");
    // Corrupt gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &random_bytes(100_000)).unwrap();
    let mut g = gz.finish().unwrap();
    let n = g.len();
    g[n / 2] ^= 0x55;
    g[n / 2 + 1] ^= 0x55;
    write(&p.root, "c.gz", &g);
    let (v, out) = scan_json(&p, &[p.path("c.gz").as_str()]);
    assert!(
        !out.status.success() && !errors(&v).is_empty(),
        "corrupt gzip passed"
    );
}

#[test]
fn bench_case_builds_and_scans_a_small_disk() {
    if !support::require(&["mkfs.ext4", "mkfs.vfat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scratch = Utf8Path::from_path(dir.path()).unwrap();
    let bcx = xtask::bench::BenchCx {
        scratch,
        cache: scratch,
        scale: 1.0 / 32.0,
    };
    let m = xtask::bench::scan::scan_disk(&bcx).unwrap();
    assert_eq!(m.len(), 1);
    assert!(m[0].kiln.contains("32.0 MiB raw GPT disk"), "{}", m[0].kiln);
    // The scan read the disk's files (the count is in the description).
    assert!(
        m[0].kiln.contains(" files, ") && !m[0].kiln.contains("; 0 files"),
        "{}",
        m[0].kiln
    );
}

/// Debian packages ship public test vectors (libgnutls embeds PEM private
/// keys for its self-tests). A file under /usr that is byte-identical to
/// dpkg's md5sums record is accepted with the package named (a compressed
/// documentation example by the record of the compressed file); the same
/// key in a changed file, outside /usr, or in a file dpkg does not know, is
/// not.
/// apt's man pages (documentation) show `user:password@` URLs and are not
/// findings either.
#[test]
fn package_shipped_test_vectors_pass_changed_or_foreign_copies_do_not() {
    if !require_tools() || !support::require(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let p = Project::empty();
    let root = p.path("rootfs");
    let pem = p.path("vector.pem");
    sh(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            pem.as_str(),
        ],
    );
    let key = std::fs::read(&pem).unwrap();
    let elf = |salt: &[u8]| {
        let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
        b.extend_from_slice(&random_bytes(4096));
        b.extend_from_slice(&key);
        b.extend_from_slice(salt);
        b
    };
    let shipped = elf(b"shipped");
    let merged = elf(b"merged");
    let changed = elf(b"changed");
    // Zero blocks become holes in mkfs.ext4 -d's files (seen in Debian's
    // arm64 libgnutls): the reader must give back the exact bytes.
    let mut sparse = elf(b"sparse");
    sparse.extend_from_slice(&[0; 64 << 10]);
    sparse.extend_from_slice(b"after the hole");
    let mut tail = elf(b"tail");
    tail.extend_from_slice(&[0; 64 << 10]);
    let lib = "usr/lib/x86_64-linux-gnu";
    write(&root, &format!("{lib}/libsparse.so.5"), &sparse);
    write(&root, &format!("{lib}/libtail.so.6"), &tail);
    write(&root, &format!("{lib}/libvector.so.1"), &shipped);
    write(&root, &format!("{lib}/libmerged.so.2"), &merged);
    write(&root, &format!("{lib}/libchanged.so.3"), &changed);
    write(&root, &format!("{lib}/libunknown.so.4"), elf(b"unknown"));
    write(&root, "opt/app/key.pem", &key);
    let md5 = |b: &[u8]| hex::encode(xtask::scan::dpkg::md5(b));
    // Documentation examples are shipped compressed: dpkg records the .gz.
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, b).unwrap();
        e.finish().unwrap()
    };
    let example = gz(&key);
    let edited = gz(&[&key[..], b"# edited\n"].concat());
    let doc = "usr/share/doc/libvector1/examples";
    write(&root, &format!("{doc}/key.pem.gz"), &example);
    write(&root, &format!("{doc}/edited.pem.gz"), &edited);
    write(
        &root,
        "var/lib/dpkg/info/libvector1:amd64.md5sums",
        format!(
            "{}  {lib}/libvector.so.1\n{}  lib/x86_64-linux-gnu/libmerged.so.2\n{}  {lib}/libchanged.so.3\n{}  opt/app/key.pem\n{}  {lib}/libsparse.so.5\n{}  {lib}/libtail.so.6\n{}  {doc}/key.pem.gz\n{}  {doc}/edited.pem.gz\n",
            md5(&shipped),
            md5(&merged),
            md5(&elf(b"as packaged")),
            md5(&key),
            md5(&sparse),
            md5(&tail),
            md5(&example),
            md5(&example),
        ),
    );
    // Merged /usr: dpkg recorded /lib/…, the file lives at /usr/lib/….
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    let mut man = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut man,
        b"Die Standardform von http://[[Benutzer][:Passwort]@]Rechner[:Port]/ wird benutzt.\n",
    )
    .unwrap();
    write(
        &root,
        "usr/share/man/man5/apt.conf.5.gz",
        man.finish().unwrap(),
    );

    let img = p.path("root.ext4");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            root.as_str(),
            "-E",
            "root_owner=0:0",
            img.as_str(),
            "16M",
        ],
    );
    // The sparse files really have holes (else this test proves nothing).
    for f in ["libsparse.so.5", "libtail.so.6"] {
        let st = sh(
            "debugfs",
            &["-R", &format!("stat /{lib}/{f}"), img.as_str()],
        );
        let extents = st.split("EXTENTS:").nth(1).unwrap_or_default().trim();
        let blocks = (if f == "libsparse.so.5" {
            &sparse
        } else {
            &tail
        })
        .len()
            / 4096
            + 1;
        assert!(
            extents.contains(", ") || !extents.contains(&format!("-{}", blocks - 1)),
            "{f} has no hole: {extents}"
        );
    }
    let (v, out) = scan_json(&p, &[img.as_str()]);
    assert!(errors(&v).is_empty(), "scan errors: {:?}", errors(&v));
    let findings = v["artifacts"][0]["findings"].as_array().unwrap().clone();
    let of = |path: &str| -> Vec<&serde_json::Value> {
        findings.iter().filter(|f| f["path"] == path).collect()
    };
    for accepted in [
        format!("/{lib}/libvector.so.1"),
        format!("/{lib}/libmerged.so.2"),
        format!("/{lib}/libsparse.so.5"),
        format!("/{lib}/libtail.so.6"),
        "/usr/share/doc/libvector1/examples/key.pem.gz".to_string(),
    ] {
        let f = of(&accepted);
        assert_eq!(f.len(), 1, "{accepted}: {findings:#?}");
        assert_eq!(f[0]["rule"], "private-key");
        let why = f[0]["allowed"].as_str().unwrap_or_default();
        assert!(why.contains("libvector1:amd64"), "{accepted}: {why}");
    }
    for refused in [
        format!("/{lib}/libchanged.so.3"),
        format!("/{lib}/libunknown.so.4"),
        "/opt/app/key.pem".to_string(),
        "/usr/share/doc/libvector1/examples/edited.pem.gz".to_string(),
    ] {
        let f = of(&refused);
        assert_eq!(f.len(), 1, "{refused}: {findings:#?}");
        assert_eq!(f[0]["rule"], "private-key");
        assert!(
            f[0]["allowed"].is_null(),
            "{refused} was accepted: {:#?}",
            f[0]
        );
    }
    assert!(
        of("/usr/share/man/man5/apt.conf.5").is_empty(),
        "apt's man page is documentation: {findings:#?}"
    );
    assert_eq!(findings.len(), 9, "{findings:#?}");
    assert!(
        !out.status.success(),
        "four refused keys must fail the scan"
    );
}

/// A Raspberry Pi style image: an MBR (no GPT) with a FAT boot partition and
/// an ext4 root, as `sfdisk` writes it. Everything planted in the root is
/// found under `p2!`, and the FAT partition is read too.
#[test]
fn planted_in_an_mbr_image_like_a_raspberry_pi_card() {
    if !require_tools() || !support::require(&["mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk"]) {
        return;
    }
    let p = Project::empty();
    let corpus_dir = p.path("corpus");
    let c = plant(&corpus_dir);
    let ext = p.path("root.ext4");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            corpus_dir.as_str(),
            "-E",
            "root_owner=0:0",
            ext.as_str(),
            "48M",
        ],
    );
    let fat = p.path("boot.fat");
    sh("truncate", &["-s", "64M", fat.as_str()]);
    sh("mkfs.vfat", &["-F", "32", "-n", "BOOTFS", fat.as_str()]);
    let pem = corpus_dir.join("etc/ssl/private/app.key");
    let status = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", fat.as_str(), pem.as_str(), "::/app.key"])
        .status()
        .unwrap();
    assert!(status.success());
    let img = p.path("pi.img");
    sh("truncate", &["-s", "128M", img.as_str()]);
    // 4 MiB alignment as on Raspberry Pi OS images: FAT32 (LBA) boot, Linux root.
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--label", "dos", img.as_str()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        sfdisk.stdin.as_mut().unwrap(),
        b"start=8192, size=131072, type=c\nstart=139264, size=98304, type=83\n",
    )
    .unwrap();
    drop(sfdisk.stdin.take());
    assert!(sfdisk.wait().unwrap().success());
    for (part, seek) in [(&fat, 8192u64), (&ext, 139264)] {
        sh(
            "dd",
            &[
                &format!("if={part}"),
                &format!("of={img}"),
                "bs=512",
                &format!("seek={seek}"),
                "conv=notrunc",
                "status=none",
            ],
        );
    }
    let (v, out) = scan_json(&p, &[img.as_str()]);
    assert!(!out.status.success());
    assert_all_found(&v, &c, "p2!");
    assert!(
        found(&v).contains(&("p1!/app.key".to_string(), "private-key".to_string())),
        "the FAT boot partition was not read: {:#?}",
        found(&v)
    );
    assert_redacted(&c, &out);
}
