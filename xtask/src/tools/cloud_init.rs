//! cloud-init: `cloud-init schema` validates cloud-config files.

use camino::Utf8Path;

use super::Cmd;

/// Validate a `#cloud-config` file (header, YAML, the keys of cloud-init's
/// schema). Exit status 1 with the problems on stderr when it is invalid.
pub fn schema(config: &Utf8Path) -> Cmd {
    Cmd::new(
        "cloud-init",
        "validate a cloud-config against cloud-init's schema",
    )
    .args(["schema", "--config-file", config.as_str()])
}
