//! Seeds: the demo's autoinstall and cloud-init seeds (golden files, values
//! read back with PyYAML, `cloud-init schema`), the cidata ISO and FAT images
//! read back with xorriso and mtools, templates, and every bad input.
//!
//! Golden files live in `xtask/tests/golden/`; regenerate them with
//! `KILN_BLESS=1 cargo test -p xtask --test seed` and review the diff.

mod support;

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;
use support::{sh, Project};
use xtask::seed::{self, SeedKind};

const PY: &str = "/usr/bin/python3";

/// `seed` for the project; the output directory of each target.
fn run_seed(p: &Project, extra: &[&str]) -> BTreeMap<String, Utf8PathBuf> {
    let mut args = vec!["seed"];
    args.extend_from_slice(extra);
    let out = support::stdout(&p.run(&args));
    out.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(t, d)| (t.to_string(), Utf8PathBuf::from(d)))
        .collect()
}

fn read(p: &Utf8Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Load a file the way cloud-init does (PyYAML safe_load), as JSON.
fn pyyaml(p: &Utf8Path) -> Value {
    let code = "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let out = sh(PY, &["-c", code, p.as_str()]);
    serde_json::from_str(&out).unwrap()
}

fn schema_ok(file: &Utf8Path) {
    let out = sh("cloud-init", &["schema", "--config-file", file.as_str()]);
    assert!(out.contains("Valid cloud-config"), "{file}: {out}");
}

/// The autoinstall's `user-data` section is the installed system's
/// cloud-config: `cloud-init schema` checks it as one (it checks only the
/// top level of the autoinstall file itself).
fn nested_user_data_ok(ai: &Value) {
    let d = tempfile::tempdir().unwrap();
    let f = Utf8Path::from_path(d.path()).unwrap().join("user-data");
    let yaml = yaml_serde::to_string(&ai["user-data"]).unwrap();
    std::fs::write(&f, format!("#cloud-config\n{yaml}")).unwrap();
    schema_ok(&f);
}

#[test]
fn demo_seeds_match_golden_files() {
    if !support::require(&["xorriso", "mkfs.vfat", "mcopy"]) {
        return;
    }
    let p = Project::demo();
    let dirs = run_seed(&p, &[]);
    assert_eq!(
        dirs.keys().cloned().collect::<Vec<_>>(),
        ["iso", "pi", "qcow2"]
    );
    support::golden("demo-iso.user-data", &read(&dirs["iso"].join("user-data")));
    support::golden("demo-iso.meta-data", &read(&dirs["iso"].join("meta-data")));
    support::golden(
        "demo-cloud.user-data",
        &read(&dirs["qcow2"].join("user-data")),
    );
    support::golden(
        "demo-cloud.meta-data",
        &read(&dirs["qcow2"].join("meta-data")),
    );
    // The Pi gets the same cloud-init seed; network-config ships the recipe's bytes.
    for f in ["user-data", "meta-data", "network-config"] {
        assert_eq!(
            read(&dirs["pi"].join(f)),
            read(&dirs["qcow2"].join(f)),
            "{f}"
        );
    }
    assert_eq!(
        read(&dirs["qcow2"].join("network-config")),
        read(&p.path("nocloud/network-config"))
    );
    assert!(
        !dirs["iso"].join("cidata.iso").exists(),
        "the ISO's seed is not a cidata image"
    );
}

#[test]
fn generated_files_mean_what_the_recipe_says_for_cloud_init() {
    if !support::require(&["xorriso", "mkfs.vfat", "mcopy", "cloud-init", PY]) {
        return;
    }
    let p = Project::demo();
    let dirs = run_seed(&p, &[]);

    // Autoinstall, read as the installer reads it (YAML 1.1).
    let ud = dirs["iso"].join("user-data");
    assert!(read(&ud).starts_with("#cloud-config\n"));
    schema_ok(&ud);
    let v = pyyaml(&ud);
    let ai = &v["autoinstall"];
    assert_eq!(ai["version"], 1);
    // Unattended: no screen stops, no identity (no password), the admin
    // user comes from user-data.
    assert!(ai.get("interactive-sections").is_none(), "{ai:#}");
    assert!(ai.get("identity").is_none(), "no baked identity/password");
    assert_eq!(ai["locale"], "en_US.UTF-8");
    assert_eq!(ai["keyboard"]["layout"], "us");
    assert_eq!(ai["timezone"], "Etc/UTC");
    assert_eq!(ai["ssh"]["install-server"], true);
    assert_eq!(ai["storage"]["layout"]["name"], "direct");
    assert_eq!(
        ai["storage"]["layout"]["match"],
        serde_json::json!({"size": "largest"})
    );
    assert_eq!(
        ai["network"],
        serde_json::json!({"version": 2, "ethernets": {"wired": {
            "match": {"name": "e*"}, "dhcp4": true, "optional": true}}})
    );
    let admin = &ai["user-data"]["users"][0];
    assert_eq!(ai["user-data"]["users"].as_array().unwrap().len(), 1);
    assert_eq!(admin["name"], "demo-admin");
    assert_eq!(admin["lock_passwd"], true);
    assert_eq!(admin["groups"], serde_json::json!(["adm", "sudo"]));
    assert_eq!(admin["sudo"], "ALL=(ALL) NOPASSWD:ALL");
    assert!(admin.get("passwd").is_none() && admin.get("hashed_passwd").is_none());
    assert!(
        admin.get("ssh_authorized_keys").is_none(),
        "the demo names no keys"
    );
    assert_eq!(ai["user-data"]["hostname"], "demo");
    nested_user_data_ok(ai);
    let cmds: Vec<&str> = ai["late-commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let pos = |needle: &str| {
        cmds.iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no late-command with {needle:?}: {cmds:#?}"))
    };
    // Overlay from the ISO (the path the ISO builder uses), ownership, units, keys, marker last.
    let r = xtask::recipe::load_resolved(&p.path("recipes/demo.yaml"), &p.root).unwrap();
    let ov = seed::iso_overlay(&r);
    assert_eq!(ov.cdrom_path(), "/cdrom/kiln/overlay.tar.zst");
    let lay = pos(&ov.cdrom_path());
    let extract = pos("tar -x -p --same-owner --numeric-owner --no-overwrite-dir --keep-directory-symlink -C /target");
    let chown = pos("curtin in-target -- chown -R root:root /etc/demo /opt/demo");
    let (enable, mask) = xtask::stage::unit_names(&r);
    let en = pos(&format!(
        "curtin in-target -- systemctl enable {}",
        enable.join(" ")
    ));
    let ma = pos(&format!(
        "curtin in-target -- systemctl mask {}",
        mask.join(" ")
    ));
    let keys = pos("ssh-keygen -A");
    // Every per-install identity is reset and made again on the target.
    let snakeoil = pos(
        "rm -f /etc/ssl/private/ssl-cert-snakeoil.key; rm -f /etc/ssl/certs/ssl-cert-snakeoil.pem; \
         if [ -d /etc/ssl/certs ]; then find /etc/ssl/certs -maxdepth 1 -lname ssl-cert-snakeoil.pem -delete; fi; \
         if [ -x /usr/sbin/make-ssl-cert ]; then /usr/sbin/make-ssl-cert generate-default-snakeoil --force-overwrite; fi",
    );
    let marker = pos(&format!(">/target{}", seed::installed_marker(r.name())));
    assert!(keys < snakeoil && snakeoil < marker, "{cmds:#?}");
    assert!(
        lay < extract && extract < chown && chown < en && en < ma && ma < keys && keys < marker,
        "{cmds:#?}"
    );
    assert_eq!(marker, cmds.len() - 1);
    assert!(pos("curtin in-target -- systemd-sysusers") < chown);
    assert_eq!(
        pyyaml(&dirs["iso"].join("meta-data"))["instance-id"],
        "demo-0.0.0-dev"
    );

    // cloud-init seed: the operator's provision.env, 0600, as a string.
    let ud = dirs["qcow2"].join("user-data");
    schema_ok(&ud);
    let v = pyyaml(&ud);
    let wf = &v["write_files"][0];
    assert_eq!(wf["path"], "/etc/demo/provision.env");
    assert_eq!(wf["permissions"], "0600");
    assert_eq!(wf["owner"], "root:root");
    assert_eq!(
        wf["content"].as_str().unwrap(),
        read(&p.path("nocloud/provision.env"))
    );
    let md = pyyaml(&dirs["qcow2"].join("meta-data"));
    assert_eq!(md["instance-id"], "demo-0.0.0-dev");
    assert_eq!(md["local-hostname"], "demo");
    let nc = pyyaml(&dirs["qcow2"].join("network-config"));
    assert_eq!(nc["version"], 2);
    assert_eq!(nc["ethernets"]["wired"]["match"]["name"], "e*");
    assert_eq!(nc["ethernets"]["wired"]["dhcp4"], true);
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln0000000000000000000000000000000000000 op@site";

/// A recipe that opts into interactive screens: the seed stays valid (the
/// installer's schema, kiln's validator, cloud-init's schema for the nested
/// user-data); the network is left to the operator's screen, storage and
/// the admin user stay as the screens' defaults and the extra account.
#[test]
fn interactive_sections_are_an_opt_in_and_stay_valid() {
    if !support::require(&[PY, "cloud-init"]) {
        return;
    }
    let p = Project::demo();
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!(
            "{recipe}  autoinstall:\n    interactive_sections: [network, storage, identity]\n    \
             admin_user: ops\n    ssh_authorized_keys: [\"{KEY}\"]\n    storage_layout: lvm\n    \
             storage_match: {{ssd: true, size: smallest, serial: \"CT*\"}}\n"
        ),
    );
    let dirs = run_seed(&p, &["--target", "iso"]);
    let ud = dirs["iso"].join("user-data");
    schema_ok(&ud);
    // kiln's validator, on the file as written, finds nothing to warn about.
    let w =
        seed::validate_user_data(read(&ud).as_bytes(), &ud, SeedKind::Autoinstall, false).unwrap();
    assert!(w.is_empty(), "{w:#?}");
    let ai = pyyaml(&ud)["autoinstall"].clone();
    assert_eq!(
        ai["interactive-sections"],
        serde_json::json!(["network", "storage", "identity"])
    );
    assert!(ai.get("network").is_none(), "the operator's screen decides");
    assert!(ai.get("identity").is_none());
    assert_eq!(
        ai["storage"]["layout"],
        serde_json::json!({"name": "lvm", "match": {"serial": "CT*", "ssd": true, "size": "smallest"}})
    );
    let admin = &ai["user-data"]["users"][0];
    assert_eq!(admin["name"], "ops");
    assert_eq!(admin["ssh_authorized_keys"], serde_json::json!([KEY]));
    assert_eq!(admin["lock_passwd"], true);
    assert!(
        ai["ssh"].get("authorized-keys").is_none(),
        "the keys belong to the admin user: {ai:#}"
    );
    nested_user_data_ok(&ai);

    // The unattended default with keys: the same admin, the keys on it.
    let p = Project::demo();
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}  autoinstall:\n    ssh_authorized_keys: [\"{KEY}\"]\n"),
    );
    let dirs = run_seed(&p, &["--target", "iso"]);
    let ai = pyyaml(&dirs["iso"].join("user-data"))["autoinstall"].clone();
    assert!(ai.get("interactive-sections").is_none());
    assert_eq!(ai["user-data"]["users"][0]["name"], "demo-admin");
    assert_eq!(
        ai["user-data"]["users"][0]["ssh_authorized_keys"],
        serde_json::json!([KEY])
    );
    assert_eq!(ai["network"]["ethernets"]["wired"]["dhcp4"], true);
    nested_user_data_ok(&ai);
}

