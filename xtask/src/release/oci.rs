//! A release as one OCI artifact: `release --push oci://HOST[:PORT]/REPO:CHANNEL`
//! publishes the release directory's documents (and, asked, its artifacts)
//! to a registry; `release pull` fetches them back, verified.
//!
//! The artifact is an OCI image manifest (image-spec 1.1's way to store
//! anything that is not a container image): `artifactType`
//! [`ARTIFACT_TYPE`], the empty config (`application/vnd.oci.empty.v1+json`,
//! the two bytes `{}`, also inline as `data`), one layer per file with a
//! media type for its kind ([`media_type`]) and its file name as the
//! `org.opencontainers.image.title` annotation, and annotations naming the
//! release (title, version, revision, created = `SOURCE_DATE_EPOCH`). Nothing
//! in it depends on the clock or the machine: the same release gives the
//! same manifest digest wherever and whenever it is pushed.
//!
//! The registry is spoken to in-process over the distribution API (HTTP/1.1
//! through `ureq`): `HEAD` a blob to skip one the registry has, else
//! `POST` an upload and `PUT` the whole blob with its digest; `PUT` the
//! manifest by tag. Plain HTTP for a registry on the loopback interface
//! (`localhost`, `127.0.0.0/8`, `[::1]`), HTTPS (webpki roots) for any other.
//!
//! A registry that asks for credentials (401 with `WWW-Authenticate`) gets
//! them from the environment ([`USER_ENV`], [`PASSWORD_ENV`]; never from a
//! flag, never printed or written anywhere): a `Basic` challenge is answered
//! with HTTP basic authentication, a `Bearer realm=…,service=…,scope=…` one
//! with the distribution token flow (a token fetched from the realm, with
//! the basic credentials when there are some, then the request again).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::SUMS;

/// What a kiln release is, as an OCI artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.release.v1+json";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config of an artifact that has none (image-spec 1.1, "empty descriptor").
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// `{}` in base64: the empty config's inline `data`.
const EMPTY_DATA: &str = "e30=";
/// The user name for a registry that asks for credentials.
pub const USER_ENV: &str = "KILN_REGISTRY_USER";
/// Its password (or token).
pub const PASSWORD_ENV: &str = "KILN_REGISTRY_PASSWORD";
/// A layer's file name.
pub const TITLE: &str = "org.opencontainers.image.title";
/// Whether the release's artifacts are layers too (`true`/`false`).
pub const WITH_ARTIFACTS: &str = "vnd.kiln.release.artifacts";
/// The reference form, for errors and `--help`.
pub const FORM: &str = "oci://HOST[:PORT]/REPO:CHANNEL";

// ---- references ----------------------------------------------------------------

/// What a reference names in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A tag: the release channel (`stable`, `1.0`, …).
    Tag(String),
    /// A manifest by digest (`sha256:<hex>`): pulling one exact release.
    Digest(String),
}

/// `oci://HOST[:PORT]/REPO:CHANNEL` (or `…/REPO@sha256:<hex>` to pull).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]` as written.
    pub registry: String,
    pub repository: String,
    pub target: Target,
    /// `--ca-cert`: trust only the CA certificates of this PEM file, and
    /// speak HTTPS even to a registry on this machine.
    pub ca_cert: Option<Utf8PathBuf>,
}

impl Reference {
    /// Parse a reference with a tag or a digest.
    pub fn parse(text: &str) -> Result<Reference> {
        parse(text).map_err(|why| {
            anyhow::anyhow!(
                "`{text}` is not an OCI reference: {why}; expected {FORM} \
                 (e.g. oci://registry.example.com/appliances/demo:stable, or \
                 oci://127.0.0.1:5000/demo:stable for a local registry over plain HTTP), \
                 or …/REPO@sha256:<digest> to pull one exact release"
            )
        })
    }

    /// Parse a reference a release is pushed to: it must name a tag.
    pub fn parse_tagged(text: &str) -> Result<Reference> {
        let r = Reference::parse(text)?;
        if let Target::Digest(_) = r.target {
            bail!(
                "`{text}` names a digest; a release is pushed to a channel: expected {FORM} \
                 (the tag is the channel, e.g. `:stable`)"
            );
        }
        Ok(r)
    }

    /// The same registry reached over HTTPS trusting the CAs in `ca` (a
    /// PEM file), also when it is on this machine.
    pub fn with_ca_cert(mut self, ca: Option<Utf8PathBuf>) -> Reference {
        self.ca_cert = ca;
        self
    }

    /// `http` for a registry on the loopback interface (unless a CA is
    /// given), else `https`.
    pub fn scheme(&self) -> &'static str {
        if is_loopback(&self.registry) && self.ca_cert.is_none() {
            "http"
        } else {
            "https"
        }
    }

    /// The tag or digest, as the manifest endpoint takes it.
    pub fn target_str(&self) -> &str {
        match &self.target {
            Target::Tag(t) | Target::Digest(t) => t,
        }
    }

    /// `<scheme>://<registry>/v2/<repository>`.
    fn base(&self) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme(),
            self.registry,
            self.repository
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "oci://{}/{}:{t}", self.registry, self.repository),
            Target::Digest(d) => write!(f, "oci://{}/{}@{d}", self.registry, self.repository),
        }
    }
}

/// For clap: a reference a release is pushed to.
pub fn push_reference(text: &str) -> std::result::Result<Reference, String> {
    Reference::parse_tagged(text).map_err(|e| format!("{e:#}"))
}

