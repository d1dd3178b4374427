//! Payload export: container images from an OCI layout the test builds
//! itself (two platforms), docker-archive sources, models, the cache, the
//! demo recipe's payloads, and bad inputs that must leave nothing behind.

mod support;

use std::collections::BTreeMap;
use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{json, Value};
use support::{outcomes, sh, stderr, stdout, Project};

fn sha(b: &[u8]) -> String {
    xtask::digest::bytes_sha256(b)
}

fn put_blob(layout: &Utf8Path, bytes: &[u8]) -> String {
    let h = sha(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&h), bytes).unwrap();
    format!("sha256:{h}")
}

/// An OCI image layout with one image per platform: a gzip'd layer holding
/// `etc/platform`, a config, a manifest, and index.json listing both.
/// Returns platform -> (manifest digest, config digest).
fn oci_layout(layout: &Utf8Path, platforms: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut out = BTreeMap::new();
    let mut manifests = Vec::new();
    for (os, arch) in platforms {
        let mut b = tar::Builder::new(Vec::new());
        let body = format!("{os}/{arch}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "etc/platform", body.as_bytes())
            .unwrap();
        let layer = b.into_inner().unwrap();
        let diff_id = format!("sha256:{}", sha(&layer));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let layer_digest = put_blob(layout, &gz);
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": os,
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))
        .unwrap();
        let config_digest = put_blob(layout, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": gz.len() }],
        }))
        .unwrap();
        let manifest_digest = put_blob(layout, &manifest);
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "platform": { "os": os, "architecture": arch },
        }));
        out.insert(format!("{os}/{arch}"), (manifest_digest, config_digest));
    }
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    out
}

fn recipe(p: &Project, arches: &str, payloads: &str) {
    p.write(
        "recipes/demo.yaml",
        &format!("appliance:\n  name: t\n  version: '1'\narchitectures: [{arches}]\npayloads:\n{payloads}"),
    );
}

/// The staged tree of the latest `stage` run for `arch`.
fn stage_tree(p: &Project, arch: &str) -> Utf8PathBuf {
    let dir = p.path(&format!("cache/stage-{arch}"));
    let latest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    dir.join(&latest["key"].as_str().unwrap()[..20])
        .join("tree")
}

fn json_file(p: &Utf8Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .unwrap()
}

fn skopeo_json(args: &[&str]) -> Value {
    serde_json::from_str(&sh("skopeo", args)).unwrap()
}