/// kiln's validator holds what kiln writes to the installer's schema: the
/// demo's seed with one of kiln's values broken is refused, naming the key.
#[test]
fn a_kiln_bug_in_a_written_key_fails_validation() {
    let p = Project::demo();
    let dirs = run_seed(&p, &["--target", "iso"]);
    let good = read(&dirs["iso"].join("user-data"));
    seed::validate_user_data(good.as_bytes(), "t".into(), SeedKind::Autoinstall, false).unwrap();
    let bugs: &[(&str, &str, &str)] = &[
        (
            "size: \"largest\"",
            "size: \"biggest\"",
            "`autoinstall.storage.layout.match.size` must be one of largest, smallest",
        ),
        (
            "name: \"direct\"",
            "name: \"plain\"",
            "`autoinstall.storage.layout.name` must be one of lvm, direct, zfs, hybrid",
        ),
        (
            "dhcp4: true",
            "dhcp4: \"true\"",
            "`autoinstall.network.ethernets.wired.dhcp4` must be true or false",
        ),
        (
            "  network:\n    version: 2",
            "  network:\n    version: 1",
            "`autoinstall.network.version` must be the integer 2",
        ),
        (
            "name: \"e*\"",
            "names: \"e*\"",
            "unknown key `autoinstall.network.ethernets.wired.match.names`",
        ),
        (
            "lock_passwd: true",
            "lock_passwd: \"yes\"",
            "`autoinstall.user-data.users[0].lock_passwd` must be true or false",
        ),
        (
            "      - name: \"demo-admin\"\n        gecos",
            "      - gecos",
            "`autoinstall.user-data.users[0]` has no `name`",
        ),
        (
            "  user-data:\n    hostname: \"demo\"\n",
            "  user-data: []\n  zz:\n    hostname: \"demo\"\n",
            "`autoinstall.user-data` must be a mapping",
        ),
        (
            "  keyboard:\n    layout: \"us\"",
            "  keyboard:\n    variant: \"us\"",
            "`autoinstall.keyboard` has no `layout`",
        ),
    ];
    for (from, to, says) in bugs {
        assert!(good.contains(from), "{from:?} not in\n{good}");
        let bad = good.replacen(from, to, 1);
        let err =
            seed::validate_user_data(bad.as_bytes(), "t".into(), SeedKind::Autoinstall, false)
                .expect_err(&format!("{to:?} accepted"))
                .to_string();
        assert!(err.contains(says), "{to:?}: expected {says:?} in:\n{err}");
        assert!(err.contains("hint:"), "{err}");
    }
}

