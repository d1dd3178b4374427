//! `release --push oci://…` and `release pull`: a release published to a
//! real registry (`docker-registry` on 127.0.0.1) as one OCI artifact and
//! fetched back byte for byte, verified; refusals that name the registry
//! and leave the release directory whole; references refused before any
//! build. Overlay-only releases: no disk is built.

mod support;

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use support::{stderr, Project};
use xtask::release::oci;

/// The one release directory in the project's output.
fn release_dir(p: &Project) -> Utf8PathBuf {
    let outputs = p.outputs();
    assert_eq!(outputs.len(), 1, "output/ holds {outputs:?}");
    p.path("output").join(&outputs[0])
}

/// Every file of `dir` by name, with its bytes.
fn files(dir: &Utf8Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

/// The manifest digest a push reported (`… as sha256:<hex> (…`).
fn pushed_digest(out: &std::process::Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("kiln: pushed "))
        .unwrap_or_else(|| panic!("no `pushed` line:\n{err}"));
    let digest = line
        .split(" as ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {line}"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{line}"
    );
    digest.to_string()
}

/// The manifest the registry serves for `reference`'s tag, raw.
fn manifest(reg: &support::Registry, repo: &str, tag: &str) -> Vec<u8> {
    let url = format!("http://{}/v2/{repo}/manifests/{tag}", reg.host());
    let mut resp = ureq::get(&url)
        .header("Accept", oci::MANIFEST_TYPE)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.body_mut().read_to_vec().unwrap()
}

/// `err` says every one of `wants`.
fn says<S: AsRef<str>>(err: &str, wants: &[S]) {
    for want in wants {
        let want = want.as_ref();
        assert!(err.contains(want), "no `{want}` in:\n{err}");
    }
}

/// A refused push's error `err` says every one of `wants` and that the
/// local release is intact, and it is: the one release directory, which
/// `sha256sum -c` verifies. That directory.
fn kept_after_refusal<S: AsRef<str>>(p: &Project, err: &str, wants: &[S]) -> Utf8PathBuf {
    says(err, wants);
    says(err, &["is complete and intact"]);
    let dir = release_dir(p);
    support::sha256sum_check(&dir.join("SHA256SUMS"));
    dir
}

fn pull(p: &Project, reference: &str, dest: &Utf8Path) -> std::process::Output {
    p.run(&["release", "pull", reference, "--dest", dest.as_str()])
}