#[test]
fn oci_layout_with_two_platforms_exports_to_both_archive_formats() {
    if !support::require(&["skopeo", "sha256sum"]) {
        return;
    }
    let p = Project::empty();
    let digests = oci_layout(
        &p.path("src/web"),
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    recipe(
        &p,
        "amd64, arm64",
        "  images:
    - name: web-docker
      source: { oci-layout: src/web }
      format: docker-archive
      reference: registry.local/web:1.0
      dest: /opt/img
    - name: web-oci
      source: { oci-layout: src/web }
      format: oci-archive
      compression: zstd
      dest: /opt/img
    - name: web-gz
      source: { oci-layout: src/web }
      compression: gzip
      dest: /opt/other
",
    );
    let first = p.run(&["stage", "--json"]);
    for arch in ["amd64", "arm64"] {
        let tree = stage_tree(&p, arch);
        let plat = format!("linux/{arch}");
        let (manifest_digest, config_digest) = &digests[&plat];
        let dir = tree.join("opt/img");
        // One images.json and one SHA256SUMS for both images of the directory.
        let index = json_file(&dir.join("images.json"));
        let images = index["images"].as_array().unwrap();
        assert_eq!(images.len(), 2, "{index:#}");
        support::sha256sum_check(&dir.join("SHA256SUMS"));
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        for img in images {
            let archive = img["archive"].as_str().unwrap();
            let path = dir.join(archive);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(img["sha256"], sha(&bytes), "{archive}");
            assert_eq!(img["size"], bytes.len() as u64);
            assert_eq!(img["platform"], plat.as_str());
            assert_eq!(&img["manifest_digest"], manifest_digest.as_str());
            assert_eq!(&img["config_digest"], config_digest.as_str());
            assert!(
                sums.contains(&format!("{}  {archive}\n", sha(&bytes))),
                "{sums}"
            );
        }
        // docker-archive: readable by skopeo, config digest and platform match.
        let docker = dir.join(format!("web-docker-{arch}.tar"));
        let transport = format!("docker-archive:{docker}");
        let info = skopeo_json(&["inspect", &transport]);
        assert_eq!(info["Architecture"], arch);
        assert_eq!(info["Os"], "linux");
        let config = sh("skopeo", &["inspect", "--config", "--raw", &transport]);
        assert_eq!(format!("sha256:{}", sha(config.as_bytes())), *config_digest);
        let raw = sh("skopeo", &["inspect", "--raw", &transport]);
        assert_eq!(info["Digest"], format!("sha256:{}", sha(raw.as_bytes())));
        let listing = sh("tar", &["-tf", docker.as_str()]);
        assert!(listing.contains("manifest.json"), "{listing}");
        let manifest: Value =
            serde_json::from_str(&sh("tar", &["-xOf", docker.as_str(), "manifest.json"])).unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!(["registry.local/web:1.0"]));
        // oci-archive (zstd): the manifest digest is the source's, unchanged.
        let oci = dir.join(format!("web-oci-{arch}.tar.zst"));
        let plain = p.path(&format!("web-oci-{arch}.tar"));
        sh(
            "zstd",
            &["-q", "-d", "-f", oci.as_str(), "-o", plain.as_str()],
        );
        let transport = format!("oci-archive:{plain}");
        let info = skopeo_json(&["inspect", &transport]);
        assert_eq!(info["Digest"], manifest_digest.as_str());
        assert_eq!(info["Architecture"], arch);
        let raw = sh("skopeo", &["inspect", "--raw", &transport]);
        assert_eq!(format!("sha256:{}", sha(raw.as_bytes())), *manifest_digest);
        // gzip'd docker-archive in its own directory, with its own index.
        // (skopeo 1.9 reads zstd'd docker-archives but not gzip'd ones: unpack first.)
        let gz = tree.join(format!("opt/other/web-gz-{arch}.tar.gz"));
        let gunzipped = p.path(&format!("web-gz-{arch}.tar"));
        sh("sh", &["-c", &format!("gzip -dc {gz} > {gunzipped}")]);
        let info = skopeo_json(&["inspect", &format!("docker-archive:{gunzipped}")]);
        assert_eq!(info["Architecture"], arch);
        assert_eq!(
            json_file(&tree.join("opt/other/images.json"))["images"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    // Unchanged inputs: every export step is served from the cache.
    let again = p.run(&["stage", "--json"]);
    let o = outcomes(&again);
    assert!(
        o.iter()
            .filter(|(k, _)| k.starts_with("image"))
            .all(|(_, v)| v == "cached"),
        "{o:?}"
    );
    assert!(
        stderr(&again).contains("image-web-oci-arm64: cached"),
        "{}",
        stderr(&again)
    );
    // Re-running every step writes byte-identical archives.
    let before: Vec<Vec<u8>> = [
        "opt/img/web-docker-amd64.tar",
        "opt/img/web-oci-arm64.tar.zst",
        "opt/other/web-gz-amd64.tar.gz",
    ]
    .iter()
    .map(|f| {
        std::fs::read(
            stage_tree(
                &p,
                if f.contains("arm64") {
                    "arm64"
                } else {
                    "amd64"
                },
            )
            .join(f),
        )
        .unwrap()
    })
    .collect();
    let forced = p.run(&["stage", "--json", "--force"]);
    assert!(outcomes(&forced).values().all(|v| v == "ran"));
    for (f, b) in [
        "opt/img/web-docker-amd64.tar",
        "opt/img/web-oci-arm64.tar.zst",
        "opt/other/web-gz-amd64.tar.gz",
    ]
    .iter()
    .zip(before)
    {
        let now = std::fs::read(
            stage_tree(
                &p,
                if f.contains("arm64") {
                    "arm64"
                } else {
                    "amd64"
                },
            )
            .join(f),
        )
        .unwrap();
        assert!(now == b, "{f} differs between two exports");
    }
    drop(first);

    // The exported docker-archive is itself a source (docker-archive -> oci-archive).
    let q = Project::empty();
    std::fs::create_dir_all(q.path("src")).unwrap();
    std::fs::copy(
        stage_tree(&p, "arm64").join("opt/img/web-docker-arm64.tar"),
        q.path("src/web.tar"),
    )
    .unwrap();
    recipe(
        &q,
        "arm64",
        "  images:
    - name: again
      source: { docker-archive: src/web.tar }
      format: oci-archive
      dest: /opt/img
",
    );
    q.run(&["stage"]);
    let out = stage_tree(&q, "arm64").join("opt/img/again-arm64.tar");
    let info = skopeo_json(&["inspect", &format!("oci-archive:{out}")]);
    assert_eq!(info["Architecture"], "arm64");
    let config = sh(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci-archive:{out}"),
        ],
    );
    assert_eq!(
        format!("sha256:{}", sha(config.as_bytes())),
        digests["linux/arm64"].1
    );
    let rec = &json_file(&stage_tree(&q, "arm64").join("opt/img/images.json"))["images"][0];
    assert_eq!(rec["manifest_digest"], info["Digest"]);
}

#[test]
fn a_missing_platform_is_an_error_naming_what_the_source_has() {
    let p = Project::empty();
    oci_layout(
        &p.path("src/web"),
        &[("linux", "arm64"), ("linux", "s390x")],
    );
    recipe(
        &p,
        "amd64",
        "  images:\n    - name: web\n      source: { oci-layout: src/web }\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage"]);
    assert!(err.contains("image `web`"), "{err}");
    assert!(
        err.contains("has no linux/amd64 image; it has linux/arm64, linux/s390x"),
        "{err}"
    );
    support::assert_nothing_left(&p);
}

#[test]
fn broken_blobs_and_tampered_archives_fail_closed() {
    let p = Project::empty();
    let digests = oci_layout(&p.path("src/web"), &[("linux", "amd64")]);
    recipe(
        &p,
        "amd64",
        "  images:\n    - name: web\n      source: { oci-layout: src/web }\n      dest: /opt/img\n",
    );
    // Flip one byte of the layer blob (same size): caught while it is read.
    let man: Value = serde_json::from_slice(
        &std::fs::read(
            p.path("src/web/blobs/sha256")
                .join(&digests["linux/amd64"].0[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = p
        .path("src/web/blobs/sha256")
        .join(&man["layers"][0]["digest"].as_str().unwrap()[7..]);
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("image `web`") && err.contains(layer.as_str()) && err.contains("broken blob"),
        "{err}"
    );
    support::assert_nothing_left(&p);
    // A truncated blob: caught before anything is written.
    std::fs::write(&layer, &bytes[..n / 2]).unwrap();
    let err = p.fail(&["stage"]);
    assert!(
        err.contains(layer.as_str()) && err.contains("descriptor says"),
        "{err}"
    );
    support::assert_nothing_left(&p);

    // A docker-archive whose config does not match its manifest.json.
    let q = Project::empty();
    let dir = q.path("src/d");
    std::fs::create_dir_all(&dir).unwrap();
    let layer = b"not really a tar, but hashed all the same".to_vec();
    let diff = sha(&layer);
    std::fs::write(dir.join(format!("{diff}.tar")), &layer).unwrap();
    let config = serde_json::to_vec(&json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[format!("sha256:{diff}")]}})).unwrap();
    let wrong = "0".repeat(64);
    std::fs::write(dir.join(format!("{wrong}.json")), &config).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&json!([{"Config": format!("{wrong}.json"), "RepoTags": ["d:1"], "Layers": [format!("{diff}.tar")]}])).unwrap(),
    )
    .unwrap();
    sh(
        "tar",
        &["-C", dir.as_str(), "-cf", q.path("src/d.tar").as_str(), "."],
    );
    recipe(&q, "amd64", "  images:\n    - name: d\n      source: { docker-archive: src/d.tar }\n      dest: /opt/img\n");
    let err = q.fail(&["stage"]);
    assert!(
        err.contains("image `d`") && err.contains("src/d.tar") && err.contains("does not match"),
        "{err}"
    );
    support::assert_nothing_left(&q);
}

