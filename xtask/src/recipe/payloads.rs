//! `payloads:` — container images and ML models baked into every format.
//! (Export itself: `crate::export`.)

use std::collections::BTreeMap;

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Payloads {
    #[serde(default)]
    pub images: Vec<ImagePayload>,
    #[serde(default)]
    pub models: Vec<ModelPayload>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePayload {
    pub name: String,
    pub source: ImageSource,
    /// What the appliance's runtime imports.
    #[serde(default)]
    pub format: ArchiveFormat,
    #[serde(default)]
    pub compression: Compression,
    /// Directory in the image that receives `<name>-<arch>.tar[.zst]` and `images.json`.
    pub dest: Utf8PathBuf,
    /// Image reference recorded in the archive (`repo:tag`); default
    /// `<name>:latest` (filled by `resolve`).
    #[serde(default)]
    pub reference: Option<String>,
    /// Only for a `rootfs-dir` or `debian` source (kiln writes their
    /// config): the image's default command (OCI `Cmd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Only for a `rootfs-dir` or `debian` source: OCI `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Only for a `rootfs-dir` or `debian` source: environment variables,
    /// written sorted as `KEY=value` (the default `PATH` stays unless set here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Only for a `rootfs-dir` or `debian` source: `port[/tcp|udp|sctp]`
    /// (`8080` is filled to `8080/tcp` by `resolve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    /// Only for a `rootfs-dir` or `debian` source: OCI `WorkingDir` (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Only for a `rootfs-dir` or `debian` source: OCI `User`
    /// (`name`, `uid`, `uid:gid`, `name:group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only for a `registry` source: `false` lets skopeo reach the registry
    /// over plain HTTP or without checking its certificate
    /// (`--tls-verify=false`), for a local or lab registry. The digest pin
    /// still fixes the bytes. Default `true`.
    #[serde(default = "default_tls_verify", skip_serializing_if = "is_true")]
    pub tls_verify: bool,
    /// Only for a `registry` source behind a private CA: a directory
    /// (relative to the project root) holding the CA certificates as `*.crt`
    /// files, and optionally a client certificate as `*.cert` + `*.key`, the
    /// layout of containers' `certs.d` (skopeo `--cert-dir`). Read on the
    /// build host only; nothing from it goes into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_dir: Option<Utf8PathBuf>,
    /// Run the image as a service of the appliance: kiln adds the runtime
    /// (podman) to images it builds from packages and writes the systemd
    /// unit `<name>.service` that runs the loaded image at every boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSpec>,
}

/// `payloads.images[].run`: how the appliance runs a baked image.
///
/// The image must be in podman's store when the unit starts: the
/// appliance's own bootstrap loads the verified archives (no registry, no
/// network) and the unit is ordered after the units `after` names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Host port the container's port is published on (default 80).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The container's port; default: the image's one TCP `exposed_ports`
    /// entry (filled by `resolve`; required when there is not exactly one).
    #[serde(default)]
    pub container_port: Option<u16>,
    /// Units that must have finished first, e.g. the bootstrap that loads
    /// the archive (`After=` and `Requires=`: the container does not start when one failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

fn default_port() -> u16 {
    80
}

/// Debian packages of the runtime `run:` brings into roots built from
/// packages: daemonless podman, the network backend that publishes ports
/// (netavark, which programs iptables), and iptables. `mmdebstrap` installs
/// no recommends, so each is named.
pub const RUNTIME_PACKAGES: &[&str] = &["podman", "netavark", "iptables"];

impl Payloads {
    /// Some image runs as a service: the root needs the runtime.
    pub fn runs_containers(&self) -> bool {
        self.images.iter().any(|i| i.run.is_some())
    }
}

fn default_tls_verify() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ImagePayload {
    /// `repo:tag` stored in the archive (filled by `resolve`).
    pub fn reference(&self) -> &str {
        super::filled(&self.reference, "payloads.images[].reference")
    }
    /// Stable archive file name: `<name>-<arch>.tar[.zst|.gz]`.
    pub fn archive_name(&self, arch: crate::recipe::Arch) -> String {
        let ext = match self.compression {
            Compression::None => "tar",
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
        };
        format!("{}-{arch}.{ext}", self.name)
    }
}

impl ImageSource {
    /// The source as the recipe writes it (recorded in `images.json`).
    pub fn label(&self) -> String {
        match self {
            ImageSource::OciLayout(p) => format!("oci-layout {p}"),
            ImageSource::DockerArchive(p) => format!("docker-archive {p}"),
            ImageSource::OciArchive(p) => format!("oci-archive {p}"),
            ImageSource::Registry(r) => format!("registry {r}"),
            ImageSource::RootfsDir(p) => format!("rootfs-dir {p}"),
            ImageSource::Debian(d) => format!(
                "debian {} ({}, {})",
                d.packages.join(","),
                d.variant.name(),
                d.suite()
            ),
        }
    }
    /// kiln writes this source's image config (and so takes `cmd`, `env`, …).
    pub fn kiln_config(&self) -> bool {
        matches!(self, ImageSource::RootfsDir(_) | ImageSource::Debian(_))
    }
}

/// Written as a one-key map, e.g. `source: { oci-layout: images/web }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "SourceMap", into = "SourceMap")]
pub enum ImageSource {
    /// A local OCI image layout directory.
    OciLayout(Utf8PathBuf),
    /// A `docker save` tar file.
    DockerArchive(Utf8PathBuf),
    /// An OCI archive (a tarred OCI layout).
    OciArchive(Utf8PathBuf),
    /// A registry reference pinned by digest (`repo@sha256:…`), copied with skopeo.
    Registry(String),
    /// A directory of files that kiln turns into a single-layer image
    /// (deterministic: sorted entries, uid/gid 0, mtimes from SOURCE_DATE_EPOCH).
    RootfsDir(Utf8PathBuf),
    /// Debian packages installed by mmdebstrap into a root that kiln turns
    /// into a single-layer image.
    Debian(DebianSource),
}

/// `source: { debian: … }`: a root file system from Debian packages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// Packages to install (`--include`); at least one.
    pub packages: Vec<String>,
    /// mmdebstrap's variant (default `essential`).
    #[serde(default)]
    pub variant: Variant,
    /// Debian suite; default: the recipe's `qcow2.suite` (filled by `resolve`).
    #[serde(default)]
    pub suite: Option<String>,
    /// Keep `/usr/share/{doc,man,info}` and locales (default `false`: dropped,
    /// except each package's `copyright`).
    #[serde(default)]
    pub docs: bool,
    /// A directory (relative to the project root) laid over the root: its
    /// files replace the root's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Utf8PathBuf>,
}