#[test]
fn recipe_settings_of_the_unattended_install_are_checked() {
    for (extra, says) in [
        (
            "    admin_user: Admin\n",
            "seed.autoinstall.admin_user `Admin` is not a valid user name",
        ),
        (
            "    admin_user: root\n",
            "seed.autoinstall.admin_user `root`",
        ),
        (
            "    interactive_sections: [netwrok]\n",
            "`netwrok` is not an installer section",
        ),
        ("    storage_match: {}\n", "storage_match is empty"),
        ("    storage_match: {size: biggest}\n", "storage_match"),
        ("    storage_layout: raid\n", "`raid` is not a layout"),
    ] {
        let p = Project::demo();
        let recipe = read(&p.path("recipes/demo.yaml"));
        p.write(
            "recipes/demo.yaml",
            &format!("{recipe}  autoinstall:\n{extra}"),
        );
        let err = p.fail(&["--dry-run", "seed", "--target", "iso"]);
        assert!(
            err.contains(says),
            "{extra:?}: expected {says:?} in:\n{err}"
        );
    }
}

#[test]
fn yaml_11_traps_are_written_quoted() {
    if !support::require(&[PY, "cloud-init"]) {
        return;
    }
    // Recipe values that YAML 1.1 would turn into booleans or octal numbers.
    let p = Project::demo();
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!(
            "{recipe}  autoinstall:\n    locale: \"on\"\n    keyboard_layout: \"no\"\n    timezone: \"0644\"\n    \
             packages: [\"yes\", \"off\", \"1:30\", \"~\"]\n    late_commands: [\"echo a: b # c\"]\n"
        ),
    );
    let dirs = run_seed(&p, &["--target", "iso"]);
    let ud = dirs["iso"].join("user-data");
    schema_ok(&ud);
    let ai = pyyaml(&ud)["autoinstall"].clone();
    assert_eq!(ai["locale"], "on");
    assert_eq!(ai["keyboard"]["layout"], "no");
    assert_eq!(ai["timezone"], "0644");
    assert_eq!(
        ai["packages"],
        serde_json::json!(["yes", "off", "1:30", "~"])
    );
    assert_eq!(
        ai["late-commands"].as_array().unwrap().last().unwrap(),
        "echo a: b # c"
    );
}