#[test]
fn a_release_pushed_and_pulled_back_is_byte_identical_and_verifies() {
    if !support::require(&["docker-registry", "sha256sum"]) {
        return;
    }
    let reg = support::registry(Default::default());
    let p = Project::demo();
    let to = format!("oci://{}/kiln/demo:stable", reg.host());

    // The push is part of the plan `--dry-run` prints, and does nothing.
    let out = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--push-artifacts",
        "--dry-run",
    ]);
    let plan = support::stdout(&out);
    let note = plan
        .lines()
        .find(|l| l.starts_with("push: "))
        .unwrap_or_else(|| panic!("no push line in the plan:\n{plan}"));
    assert!(
        note.contains(&to)
            && note.contains(oci::ARTIFACT_TYPE)
            && note.contains("SHA256SUMS")
            && note.contains(".overlay.tar.zst"),
        "{note}"
    );
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
    let json = p.run(&[
        "--json",
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--dry-run",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("push: ")
                && n.as_str().unwrap().contains("the artifacts stay local")),
        "{}",
        v["notes"]
    );

    // Release and push, the artifacts too.
    let out = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--push-artifacts",
    ]);
    let digest = pushed_digest(&out);
    let dir = release_dir(&p);
    let name = dir.file_name().unwrap().to_string();
    let local = files(&dir);
    assert!(local.contains_key(&format!("{name}-amd64.overlay.tar.zst")));

    // What the registry holds: an OCI 1.1 artifact of the release.
    let raw = manifest(&reg, "kiln/demo", "stable");
    assert_eq!(
        oci::digest_of(&raw),
        digest,
        "the tag names another manifest"
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], oci::MANIFEST_TYPE);
    assert_eq!(m["artifactType"], oci::ARTIFACT_TYPE);
    assert_eq!(m["config"]["mediaType"], oci::EMPTY_TYPE);
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(m["config"]["data"], "e30=");
    let layers = m["layers"].as_array().unwrap();
    let titles: Vec<&str> = layers
        .iter()
        .map(|l| l["annotations"][oci::TITLE].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        local.keys().map(String::as_str).collect::<Vec<_>>(),
        "one layer per file of the release"
    );
    for l in layers {
        let title = l["annotations"][oci::TITLE].as_str().unwrap();
        let bytes = &local[title];
        assert_eq!(l["digest"], oci::digest_of(bytes), "{title}");
        assert_eq!(l["size"], bytes.len() as u64, "{title}");
        let want = if title == "SHA256SUMS" {
            "text/plain"
        } else if title.ends_with(".spdx.json") {
            "application/spdx+json"
        } else if title.ends_with(".provenance.json") {
            "application/vnd.in-toto+json"
        } else if title.ends_with(".manifest.json") {
            "application/vnd.kiln.release.manifest.v1+json"
        } else {
            "application/zstd"
        };
        assert_eq!(l["mediaType"], want, "{title}");
    }
    let a = &m["annotations"];
    assert_eq!(a[oci::TITLE], name.as_str());
    assert_eq!(
        a["org.opencontainers.image.created"],
        xtask::export::rfc3339(support::epoch()).as_str()
    );
    assert!(
        name.ends_with(a["org.opencontainers.image.version"].as_str().unwrap()),
        "{a}"
    );
    assert_eq!(a[oci::WITH_ARTIFACTS], "true");

    // Pulled into another directory: the same files, byte for byte, and
    // `sha256sum -c` passes there.
    let (_elsewhere, base) = support::tempdir("kiln-pull-");
    let pulled = base.join("pulled");
    pull(&p, &to, &pulled);
    assert_eq!(files(&pulled), local, "the pulled release differs");
    support::sha256sum_check(&pulled.join("SHA256SUMS"));
    assert!(
        support::leftovers(&[&base]).is_empty(),
        "{:?}",
        support::leftovers(&[&base])
    );

    // The same release again: the same manifest digest, nothing uploaded.
    let again = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--push-artifacts",
    ]);
    assert_eq!(pushed_digest(&again), digest, "a second push differs");
    assert!(
        stderr(&again).contains("(0 blob(s) uploaded"),
        "{}",
        stderr(&again)
    );

    // Pinned by digest (the form the push reports), into a fresh directory.
    let pinned = format!("{to}@{digest}");
    let by_digest = base.join("by-digest");
    pull(&p, &pinned, &by_digest);
    assert_eq!(files(&by_digest), local);

    // An existing, non-empty destination is refused and left alone.
    let err = p.fail(&["release", "pull", &to, "--dest", pulled.as_str()]);
    assert!(err.contains("exists and is not empty"), "{err}");
    assert_eq!(files(&pulled), local);

    // Documents only (the default): the images stay local; the pull says
    // which files it lacks, and what it has verifies.
    let docs = format!("oci://{}/kiln/demo:docs", reg.host());
    let out = p.run(&["release", "--targets", "overlay", "--push", &docs]);
    assert_ne!(pushed_digest(&out), digest);
    let docs_dir = base.join("docs");
    let out = pull(&p, &docs, &docs_dir);
    let got = files(&docs_dir);
    let mut want = local.clone();
    want.retain(|n, _| !n.ends_with(".overlay.tar.zst"));
    assert_eq!(got, want);
    assert!(
        stderr(&out).contains(&format!("{name}-amd64.overlay.tar.zst")),
        "{}",
        stderr(&out)
    );
    let check = std::process::Command::new("sha256sum")
        .args(["--strict", "--ignore-missing", "-c", "SHA256SUMS"])
        .current_dir(&docs_dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", support::stdout(&check));
}