impl DebianSource {
    /// The suite (filled by `resolve`).
    pub fn suite(&self) -> &str {
        super::filled(&self.suite, "payloads.images[].source.debian.suite")
    }
}

/// mmdebstrap's `--variant`: how much of Debian goes into the root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Only the listed packages' files, unpacked; no maintainer scripts run.
    Extract,
    /// The listed packages installed, nothing else.
    Custom,
    /// `Essential: yes` packages plus the listed ones.
    #[default]
    Essential,
    /// `essential` plus apt.
    Apt,
    /// `essential`, apt and `Priority: required`.
    Minbase,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Extract => "extract",
            Variant::Custom => "custom",
            Variant::Essential => "essential",
            Variant::Apt => "apt",
            Variant::Minbase => "minbase",
        }
    }
    /// Runs maintainer scripts (so a foreign architecture needs qemu-user).
    pub fn runs_scripts(self) -> bool {
        self != Variant::Extract
    }
}

/// The YAML shape of [`ImageSource`]: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SourceMap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oci_layout: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docker_archive: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oci_archive: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rootfs_dir: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debian: Option<DebianSource>,
}

impl TryFrom<SourceMap> for ImageSource {
    type Error = String;
    fn try_from(m: SourceMap) -> Result<Self, String> {
        let mut v = Vec::new();
        if let Some(p) = m.oci_layout {
            v.push(ImageSource::OciLayout(p));
        }
        if let Some(p) = m.docker_archive {
            v.push(ImageSource::DockerArchive(p));
        }
        if let Some(p) = m.oci_archive {
            v.push(ImageSource::OciArchive(p));
        }
        if let Some(r) = m.registry {
            v.push(ImageSource::Registry(r));
        }
        if let Some(p) = m.rootfs_dir {
            v.push(ImageSource::RootfsDir(p));
        }
        if let Some(d) = m.debian {
            v.push(ImageSource::Debian(d));
        }
        match v.len() {
            1 => Ok(v.pop().expect("one")),
            n => Err(format!(
                "an image source needs exactly one of oci-layout, docker-archive, oci-archive, registry, rootfs-dir, debian (found {n})"
            )),
        }
    }
}