#[test]
fn cidata_images_are_readable_and_reproducible() {
    if !support::require(&["xorriso", "mkfs.vfat", "mcopy", "mdir", "mtype"]) {
        return;
    }
    let p = Project::demo();
    let dirs = run_seed(&p, &["--target", "qcow2"]);
    let d = &dirs["qcow2"];
    let iso = d.join("cidata.iso");
    let img = d.join("cidata.img");

    let ls = sh("xorriso", &["-no_rc", "-indev", iso.as_str(), "-ls", "/"]);
    for f in ["'user-data'", "'meta-data'", "'network-config'"] {
        assert!(ls.contains(f), "{f} not in the cidata ISO:\n{ls}");
    }
    let o = std::process::Command::new("xorriso")
        .args(["-no_rc", "-indev", iso.as_str(), "-pvd_info"])
        .output()
        .unwrap();
    let pvd = support::stdout(&o) + &support::stderr(&o);
    assert!(pvd.contains("Volume Id    : cidata"), "{pvd}");
    let x = tempfile::tempdir().unwrap();
    let xdir = Utf8Path::from_path(x.path()).unwrap();
    for f in ["user-data", "meta-data", "network-config"] {
        let dest = xdir.join(f);
        sh(
            "xorriso",
            &[
                "-no_rc",
                "-osirrox",
                "on",
                "-indev",
                iso.as_str(),
                "-extract",
                &format!("/{f}"),
                dest.as_str(),
            ],
        );
        assert_eq!(read(&dest), read(&d.join(f)), "{f} in the ISO");
    }

    let dir = sh("mdir", &["-i", img.as_str(), "::/"]);
    assert!(dir.contains("Volume in drive : is CIDATA"), "{dir}");
    for f in ["user-data", "meta-data", "network-config"] {
        assert!(dir.contains(f), "{f} not on the FAT image:\n{dir}");
        assert_eq!(
            sh("mtype", &["-i", img.as_str(), &format!("::/{f}")]),
            read(&d.join(f)),
            "{f} on FAT"
        );
    }

    // Rebuilt later (--force), both images are byte-identical.
    let iso1 = std::fs::read(&iso).unwrap();
    let img1 = std::fs::read(&img).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dirs2 = run_seed(&p, &["--target", "qcow2", "--force"]);
    assert_eq!(dirs2["qcow2"], *d, "same inputs, same cache key");
    assert!(
        std::fs::read(&iso).unwrap() == iso1,
        "cidata.iso is not reproducible"
    );
    assert!(
        std::fs::read(&img).unwrap() == img1,
        "cidata.img is not reproducible"
    );
}