#[test]
fn a_push_to_a_registry_that_is_not_there_fails_and_leaves_the_release_complete() {
    if !support::require(&["sha256sum"]) {
        return;
    }
    // A port nothing listens on: taken from the kernel, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Project::demo();
    let to = format!("oci://127.0.0.1:{port}/kiln/demo:stable");
    let err = p.fail(&["release", "--targets", "overlay", "--push", &to]);
    let dir = release_dir(&p);
    says(
        &err,
        &[
            format!("registry 127.0.0.1:{port}"),
            "repository kiln/demo".to_string(),
            format!("the release {dir} is complete and intact"),
            "Connection refused".to_string(),
        ],
    );
    // Complete: every file SHA256SUMS lists, and nothing else, verifies.
    support::sha256sum_check(&dir.join("SHA256SUMS"));
    let listed = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(files(&dir).len(), listed + 1);
    p.assert_no_leftovers();
}

#[test]
fn a_registry_that_refuses_the_push_is_named_with_its_status_and_answer() {
    if !support::require(&["docker-registry", "sha256sum"]) {
        return;
    }
    let reg = support::registry(xtask::tools::docker_registry::Options {
        read_only: true,
        ..Default::default()
    });
    let p = Project::demo();
    let to = format!("oci://{}/kiln/demo:stable", reg.host());
    let err = p.fail(&["release", "--targets", "overlay", "--push", &to]);
    kept_after_refusal(
        &p,
        &err,
        &[
            format!("registry {}", reg.host()),
            "repository kiln/demo".to_string(),
            "HTTP 405 Method Not Allowed".to_string(),
        ],
    );
    p.assert_no_leftovers();
}

#[test]
fn a_pull_that_does_not_verify_writes_nothing() {
    if !support::require(&["docker-registry"]) {
        return;
    }
    let reg = support::registry(Default::default());
    let (_d, base) = support::tempdir("kiln-pull-bad-");
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // A SHA256SUMS that disagrees with the file it lists, pushed as is.
    let body = b"the real bytes\n";
    std::fs::write(src.join("a.json"), body).unwrap();
    let sums = format!("{}  a.json\n", "0".repeat(64));
    std::fs::write(src.join("SHA256SUMS"), &sums).unwrap();
    let file = |name: &str, bytes: &[u8], role| oci::File {
        name: name.into(),
        size: bytes.len() as u64,
        sha256: xtask::digest::bytes_sha256(bytes),
        role,
    };
    let files = [
        file("a.json", body, oci::Role::Manifest),
        file("SHA256SUMS", sums.as_bytes(), oci::Role::Sums),
    ];
    let reference = oci::Reference::parse(&format!("oci://{}/kiln/bad:x", reg.host())).unwrap();
    let annotations = BTreeMap::from([(oci::TITLE.to_string(), "bad-1".to_string())]);
    oci::push(&reference, &src, &files, annotations).unwrap();

    let p = Project::empty();
    let dest = base.join("out");
    let err = p.fail(&[
        "release",
        "pull",
        &reference.to_string(),
        "--dest",
        dest.as_str(),
    ]);
    assert!(
        err.contains("does not verify") && err.contains("a.json: FAILED"),
        "{err}"
    );
    assert!(!dest.exists());
    assert!(support::leftovers(&[&base]).is_empty());

    // A blob the registry serves with other bytes than its digest: the
    // pull names it and writes nothing. (The registry stores blobs by
    // digest under storage/; overwrite one with bytes of the same size.)
    let hex = xtask::digest::bytes_sha256(body);
    let data = reg
        .dir
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    std::fs::write(&data, b"THE REAL BYTES\n").unwrap();
    let err = p.fail(&[
        "release",
        "pull",
        &reference.to_string(),
        "--dest",
        dest.as_str(),
    ]);
    assert!(
        err.contains(&format!("GET blob sha256:{hex}")) && err.contains("the manifest says"),
        "{err}"
    );
    assert!(!dest.exists());
    assert!(support::leftovers(&[&base]).is_empty());

    // Nothing at the reference: 404, named.
    let err = p.fail(&[
        "release",
        "pull",
        &format!("oci://{}/kiln/none:x", reg.host()),
        "--dest",
        dest.as_str(),
    ]);
    assert!(
        err.contains("repository kiln/none") && err.contains("HTTP 404"),
        "{err}"
    );
}