impl From<ImageSource> for SourceMap {
    fn from(s: ImageSource) -> SourceMap {
        let mut m = SourceMap::default();
        match s {
            ImageSource::OciLayout(p) => m.oci_layout = Some(p),
            ImageSource::DockerArchive(p) => m.docker_archive = Some(p),
            ImageSource::OciArchive(p) => m.oci_archive = Some(p),
            ImageSource::Registry(r) => m.registry = Some(r),
            ImageSource::RootfsDir(p) => m.rootfs_dir = Some(p),
            ImageSource::Debian(d) => m.debian = Some(d),
        }
        m
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    #[default]
    DockerArchive,
    OciArchive,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPayload {
    pub name: String,
    /// A directory of files (e.g. a Hugging Face snapshot).
    pub source: Utf8PathBuf,
    /// Pinned revision label recorded in `models.json`.
    #[serde(default)]
    pub revision: Option<String>,
    /// Seed directory in the image (outside any volume mount).
    pub dest: Utf8PathBuf,
    #[serde(default)]
    pub packaging: ModelPackaging,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelPackaging {
    /// The files themselves under `dest/<name>/`.
    #[default]
    Tree,
    /// A deterministic `dest/<name>.tar.zst`.
    TarZst,
}

impl Payloads {
    /// Fill defaults (`reference`, a `debian` source's `suite` from
    /// `default_suite`, ports' protocol) and check what types cannot.
    pub fn resolve(&mut self, file: &Utf8Path, default_suite: &str) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for n in self
            .images
            .iter()
            .map(|i| &i.name)
            .chain(self.models.iter().map(|m| &m.name))
        {
            anyhow::ensure!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{file}: payload name `{n}` must be letters, digits, `-`, `_` or `.`"
            );
            anyhow::ensure!(
                names.insert(n.clone()),
                "{file}: two payloads are named `{n}`"
            );
        }
        for i in &mut self.images {
            let n = &i.name;
            i.reference.get_or_insert_with(|| format!("{n}:latest"));
            if let ImageSource::Registry(r) = &i.source {
                let pinned = r.split_once("@sha256:").is_some_and(|(_, h)| {
                    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
                });
                anyhow::ensure!(
                    pinned,
                    "{file}: image `{n}`: registry source `{r}` must be pinned by digest \
                     (`repo@sha256:<64 hex digits>`), so every build bakes the same bytes"
                );
            }
            let name = n.clone();
            let at = |needle: &str| super::locate(file, &format!("name: {name}"), needle);
            if !i.source.kiln_config() {
                let set = [
                    ("cmd", !i.cmd.is_empty()),
                    ("entrypoint", !i.entrypoint.is_empty()),
                    ("env", !i.env.is_empty()),
                    ("exposed_ports", !i.exposed_ports.is_empty()),
                    ("workdir", i.workdir.is_some()),
                    ("user", i.user.is_some()),
                ];
                if let Some((field, _)) = set.iter().find(|(_, s)| *s) {
                    anyhow::bail!(
                        "{}: image `{n}`: `{field}` is only for a `rootfs-dir` or `debian` source \
                         (kiln writes their config; other images carry their own)",
                        at(&format!("{field}:"))
                    );
                }
            }
            resolve_config(i, &at)?;
            if let ImageSource::Debian(d) = &mut i.source {
                resolve_debian(d, &name, default_suite, &at)?;
            }
            let n = &i.name;
            anyhow::ensure!(
                i.tls_verify || matches!(i.source, ImageSource::Registry(_)),
                "{file}: image `{n}`: `tls_verify` is only for a `registry` source (the others are local files)"
            );
            anyhow::ensure!(
                i.cert_dir.is_none() || matches!(i.source, ImageSource::Registry(_)),
                "{file}: image `{n}`: `cert_dir` is only for a `registry` source (the others are local files)"
            );
            anyhow::ensure!(
                i.cert_dir.is_none() || i.tls_verify,
                "{file}: image `{n}`: `cert_dir` names CAs to verify the registry with, but \
                 `tls_verify: false` turns verification off; drop one of them"
            );
            let reference = i.reference();
            anyhow::ensure!(
                !reference.is_empty()
                    && !reference.contains('@')
                    && !reference.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_uppercase()),
                "{file}: image `{n}`: reference `{reference}` must be `repo[:tag]` in lower case, without a digest"
            );
            check_dest(file, n, &i.dest)?;
            if let Some(run) = &mut i.run {
                if run.container_port.is_none() {
                    let tcp: Vec<u16> = i
                        .exposed_ports
                        .iter()
                        .filter_map(|p| p.strip_suffix("/tcp")?.parse().ok())
                        .collect();
                    anyhow::ensure!(
                        tcp.len() == 1,
                        "{file}: image `{n}`: run.container_port is not set and the image \
                         exposes {} TCP ports in the recipe (`exposed_ports`); name the port its \
                         command listens on",
                        tcp.len()
                    );
                    run.container_port = Some(tcp[0]);
                }
                anyhow::ensure!(
                    run.port != 0 && run.container_port != Some(0),
                    "{file}: image `{n}`: run.port and run.container_port must be 1-65535"
                );
                for u in &run.after {
                    anyhow::ensure!(
                        super::is_unit_name(u),
                        "{file}: image `{n}`: run.after entry `{u}` is not a systemd unit name \
                         (e.g. `demo-bootstrap.service`)"
                    );
                }
            }
        }
        for m in &self.models {
            check_dest(file, &m.name, &m.dest)?;
        }
        Ok(())
    }
}