#[test]
fn registry_sources_must_be_pinned_and_missing_sources_are_named() {
    let p = Project::empty();
    recipe(&p, "amd64", "  images:\n    - name: r\n      source: { registry: docker.io/library/busybox:latest }\n      dest: /opt/img\n");
    let err = p.fail(&["stage", "--dry-run"]);
    assert!(
        err.contains("image `r`") && err.contains("must be pinned by digest"),
        "{err}"
    );
    recipe(&p, "amd64", "  images:\n    - name: gone\n      source: { oci-archive: src/nope.tar }\n      dest: /opt/img\n");
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("image `gone`") && err.contains("src/nope.tar does not exist"),
        "{err}"
    );
    recipe(
        &p,
        "amd64",
        "  models:\n    - name: m\n      source: models/nope\n      dest: /opt/models\n",
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("model `m`") && err.contains("models/nope does not exist"),
        "{err}"
    );
    recipe(&p, "amd64", "  images:\n    - name: two\n      source: { oci-layout: a, oci-archive: b }\n      dest: /opt/img\n");
    let err = p.fail(&["stage"]);
    assert!(err.contains("exactly one of"), "{err}");
    recipe(&p, "amd64", "  images:\n    - name: local\n      source: { oci-layout: a }\n      tls_verify: false\n      dest: /opt/img\n");
    let err = p.fail(&["stage", "--dry-run"]);
    assert!(
        err.contains("recipes/demo.yaml")
            && err.contains("image `local`")
            && err.contains("`tls_verify` is only for a `registry` source"),
        "{err}"
    );
    support::assert_nothing_left(&p);
}

