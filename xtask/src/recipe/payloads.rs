//! `payloads:` — container images and ML models baked into every format.
//! (Export itself: `crate::export`.)

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
    /// Image reference recorded in the archive (`repo:tag`); default `<name>:latest`.
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum ImageSource {
    /// A local OCI image layout directory.
    OciLayout(Utf8PathBuf),
    /// A `docker save` tar file.
    DockerArchive(Utf8PathBuf),
    /// An OCI archive (a tarred OCI layout).
    OciArchive(Utf8PathBuf),
    /// A registry reference pinned by digest (`repo@sha256:…`), copied with skopeo.
    Registry(String),
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
    pub fn resolve(&mut self, file: &Utf8Path) -> Result<()> {
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
        for i in &self.images {
            if let ImageSource::Registry(r) = &i.source {
                anyhow::ensure!(
                    r.contains("@sha256:"),
                    "{file}: image `{}`: registry source `{r}` must be pinned by digest (`repo@sha256:…`)",
                    i.name
                );
            }
        }
        Ok(())
    }
}
