//! `skopeo`: copy digest-pinned registry images into an OCI layout (no
//! daemon). Tests also use it to read exported archives back.

use camino::{Utf8Path, Utf8PathBuf};

use super::Cmd;
use crate::recipe::Arch;

/// How skopeo talks TLS to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `false`: plain HTTP, or HTTPS without certificate checks (a local or
    /// lab registry).
    pub verify: bool,
    /// A certs.d-style directory (`*.crt` CAs, `*.cert`/`*.key` client
    /// certificate) for a registry behind a private CA.
    pub cert_dir: Option<Utf8PathBuf>,
}

impl Default for Tls {
    fn default() -> Tls {
        Tls {
            verify: true,
            cert_dir: None,
        }
    }
}

impl Tls {
    /// The options, with `prefix` (`""` for inspect, `"src-"` for copy).
    fn args(&self, prefix: &str) -> Vec<String> {
        let mut a = Vec::new();
        if !self.verify {
            a.push(format!("--{prefix}tls-verify=false"));
        }
        if let Some(d) = &self.cert_dir {
            a.push(format!("--{prefix}cert-dir={d}"));
        }
        a
    }
}

/// Print the manifest (or index) a reference points at, as stored.
pub fn inspect_raw(reference: &str, tls: &Tls) -> Cmd {
    Cmd::new("skopeo", format!("read the manifest of {reference}"))
        .args(["inspect", "--raw", "--retry-times", "3"])
        .args(tls.args(""))
        .arg(format!("docker://{reference}"))
}

/// Copy the `linux/<arch>` image of `reference` into the OCI layout `dir`.
pub fn copy_to_oci(reference: &str, dir: &Utf8Path, arch: Arch, tls: &Tls) -> Cmd {
    Cmd::new(
        "skopeo",
        format!("copy {reference} (linux/{arch}) into an OCI layout"),
    )
    .args([
        "copy",
        "--retry-times",
        "3",
        "--override-os",
        "linux",
        "--override-arch",
        arch.oci(),
    ])
    .args(tls.args("src-"))
    .arg(format!("docker://{reference}"))
    .arg(format!("oci:{dir}:image"))
}

/// `skopeo inspect [--raw] [--config] TRANSPORT:PATH` (reading archives back).
pub fn inspect_archive(transport: &str, path: &Utf8Path, raw: bool, config: bool) -> Cmd {
    let mut c = Cmd::new("skopeo", format!("inspect {path}")).arg("inspect");
    if config {
        c = c.arg("--config");
    }
    if raw {
        c = c.arg("--raw");
    }
    c.arg(format!("{transport}:{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_platform_and_layout() {
        let c = copy_to_oci(
            "r.example/a@sha256:00",
            Utf8Path::new("/w/l"),
            Arch::Arm64,
            &Tls::default(),
        );
        assert_eq!(c.to_string(), "skopeo copy --retry-times 3 --override-os linux --override-arch arm64 docker://r.example/a@sha256:00 oci:/w/l:image");
    }

    #[test]
    fn tls_verification_is_turned_off_only_when_asked() {
        let off = Tls {
            verify: false,
            cert_dir: None,
        };
        let i = inspect_raw("127.0.0.1:5000/a@sha256:00", &Tls::default());
        assert!(!i.to_string().contains("tls"), "{i}");
        let i = inspect_raw("127.0.0.1:5000/a@sha256:00", &off);
        assert_eq!(
            i.to_string(),
            "skopeo inspect --raw --retry-times 3 --tls-verify=false docker://127.0.0.1:5000/a@sha256:00"
        );
        let c = copy_to_oci(
            "127.0.0.1:5000/a@sha256:00",
            Utf8Path::new("/w/l"),
            Arch::Amd64,
            &off,
        );
        assert_eq!(c.to_string(), "skopeo copy --retry-times 3 --override-os linux --override-arch amd64 --src-tls-verify=false docker://127.0.0.1:5000/a@sha256:00 oci:/w/l:image");
    }

    #[test]
    fn a_private_ca_directory_is_passed_to_both_commands() {
        let tls = Tls {
            verify: true,
            cert_dir: Some("/p/certs/registry".into()),
        };
        let i = inspect_raw("r.lan/a@sha256:00", &tls).to_string();
        assert!(i.contains(" --cert-dir=/p/certs/registry docker://"), "{i}");
        let c = copy_to_oci(
            "r.lan/a@sha256:00",
            Utf8Path::new("/w/l"),
            Arch::Amd64,
            &tls,
        )
        .to_string();
        assert!(
            c.contains(" --src-cert-dir=/p/certs/registry docker://"),
            "{c}"
        );
        assert!(!c.contains("tls-verify"), "{c}");
    }
}
