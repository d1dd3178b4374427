//! The demo appliance's first-boot and bootstrap scripts, run against a
//! temporary root directory (`DEMO_ROOT`), plus `bash -n` and shellcheck.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use camino::{Utf8Path, Utf8PathBuf};

fn script(name: &str) -> Utf8PathBuf {
    support::workspace().join("overlay/opt/demo/bin").join(name)
}

fn run(name: &str, root: &Utf8Path) -> Output {
    Command::new("bash")
        .arg(script(name))
        .env("DEMO_ROOT", root)
        .env("DEMO_PRIMARY_IP", "192.0.2.10")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn secrets(root: &Utf8Path) -> Vec<(String, String)> {
    std::fs::read_to_string(root.join("etc/demo/secrets.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn tmp_root() -> (tempfile::TempDir, Utf8PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
    std::fs::create_dir_all(p.join("etc")).unwrap();
    // The console the first boot prints the one-time setup code on.
    std::fs::create_dir_all(p.join("dev")).unwrap();
    std::fs::write(p.join("dev/console"), "").unwrap();
    (d, p)
}

#[test]
fn firstboot_mints_secrets_once() {
    let (_d, root) = tmp_root();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("demo: first boot complete"));
    let s = secrets(&root);
    let names: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["DEMO_ENCRYPTION_KEY", "DEMO_DB_PASSWORD", "DEMO_API_TOKEN"]
    );
    for (k, v) in &s {
        assert_eq!(v.len(), 64, "{k} is 32 random bytes in hex");
        assert!(v.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_ne!(s[0].1, s[1].1, "every secret is minted separately");
    let mode = std::fs::metadata(root.join("etc/demo/secrets.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(root.join("var/lib/demo/firstboot.done").exists());
    let web = std::fs::read_to_string(root.join("etc/demo/web.env")).unwrap();
    assert!(web.contains("DEMO_WEB_HOST=demo-192-0-2-10.local"), "{web}");
    assert!(std::fs::read_to_string(root.join("etc/motd"))
        .unwrap()
        .contains("https://demo-192-0-2-10.local/"));

    // Second run: the sentinel stops it; secrets unchanged.
    let o2 = run("firstboot", &root);
    assert!(o2.status.success());
    assert!(text(&o2).contains("already done"));
    assert!(!text(&o2).contains("first boot complete"));
    assert_eq!(secrets(&root), s);

    // Two instances never share an identity.
    let (_d2, other) = tmp_root();
    assert!(run("firstboot", &other).status.success());
    for ((_, a), (_, b)) in secrets(&root).iter().zip(secrets(&other).iter()) {
        assert_ne!(a, b);
    }
}

/// The one-time setup code the first boot printed on the console: the
/// console's text and the code.
fn console_code(root: &Utf8Path) -> (String, String) {
    let console = std::fs::read_to_string(root.join("dev/console")).unwrap();
    let re = regex::Regex::new(
        r"(?m)^demo: setup http://192\.0\.2\.10/ one-time code ([A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4})$",
    )
    .unwrap();
    let all: Vec<String> = re
        .captures_iter(&console)
        .map(|c| c[1].to_string())
        .collect();
    assert_eq!(all.len(), 1, "one code on the console:\n{console}");
    (console, all[0].clone())
}

/// Every file under `dir` (recursively), but the console.
fn files(dir: &Utf8Path, out: &mut Vec<Utf8PathBuf>) {
    for e in dir.read_dir_utf8().unwrap() {
        let e = e.unwrap();
        let p = e.path().to_path_buf();
        if e.file_type().unwrap().is_dir() {
            files(&p, out);
        } else if p.file_name() != Some("console") {
            out.push(p);
        }
    }
}

/// How an operator gets in without a baked credential: the first boot
/// mints a one-time setup code, prints it on the console with the setup
/// URL, and keeps only its sha256 in a root-only file. Nothing else holds
/// the code, not even the script's output (the journal); a second boot
/// prints none, and two instances get different codes.
#[test]
fn firstboot_prints_a_one_time_setup_code_on_the_console_only() {
    use sha2::Digest;
    let (_d, root) = tmp_root();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    let (console, code) = console_code(&root);
    // Nothing the smoke boots treat as a failure.
    assert!(!console.contains("FAILED"), "{console}");
    let stored = root.join("etc/demo/setup-code.sha256");
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap().trim(),
        hex::encode(sha2::Sha256::digest(code.as_bytes()))
    );
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !text(&o).contains(&code),
        "the code is in the output:\n{}",
        text(&o)
    );
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(all.contains(&stored), "{all:?}");
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&code),
            "{f} holds the code in clear"
        );
    }
    // The smoke's `demo:` lines are unchanged.
    assert_eq!(
        demo_lines(&o).last().map(String::as_str),
        Some("demo: first boot complete")
    );

    // A second boot mints and prints nothing.
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(root.join("dev/console")).unwrap(),
        console
    );

    // Another instance, another code.
    let (_d2, other) = tmp_root();
    assert!(run("firstboot", &other).status.success());
    assert_ne!(console_code(&other).1, code);
}