/// A `docker-registry serve` (CNCF distribution) on 127.0.0.1 with its own
/// storage ([`support::Registry`]), plain HTTP or HTTPS; stopped when
/// dropped (also when the test panics).
struct LocalRegistry(support::Registry);

impl LocalRegistry {
    fn start() -> LocalRegistry {
        LocalRegistry(support::registry(Default::default()))
    }

    /// Serving HTTPS with `cert`/`key` (a server certificate for 127.0.0.1
    /// signed by the private CA the test's clients are given).
    fn start_tls(cert: &Utf8Path, key: &Utf8Path) -> LocalRegistry {
        LocalRegistry(support::registry(xtask::tools::docker_registry::Options {
            tls: Some(xtask::tools::docker_registry::Tls {
                certificate: cert.to_owned(),
                key: key.to_owned(),
            }),
            ..Default::default()
        }))
    }

    fn host(&self) -> String {
        self.0.host()
    }

    /// The log once the requests so far are all in it.
    fn log(&self) -> String {
        self.0.settled_log()
    }
}

/// Turn a layout from [`oci_layout`] into one multi-platform image: the
/// platform manifests go into an image index blob, and index.json names that
/// index as `tag` (how skopeo stores a multi-arch image in a layout).
/// Returns the index digest.
fn nest_as_one_image(layout: &Utf8Path, tag: &str) -> String {
    let top = layout.join("index.json");
    let index = std::fs::read(&top).unwrap();
    let digest = put_blob(layout, &index);
    let outer = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": index.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(&top, serde_json::to_vec(&outer).unwrap()).unwrap();
    digest
}