#[test]
fn a_malformed_reference_is_refused_before_any_build() {
    let p = Project::demo();
    for bad in [
        "127.0.0.1:5000/kiln/demo:stable",
        "oci://127.0.0.1:5000/kiln/demo",
        "oci://127.0.0.1:5000/Kiln/demo:stable",
        "oci://127.0.0.1:5000/kiln/demo@sha256:0123",
    ] {
        let err = p.fail(&["release", "--targets", "overlay", "--push", bad]);
        assert!(
            err.contains(bad) && err.contains("oci://HOST[:PORT]/REPO:CHANNEL"),
            "{bad}: {err}"
        );
    }
    let err = p.fail(&["release", "pull", "docker://example.com/x:y"]);
    assert!(err.contains("oci://HOST[:PORT]/REPO:CHANNEL"), "{err}");
    let err = p.fail(&["release", "--targets", "overlay", "--push-artifacts"]);
    assert!(err.contains("--push"), "{err}");
    assert!(p.outputs().is_empty(), "{:?}", p.outputs());
    assert!(!p.cache_dir().exists(), "a step ran");
}

/// A release signed with a `release keygen` key, pushed: the artifact
/// carries `SHA256SUMS.minisig`; `release pull --verify-key` with that
/// key writes it back and passes, with another key (or for an unsigned
/// release) it is refused, naming the key and the signature, and nothing
/// is written.
#[test]
fn a_signed_release_pulls_back_verified_by_its_key_and_only_by_it() {
    if !support::require(&["docker-registry", "sha256sum"]) {
        return;
    }
    let reg = support::registry(Default::default());
    let p = Project::demo();
    let (_keys, keys) = support::tempdir("kiln-oci-keys-");
    let (mine, other) = (keys.join("mine"), keys.join("other"));
    p.run(&["release", "keygen", "--out", mine.as_str()]);
    p.run(&["release", "keygen", "--out", other.as_str()]);
    let (key, public, wrong) = (
        mine.join("kiln.key"),
        mine.join("kiln.pub"),
        other.join("kiln.pub"),
    );

    // Unsigned first (the same steps, cached, serve the signed one).
    let unsigned = format!("oci://{}/kiln/demo:unsigned", reg.host());
    p.run(&["release", "--targets", "overlay", "--push", &unsigned]);
    let signed = format!("oci://{}/kiln/demo:signed", reg.host());
    let out = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--sign-key",
        key.as_str(),
        "--push",
        &signed,
    ]);
    let digest = pushed_digest(&out);
    let dir = release_dir(&p);
    // The documents: what a push sends without --push-artifacts.
    let mut local = files(&dir);
    local.retain(|n, _| !n.ends_with(".overlay.tar.zst"));
    let sig = local
        .get("SHA256SUMS.minisig")
        .expect("the signed release has no SHA256SUMS.minisig");

    // The artifact holds the signature as its own layer, byte for byte.
    let raw = manifest(&reg, "kiln/demo", "signed");
    assert_eq!(oci::digest_of(&raw), digest);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let layer = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"][oci::TITLE] == "SHA256SUMS.minisig")
        .unwrap_or_else(|| panic!("no SHA256SUMS.minisig layer: {m}"));
    assert_eq!(layer["digest"], oci::digest_of(sig));
    assert_eq!(
        layer["mediaType"],
        "application/vnd.kiln.release.minisig.v1"
    );

    let (_out, base) = support::tempdir("kiln-oci-signed-");
    let verify = |reference: &str, key: &Utf8Path, dest: &Utf8Path| {
        p.kiln()
            .args(["release", "pull", reference, "--dest", dest.as_str()])
            .args(["--verify-key", key.as_str()])
            .output()
            .unwrap()
    };

    // The right key: the release, its signature included, verified.
    let good = base.join("good");
    let out = verify(&signed, &public, &good);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = std::fs::read_to_string(&public).unwrap();
    let id = id.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert!(
        stderr(&out).contains(&format!("signed by key id {id}")),
        "{}",
        stderr(&out)
    );
    let got = files(&good);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    assert!(got == local, "the pulled files differ from the release's");

    // Another key: refused, naming both keys and the signature file.
    let refused = base.join("refused");
    let out = verify(&signed, &wrong, &refused);
    assert!(!out.status.success(), "another key was accepted");
    let err = stderr(&out);
    says(
        &err,
        &[
            wrong.as_str(),
            "SHA256SUMS.minisig",
            "not signed by the key",
            &format!("made by the key {id}"),
            "nothing was written",
        ],
    );
    // It speaks of the release, not of kiln's temporary directory.
    assert!(!err.contains(".kiln-partial"), "{err}");
    assert!(!refused.exists(), "a refused pull wrote {refused}");

    // An unsigned release with --verify-key: refused, nothing written.
    let out = verify(&unsigned, &public, &refused);
    assert!(!out.status.success(), "an unsigned release was accepted");
    let err = stderr(&out);
    says(
        &err,
        &[
            &unsigned,
            "not signed",
            "SHA256SUMS.minisig",
            public.as_str(),
        ],
    );
    // It speaks of the release, not of kiln's temporary directory.
    assert!(!err.contains(".kiln-partial"), "{err}");
    assert!(!refused.exists(), "a refused pull wrote {refused}");
    assert!(
        support::leftovers(&[&base]).is_empty(),
        "{:?}",
        support::leftovers(&[&base])
    );
}