/// The code is also the console login of each administrator without a
/// password (the ISO's admin user: in `sudo`, locked): /etc/shadow gets its
/// SHA-512 crypt hash with the last change at day 0, so the first login must
/// replace it. Accounts with a password, and accounts outside `sudo`, keep
/// theirs; the file keeps its mode.
#[test]
fn firstboot_makes_the_code_the_admins_expired_console_password() {
    if !support::require(&["openssl", "/usr/bin/python3"]) {
        return;
    }
    let (_d, root) = tmp_root();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nsudo:x:27:ops,keeper\nops:x:1000:\n",
    )
    .unwrap();
    let keeper = "keeper:$6$salt$existinghash:20000:0:99999:7:::";
    let shadow = format!(
        "root:*:20000:0:99999:7:::\nops:!:20000:0:99999:7:::\n{keeper}\nsvc:!:20000:0:99999:7:::\n"
    );
    std::fs::write(root.join("etc/shadow"), &shadow).unwrap();
    std::fs::set_permissions(
        root.join("etc/shadow"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    let (console, code) = console_code(&root);
    assert!(
        console.contains("demo: console login ops with the one-time code"),
        "{console}"
    );
    assert!(!console.contains("login keeper") && !console.contains("login svc"));
    let now = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let lines: Vec<&str> = now.lines().collect();
    assert_eq!(lines[0], "root:*:20000:0:99999:7:::");
    assert_eq!(lines[2], keeper);
    assert_eq!(lines[3], "svc:!:20000:0:99999:7:::");
    let ops: Vec<&str> = lines[1].split(':').collect();
    assert_eq!(ops.len(), 9, "{}", lines[1]);
    assert_eq!((ops[0], ops[2]), ("ops", "0"), "expired: {}", lines[1]);
    assert!(ops[1].starts_with("$6$"), "{}", lines[1]);
    assert!(!now.contains(&code));
    // The hash is the code's (crypt(3), as login checks it).
    let check = "import crypt, sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])";
    let out = Command::new("/usr/bin/python3")
        .args(["-W", "ignore", "-c", check, &code, ops[1]])
        .output()
        .unwrap();
    assert_eq!(text(&out).trim(), "True", "{}", text(&out));
    let mode = std::fs::metadata(root.join("etc/shadow"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// A console that cannot be written leaves the operator no way in: the
/// first boot fails (no sentinel) and the next boot mints a new code.
#[test]
fn firstboot_without_a_console_fails_and_retries_with_a_new_code() {
    let (_d, root) = tmp_root();
    std::fs::remove_file(root.join("dev/console")).unwrap();
    std::fs::create_dir(root.join("dev/console")).unwrap();
    let o = run("firstboot", &root);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("demo: first boot FAILED: cannot print the one-time setup code"),
        "{}",
        text(&o)
    );
    assert!(!root.join("var/lib/demo/firstboot.done").exists());
    let first = std::fs::read_to_string(root.join("etc/demo/setup-code.sha256")).unwrap();
    std::fs::remove_dir(root.join("dev/console")).unwrap();
    std::fs::write(root.join("dev/console"), "").unwrap();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    let (_, code) = console_code(&root);
    let now = std::fs::read_to_string(root.join("etc/demo/setup-code.sha256")).unwrap();
    assert_ne!(
        now, first,
        "a new code, {code}, replaces the one nobody saw"
    );
    assert!(root.join("var/lib/demo/firstboot.done").exists());
}

#[test]
fn firstboot_keeps_valid_values_and_replaces_placeholders() {
    let (_d, root) = tmp_root();
    std::fs::create_dir_all(root.join("etc/demo")).unwrap();
    let keep = "k".repeat(40);
    std::fs::write(
        root.join("etc/demo/secrets.env"),
        format!("DEMO_ENCRYPTION_KEY={keep}\nDEMO_DB_PASSWORD=CHANGE_ME\nDEMO_API_TOKEN=\n"),
    )
    .unwrap();
    // An operator-provided value (provision.env) is used when secrets.env has none.
    let provided = "p".repeat(32);
    std::fs::write(
        root.join("etc/demo/provision.env"),
        format!("DEMO_API_TOKEN={provided}\n"),
    )
    .unwrap();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    let s = secrets(&root);
    assert_eq!(s[0].1, keep);
    assert_ne!(s[1].1, "CHANGE_ME");
    assert_eq!(s[1].1.len(), 64);
    assert_eq!(s[2].1, provided);
}

#[test]
fn failed_firstboot_leaves_no_sentinel_and_retries() {
    let (_d, root) = tmp_root();
    // /etc/motd as a directory makes the last write fail.
    std::fs::create_dir_all(root.join("etc/motd")).unwrap();
    let o = run("firstboot", &root);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("first boot complete"));
    assert!(!root.join("var/lib/demo/firstboot.done").exists());
    // Fixed: the next boot completes it.
    std::fs::remove_dir(root.join("etc/motd")).unwrap();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(root.join("var/lib/demo/firstboot.done").exists());
}

/// The lines of the first boot that start with `demo: `.
fn demo_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("demo: "))
        .map(str::to_string)
        .collect()
}

