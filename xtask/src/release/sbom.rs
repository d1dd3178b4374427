//! SPDX 2.3 SBOMs (JSON), one per root file system: the Debian packages dpkg
//! installed (name, version, architecture, source package, purl), and the
//! container images and models the appliance carries, with their digests.
//! Deterministic: the creation time is `SOURCE_DATE_EPOCH` and the document
//! namespace is derived from the document's own content.

use serde_json::{json, Value};

use super::facts::Facts;
use crate::recipe::Arch;

/// Where kiln's namespaces live: a reserved domain (RFC 2606), since SPDX
/// asks for a unique URI, not a reachable one.
const NAMESPACE_BASE: &str = "https://kiln.invalid/spdx";

/// One document per architecture the release carries, in order.
pub fn documents(f: &Facts) -> Vec<(Arch, Value)> {
    f.derived
        .arches
        .iter()
        .map(|&a| (a, document(f, a)))
        .collect()
}

/// `SPDXRef-<kind>-<name>`: SPDX ids allow letters, digits, `.` and `-`.
fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| match c {
            '+' => 'p',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => c,
            _ => '-',
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

/// Percent-encode a purl component (letters, digits and `.-_~` stay).
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The purl of a Debian package.
pub fn deb_purl(name: &str, version: &str, arch: &str) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}",
        purl_escape(name),
        purl_escape(version),
        purl_escape(arch)
    )
}

fn purl_ref(locator: String) -> Value {
    json!([{
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    }])
}

/// A package with nothing asserted about licenses or where to download it
/// (a Debian package's declared license is set from its copyright file).
fn package(id: String, name: &str, version: Option<&str>) -> serde_json::Map<String, Value> {
    let mut p = serde_json::Map::new();
    p.insert("SPDXID".into(), json!(id));
    p.insert("name".into(), json!(name));
    if let Some(v) = version {
        p.insert("versionInfo".into(), json!(v));
    }
    p.insert("downloadLocation".into(), json!("NOASSERTION"));
    p.insert("filesAnalyzed".into(), json!(false));
    p.insert("licenseConcluded".into(), json!("NOASSERTION"));
    p.insert("licenseDeclared".into(), json!("NOASSERTION"));
    p.insert("copyrightText".into(), json!("NOASSERTION"));
    p
}