#[test]
fn a_digest_pinned_image_is_copied_from_a_local_registry() {
    if !support::require(&["skopeo", "docker-registry", "sha256sum"]) {
        return;
    }
    let reg = LocalRegistry::start();
    let host = reg.host();
    // Push a two-platform image, as a tag (tests may run tools directly).
    let p = Project::empty();
    let layout = p.path("src/web");
    let digests = oci_layout(&layout, &[("linux", "amd64"), ("linux", "arm64")]);
    let index_digest = nest_as_one_image(&layout, "1");
    // The registry serves the index under the digest of its raw bytes.
    let raw = push_web(
        &layout,
        &host,
        "--dest-tls-verify=false",
        "--tls-verify=false",
    );
    let pushed = format!("sha256:{}", sha(raw.as_bytes()));
    assert_eq!(pushed, index_digest, "the push rewrote the index: {raw}");
    let pinned = format!("{host}/demo/web@{pushed}");
    let (amd64_manifest, amd64_config) = &digests["linux/amd64"];

    // The tag alone is refused before kiln talks to the registry (its access
    // log shows no request).
    let requests = reg.log().lines().filter(|l| l.contains("HTTP/1.")).count();
    assert!(
        requests > 0,
        "the access log records requests: {}",
        reg.log()
    );
    recipe(
        &p,
        "amd64",
        &format!(
            "  images:\n    - name: web\n      source: {{ registry: {host}/demo/web:1 }}\n      tls_verify: false\n      dest: /opt/img\n"
        ),
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("image `web`") && err.contains("must be pinned by digest"),
        "{err}"
    );
    support::assert_nothing_left(&p);
    assert_eq!(
        reg.log().lines().filter(|l| l.contains("HTTP/1.")).count(),
        requests,
        "{}",
        reg.log()
    );

    recipe(
        &p,
        "amd64",
        &format!(
            "  images:
    - name: web
      source: {{ registry: {pinned} }}
      tls_verify: false
      reference: demo/web:1
      dest: /opt/img
    - name: web-oci
      source: {{ registry: {pinned} }}
      tls_verify: false
      format: oci-archive
      dest: /opt/img
"
        ),
    );
    let out = p.run(&["stage", "--json"]);
    let o = outcomes(&out);
    assert_eq!(
        (
            o["image-web-amd64"].as_str(),
            o["image-web-oci-amd64"].as_str()
        ),
        ("ran", "ran"),
        "{o:?}"
    );
    let dir = stage_tree(&p, "amd64").join("opt/img");
    let index = json_file(&dir.join("images.json"));
    let images = index["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{index:#}");
    for img in images {
        let archive = dir.join(img["archive"].as_str().unwrap());
        let bytes = std::fs::read(&archive).unwrap_or_else(|e| panic!("{archive}: {e}"));
        assert_eq!(img["sha256"], sha(&bytes));
        assert_eq!(img["platform"], "linux/amd64");
        assert_eq!(&img["manifest_digest"], amd64_manifest.as_str(), "{img:#}");
        assert_eq!(&img["config_digest"], amd64_config.as_str(), "{img:#}");
        assert_eq!(img["source"], format!("registry {pinned}"));
    }
    support::sha256sum_check(&dir.join("SHA256SUMS"));
    // docker-archive: skopeo reads the amd64 config back, and the layer
    // holds the amd64 image's file.
    let docker = dir.join("web-amd64.tar");
    let transport = format!("docker-archive:{docker}");
    let info = skopeo_json(&["inspect", &transport]);
    assert_eq!(info["Architecture"], "amd64");
    let config = sh("skopeo", &["inspect", "--config", "--raw", &transport]);
    assert_eq!(format!("sha256:{}", sha(config.as_bytes())), *amd64_config);
    let diff_id = info["Layers"][0].as_str().unwrap().to_string();
    let platform_file = sh(
        "sh",
        &[
            "-c",
            &format!(
                "tar -xOf {docker} {}.tar | tar -xO etc/platform",
                &diff_id[7..]
            ),
        ],
    );
    assert_eq!(platform_file, "linux/amd64\n");
    let manifest: Value =
        serde_json::from_str(&sh("tar", &["-xOf", docker.as_str(), "manifest.json"])).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["demo/web:1"]));
    // oci-archive: the registry's amd64 manifest, byte for byte.
    let oci = dir.join("web-oci-amd64.tar");
    let transport = format!("oci-archive:{oci}");
    let info = skopeo_json(&["inspect", &transport]);
    assert_eq!(info["Digest"], amd64_manifest.as_str());
    let raw = sh("skopeo", &["inspect", "--raw", &transport]);
    assert_eq!(format!("sha256:{}", sha(raw.as_bytes())), *amd64_manifest);
    let config = sh("skopeo", &["inspect", "--config", "--raw", &transport]);
    assert_eq!(format!("sha256:{}", sha(config.as_bytes())), *amd64_config);

    // Unchanged recipe: served from the cache.
    let again = outcomes(&p.run(&["stage", "--json"]));
    assert_eq!(again["image-web-amd64"], "cached", "{again:?}");

    // `tls_verify` is part of the step: with verification on (the default),
    // the step runs again and skopeo refuses the plain-HTTP registry.
    recipe(
        &p,
        "amd64",
        &format!(
            "  images:\n    - name: web\n      source: {{ registry: {pinned} }}\n      dest: /opt/img\n"
        ),
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains(&format!("image `web` (registry {pinned})")),
        "{err}"
    );
    assert!(
        err.contains("skopeo inspect --raw") && !err.contains("--tls-verify=false"),
        "{err}"
    );
    assert!(
        err.contains("server gave HTTP response to HTTPS client"),
        "{err}"
    );

    // A pinned digest the registry does not have: skopeo's error, with the
    // image named, and nothing left behind.
    let q = Project::empty();
    let absent = format!("{host}/demo/web@sha256:{}", sha(b"not pushed"));
    recipe(
        &q,
        "amd64",
        &format!(
            "  images:\n    - name: gone\n      source: {{ registry: {absent} }}\n      tls_verify: false\n      dest: /opt/img\n"
        ),
    );
    let err = q.fail(&["stage"]);
    assert!(
        err.contains(&format!("image `gone` (registry {absent})")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "skopeo inspect --raw --retry-times 3 --tls-verify=false docker://{absent}"
        )),
        "{err}"
    );
    assert!(err.contains("manifest unknown"), "{err}");
    support::assert_nothing_left(&q);
    drop(reg);
}