/// The first boot reports where each secret came from, in the lines the
/// smoke boots match: `provisioned NAME sha256=<hex of the value>` for a
/// value from the config carrier's provision.env, `minted NAME` otherwise;
/// never the value itself, and `first boot complete` last.
#[test]
fn firstboot_reports_where_each_secret_came_from() {
    use sha2::Digest;
    let (_d, root) = tmp_root();
    std::fs::create_dir_all(root.join("etc/demo")).unwrap();
    let token = "0123456789abcdef".repeat(4);
    std::fs::write(
        root.join("etc/demo/provision.env"),
        format!("# from the carrier\nDEMO_DB_PASSWORD=CHANGE_ME\nDEMO_API_TOKEN={token}\n"),
    )
    .unwrap();
    let o = run("firstboot", &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains(&token),
        "the value is printed:\n{}",
        text(&o)
    );
    let sha = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    assert_eq!(
        demo_lines(&o),
        [
            "demo: minted DEMO_ENCRYPTION_KEY".to_string(),
            "demo: minted DEMO_DB_PASSWORD".to_string(),
            format!("demo: provisioned DEMO_API_TOKEN sha256={sha}"),
            "demo: first boot complete".to_string(),
        ]
    );
    assert_eq!(secrets(&root)[2].1, token);
}

/// A config carrier that is attached (a disk labelled `cidata`/`CIDATA`)
/// but wrote no provision.env is reported, and the first boot mints and
/// completes anyway.
#[test]
fn firstboot_reports_a_carrier_that_was_not_applied() {
    for label in ["cidata", "CIDATA"] {
        let (_d, root) = tmp_root();
        let by_label = root.join("dev/disk/by-label");
        std::fs::create_dir_all(&by_label).unwrap();
        std::fs::write(root.join("dev/sr0"), "").unwrap();
        std::os::unix::fs::symlink("../../sr0", by_label.join(label)).unwrap();
        let o = run("firstboot", &root);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            demo_lines(&o),
            [
                format!(
                    "demo: config carrier not applied: a disk labelled {label} is attached \
                     but /etc/demo/provision.env is absent"
                ),
                "demo: minted DEMO_ENCRYPTION_KEY".to_string(),
                "demo: minted DEMO_DB_PASSWORD".to_string(),
                "demo: minted DEMO_API_TOKEN".to_string(),
                "demo: first boot complete".to_string(),
            ]
        );
        assert!(root.join("var/lib/demo/firstboot.done").exists());

        // Applied (provision.env written): nothing to report.
        let (_d, root) = tmp_root();
        std::fs::create_dir_all(root.join("dev/disk/by-label")).unwrap();
        std::fs::write(root.join("dev/sr0"), "").unwrap();
        std::os::unix::fs::symlink("../../sr0", root.join("dev/disk/by-label").join(label))
            .unwrap();
        std::fs::create_dir_all(root.join("etc/demo")).unwrap();
        std::fs::write(root.join("etc/demo/provision.env"), "# nothing set\n").unwrap();
        let o = run("firstboot", &root);
        assert!(o.status.success(), "{}", text(&o));
        assert!(!text(&o).contains("not applied"), "{}", text(&o));
    }
}

