//! `skopeo`: copy digest-pinned registry images into an OCI layout (no
//! daemon). Tests also use it to read exported archives back.

use camino::Utf8Path;

use super::Cmd;
use crate::recipe::Arch;

/// Print the manifest (or index) a reference points at, as stored.
/// `tls_verify: false` adds `--tls-verify=false`: plain HTTP, or HTTPS
/// without certificate checks (a local or lab registry).
pub fn inspect_raw(reference: &str, tls_verify: bool) -> Cmd {
    let mut c = Cmd::new("skopeo", format!("read the manifest of {reference}")).args([
        "inspect",
        "--raw",
        "--retry-times",
        "3",
    ]);
    if !tls_verify {
        c = c.arg("--tls-verify=false");
    }
    c.arg(format!("docker://{reference}"))
}

/// Copy the `linux/<arch>` image of `reference` into the OCI layout `dir`.
/// `tls_verify: false` adds `--src-tls-verify=false` (see [`inspect_raw`]).
pub fn copy_to_oci(reference: &str, dir: &Utf8Path, arch: Arch, tls_verify: bool) -> Cmd {
    let mut c = Cmd::new(
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
    ]);
    if !tls_verify {
        c = c.arg("--src-tls-verify=false");
    }
    c.arg(format!("docker://{reference}"))
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
            true,
        );
        assert_eq!(c.to_string(), "skopeo copy --retry-times 3 --override-os linux --override-arch arm64 docker://r.example/a@sha256:00 oci:/w/l:image");
    }

    #[test]
    fn tls_verification_is_turned_off_only_when_asked() {
        let i = inspect_raw("127.0.0.1:5000/a@sha256:00", true);
        assert!(!i.to_string().contains("tls"), "{i}");
        let i = inspect_raw("127.0.0.1:5000/a@sha256:00", false);
        assert_eq!(
            i.to_string(),
            "skopeo inspect --raw --retry-times 3 --tls-verify=false docker://127.0.0.1:5000/a@sha256:00"
        );
        let c = copy_to_oci(
            "127.0.0.1:5000/a@sha256:00",
            Utf8Path::new("/w/l"),
            Arch::Amd64,
            false,
        );
        assert_eq!(c.to_string(), "skopeo copy --retry-times 3 --override-os linux --override-arch amd64 --src-tls-verify=false docker://127.0.0.1:5000/a@sha256:00 oci:/w/l:image");
    }
}