/// For clap: a reference a release is pulled from.
pub fn pull_reference(text: &str) -> std::result::Result<Reference, String> {
    Reference::parse(text).map_err(|e| format!("{e:#}"))
}

fn parse(text: &str) -> std::result::Result<Reference, String> {
    let rest = text
        .strip_prefix("oci://")
        .ok_or("it does not start with `oci://`")?;
    let (registry, path) = rest
        .split_once('/')
        .ok_or("there is no repository after the registry")?;
    check_registry(registry)?;
    let (repository, target) = if let Some((repo, digest)) = path.split_once('@') {
        // `REPO:CHANNEL@sha256:…` (how kiln reports a push) pins the
        // digest; the channel is only checked.
        let last = repo.rsplit('/').next().unwrap_or(repo);
        let repo = match last.rsplit_once(':') {
            Some((_, tag)) => {
                check_tag(tag)?;
                &repo[..repo.len() - tag.len() - 1]
            }
            None => repo,
        };
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("the digest `{digest}` is not `sha256:<64 hex digits>`"))?;
        if !is_sha256_hex(hex) {
            return Err(format!(
                "the digest `{digest}` is not `sha256:<64 hex digits>`"
            ));
        }
        (repo, Target::Digest(digest.to_string()))
    } else {
        // The tag follows the last `:` after the last `/`.
        let last = path.rsplit('/').next().unwrap_or(path);
        let Some((_, tag)) = last.rsplit_once(':') else {
            return Err("there is no `:CHANNEL` tag after the repository".into());
        };
        let repo = &path[..path.len() - tag.len() - 1];
        check_tag(tag)?;
        (repo, Target::Tag(tag.to_string()))
    };
    check_repository(repository)?;
    Ok(Reference {
        registry: registry.to_string(),
        repository: repository.to_string(),
        target,
        ca_cert: None,
    })
}

/// `HOST[:PORT]`: a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || format!("the registry `{registry}` is not HOST or HOST:PORT");
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (registry, None),
            p => (registry, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!(
                "the port in `{registry}` is not a number up to 65535"
            ));
        }
    }
    if !host.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// The distribution spec's repository name: lower-case path components