fn sha256sums(dir: &Utf8Path, files: &[&str]) {
    let mut s = String::new();
    for f in files {
        let h = support::sha256(&dir.join(f));
        s.push_str(&format!("{h}  {f}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), s).unwrap();
}

#[test]
fn bootstrap_verifies_and_seeds_without_overwriting() {
    let (_d, root) = tmp_root();
    let images = root.join("opt/demo/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("web-amd64.tar"), b"image bytes").unwrap();
    std::fs::write(images.join("images.json"), b"[]").unwrap();
    sha256sums(&images, &["web-amd64.tar"]);
    let model = root.join("opt/demo/models/mini");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(model.join("config.json"), b"{\"dim\": 8}").unwrap();
    std::fs::write(model.join("sub/vocab.txt"), b"a\nb\n").unwrap();
    sha256sums(&model, &["config.json", "sub/vocab.txt"]);
    // The operator already changed one file in the live cache, and added one.
    let live = root.join("var/lib/demo/models/mini");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(live.join("config.json"), b"operator's").unwrap();
    std::fs::write(live.join("extra.bin"), b"mine").unwrap();

    let o = run("bootstrap", &root);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("image archive web-amd64.tar verified"), "{t}");
    assert!(t.contains("demo: bootstrap ok"), "{t}");
    assert_eq!(
        std::fs::read(live.join("config.json")).unwrap(),
        b"operator's"
    );
    assert_eq!(std::fs::read(live.join("extra.bin")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(live.join("sub/vocab.txt")).unwrap(),
        b"a\nb\n"
    );
    // Idempotent.
    let o = run("bootstrap", &root);
    assert!(o.status.success() && text(&o).contains("demo: bootstrap ok"));
    assert_eq!(
        std::fs::read(live.join("config.json")).unwrap(),
        b"operator's"
    );

    // A corrupted archive fails the bootstrap, loudly.
    std::fs::write(images.join("web-amd64.tar"), b"tampered").unwrap();
    let o = run("bootstrap", &root);
    assert!(!o.status.success());
    assert!(text(&o).contains("bootstrap FAILED"), "{}", text(&o));
    assert!(!text(&o).contains("bootstrap ok"));
}

#[test]
fn bootstrap_rejects_a_corrupted_model_seed() {
    let (_d, root) = tmp_root();
    let model = root.join("opt/demo/models/mini");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), b"weights").unwrap();
    sha256sums(&model, &["w.bin"]);
    std::fs::write(model.join("w.bin"), b"weightz").unwrap();
    let o = run("bootstrap", &root);
    assert!(!o.status.success());
    assert!(text(&o).contains("model mini"), "{}", text(&o));
    assert!(!root.join("var/lib/demo/models/mini/w.bin").exists());
}

#[test]
fn scripts_pass_bash_n_and_shellcheck() {
    for s in ["firstboot", "bootstrap"] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(script(s))
            .output()
            .unwrap();
        assert!(o.status.success(), "bash -n {s}: {}", text(&o));
    }
    if !support::require(&["shellcheck"]) {
        return;
    }
    let cmd = xtask::tools::shellcheck::check(&[
        &script("firstboot"),
        &script("bootstrap"),
        &support::workspace().join(".ci/run"),
    ]);
    xtask::tools::run(&cmd).unwrap_or_else(|e| panic!("{e:#}"));
}