const TEMPLATE: &str = "#cloud-config
# Operator's own autoinstall: comments, key order and style must survive.
autoinstall:
  version: 1
  refresh-installer:
    update: no   # keep the ISO's installer
  user-data:
    users:
      - name: operator
        lock_passwd: true
  late-commands:
    - echo operator-first >/target/root/op.txt
    - [\"curtin\", \"in-target\", \"--\", \"true\"]
  shutdown: poweroff
";

fn template_project(recipe_extra: &str) -> Project {
    let p = Project::demo();
    p.write("nocloud/user-data", TEMPLATE);
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}  autoinstall:\n    template: nocloud/user-data\n    late_commands: [\"echo recipe-extra\"]\n{recipe_extra}"),
    );
    p
}

#[test]
fn a_template_is_shipped_as_is_plus_what_the_recipe_requires() {
    if !support::require(&[PY, "cloud-init"]) {
        return;
    }
    let p = template_project("    locale: en_GB.UTF-8\n");
    let dirs = run_seed(&p, &["--target", "iso"]);
    let ud = dirs["iso"].join("user-data");
    let out = read(&ud);
    // Every template line survives, in order; kiln only inserted lines.
    let mut rest = out.lines();
    for l in TEMPLATE.lines() {
        assert!(
            rest.any(|o| o == l),
            "template line {l:?} lost or reordered:\n{out}"
        );
    }
    assert!(out.starts_with("#cloud-config\n# Operator's own"));
    schema_ok(&ud);
    let ai = pyyaml(&ud)["autoinstall"].clone();
    assert_eq!(
        ai["refresh-installer"]["update"], false,
        "their YAML 1.1 `no` kept as written"
    );
    assert_eq!(ai["user-data"]["users"][0]["name"], "operator");
    assert!(
        ai.get("network").is_none() && ai.get("storage").is_none(),
        "defaults are not forced into a template"
    );
    assert_eq!(ai["shutdown"], "poweroff");
    assert_eq!(
        ai["locale"], "en_GB.UTF-8",
        "the recipe's explicit setting is added"
    );
    assert!(
        ai.get("timezone").is_none(),
        "defaults are not forced into a template"
    );
    let cmds = ai["late-commands"].as_array().unwrap();
    // kiln's commands first, then the recipe's extras, then the template's own.
    assert!(
        cmds[0]
            .as_str()
            .unwrap()
            .contains("/cdrom/kiln/overlay.tar.zst"),
        "{cmds:#?}"
    );
    let n = cmds.len();
    assert_eq!(cmds[n - 3], "echo recipe-extra");
    assert_eq!(cmds[n - 2], "echo operator-first >/target/root/op.txt");
    assert_eq!(
        cmds[n - 1],
        serde_json::json!(["curtin", "in-target", "--", "true"])
    );

    // A key the recipe sets differently is an error naming the template's line.
    let p = template_project("    locale: en_GB.UTF-8\n");
    p.write(
        "nocloud/user-data",
        &TEMPLATE.replace(
            "  shutdown: poweroff\n",
            "  shutdown: poweroff\n  locale: de_DE.UTF-8\n",
        ),
    );
    let err = p.fail(&["seed", "--target", "iso"]);
    assert!(
        err.contains("nocloud/user-data:15:11") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn a_cloud_config_template_gets_the_provision_file_added() {
    if !support::require(&["xorriso", "mkfs.vfat", "mcopy", "cloud-init", PY]) {
        return;
    }
    let p = Project::demo();
    let template = "#cloud-config\n# site defaults\npackage_update: false\nwrite_files:\n  - path: /etc/motd\n    content: hello\n";
    p.write("nocloud/cloud-config", template);
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &recipe.replace(
            "  cloud_init:\n",
            "  cloud_init:\n    template: nocloud/cloud-config\n",
        ),
    );
    let dirs = run_seed(&p, &["--target", "qcow2"]);
    let ud = dirs["qcow2"].join("user-data");
    let out = read(&ud);
    let mut rest = out.lines();
    for l in template.lines() {
        assert!(
            rest.any(|o| o == l),
            "template line {l:?} lost or reordered:\n{out}"
        );
    }
    schema_ok(&ud);
    let v = pyyaml(&ud);
    assert_eq!(v["package_update"], false);
    assert_eq!(v["write_files"][0]["path"], "/etc/demo/provision.env");
    assert_eq!(v["write_files"][0]["permissions"], "0600");
    assert_eq!(v["write_files"][1]["path"], "/etc/motd");

    // The template writing the same file is a clash, not a silent double write.
    p.write(
        "nocloud/cloud-config",
        &template.replace("/etc/motd", "/etc/demo/provision.env"),
    );
    let err = p.fail(&["seed", "--target", "qcow2"]);
    assert!(
        err.contains("nocloud/cloud-config:5:11") && err.contains("hint:"),
        "{err}"
    );
}

/// One bad input: the file text, the kind, and what the error must say.
struct Bad {
    name: &'static str,
    kind: SeedKind,
    text: &'static str,
    at: &'static str,
    says: &'static str,
}

const BAD: &[Bad] = &[
    Bad { name: "broken YAML", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  packages: [curl\n  locale: x\n", at: ":5:", says: "YAML does not parse" },
    Bad { name: "tab indentation", kind: SeedKind::CloudConfig, text: "#cloud-config\nruncmd:\n\t- ls\n", at: ":3:", says: "YAML does not parse" },
    Bad { name: "missing header", kind: SeedKind::Autoinstall, text: "autoinstall:\n  version: 1\n  interactive-sections: [identity]\n", at: ":1:1:", says: "missing `#cloud-config` header" },
    Bad { name: "header not first", kind: SeedKind::CloudConfig, text: "\n#cloud-config\npackages: [curl]\n", at: ":1:1:", says: "missing `#cloud-config` header" },
    Bad { name: "autoinstall misspelled", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstal:\n  version: 1\n", at: ":2:1:", says: "`autoinstal` is not `autoinstall`" },
    Bad { name: "autoinstall capitalised", kind: SeedKind::Autoinstall, text: "#cloud-config\nAutoInstall:\n  version: 1\n", at: ":2:1:", says: "`AutoInstall` is not `autoinstall`" },
    Bad { name: "no autoinstall at all", kind: SeedKind::Autoinstall, text: "#cloud-config\npackages: [curl]\n", at: ":2:1:", says: "no top-level `autoinstall:`" },
    Bad { name: "wrong version", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 2\n  interactive-sections: [identity]\n", at: ":3:12:", says: "only version 1" },
    Bad { name: "version as string", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: \"1\"\n  interactive-sections: [identity]\n", at: ":3:12:", says: "must be the integer 1" },
    Bad { name: "missing version", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  interactive-sections: [identity]\n", at: ":3:3:", says: "has no `version`" },
    Bad { name: "bool where a string goes (YAML 1.1 `on`)", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  locale: on\n", at: ":5:11:", says: "`autoinstall.locale` must be a string, but it is a boolean" },
    Bad { name: "string where a bool goes", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  ssh:\n    install-server: \"true\"\n", at: ":6:21:", says: "`autoinstall.ssh.install-server` must be true or false" },
    Bad { name: "scalar where a list goes", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  packages: curl\n", at: ":5:13:", says: "`autoinstall.packages` must be a list of strings" },
    Bad { name: "octal permissions", kind: SeedKind::CloudConfig, text: "#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: 0600\n", at: ":4:18:", says: "must be a quoted string like '0600'" },
    Bad { name: "identity password hash", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: demo\n    username: op\n    password: \"$6$salt$hash\"\n", at: ":7:15:", says: "bakes a password" },
    Bad { name: "cloud-config hashed_passwd", kind: SeedKind::CloudConfig, text: "#cloud-config\nusers:\n  - name: op\n    hashed_passwd: $6$abc$def\n", at: ":4:20:", says: "`users[0].hashed_passwd` bakes a password" },
    Bad { name: "cloud-config plain_text_passwd", kind: SeedKind::CloudConfig, text: "#cloud-config\nusers:\n  - name: op\n    plain_text_passwd: hunter2\n", at: ":4:24:", says: "bakes a password" },
    Bad { name: "late-command parsed as a mapping", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  late-commands:\n    - echo result: ok\n", at: ":6:7:", says: "`autoinstall.late-commands[0]` is a mapping" },
    Bad { name: "late-command list with a number", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  late-commands:\n    - [sleep, 5]\n", at: ":6:15:", says: "`autoinstall.late-commands[0][1]` must be a string" },
    Bad { name: "late-command as a boolean", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  late-commands:\n    - true\n", at: ":6:7:", says: "must be a string (run with sh -c) or a list of strings" },
    Bad { name: "late-commands not a list", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  late-commands: reboot\n", at: ":5:18:", says: "must be a list of commands" },
    Bad { name: "no identity and not interactive", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n", at: ":3:3:", says: "cannot create a user" },
    Bad { name: "identity without a password", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    username: op\n    hostname: d\n", at: ":5:5:", says: "`autoinstall.identity` has no `password`" },
    Bad { name: "identity with an unknown key", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  identity:\n    user: op\n", at: ":6:5:", says: "unknown key `autoinstall.identity.user`" },
    Bad { name: "user-data users without a name", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  user-data:\n    users:\n      - gecos: x\n", at: ":6:9:", says: "`autoinstall.user-data.users[0]` has no `name`" },
    Bad { name: "user-data with a password", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  user-data:\n    users:\n      - name: op\n        passwd: $6$x$y\n", at: ":7:17:", says: "`autoinstall.user-data.users[0].passwd` bakes a password" },
    Bad { name: "storage match on a made-up size", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  storage:\n    layout:\n      name: direct\n      match: {size: biggest}\n", at: ":8:21:", says: "`autoinstall.storage.layout.match.size` must be one of largest, smallest" },
    Bad { name: "netplan version 1 in autoinstall", kind: SeedKind::Autoinstall, text: "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  network:\n    version: 1\n", at: ":6:14:", says: "`autoinstall.network.version` must be the integer 2" },
];

#[test]
fn every_bad_input_is_refused_with_file_line_column_and_hint() {
    let file = Utf8Path::new("nocloud/user-data");
    for b in BAD {
        let err = match seed::validate_user_data(b.text.as_bytes(), file, b.kind, false) {
            Ok(w) => panic!("{}: accepted (warnings: {w:?})", b.name),
            Err(e) => e.to_string(),
        };
        let loc = format!("nocloud/user-data{}", b.at);
        assert!(
            err.contains(&loc),
            "{}: no location {loc:?} in:\n{err}",
            b.name
        );
        assert!(
            err.contains(b.says),
            "{}: expected {:?} in:\n{err}",
            b.name,
            b.says
        );
        assert!(err.contains("hint:"), "{}: no hint in:\n{err}", b.name);
    }
}

#[test]
fn passwords_are_allowed_only_when_the_recipe_says_so() {
    let text = "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: d\n    username: op\n    password: \"$6$s$h\"\n";
    let w =
        seed::validate_user_data(text.as_bytes(), "t".into(), SeedKind::Autoinstall, true).unwrap();
    assert!(
        w.iter()
            .any(|w| w.message.contains("allowed by seed.allow_passwords")),
        "{w:?}"
    );
    // Public keys are fine.
    let text = "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nza op@host\n";
    assert!(
        seed::validate_user_data(text.as_bytes(), "t".into(), SeedKind::CloudConfig, false)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn warnings_name_unknown_keys_and_yaml_11_traps() {
    let text = "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [identity]\n  locales: en_US.UTF-8\n  ssh:\n    install-server: yes\n";
    let w = seed::validate_user_data(text.as_bytes(), "t".into(), SeedKind::Autoinstall, false)
        .unwrap();
    let all: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert!(
        all.iter()
            .any(|w| w.contains("t:5:3: unknown key `autoinstall.locales`")
                && w.contains("did you mean `locale`")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|w| w.contains("t:7:21: unquoted `yes` is a boolean")),
        "{all:#?}"
    );
}

#[test]
fn bad_seeds_fail_the_verb_before_any_work() {
    let p = Project::demo();
    p.write(
        "nocloud/user-data",
        "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    password: $6$x$y\n",
    );
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}  autoinstall:\n    template: nocloud/user-data\n"),
    );
    let err = p.fail(&["--dry-run", "seed", "--target", "iso"]);
    assert!(
        err.contains("nocloud/user-data:5:15") && err.contains("bakes a password"),
        "{err}"
    );
    assert!(!p.path("cache").exists(), "nothing was built");

    // A wrong type in the recipe itself: file, line and column of the recipe.
    let p = Project::demo();
    let recipe = read(&p.path("recipes/demo.yaml"));
    p.write(
        "recipes/demo.yaml",
        &format!("{recipe}  autoinstall:\n    late_commands:\n      - {{echo: hi}}\n"),
    );
    let err = p.fail(&["seed", "--target", "iso"]);
    assert!(
        err.contains("recipes/demo.yaml:") && err.contains("late_commands"),
        "{err}"
    );

    // A broken network-config.
    let p = Project::demo();
    p.write(
        "nocloud/network-config",
        "ethernets:\n  e:\n    dhcp4: true\n",
    );
    let err = p.fail(&["--dry-run", "seed", "--target", "qcow2"]);
    assert!(
        err.contains("nocloud/network-config:1:1") && err.contains("no `version`"),
        "{err}"
    );
}

#[test]
fn kernel_args_for_grub_are_checked() {
    let good = seed::autoinstall_kernel_args();
    assert_eq!(good, "autoinstall ds=nocloud\\;s=/cdrom/nocloud/");
    seed::check_kernel_args(&good).unwrap();
    let err = seed::check_kernel_args("autoinstall ds=nocloud;s=/cdrom/nocloud/")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unescaped `;`") && err.contains("hint:"),
        "{err}"
    );
}