/// (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes), separated by `/`.
fn check_repository(repo: &str) -> std::result::Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__` or a run of `-`, then a letter or digit.
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if i == start
                || !b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return false;
            }
        }
        true
    };
    if repo.is_empty() {
        return Err("the repository is empty".into());
    }
    if repo.len() > 255 {
        return Err("the repository is longer than 255 characters".into());
    }
    if !repo.split('/').all(component_ok) {
        return Err(format!(
            "the repository `{repo}` is not lower-case letters and digits in `/`-separated \
             parts (joined by `.`, `_` or `-`)"
        ));
    }
    Ok(())
}

/// A tag: a word character, then up to 127 word characters, `.` or `-`.
fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
    {
        return Err(format!(
            "the channel `{tag}` is not a tag (letters, digits, `_`, `.`, `-`, at most 128, \
             not starting with `.` or `-`)"
        ));
    }
    Ok(())
}

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Is the registry on this machine (`localhost`, `127.0.0.0/8`, `[::1]`)?
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

// ---- the manifest --------------------------------------------------------------

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (the fields an artifact uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a file of a release is, for its layer's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An image (`.qcow2`, `.ova`, `.iso`, `.img.zst`, `.overlay.tar.zst`).
    Artifact,
    /// `SHA256SUMS`.
    Sums,
    /// `<name>-<version>.manifest.json`.
    Manifest,
    /// `<name>-<version>-<arch>.spdx.json`.
    Sbom,
    /// `<name>-<version>.provenance.json`.
    Provenance,
    /// `SHA256SUMS.minisig`.
    Signature,
}

/// A file of the release directory to push, with the digest taken when it
/// was written (no image is read again to push it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub role: Role,
}

/// The media type of a layer: registered or common types where there is
/// one, kiln's own for its documents.
pub fn media_type(role: Role, name: &str) -> &'static str {
    match role {
        Role::Sums => "text/plain",
        Role::Manifest => "application/vnd.kiln.release.manifest.v1+json",
        Role::Sbom => "application/spdx+json",
        Role::Provenance => "application/vnd.in-toto+json",
        Role::Signature => "application/vnd.kiln.release.minisig.v1",
        Role::Artifact => {
            let n = name.to_ascii_lowercase();
            if n.ends_with(".iso") {
                "application/vnd.efi.iso"
            } else if n.ends_with(".qcow2") {
                "application/x-qemu-disk"
            } else if n.ends_with(".ova") {
                "application/x-virtualbox-ova"
            } else if n.ends_with(".zst") {
                "application/zstd"
            } else if n.ends_with(".xz") {
                "application/x-xz"
            } else if n.ends_with(".img") {
                "application/vnd.efi.img"
            } else {
                "application/octet-stream"
            }
        }
    }
}

/// The empty config descriptor.
fn empty_config() -> Descriptor {
    Descriptor {
        media_type: EMPTY_TYPE.into(),
        digest: format!("sha256:{}", crate::digest::bytes_sha256(EMPTY)),
        size: EMPTY.len() as u64,
        data: Some(EMPTY_DATA.into()),
        annotations: BTreeMap::new(),
    }
}

/// The artifact's manifest for `files` (layers in file-name order) with
/// the manifest `annotations`; returns it and its serialized bytes, whose
/// sha256 is the manifest digest.
pub fn manifest(files: &[File], annotations: BTreeMap<String, String>) -> (Manifest, Vec<u8>) {
    let mut files: Vec<&File> = files.iter().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let layers = files
        .iter()
        .map(|f| {
            let mut annotations = BTreeMap::from([(TITLE.to_string(), f.name.clone())]);
            if f.role == Role::Provenance {
                annotations.insert(
                    "in-toto.io/predicate-type".into(),
                    "https://slsa.dev/provenance/v1".into(),
                );
            }
            Descriptor {
                media_type: media_type(f.role, &f.name).into(),
                digest: format!("sha256:{}", f.sha256),
                size: f.size,
                data: None,
                annotations,
            }
        })
        .collect();
    let m = Manifest {
        schema_version: 2,
        media_type: MANIFEST_TYPE.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: empty_config(),
        layers,
        annotations,
    };
    let bytes = serde_json::to_vec(&m).expect("a manifest serializes");
    (m, bytes)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::digest::bytes_sha256(bytes))
}

// ---- talking to a registry -----------------------------------------------------

/// How much of a refusal's body an error shows (its end).
const BODY_TAIL: usize = 600;
/// Blobs at least this large get a progress bar.
const PROGRESS_FROM: u64 = 16 << 20;

/// A registry user's name and password, from [`USER_ENV`] and
/// [`PASSWORD_ENV`]. Its `Debug` shows neither.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(from the environment)")
    }
}

impl Credentials {
    /// Both variables set (and not empty): credentials; neither: `None`;
    /// one of them only: an error naming the other.
    pub fn from_env() -> Result<Option<Credentials>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var(USER_ENV), var(PASSWORD_ENV)) {
            (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
            (None, None) => Ok(None),
            (Some(_), None) => bail!("{USER_ENV} is set but {PASSWORD_ENV} is not: set both for a registry that asks for credentials"),
            (None, Some(_)) => bail!("{PASSWORD_ENV} is set but {USER_ENV} is not: set both for a registry that asks for credentials"),
        }
    }

    /// `Basic <base64(user:password)>`.
    fn basic(&self) -> String {
        use ct_codecs::Encoder;
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            ct_codecs::Base64::encode_to_string(raw.as_bytes()).expect("base64 of a short string")
        )
    }
}

/// The certificates of a PEM file (`--ca-cert`): the CAs a registry's
/// certificate must chain to. At least one, or an error naming the file.
fn load_ca(path: &Utf8Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the registry CA {path} (--ca-cert/KILN_REGISTRY_CA)"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        let item = item.map_err(|e| anyhow::anyhow!("the registry CA {path}: not PEM: {e}"))?;
        if let ureq::tls::PemItem::Certificate(c) = item {
            certs.push(c);
        }
    }
    anyhow::ensure!(
        !certs.is_empty(),
        "the registry CA {path} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
    );
    Ok(certs)
}

/// A `WWW-Authenticate` challenge: its scheme (lower-case) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// Parse `Scheme k="v", k2=v2` (the first challenge of the header).
fn parse_challenge(text: &str) -> Option<Challenge> {
    let text = text.trim();
    let (scheme, mut rest) = match text.split_once(' ') {
        Some((s, r)) => (s, r.trim_start()),
        None => (text, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; `\x` stands for `x`.
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// `application/x-www-form-urlencoded`-safe text for a query value.
fn query_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request's builder with the `Authorization` header, when there is one.
fn authorized<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

type Response = ureq::http::Response<ureq::Body>;

struct Client {
    agent: ureq::Agent,
    r: Reference,
    credentials: Option<Credentials>,
    /// The `Authorization` header the registry accepted last (basic
    /// credentials or a bearer token), sent with every request.
    auth: RefCell<Option<String>>,
}

impl Client {
    fn new(r: &Reference) -> Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_resolve(Some(Duration::from_secs(30)))
            // A registry digests a whole blob before it answers its PUT.
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)));
        if is_loopback(&r.registry) {
            // A proxy cannot reach this machine's loopback interface.
            config = config.proxy(None);
        }
        if let Some(ca) = &r.ca_cert {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&load_ca(ca)?))
                    .build(),
            );
        }
        Ok(Client {
            agent: config.build().new_agent(),
            r: r.clone(),
            credentials: Credentials::from_env()?,
            auth: RefCell::new(None),
        })
    }

    fn auth(&self) -> Option<String> {
        self.auth.borrow().clone()
    }

    /// Send the request `build` makes (given the `Authorization` value);
    /// when the registry answers 401 with a challenge kiln can meet,
    /// authenticate and send it once more. Any other answer is returned
    /// for the caller to judge.
    fn send(
        &self,
        what: &str,
        build: &dyn Fn(Option<&str>) -> std::result::Result<Response, ureq::Error>,
    ) -> Result<Response> {
        let resp = build(self.auth().as_deref()).map_err(|e| self.unreachable(what, e))?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let Some(challenge) = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
        else {
            return Ok(resp);
        };
        if !self.authenticate(what, &challenge)? {
            return Ok(resp);
        }
        build(self.auth().as_deref()).map_err(|e| self.unreachable(what, e))
    }

    /// Meet a challenge: basic credentials, or a token from the realm.
    /// `false`: nothing new to try (no credentials for `Basic`, or they
    /// were sent already).
    fn authenticate(&self, what: &str, c: &Challenge) -> Result<bool> {
        match c.scheme.as_str() {
            "basic" => {
                let Some(creds) = &self.credentials else {
                    return Ok(false);
                };
                let basic = creds.basic();
                if self.auth().as_deref() == Some(basic.as_str()) {
                    return Ok(false);
                }
                *self.auth.borrow_mut() = Some(basic);
                Ok(true)
            }
            "bearer" => {
                let realm = c.params.get("realm").with_context(|| {
                    format!(
                        "{}: {what}: the registry asks for a bearer token without naming its realm",
                        self.place()
                    )
                })?;
                let secure = realm.starts_with("https://")
                    || realm
                        .strip_prefix("http://")
                        .is_some_and(|rest| is_loopback(rest.split('/').next().unwrap_or("")));
                anyhow::ensure!(
                    secure || self.credentials.is_none(),
                    "{}: {what}: the registry's token service {realm} is plain HTTP on another \
                     machine; kiln sends credentials only over HTTPS (or to this machine)",
                    self.place()
                );
                let mut query = Vec::new();
                for key in ["service", "scope"] {
                    if let Some(v) = c.params.get(key) {
                        query.push(format!("{key}={}", query_escape(v)));
                    }
                }
                let url = if query.is_empty() {
                    realm.clone()
                } else {
                    let sep = if realm.contains('?') { '&' } else { '?' };
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let basic = self.credentials.as_ref().map(Credentials::basic);
                let token_what = format!("{what}: GET a token from {realm}");
                let mut resp = authorized(self.agent.get(&url), basic.as_deref())
                    .call()
                    .map_err(|e| self.unreachable(&token_what, e))?;
                if resp.status().as_u16() != 200 {
                    return Err(self.refused(&token_what, &mut resp));
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| self.unreachable(&token_what, e))?;
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = serde_json::from_slice(&body).with_context(|| {
                    format!("{}: {token_what}: the answer is not a token", self.place())
                })?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .with_context(|| {
                        format!("{}: {token_what}: the answer holds no token", self.place())
                    })?;
                let bearer = format!("Bearer {token}");
                if self.auth().as_deref() == Some(bearer.as_str()) {
                    return Ok(false);
                }
                *self.auth.borrow_mut() = Some(bearer);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// `registry <host> (<scheme>), repository <repo>`: how every error
    /// names where it happened.
    fn place(&self) -> String {
        format!(
            "registry {} ({}://{}), repository {}",
            self.r.registry,
            self.r.scheme(),
            self.r.registry,
            self.r.repository
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.r.base())
    }

    /// The error for a request that got no answer.
    fn unreachable(&self, what: &str, e: ureq::Error) -> anyhow::Error {
        if crate::signals::interrupted() {
            return crate::signals::Interrupted.into();
        }
        let text = e.to_string();
        let tls = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_))
            || ["certificate", "rustls", "tls"]
                .iter()
                .any(|w| text.to_ascii_lowercase().contains(w));
        let hint = match (&self.r.ca_cert, tls) {
            (None, true) => " (a TLS failure: if the registry's certificate comes from a private \
                             CA, pass --ca-cert FILE with that CA in PEM, or set KILN_REGISTRY_CA)"
                .to_string(),
            (Some(ca), true) => format!(
                " (a TLS failure: the registry's certificate does not chain to a CA in --ca-cert \
                 {ca}, or does not name {})",
                self.r.registry
            ),
            _ => String::new(),
        };
        anyhow::anyhow!("{}: {what}: no answer: {e}{hint}", self.place())
    }

    /// The error for an answer other than the ones `what` expects: the
    /// status and the end of the body (the registry's error JSON).
    fn refused(&self, what: &str, resp: &mut ureq::http::Response<ureq::Body>) -> anyhow::Error {
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        let body = body.trim();
        let tail = if body.is_empty() {
            "(no body)".to_string()
        } else {
            let start = body.len().saturating_sub(BODY_TAIL);
            let start = (start..=body.len())
                .find(|&i| body.is_char_boundary(i))
                .unwrap_or(body.len());
            format!("{}{}", if start > 0 { "…" } else { "" }, &body[start..])
        };
        let hint = match (status.as_u16(), &self.credentials) {
            (401, None) => format!(
                "; the registry asks for credentials: set {USER_ENV} and {PASSWORD_ENV} \
                 (kiln reads them from the environment only)"
            ),
            (401, Some(_)) => format!(
                "; the registry {} refused the credentials in {USER_ENV} and {PASSWORD_ENV}: \
                 check them",
                self.r.registry
            ),
            (403, None) => format!(
                "; the registry {} refuses anonymous access here: set {USER_ENV} and \
                 {PASSWORD_ENV} for a user that may",
                self.r.registry
            ),
            (403, Some(_)) => format!(
                "; the registry {} accepted the credentials in {USER_ENV} and {PASSWORD_ENV} but \
                 that user may not do this (wrong user, or no rights on the repository)",
                self.r.registry
            ),
            (404, _) if what.starts_with("GET manifest") => {
                "; no such repository or channel".to_string()
            }
            (400, _) if self.r.scheme() == "http" => {
                "; a registry that speaks HTTPS answers plain HTTP like this: pass --ca-cert \
                 FILE with its CA (or set KILN_REGISTRY_CA), and kiln speaks HTTPS to it on \
                 this machine too"
                    .to_string()
            }
            _ => String::new(),
        };
        anyhow::anyhow!(
            "{}: {what}: HTTP {}{}: {tail}{hint}",
            self.place(),
            status.as_u16(),
            status
                .canonical_reason()
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )
    }

    /// Does the registry hold blob `digest` already (`HEAD`)?
    fn has_blob(&self, digest: &str) -> Result<bool> {
        let what = format!("HEAD blob {digest}");
        let url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.send(&what, &|auth| {
            authorized(self.agent.head(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(&what, &mut resp)),
        }
    }

    /// Upload a blob whole: `POST` an upload session, `PUT` the bytes with
    /// the digest. `body` yields exactly `size` bytes.
    fn upload(&self, digest: &str, size: u64, body: &mut dyn Read) -> Result<()> {
        let what = format!("POST blob upload for {digest}");
        let url = self.url("blobs/uploads/");
        let mut resp = self.send(&what, &|auth| {
            authorized(self.agent.post(&url), auth).send_empty()
        })?;
        if resp.status().as_u16() != 202 {
            return Err(self.refused(&what, &mut resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!("{}: {what}: HTTP 202 without a Location", self.place())
            })?;
        let url = self.absolute(&location);
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}digest={}", digest.replace(':', "%3A"));
        let what = format!("PUT blob {digest} ({size} bytes)");
        let mut progress =
            (size >= PROGRESS_FROM).then(|| crate::ui::Progress::bytes("push", size));
        let mut reader = Watched {
            inner: body,
            progress: progress.as_mut(),
        };
        // The body is read once: sent with the authorization the POST
        // established, not retried.
        let auth = self.auth();
        let sent = authorized(self.agent.put(&url), auth.as_deref())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .send(ureq::SendBody::from_reader(&mut reader));
        if let Some(p) = progress {
            p.finish();
        }
        let mut resp = sent.map_err(|e| self.unreachable(&what, e))?;
        if resp.status().as_u16() != 201 {
            return Err(self.refused(&what, &mut resp));
        }
        Ok(())
    }

    /// A `Location` as a URL: registries answer absolute URLs or paths.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!(
                "{}://{}/{}",
                self.r.scheme(),
                self.r.registry,
                location.trim_start_matches('/')
            )
        }
    }

    /// `PUT` the manifest under the reference's tag; returns the digest the
    /// registry stored it as (checked against `digest` when it says one).
    fn put_manifest(&self, bytes: &[u8], digest: &str) -> Result<()> {
        let tag = self.r.target_str();
        let what = format!("PUT manifest `{tag}`");
        let url = self.url(&format!("manifests/{tag}"));
        let mut resp = self.send(&what, &|auth| {
            authorized(self.agent.put(&url), auth)
                .header("Content-Type", MANIFEST_TYPE)
                .send(bytes)
        })?;
        if resp.status().as_u16() != 201 {
            return Err(self.refused(&what, &mut resp));
        }
        if let Some(stored) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            anyhow::ensure!(
                stored == digest,
                "{}: {what}: the registry stored the manifest as {stored}, not {digest}",
                self.place()
            );
        }
        Ok(())
    }

    /// `GET` the manifest the reference names: its bytes.
    fn get_manifest(&self) -> Result<Vec<u8>> {
        let target = self.r.target_str();
        let what = format!("GET manifest `{target}`");
        let url = self.url(&format!("manifests/{target}"));
        let mut resp = self.send(&what, &|auth| {
            authorized(self.agent.get(&url), auth)
                .header("Accept", MANIFEST_TYPE)
                .call()
        })?;
        if resp.status().as_u16() != 200 {
            return Err(self.refused(&what, &mut resp));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| self.unreachable(&what, e))?;
        Ok(bytes)
    }

    /// `GET` blob `d` into `to`, checking its size and sha256 as it arrives.
    fn get_blob(&self, d: &Descriptor, to: &Utf8Path) -> Result<()> {
        let what = format!("GET blob {}", d.digest);
        let url = self.url(&format!("blobs/{}", d.digest));
        let mut resp = self.send(&what, &|auth| authorized(self.agent.get(&url), auth).call())?;
        if resp.status().as_u16() != 200 {
            return Err(self.refused(&what, &mut resp));
        }
        let file = std::fs::File::create(to).with_context(|| format!("creating {to}"))?;
        let mut w = crate::digest::HashWriter::new(std::io::BufWriter::new(file));
        let mut progress =
            (d.size >= PROGRESS_FROM).then(|| crate::ui::Progress::bytes("pull", d.size));
        let mut body = resp
            .body_mut()
            .with_config()
            .limit(d.size.saturating_add(1))
            .reader();
        let mut buf = vec![0u8; 256 << 10];
        let copied: Result<()> = loop {
            crate::signals::check()?;
            let n = match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(anyhow::anyhow!("{}: {what}: {e}", self.place())),
            };
            if let Err(e) = w.write_all(&buf[..n]) {
                break Err(anyhow::Error::new(e).context(format!("writing {to}")));
            }
            if let Some(p) = progress.as_mut() {
                p.inc(n as u64);
            }
        };
        if let Some(p) = progress {
            p.finish();
        }
        copied?;
        let (inner, sha256, size) = w.finish();
        inner
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {to}: {}", e.error()))?
            .sync_all()
            .with_context(|| format!("writing {to}"))?;
        let got = format!("sha256:{sha256}");
        anyhow::ensure!(
            size == d.size && got == d.digest,
            "{}: {what}: the registry sent {size} bytes with digest {got}; the manifest \
             says {} bytes, {}",
            self.place(),
            d.size,
            d.digest
        );
        Ok(())
    }
}

/// A reader that counts into a progress bar and stops when kiln is
/// interrupted.
struct Watched<'a, 'b> {
    inner: &'a mut dyn Read,
    progress: Option<&'b mut crate::ui::Progress>,
}

impl Read for Watched<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if crate::signals::interrupted() {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress.as_mut() {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

// ---- push ----------------------------------------------------------------------

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest (`sha256:<hex>`).
    pub digest: String,
    /// Blobs sent, and blobs the registry already had (config included).
    pub uploaded: usize,
    pub present: usize,
    pub bytes_uploaded: u64,
}

/// Push `files` of the release directory `dir` as one artifact with the
/// manifest `annotations`, tagged with the reference's tag.
pub fn push(
    r: &Reference,
    dir: &Utf8Path,
    files: &[File],
    annotations: BTreeMap<String, String>,
) -> Result<Pushed> {
    let (m, bytes) = manifest(files, annotations);
    let digest = digest_of(&bytes);
    let client = Client::new(r)?;
    let mut done = Pushed {
        digest: digest.clone(),
        uploaded: 0,
        present: 0,
        bytes_uploaded: 0,
    };
    let mut sent = BTreeSet::new();
    let blobs = std::iter::once((&m.config, None)).chain(m.layers.iter().map(|l| {
        let name = l.annotations.get(TITLE).cloned();
        (l, name)
    }));
    for (d, name) in blobs {
        crate::signals::check()?;
        // Two files with the same bytes are one blob.
        if !sent.insert(d.digest.clone()) {
            continue;
        }
        if client.has_blob(&d.digest)? {
            done.present += 1;
            continue;
        }
        match name {
            None => client.upload(&d.digest, d.size, &mut &EMPTY[..])?,
            Some(name) => {
                let path = dir.join(&name);
                let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                let len = f
                    .metadata()
                    .with_context(|| format!("reading {path}"))?
                    .len();
                anyhow::ensure!(
                    len == d.size,
                    "{path} is {len} bytes, but the release recorded {}: it changed after \
                     the release was written",
                    d.size
                );
                crate::ui::debug(&format!("pushing {name} ({} bytes)", d.size));
                client.upload(&d.digest, d.size, &mut std::io::BufReader::new(f))?;
            }
        }
        crate::signals::check()?;
        done.uploaded += 1;
        done.bytes_uploaded += d.size;
    }
    client.put_manifest(&bytes, &digest)?;
    Ok(done)
}

// ---- pull ----------------------------------------------------------------------

/// What a pull wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Pulled {
    pub dest: Utf8PathBuf,
    pub digest: String,
    /// The files written, by name.
    pub files: Vec<String>,
    /// Files `SHA256SUMS` lists that the artifact does not carry (the
    /// release's images, when they were not pushed).
    pub not_pushed: Vec<String>,
}

/// The directory a pull writes to when none is given: the release's name
/// (the manifest's title annotation) in the current directory.
pub fn default_dest(m: &Manifest) -> Result<String> {
    let title = m
        .annotations
        .get(TITLE)
        .context("the artifact's manifest has no title annotation; pass --dest DIR")?;
    check_file_name(title).context("the artifact's title is no directory name; pass --dest DIR")?;
    Ok(title.clone())
}

/// A layer's title is written as a file of the release directory: one
/// plain name, nothing that climbs out of it.
fn check_file_name(name: &str) -> Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('\0')
            && !name.starts_with('.'),
        "`{name}` is not a plain file name"
    );
    Ok(())
}

/// Fetch the release the reference names into `dest` (or
/// `./<title>` when `None`): the manifest (checked against a digest
/// reference), every layer with its size and sha256 checked as it arrives,
/// then every file against the pulled `SHA256SUMS`. Written into a
/// temporary directory beside `dest` and renamed into place only when all
/// of it verified: `dest` holds a whole release or nothing.
///
/// With `verify`, `SHA256SUMS` must also carry a good signature by that key
/// (`SHA256SUMS.minisig`, [`super::sign`]), checked before anything is
/// renamed into place: a release without one, or with a bad one, is refused.
pub fn pull(
    r: &Reference,
    dest: Option<&Utf8Path>,
    verify: Option<&super::sign::VerifyingKey>,
) -> Result<Pulled> {
    let client = Client::new(r)?;
    let bytes = client.get_manifest()?;
    let digest = digest_of(&bytes);
    if let Target::Digest(want) = &r.target {
        anyhow::ensure!(
            &digest == want,
            "{}: the manifest the registry sent for {want} has digest {digest}",
            client.place()
        );
    }
    let m: Manifest = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{}: the manifest of {r} is not an OCI manifest",
            client.place()
        )
    })?;
    anyhow::ensure!(
        m.media_type == MANIFEST_TYPE && m.artifact_type.as_deref() == Some(ARTIFACT_TYPE),
        "{r} is not a kiln release: its manifest is `{}` with artifactType {:?}, not `{MANIFEST_TYPE}` \
         with `{ARTIFACT_TYPE}`",
        m.media_type,
        m.artifact_type
    );
    let dest = match dest {
        Some(d) => crate::fsutil::absolute(d)?,
        None => crate::fsutil::absolute(Utf8Path::new(&default_dest(&m)?))?,
    };
    if let Ok(mut entries) = std::fs::read_dir(&dest) {
        anyhow::ensure!(
            entries.next().is_none(),
            "{dest} exists and is not empty: pull into a new directory (--dest DIR)"
        );
    } else if dest.exists() {
        bail!("{dest} exists and is not a directory: pull into a new directory (--dest DIR)");
    }
    let mut names = BTreeSet::new();
    for l in &m.layers {
        let name = l
            .annotations
            .get(TITLE)
            .with_context(|| format!("{r}: layer {} has no title annotation", l.digest))?;
        check_file_name(name).with_context(|| format!("{r}: layer {}", l.digest))?;
        anyhow::ensure!(
            names.insert(name.clone()),
            "{r}: two layers are titled `{name}`"
        );
        anyhow::ensure!(
            l.digest.strip_prefix("sha256:").is_some_and(is_sha256_hex),
            "{r}: layer `{name}` has digest {}, not sha256:<64 hex digits>",
            l.digest
        );
    }
    anyhow::ensure!(
        names.contains(SUMS),
        "{r} carries no {SUMS}: its files cannot be checked"
    );
    if let Some(key) = verify {
        // Refused before anything is fetched.
        anyhow::ensure!(
            names.contains(super::sign::SIG),
            "{r} ({digest}) is not signed: the artifact carries no {}, and --verify-key {} \
             (key id {}) asks for a signature; nothing was written to {dest}",
            super::sign::SIG,
            key.path,
            key.key_id()
        );
    }

    let parent = dest
        .parent()
        .with_context(|| format!("{dest} has no parent directory"))?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {parent}"))?;
    let leaf = dest.file_name().context("the destination has no name")?;
    let partial = crate::exec::TempDir::new(parent.join(format!(".{leaf}.kiln-partial")))?;
    for l in &m.layers {
        let name = &l.annotations[TITLE];
        crate::ui::debug(&format!("pulling {name} ({} bytes)", l.size));
        client.get_blob(l, &partial.path.join(name))?;
    }

    // Every file against SHA256SUMS: the layers' digests are their
    // contents' (checked as they arrived), so compare those.
    let sums_path = partial.path.join(SUMS);
    let text =
        std::fs::read_to_string(&sums_path).with_context(|| format!("{r}: reading its {SUMS}"))?;
    let listed = parse_sums(&text).with_context(|| format!("{r}: its {SUMS}"))?;
    let mut problems = Vec::new();
    for l in &m.layers {
        let name = &l.annotations[TITLE];
        // The signature is over SHA256SUMS, so not listed in it.
        if name == SUMS || name == super::sign::SIG {
            continue;
        }
        let hex = &l.digest["sha256:".len()..];
        match listed.get(name.as_str()) {
            None => problems.push(format!("{name}: not listed in {SUMS}")),
            Some(&want) if want != hex => {
                problems.push(format!("{name}: FAILED (sha256 {hex}, {SUMS} says {want})"))
            }
            Some(_) => {}
        }
    }
    let not_pushed: Vec<String> = listed
        .keys()
        .filter(|n| !names.contains(**n))
        .map(|n| n.to_string())
        .collect();
    let with_artifacts = m.annotations.get(WITH_ARTIFACTS).map(String::as_str) == Some("true");
    if with_artifacts {
        for n in &not_pushed {
            problems.push(format!("{n}: listed in {SUMS}, missing from the artifact"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{r} ({digest}) does not verify; nothing was written to {dest}:\n  {}",
            problems.join("\n  ")
        );
    }
    if let Some(key) = verify {
        // Checked here rather than with `verify_dir`, whose errors would
        // name the temporary directory.
        let sig_path = partial.path.join(super::sign::SIG);
        let sig = std::fs::read_to_string(&sig_path)
            .with_context(|| format!("{r}: reading its {}", super::sign::SIG))?;
        key.verify(text.as_bytes(), &sig).map_err(|e| {
            e.context(format!(
                "{r} ({digest}) is not signed by the key {} (key id {}): its {SUMS} does not \
                 verify against its {}; nothing was written to {dest}",
                key.path,
                key.key_id(),
                super::sign::SIG
            ))
        })?;
    }
    crate::signals::check()?;
    partial.persist(&dest)?;
    let mut files: Vec<String> = names.into_iter().collect();
    files.sort();
    Ok(Pulled {
        dest,
        digest,
        files,
        not_pushed,
    })
}

/// `SHA256SUMS` as name → hex (`<64 hex>  <name>` or `<64 hex> *<name>`).
fn parse_sums(text: &str) -> Result<BTreeMap<&str, &str>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (hex, name) = line
            .split_once(' ')
            .filter(|(h, _)| is_sha256_hex(h))
            .with_context(|| format!("line {} is not `<sha256>  <name>`: {line:?}", i + 1))?;
        let name = name
            .strip_prefix(' ')
            .or_else(|| name.strip_prefix('*'))
            .with_context(|| format!("line {} is not `<sha256>  <name>`: {line:?}", i + 1))?;
        anyhow::ensure!(out.insert(name, hex).is_none(), "`{name}` is listed twice");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_into_registry_repository_and_channel() {
        let r = Reference::parse_tagged("oci://127.0.0.1:5000/kiln/demo:stable").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "kiln/demo");
        assert_eq!(r.target, Target::Tag("stable".into()));
        assert_eq!(r.scheme(), "http");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/kiln/demo:stable");
        let r = Reference::parse("oci://registry.example.com/a/b/c:1.0").unwrap();
        assert_eq!(r.scheme(), "https");
        assert_eq!(r.base(), "https://registry.example.com/v2/a/b/c");
        assert_eq!(
            Reference::parse("oci://localhost:5000/x:y")
                .unwrap()
                .scheme(),
            "http"
        );
        assert_eq!(
            Reference::parse("oci://[::1]:5000/x:y").unwrap().scheme(),
            "http"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://example.com/x@{d}")).unwrap();
        assert_eq!(r.target, Target::Digest(d.clone()));
        // A channel before the digest is allowed (and only checked).
        let r = Reference::parse(&format!("oci://example.com/x/y:stable@{d}")).unwrap();
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.target, Target::Digest(d.clone()));
        let e = format!(
            "{:#}",
            Reference::parse_tagged(&format!("oci://example.com/x@{d}")).unwrap_err()
        );
        assert!(e.contains("channel"), "{e}");
    }

    #[test]
    fn malformed_references_are_refused_naming_the_form() {
        for (bad, why) in [
            ("127.0.0.1:5000/demo:stable", "oci://"),
            ("oci://127.0.0.1:5000", "no repository"),
            ("oci://127.0.0.1:5000/demo", "no `:CHANNEL`"),
            ("oci://127.0.0.1:5000/Demo:stable", "`Demo`"),
            ("oci://127.0.0.1:99999/demo:stable", "port"),
            ("oci://127.0.0.1:5000/demo:", "channel"),
            ("oci://127.0.0.1:5000/demo:-x", "channel `-x`"),
            ("oci://127.0.0.1:5000/de..mo:x", "de..mo"),
            ("oci://127.0.0.1:5000//demo:x", "repository"),
            ("oci://bad_host/demo:x", "bad_host"),
            ("oci://h/demo@sha256:abc", "64 hex"),
        ] {
            let e = format!("{:#}", Reference::parse(bad).unwrap_err());
            assert!(e.contains(why) && e.contains(FORM), "{bad}: {e}");
        }
    }

    fn file(name: &str, role: Role, bytes: &[u8]) -> File {
        File {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: crate::digest::bytes_sha256(bytes),
            role,
        }
    }

    #[test]
    fn the_manifest_is_an_artifact_with_the_empty_config_and_a_titled_layer_per_file() {
        let files = [
            file("demo-1.0.provenance.json", Role::Provenance, b"p"),
            file("SHA256SUMS", Role::Sums, b"s"),
            file("demo-1.0-amd64.qcow2", Role::Artifact, b"q"),
        ];
        let ann = BTreeMap::from([("org.opencontainers.image.version".into(), "1.0".into())]);
        let (m, bytes) = manifest(&files, ann.clone());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], MANIFEST_TYPE);
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], EMPTY_TYPE);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["config"]["data"], "e30=");
        let titles: Vec<&str> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["annotations"][TITLE].as_str().unwrap())
            .collect();
        assert_eq!(
            titles,
            [
                "SHA256SUMS",
                "demo-1.0-amd64.qcow2",
                "demo-1.0.provenance.json"
            ]
        );
        assert_eq!(v["layers"][1]["mediaType"], "application/x-qemu-disk");
        assert_eq!(
            v["layers"][1]["digest"],
            format!("sha256:{}", crate::digest::bytes_sha256(b"q"))
        );
        assert_eq!(v["annotations"]["org.opencontainers.image.version"], "1.0");
        // The same files in another order: the same bytes.
        let mut shuffled = files.to_vec();
        shuffled.reverse();
        assert_eq!(manifest(&shuffled, ann).1, bytes);
        // And it reads back.
        assert_eq!(serde_json::from_slice::<Manifest>(&bytes).unwrap(), m);
    }

    #[test]
    fn media_types_fit_the_files() {
        assert_eq!(
            media_type(Role::Artifact, "d-1-amd64.iso"),
            "application/vnd.efi.iso"
        );
        assert_eq!(
            media_type(Role::Artifact, "d-1-arm64-pi.img.zst"),
            "application/zstd"
        );
        assert_eq!(
            media_type(Role::Artifact, "d-1-arm64-pi.img.xz"),
            "application/x-xz"
        );
        assert_eq!(
            media_type(Role::Artifact, "d-1-amd64.ova"),
            "application/x-virtualbox-ova"
        );
        assert_eq!(
            media_type(Role::Sbom, "d-1-amd64.spdx.json"),
            "application/spdx+json"
        );
        assert_eq!(
            media_type(Role::Provenance, "x"),
            "application/vnd.in-toto+json"
        );
    }

    #[test]
    fn sums_parse_both_sha256sum_modes_and_refuse_garbage() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!("{a}  one\n{b} *two\n");
        let m = parse_sums(&text).unwrap();
        assert_eq!(m["one"], a);
        assert_eq!(m["two"], b);
        assert!(parse_sums("xyz  one\n").is_err());
        assert!(parse_sums(&format!("{a}  one\n{a}  one\n")).is_err());
    }

    #[test]
    fn challenges_parse_into_scheme_and_parameters() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["service"], "registry.example.com");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="kiln \"test\"", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "kiln \"test\"");
        assert_eq!(c.params["charset"], "UTF-8");
        assert_eq!(parse_challenge("Basic").unwrap().params.len(), 0);
        assert!(parse_challenge("").is_none());
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = Credentials {
            user: "alice".into(),
            password: "s3cret".into(),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("alice") && !d.contains("s3cret"), "{d}");
        // base64("alice:s3cret")
        assert_eq!(c.basic(), "Basic YWxpY2U6czNjcmV0");
    }

    #[test]
    fn pulled_names_stay_inside_the_directory() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        check_file_name("demo-1.0.manifest.json").unwrap();
    }
}