/// A registry that asks for credentials (htpasswd, HTTP basic): without
/// them, or with a wrong password, the push fails saying what to set or
/// that they were refused, naming the registry, and the release stays
/// whole; with them (from the environment) push and pull work, and the
/// password shows nowhere.
#[test]
fn a_registry_with_credentials_gets_them_from_the_environment_only() {
    if !support::require(&["docker-registry", "sha256sum"]) {
        return;
    }
    let (_auth, auth) = support::tempdir("kiln-oci-auth-");
    let password = "kiln-test-pw-5e1f";
    let hash = bcrypt::hash(password, 5).unwrap();
    let htpasswd = auth.join("htpasswd");
    std::fs::write(&htpasswd, format!("kiln:{hash}\n")).unwrap();
    let reg = support::registry(xtask::tools::docker_registry::Options {
        htpasswd: Some(htpasswd),
        ..Default::default()
    });
    let p = Project::demo();
    let to = format!("oci://{}/kiln/demo:stable", reg.host());
    let with = |user: &str, pw: &str, args: &[&str]| {
        p.kiln()
            .env("KILN_REGISTRY_USER", user)
            .env("KILN_REGISTRY_PASSWORD", pw)
            .args(args)
            .output()
            .unwrap()
    };
    let push = ["release", "--targets", "overlay", "--push", &to];

    // No credentials: which variables to set.
    let err = p.fail(&push);
    let dir = kept_after_refusal(
        &p,
        &err,
        &[
            format!("registry {}", reg.host()),
            "HTTP 401".to_string(),
            "set KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD".to_string(),
        ],
    );

    // A wrong password: refused, said so, never shown.
    let out = with("kiln", "not-the-password", &push);
    assert!(!out.status.success(), "a wrong password was accepted");
    let err = stderr(&out);
    kept_after_refusal(
        &p,
        &err,
        &[
            format!("the registry {} refused the credentials", reg.host()),
            "KILN_REGISTRY_PASSWORD".to_string(),
        ],
    );
    assert!(!err.contains("not-the-password"), "{err}");

    // One variable alone is named as missing its partner.
    let out = p
        .kiln()
        .env("KILN_REGISTRY_USER", "kiln")
        .args(push)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("KILN_REGISTRY_PASSWORD is not"),
        "{}",
        stderr(&out)
    );

    // The right ones: pushed, and pulled back (anonymously: refused).
    let out = with("kiln", password, &push);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = pushed_digest(&out);
    let (_o, base) = support::tempdir("kiln-oci-auth-pull-");
    let err = p.fail(&["release", "pull", &to, "--dest", base.join("anon").as_str()]);
    assert!(
        err.contains("HTTP 401") && err.contains("KILN_REGISTRY_USER"),
        "{err}"
    );
    assert!(!base.join("anon").exists());
    let pulled = base.join("pulled");
    let out = with(
        "kiln",
        password,
        &["release", "pull", &to, "--dest", pulled.as_str()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&digest), "{}", stderr(&out));
    let check = std::process::Command::new("sha256sum")
        .args(["--strict", "--ignore-missing", "-c", "SHA256SUMS"])
        .current_dir(&pulled)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", support::stdout(&check));
    // The password is in no output and no file of either directory.
    assert!(!stderr(&out).contains(password) && !support::stdout(&out).contains(password));
    for d in [&dir, &pulled] {
        for (name, bytes) in files(d) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(password),
                "{d}/{name} holds the password"
            );
        }
    }
}