pub fn document(f: &Facts, arch: Arch) -> Value {
    let top = spdx_id("appliance", &format!("{}-{arch}", f.name));
    let mut appliance = package(top.clone(), &f.name, Some(&f.version));
    appliance.insert("primaryPackagePurpose".into(), json!("OPERATING-SYSTEM"));
    if let Some(s) = &f.description {
        appliance.insert("description".into(), json!(s));
    }
    if let Some(v) = &f.vendor {
        appliance.insert("supplier".into(), json!(format!("Organization: {v}")));
    }
    let mut packages = vec![Value::Object(appliance)];
    let mut contained = Vec::new();
    if let Some(root) = f.roots.iter().find(|x| x.arch == arch) {
        for p in &root.packages {
            let id = spdx_id("deb", &format!("{}-{}", p.name, p.architecture));
            let mut pkg = package(id.clone(), &p.name, Some(&p.version));
            pkg.insert(
                "sourceInfo".into(),
                json!(format!(
                    "built from the Debian source package {} {}",
                    p.source, p.source_version
                )),
            );
            pkg.insert(
                "externalRefs".into(),
                purl_ref(deb_purl(&p.name, &p.version, &p.architecture)),
            );
            if let Some(l) = root.licenses.get(&p.name) {
                pkg.insert("licenseDeclared".into(), json!(l));
            }
            packages.push(Value::Object(pkg));
            contained.push(id);
        }
    }
    for img in f.images.iter().filter(|i| i.arch == arch) {
        let rec = &img.record;
        let id = spdx_id("image", &format!("{}-{arch}", rec.name));
        let tag = rec.reference.rsplit_once(':').map(|(_, t)| t);
        let mut pkg = package(id.clone(), &rec.name, tag);
        pkg.insert("primaryPackagePurpose".into(), json!("CONTAINER"));
        pkg.insert(
            "checksums".into(),
            json!([{ "algorithm": "SHA256", "checksumValue": rec.sha256 }]),
        );
        pkg.insert(
            "comment".into(),
            json!(format!(
                "{} archive {} ({}); manifest {}, config {}; from {}",
                rec.format,
                rec.archive,
                rec.platform,
                rec.manifest_digest,
                rec.config_digest,
                rec.source
            )),
        );
        let mut purl = format!(
            "pkg:oci/{}@{}?arch={}",
            purl_escape(&rec.name),
            purl_escape(&rec.manifest_digest),
            arch.oci()
        );
        if let Some(t) = tag {
            purl.push_str(&format!("&tag={}", purl_escape(t)));
        }
        pkg.insert("externalRefs".into(), purl_ref(purl));
        packages.push(Value::Object(pkg));
        contained.push(id);
    }
    for m in &f.models {
        let id = spdx_id("model", &m.name);
        let mut pkg = package(id.clone(), &m.name, m.revision.as_deref());
        pkg.insert(
            "checksums".into(),
            json!([{ "algorithm": "SHA256", "checksumValue": m.sha256 }]),
        );
        pkg.insert(
            "comment".into(),
            json!(match m.packaging {
                crate::recipe::payloads::ModelPackaging::TarZst =>
                    "sha256 of the model's .tar.zst".to_string(),
                crate::recipe::payloads::ModelPackaging::Tree => format!(
                    "sha256 of the model's SHA256SUMS ({} files, one sha256sum line each, by path)",
                    m.files
                ),
            }),
        );
        packages.push(Value::Object(pkg));
        contained.push(id);
    }
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": top,
    })];
    relationships.extend(contained.iter().map(|id| {
        json!({
            "spdxElementId": top,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        })
    }));
    let name = format!("{}-{}-{arch}", f.name, f.version);
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": "",
        "creationInfo": {
            "created": crate::export::rfc3339(f.epoch),
            "creators": [format!("Tool: kiln-{}", &f.code_fingerprint[..f.code_fingerprint.len().min(12)])],
            "comment": "created at SOURCE_DATE_EPOCH; packages from dpkg's status in the root file system, declared licenses from their DEP-5 copyright files",
        },
        "packages": packages,
        "relationships": relationships,
    });
    // The Debian short names without an SPDX id, as references.
    if let Some(root) = f.roots.iter().find(|x| x.arch == arch) {
        if !root.license_refs.is_empty() {
            doc["hasExtractedLicensingInfos"] = root
                .license_refs
                .iter()
                .map(|(id, name)| {
                    json!({
                        "licenseId": id,
                        "name": name,
                        "extractedText": format!(
                            "The license Debian's machine-readable copyright files call `{name}`; \
                             its text is in /usr/share/doc/<package>/copyright of each package \
                             that declares it."
                        ),
                    })
                })
                .collect();
        }
    }
    // The namespace names this content: the same inputs give the same one.
    let digest = crate::digest::bytes_sha256(doc.to_string().as_bytes());
    doc["documentNamespace"] = json!(format!("{NAMESPACE_BASE}/{name}-{}", &digest[..32]));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_and_ids_escape_what_their_syntax_reserves() {
        assert_eq!(
            deb_purl("libstdc++6", "1:12.2.0-14+deb12u1", "amd64"),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14%2Bdeb12u1?arch=amd64"
        );
        assert_eq!(
            spdx_id("deb", "libstdc++6-amd64"),
            "SPDXRef-deb-libstdcpp6-amd64"
        );
        assert_eq!(spdx_id("image", "web_app:1"), "SPDXRef-image-web-app-1");
    }
}
