//! `ova:` — the OVA for VMware and VirtualBox. (Build: `crate::ova`.)
//!
//! ```yaml
//! ova:
//!   cpus: 2                          # vCPUs (default 2)
//!   memory_mb: 4096                  # default 4096
//!   nic: e1000                       # e1000 | vmxnet3
//!   os_type: debian12_64Guest        # VMware guest id (vmw:osType)
//!   virtual_system_type: vmx-14      # VMware hardware version (older ESXi refuse newer)
//!   digest: sha256                   # manifest digest: sha256 | sha1 (old VMware products only)
//!   converter: qemu-img              # VMDK writer: qemu-img | vmdk-convert (VMware's open-vmdk)
//! ```

use anyhow::{bail, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OvaOptions {
    /// Virtual CPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    /// Network adapter model.
    #[serde(default)]
    pub nic: Nic,
    /// VMware guest OS identifier (`vmw:osType`); also picks the DMTF CIM
    /// operating system id VirtualBox reads.
    #[serde(default = "default_os_type")]
    pub os_type: String,
    /// `vssd:VirtualSystemType`, the VMware virtual hardware version
    /// (`vmx-N`); an ESXi older than the version refuses the OVA.
    #[serde(default = "default_vsys")]
    pub virtual_system_type: String,
    /// Manifest digest. SHA256 is what current vSphere requires ("Invalid OVF
    /// checksum algorithm" for SHA1); SHA1 only for old VMware products.
    #[serde(default)]
    pub digest: DigestAlgo,
    /// What writes the streamOptimized VMDK.
    #[serde(default)]
    pub converter: Converter,
}

/// The program that writes the streamOptimized VMDK. Either way kiln sets
/// its content ids from the disk's content and lints the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Converter {
    /// `qemu-img convert -O vmdk -o subformat=streamOptimized` (qemu-utils).
    #[default]
    QemuImg,
    /// VMware's `vmdk-convert` (open-vmdk), for teams that want the VMDK
    /// written by VMware's own code. It reads raw disks: another format is
    /// converted to raw first.
    VmdkConvert,
}

impl Default for OvaOptions {
    fn default() -> Self {
        OvaOptions {
            cpus: default_cpus(),
            memory_mb: default_memory(),
            nic: Nic::default(),
            os_type: default_os_type(),
            virtual_system_type: default_vsys(),
            digest: DigestAlgo::default(),
            converter: Converter::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nic {
    /// Intel E1000: drivers everywhere (VirtualBox maps it to its 82540EM).
    #[default]
    E1000,
    /// VMware paravirtual NIC (VirtualBox has none and substitutes its default).
    Vmxnet3,
}

impl Nic {
    /// `rasd:ResourceSubType` of the ethernet adapter item.
    pub fn ovf_subtype(self) -> &'static str {
        match self {
            Nic::E1000 => "E1000",
            Nic::Vmxnet3 => "VmxNet3",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    #[default]
    Sha256,
    Sha1,
}

impl DigestAlgo {
    /// The name in manifest lines (`SHA256(file)= …`).
    pub fn manifest_name(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "SHA256",
            DigestAlgo::Sha1 => "SHA1",
        }
    }
    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha1 => 40,
        }
    }
}

/// VMware guest ids kiln knows, with the DMTF CIM_OperatingSystem `OsType`
/// used as `OperatingSystemSection ovf:id` (what VirtualBox maps from).
pub const OS_TYPES: &[(&str, u16)] = &[
    ("debian10_64Guest", 96),
    ("debian11_64Guest", 96),
    ("debian12_64Guest", 96),
    ("ubuntu64Guest", 94),
    ("rhel7_64Guest", 80),
    ("rhel8_64Guest", 80),
    ("rhel9_64Guest", 80),
    ("centos7_64Guest", 107),
    ("centos8_64Guest", 107),
    ("sles12_64Guest", 85),
    ("sles15_64Guest", 85),
    ("other26xLinux64Guest", 100),
    ("other3xLinux64Guest", 101),
    ("other4xLinux64Guest", 101),
    ("other5xLinux64Guest", 101),
    ("otherLinux64Guest", 101),
];

/// Hardware versions accepted in `virtual_system_type` (`vmx-4` … `vmx-21`).
pub const VMX_VERSIONS: std::ops::RangeInclusive<u32> = 4..=21;

fn default_cpus() -> u32 {
    2
}
fn default_memory() -> u32 {
    4096
}
fn default_os_type() -> String {
    "debian12_64Guest".into()
}
fn default_vsys() -> String {
    "vmx-14".into()
}

impl OvaOptions {
    pub fn resolve(&mut self, file: &Utf8Path) -> Result<()> {
        if self.os_type_id().is_none() {
            let known: Vec<&str> = OS_TYPES.iter().map(|(n, _)| *n).collect();
            bail!(
                "{file}: ova.os_type `{}` is not a VMware guest id kiln knows; use one of: {}",
                self.os_type,
                known.join(", ")
            );
        }
        let vmx = self
            .virtual_system_type
            .strip_prefix("vmx-")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| VMX_VERSIONS.contains(n));
        if vmx.is_none() {
            bail!(
                "{file}: ova.virtual_system_type `{}` must be `vmx-N` with N from {} to {} \
                 (the VMware hardware version; older ESXi refuse newer ones, vmx-14 = ESXi 6.7)",
                self.virtual_system_type,
                VMX_VERSIONS.start(),
                VMX_VERSIONS.end()
            );
        }
        if !(1..=128).contains(&self.cpus) {
            bail!(
                "{file}: ova.cpus must be between 1 and 128, not {}",
                self.cpus
            );
        }
        if !(256..=4 * 1024 * 1024).contains(&self.memory_mb) {
            bail!(
                "{file}: ova.memory_mb must be between 256 and 4194304 MiB, not {}",
                self.memory_mb
            );
        }
        Ok(())
    }

    /// The CIM OS id for `os_type`, when known.
    pub fn os_type_id(&self) -> Option<u16> {
        OS_TYPES
            .iter()
            .find(|(n, _)| *n == self.os_type)
            .map(|(_, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<OvaOptions> {
        let mut o: OvaOptions = yaml_serde::from_str(yaml)?;
        o.resolve(Utf8Path::new("r.yaml"))?;
        Ok(o)
    }

    #[test]
    fn defaults() {
        let o = parse("{}").unwrap();
        assert_eq!(
            (o.cpus, o.memory_mb, o.nic, o.digest),
            (2, 4096, Nic::E1000, DigestAlgo::Sha256)
        );
        assert_eq!(o.os_type, "debian12_64Guest");
        assert_eq!(o.os_type_id(), Some(96));
        assert_eq!(o.virtual_system_type, "vmx-14");
    }

    #[test]
    fn rejects_unknown_names() {
        let e = parse("os_type: debian99Guest").unwrap_err().to_string();
        assert!(
            e.contains("r.yaml") && e.contains("debian99Guest") && e.contains("ubuntu64Guest"),
            "{e}"
        );
        let e = parse("nic: rtl8139").unwrap_err().to_string();
        assert!(e.contains("rtl8139") && e.contains("vmxnet3"), "{e}");
        let e = parse("virtual_system_type: vmx-99")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vmx-99"), "{e}");
        let e = parse("digest: md5").unwrap_err().to_string();
        assert!(e.contains("md5"), "{e}");
        assert!(parse("nic: vmxnet3\ndigest: sha1\nvirtual_system_type: vmx-19").is_ok());
    }
}