/// A small model directory: nested files, a link inside, an executable.
fn model_dir(p: &Project) -> Utf8PathBuf {
    let m = p.path("models/tiny");
    std::fs::create_dir_all(m.join("onnx")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let weights: Vec<u8> = (0..3_000_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 4 == 3 {
                0x3c
            } else {
                x as u8
            }
        })
        .collect();
    std::fs::write(m.join("onnx/model.onnx"), &weights).unwrap();
    std::fs::write(m.join("config.json"), r#"{"hidden_size": 8}"#).unwrap();
    std::fs::write(m.join("empty.txt"), "").unwrap();
    std::fs::write(m.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        m.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("config.json", m.join("config.link.json")).unwrap();
    m
}

fn assert_same_files(model: &Utf8Path, unpacked: &Utf8Path, entries: &Value) {
    let files = entries.as_array().unwrap();
    assert_eq!(files.len(), 5);
    for f in files {
        let rel = f["path"].as_str().unwrap();
        let want = std::fs::read(model.join(rel)).unwrap();
        let got =
            std::fs::read(unpacked.join(rel)).unwrap_or_else(|e| panic!("{unpacked}/{rel}: {e}"));
        assert!(want == got, "{rel} differs after the round trip");
        assert_eq!(f["sha256"], sha(&want));
        assert_eq!(f["size"], want.len() as u64);
    }
    support::sha256sum_check(&unpacked.join("SHA256SUMS"));
}

#[test]
fn models_round_trip_and_are_cached_by_their_manifest() {
    if !support::require(&["zstd", "sha256sum"]) {
        return;
    }
    let p = Project::empty();
    let model = model_dir(&p);
    recipe(
        &p,
        "amd64",
        "  models:
    - name: tiny
      source: models/tiny
      revision: abc123
      dest: /opt/models
    - name: tiny-packed
      source: models/tiny
      dest: /opt/models
      packaging: tar-zst
",
    );
    let first = p.run(&["stage", "--json"]);
    let o = outcomes(&first);
    assert_eq!(o["model-tiny"], "ran");
    let tree = stage_tree(&p, "amd64").join("opt/models");
    let index = json_file(&tree.join("models.json"));
    let models = index["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{index:#}");
    assert_eq!(models[0]["name"], "tiny");
    assert_eq!(models[0]["revision"], "abc123");
    assert_eq!(models[0]["path"], "tiny/");
    assert_same_files(&model, &tree.join("tiny"), &models[0]["files"]);
    let meta = std::fs::metadata(tree.join("tiny/run.sh")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o755
    );
    // The tar.zst unpacks to <name>/ with the same files and SHA256SUMS.
    let packed = tree.join("tiny-packed.tar.zst");
    let bytes = std::fs::read(&packed).unwrap();
    assert_eq!(models[1]["sha256"], sha(&bytes));
    assert_eq!(models[1]["size"], bytes.len() as u64);
    let un = p.path("unpacked");
    std::fs::create_dir_all(&un).unwrap();
    sh(
        "tar",
        &["--zstd", "-C", un.as_str(), "-xf", packed.as_str()],
    );
    assert_same_files(&model, &un.join("tiny-packed"), &models[1]["files"]);
    let listing = sh("tar", &["--zstd", "-tvf", packed.as_str()]);
    assert!(
        listing.lines().all(|l| l.contains("root/root")),
        "{listing}"
    );
    assert!(
        !listing.contains("config.link.json ->"),
        "links are stored as the files they point at: {listing}"
    );

    // Unchanged model: served from the cache, not re-read.
    let again = p.run(&["stage", "--json"]);
    let o = outcomes(&again);
    assert_eq!(
        (o["model-tiny"].as_str(), o["model-tiny-packed"].as_str()),
        ("cached", "cached"),
        "{o:?}"
    );
    assert!(stderr(&again).contains("model-tiny-packed: cached"));

    // A forced re-export is byte-identical.
    p.run(&["stage", "--force"]);
    let tree = stage_tree(&p, "amd64").join("opt/models");
    assert!(
        std::fs::read(tree.join("tiny-packed.tar.zst")).unwrap() == bytes,
        "two exports differ"
    );

    // Only timestamps changed: the key holds the files' content digests, so
    // the export is reused as it stands.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(model.join("onnx/model.onnx"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = p.run(&["stage", "--json"]);
    assert_eq!(outcomes(&touched)["model-tiny-packed"], "cached");
    let tree = stage_tree(&p, "amd64").join("opt/models");
    assert!(std::fs::read(tree.join("tiny-packed.tar.zst")).unwrap() == bytes);

    // Changed content: exported again, models.json follows.
    std::fs::write(model.join("config.json"), r#"{"hidden_size": 16}"#).unwrap();
    let changed = p.run(&["stage", "--json"]);
    assert_eq!(outcomes(&changed)["model-tiny"], "ran");
    let index = json_file(&stage_tree(&p, "amd64").join("opt/models/models.json"));
    let cfg = index["models"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "config.json")
        .unwrap()
        .clone();
    assert_eq!(cfg["sha256"], sha(br#"{"hidden_size": 16}"#));
}

#[test]
fn bad_model_inputs_are_named_and_leave_nothing() {
    let p = Project::empty();
    let model = model_dir(&p);
    recipe(
        &p,
        "amd64",
        "  models:\n    - name: tiny\n      source: models/tiny\n      dest: /opt/models\n",
    );
    std::fs::write(p.path("models/secret"), "x").unwrap();
    std::os::unix::fs::symlink("../secret", model.join("escape")).unwrap();
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("model `tiny`") && err.contains("models/tiny/escape is a link to"),
        "{err}"
    );
    assert!(err.contains("outside the model directory"), "{err}");
    support::assert_nothing_left(&p);
    std::fs::remove_file(model.join("escape")).unwrap();
    std::os::unix::fs::symlink("nowhere", model.join("dangling")).unwrap();
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("model `tiny`") && err.contains("dangling"),
        "{err}"
    );
    support::assert_nothing_left(&p);
}

#[test]
fn the_demo_stages_its_image_and_model_and_bootstrap_verifies_them() {
    if !support::require(&["skopeo", "sha256sum"]) {
        return;
    }
    let p = Project::demo();
    p.run(&["stage"]);
    let tree = stage_tree(&p, "amd64");
    let images = json_file(&tree.join("opt/demo/images/images.json"));
    assert_eq!(images["images"][0]["archive"], "demo-web-amd64.tar");
    let archive = tree.join("opt/demo/images/demo-web-amd64.tar");
    let info = skopeo_json(&["inspect", &format!("docker-archive:{archive}")]);
    assert_eq!(info["Architecture"], "amd64");
    let config = sh(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("docker-archive:{archive}"),
        ],
    );
    assert_eq!(
        images["images"][0]["config_digest"],
        format!("sha256:{}", sha(config.as_bytes()))
    );
    let models = json_file(&tree.join("opt/demo/models/models.json"));
    assert_eq!(models["models"][0]["name"], "demo-embed");
    assert!(tree.join("opt/demo/models/demo-embed/SHA256SUMS").is_file());
    // The overlay.tar.zst carries the same bytes.
    let stage_dir = tree.parent().unwrap();
    let listing = sh(
        "tar",
        &["--zstd", "-tf", stage_dir.join("overlay.tar.zst").as_str()],
    );
    assert!(
        listing.contains("opt/demo/images/demo-web-amd64.tar"),
        "{listing}"
    );
    assert!(
        listing.contains("opt/demo/models/demo-embed/tokenizer.json"),
        "{listing}"
    );
    // The appliance's bootstrap verifies and seeds them (DEMO_ROOT = the staged tree copy).
    let root = p.path("root");
    support::copy_tree(&tree, &root);
    let out = std::process::Command::new("bash")
        .arg(root.join("opt/demo/bin/bootstrap"))
        .env("DEMO_ROOT", &root)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("demo: bootstrap ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read(root.join("var/lib/demo/models/demo-embed/tokenizer.json")).unwrap(),
        std::fs::read(p.path("payloads/demo-model/tokenizer.json")).unwrap()
    );
    // A tampered archive fails the bootstrap.
    std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("opt/demo/images/demo-web-amd64.tar"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let out = std::process::Command::new("bash")
        .arg(root.join("opt/demo/bin/bootstrap"))
        .env("DEMO_ROOT", &root)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match its manifest"),
        "{}",
        stderr(&out)
    );
}

/// A model archive's bytes do not depend on how many zstd threads wrote it
/// (the input spans several zstd jobs, compressible and not).
#[test]
fn model_archives_are_byte_identical_for_any_number_of_zstd_threads() {
    let t = tempfile::tempdir().unwrap();
    let d = Utf8Path::from_path(t.path()).unwrap();
    let m = d.join("m");
    xtask::bench::export::generate(&m, 40 << 20).unwrap();
    std::fs::write(m.join("zeros.bin"), vec![0u8; 9 << 20]).unwrap();
    let files = xtask::export::models::scan("m", &m).unwrap();
    let mut seen = Vec::new();
    for workers in [1, 2, 3, 8] {
        let out = d.join(format!("m-{workers}.tar.zst"));
        let (hex, size, _) =
            xtask::export::models::write_tar_zst_workers(&out, "m", &files, 1234, None, workers)
                .unwrap();
        assert_eq!(hex, support::sha256(&out));
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        seen.push((workers, hex));
    }
    assert!(
        seen.iter().all(|(_, h)| *h == seen[0].1),
        "the archive differs by thread count: {seen:?}"
    );
}

#[test]
fn the_model_export_bench_runs_at_a_small_scale() {
    if !support::require(&["zstd", "sha256sum"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let scratch = Utf8Path::from_path(t.path()).unwrap();
    let bcx = xtask::bench::BenchCx {
        scratch,
        cache: scratch,
        scale: 1.0 / 256.0,
    };
    let ms = xtask::bench::export::model_export(&bcx).unwrap();
    assert_eq!(
        ms.iter().map(|m| m.case.as_str()).collect::<Vec<_>>(),
        ["model-export", "model-export-same-level", "model-hash"]
    );
    let report = xtask::bench::render(&ms);
    assert!(
        ms.iter()
            .all(|m| report.contains(&m.baseline) && report.contains(&m.goal)),
        "{report}"
    );
    // Generated inputs and outputs are cleaned up.
    assert_eq!(std::fs::read_dir(scratch).unwrap().count(), 0);
}

/// A registry behind a private CA: skopeo refuses it until the recipe names
/// a `cert_dir` holding the CA; then the image is exported, and nothing of
/// the directory reaches the staged tree.
#[test]
fn a_registry_behind_a_private_ca_is_reached_through_cert_dir() {
    if !support::require(&["skopeo", "docker-registry", "openssl", "curl"]) {
        return;
    }
    let p = Project::empty();
    let (ca, cert, key) = support::private_ca(&p.path("pki"));
    let certs = p.path("certs/registry");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let reg = LocalRegistry::start_tls(&cert, &key);
    let host = reg.host();
    let layout = p.path("src/web");
    let digests = oci_layout(&layout, &[("linux", "amd64")]);
    nest_as_one_image(&layout, "1");
    let raw = push_web(
        &layout,
        &host,
        &format!("--dest-cert-dir={certs}"),
        &format!("--cert-dir={certs}"),
    );
    let pinned = format!("{host}/demo/web@sha256:{}", sha(raw.as_bytes()));
    let (amd64_manifest, _) = &digests["linux/amd64"];

    // Verification on, no CA: skopeo's refusal, named.
    recipe(
        &p,
        "amd64",
        &format!("  images:\n    - name: web\n      source: {{ registry: {pinned} }}\n      dest: /opt/img\n"),
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains(&format!("image `web` (registry {pinned})")),
        "{err}"
    );
    assert!(
        err.contains("certificate signed by unknown authority"),
        "{err}"
    );
    support::assert_nothing_left(&p);

    // With the CA directory: exported, the registry's manifest byte for byte.
    recipe(
        &p,
        "amd64",
        &format!("  images:\n    - name: web\n      source: {{ registry: {pinned} }}\n      cert_dir: certs/registry\n      format: oci-archive\n      dest: /opt/img\n"),
    );
    let out = p.run(&["stage", "--json"]);
    assert_eq!(outcomes(&out)["image-web-amd64"], "ran");
    let dir = stage_tree(&p, "amd64").join("opt/img");
    let index = json_file(&dir.join("images.json"));
    assert_eq!(
        &index["images"][0]["manifest_digest"],
        amd64_manifest.as_str(),
        "{index:#}"
    );
    let tree = stage_tree(&p, "amd64");
    let pem: Vec<_> = walkdir::WalkDir::new(&tree)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".crt"))
        .collect();
    assert!(
        pem.is_empty(),
        "the CA directory leaked into the image: {pem:?}"
    );

    // Bad combinations are refused when the recipe is read.
    recipe(
        &p,
        "amd64",
        &format!("  images:\n    - name: web\n      source: {{ registry: {pinned} }}\n      cert_dir: certs/registry\n      tls_verify: false\n      dest: /opt/img\n"),
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("`cert_dir` names CAs") && err.contains("tls_verify: false"),
        "{err}"
    );
    recipe(
        &p,
        "amd64",
        &format!("  images:\n    - name: web\n      source: {{ registry: {pinned} }}\n      cert_dir: certs/absent\n      dest: /opt/img\n"),
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("cert_dir") && err.contains("certs/absent") && err.contains("not a directory"),
        "{err}"
    );
    recipe(
        &p,
        "amd64",
        "  images:\n    - name: local\n      source: { oci-layout: src/web }\n      cert_dir: certs/registry\n      dest: /opt/img\n",
    );
    let err = p.fail(&["stage"]);
    assert!(
        err.contains("`cert_dir` is only for a `registry` source"),
        "{err}"
    );
}

/// Push tag `1` of the OCI layout, every platform, to `{host}/demo/web:1`
/// with skopeo (`push_tls`: its destination TLS flag), and return the raw
/// manifest the registry then serves for the tag (`inspect_tls`).
fn push_web(layout: &Utf8Path, host: &str, push_tls: &str, inspect_tls: &str) -> String {
    sh(
        "skopeo",
        &[
            "copy",
            "--all",
            push_tls,
            &format!("oci:{layout}:1"),
            &format!("docker://{host}/demo/web:1"),
        ],
    );
    sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            inspect_tls,
            &format!("docker://{host}/demo/web:1"),
        ],
    )
}