/// Normalize and check the config fields kiln writes (`exposed_ports`,
/// `env`, `workdir`, `user`); `at` names the recipe line of a needle.
fn resolve_config(i: &mut ImagePayload, at: &dyn Fn(&str) -> String) -> Result<()> {
    let n = &i.name;
    for p in &mut i.exposed_ports {
        let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
        let ok = port.parse::<u16>().is_ok_and(|v| v > 0)
            && !port.starts_with('0')
            && ["tcp", "udp", "sctp"].contains(&proto);
        anyhow::ensure!(
            ok,
            "{}: image `{n}`: exposed port `{p}` must be `PORT[/tcp|udp|sctp]` with PORT 1-65535",
            at(p.as_str())
        );
        *p = format!("{port}/{proto}");
    }
    i.exposed_ports.sort();
    i.exposed_ports.dedup();
    for k in i.env.keys() {
        anyhow::ensure!(
            !k.is_empty() && !k.contains('=') && !k.bytes().any(|b| b.is_ascii_whitespace()),
            "{}: image `{n}`: env name `{k}` must be non-empty, without `=` or spaces",
            at(&format!("{k}:"))
        );
    }
    if let Some(w) = &i.workdir {
        anyhow::ensure!(
            w.starts_with('/'),
            "{}: image `{n}`: workdir `{w}` must be an absolute path in the image",
            at("workdir:")
        );
    }
    if let Some(u) = &i.user {
        anyhow::ensure!(
            !u.is_empty()
                && !u.bytes().any(|b| b.is_ascii_whitespace())
                && u.split(':').count() <= 2,
            "{}: image `{n}`: user `{u}` must be `name`, `uid`, `uid:gid` or `name:group`",
            at("user:")
        );
    }
    Ok(())
}

/// Fill a `debian` source's suite and check its packages.
fn resolve_debian(
    d: &mut DebianSource,
    n: &str,
    default_suite: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<()> {
    anyhow::ensure!(
        !d.packages.is_empty(),
        "{}: image `{n}`: source.debian.packages is empty; name at least one package \
         (e.g. `packages: [busybox-static]`)",
        at("packages:")
    );
    for p in &d.packages {
        let ok = p.len() >= 2
            && p.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        anyhow::ensure!(
            ok,
            "{}: image `{n}`: `{p}` in source.debian.packages is not a Debian package name \
             (lower-case letters, digits, `+`, `-`, `.`)",
            at(p.as_str())
        );
    }
    let suite = d.suite.get_or_insert_with(|| default_suite.to_string());
    anyhow::ensure!(
        super::qcow2::SUITES.contains(&suite.as_str()),
        "{}: image `{n}`: source.debian.suite `{suite}` is not a Debian suite kiln knows (one of: {})",
        at("suite:"),
        super::qcow2::SUITES.join(", ")
    );
    Ok(())
}

/// Destinations are absolute directories in the image, without `..`.
fn check_dest(file: &Utf8Path, name: &str, dest: &Utf8Path) -> Result<()> {
    anyhow::ensure!(
        dest.is_absolute()
            && dest.components().all(|c| matches!(c, camino::Utf8Component::RootDir | camino::Utf8Component::Normal(_)))
            && dest != "/",
        "{file}: payload `{name}`: dest `{dest}` must be an absolute directory in the image (not `/`, no `..`)"
    );
    Ok(())
}