/// A registry on 127.0.0.1 serving HTTPS with a certificate from a CA the
/// test makes: without `--ca-cert` the push fails naming the TLS problem
/// and suggesting the flag; with it (or KILN_REGISTRY_CA) push and pull
/// work.
#[test]
fn a_registry_behind_a_private_ca_is_reached_with_ca_cert() {
    if !support::require(&["docker-registry", "openssl", "sha256sum"]) {
        return;
    }
    let (_ca, ca_dir) = support::tempdir("kiln-oci-ca-");
    let (ca, cert, key) = support::private_ca(&ca_dir);
    let reg = support::registry(xtask::tools::docker_registry::Options {
        tls: Some(xtask::tools::docker_registry::Tls {
            certificate: cert,
            key,
        }),
        ..Default::default()
    });
    let p = Project::demo();
    let to = format!("oci://{}/kiln/demo:stable", reg.host());

    // Without the CA: the registry speaks TLS, kiln plain HTTP (or, over
    // HTTPS, does not trust it): named, with the flag to pass.
    let err = p.fail(&["release", "--targets", "overlay", "--push", &to]);
    assert!(
        err.contains(&format!("registry {}", reg.host()))
            && err.contains("HTTP 400")
            && err.contains("speaks HTTPS answers plain HTTP like this: pass --ca-cert")
            && err.contains("is complete and intact"),
        "{err}"
    );
    // With a CA that is not the registry's: the TLS failure, named.
    let (_other, other_dir) = support::tempdir("kiln-oci-other-ca-");
    let (other_ca, _, _) = support::private_ca(&other_dir);
    let err = p.fail(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--ca-cert",
        other_ca.as_str(),
    ]);
    says(
        &err,
        &[
            format!("registry {} (https://", reg.host()),
            "a TLS failure".to_string(),
            other_ca.to_string(),
        ],
    );
    // A file that holds no certificate.
    let yaml = p.path("recipes/demo.yaml");
    let err = p.fail(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--ca-cert",
        yaml.as_str(),
    ]);
    assert!(err.contains("holds no certificate"), "{err}");

    // With it: pushed over HTTPS and pulled back (the CA from the
    // environment this time).
    let out = p.run(&[
        "release",
        "--targets",
        "overlay",
        "--push",
        &to,
        "--ca-cert",
        ca.as_str(),
    ]);
    let digest = pushed_digest(&out);
    let (_o, base) = support::tempdir("kiln-oci-ca-pull-");
    let pulled = base.join("pulled");
    let out = p
        .kiln()
        .env("KILN_REGISTRY_CA", &ca)
        .args(["release", "pull", &to, "--dest", pulled.as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&digest), "{}", stderr(&out));
    let mut want = files(&release_dir(&p));
    want.retain(|n, _| !n.ends_with(".overlay.tar.zst"));
    assert!(files(&pulled) == want, "the pulled release differs");
    // And without it the pull is refused the same way, writing nothing.
    let err = p.fail(&["release", "pull", &to, "--dest", base.join("no").as_str()]);
    assert!(err.contains(&format!("registry {}", reg.host())), "{err}");
    assert!(!base.join("no").exists());
}
