//! What the disk step builds: [`DiskSpec`], everything the step needs and
//! its key hashes, with the disk's derived [`Ids`] and the cloud-init
//! [`Carrier`] kiln's drop-in names. The assembly ([`super::disk`]), the
//! root's merge ([`super::merge`]) and the ESP ([`super::esp`]) read it; the
//! Raspberry Pi image ([`crate::pi`]) builds its root from it too.

use camino::Utf8PathBuf;
use serde::Serialize;

use crate::recipe::Arch;

/// Ids of the disk, derived from the epoch and the appliance name.
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    pub disk: String,
    pub bios_part: String,
    pub esp_part: String,
    pub root_part: String,
    pub root_fs: String,
    pub hash_seed: String,
}

impl Ids {
    pub fn derive(epoch: i64, name: &str, arch: Arch) -> Ids {
        Ids::derive_in("qcow2", epoch, name, arch)
    }
    /// The ids of another kind of image (`pi`) of the same appliance.
    pub fn derive_in(kind: &str, epoch: i64, name: &str, arch: Arch) -> Ids {
        let id =
            |what: &str| crate::epoch::derived_uuid(epoch, &format!("{kind}/{name}/{arch}/{what}"));
        Ids {
            disk: id("disk"),
            bios_part: id("bios-part"),
            esp_part: id("esp-part"),
            root_part: id("root-part"),
            root_fs: id("root-fs"),
            hash_seed: id("root-hash-seed"),
        }
    }
}

/// Everything the disk step needs; `describe` hashes all of it.
#[derive(Debug, Clone, Serialize)]
pub struct DiskSpec {
    pub arch: Arch,
    pub name: String,
    pub hostname: String,
    pub rootfs_tar: Utf8PathBuf,
    /// The staged tree (`stage` step's `tree/`).
    pub overlay_tree: Utf8PathBuf,
    pub size: u64,
    pub uefi: bool,
    pub bios: bool,
    /// The full kernel command line.
    pub cmdline: String,
    /// systemd-resolved is installed: `/etc/resolv.conf` points at its stub
    /// (the DNS servers DHCP hands to systemd-networkd) and it is enabled.
    pub resolved: bool,
    pub epoch: i64,
    pub ids: Ids,
    /// A Raspberry Pi card (`crate::pi`): the PARTUUID of its FAT boot
    /// partition, mounted at `/boot/firmware`; the root partition of its MBR
    /// is grown by kiln's unit instead of systemd-repart.
    pub pi_boot: Option<String>,
    /// The root holds cloud-init and the image expects a config carrier:
    /// kiln writes the one NoCloud drop-in ([`Carrier::drop_in`]).
    pub carrier: Option<Carrier>,
    /// Size the disk to its content instead of `size`: the boot partitions,
    /// the root file system and the backup GPT, in whole MiB (the installer
    /// ISO's payload; the root grows to the target disk at first boot).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fit: bool,
}

/// Where cloud-init finds the operator's config carrier (the NoCloud seed
/// of [`crate::seed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Carrier {
    /// A disk attached at first boot: `cidata.iso` (CD-ROM) or `cidata.img`
    /// (a second disk), found by cloud-init's own labels `cidata`/`CIDATA`.
    Attached,
    /// The Raspberry Pi card's FAT boot partition, by its label: the seed
    /// is on the card, editable from any PC.
    BootPartition { label: String },
}

/// kiln's cloud-init drop-in, in every root it writes that has cloud-init.
pub const CARRIER_DROP_IN: &str = "etc/cloud/cloud.cfg.d/90-kiln-nocloud.cfg";

impl Carrier {
    /// The drop-in's text: disk-borne sources only (no metadata service is
    /// probed): NoCloud and ConfigDrive, then `None`; on a Pi NoCloud with
    /// the label of its boot partition, then `None`. The locale is `C.UTF-8` unless a seed sets one:
    /// cloud-init's default (`en_US.UTF-8`, which kiln's roots do not have)
    /// fails its locale module on every boot, and `locale: false` fails its
    /// schema.
    pub fn drop_in(&self) -> String {
        let mut s = String::from(
            "# Written by kiln: the appliance is configured by its config carrier, a\n\
             # cloud-init NoCloud seed; no metadata service is ever probed.\n\
             # C.UTF-8 (built into glibc) unless the seed's user-data sets `locale:`.\n\
             locale: C.UTF-8\n",
        );
        match self {
            // Two sources for ds-identify to look for, so that it looks: with
            // one (and None) it enables cloud-init without a check, and a boot
            // without a carrier then runs every stage (about 30 s under TCG).
            // With a second, a boot with neither a `cidata` nor a `config-2`
            // labelled disk has cloud-init disabled by its generator.
            Carrier::Attached => s.push_str(
                "# Attach cidata.iso (CD-ROM) or cidata.img (a disk labelled CIDATA) at first boot;\n\
                 # an OpenStack config drive (label config-2) is read too. Without either,\n\
                 # cloud-init's generator disables it for that boot.\n\
                 datasource_list: [ NoCloud, ConfigDrive, None ]\n",
            ),
            Carrier::BootPartition { label } => s.push_str(&format!(
                "# The seed (user-data, meta-data, network-config) is on the card's boot\n\
                 # partition (label {label}, /boot/firmware), editable from any PC.\n\
                 datasource_list: [ NoCloud, None ]\n\
                 datasource:\n  NoCloud:\n    fs_label: {label}\n"
            )),
        }
        s
    }
}

impl DiskSpec {
    /// The root file system of `arch` as the recipe asks for it: the Debian
    /// root (`rootfs_tar`) under the staged tree (`overlay_tree`), with the
    /// generated files its packages call for (resolved; the first-boot units
    /// of per-install identities follow the root's dpkg records). The
    /// boot side is left off (no size, no UEFI/BIOS, not a Pi card); the
    /// caller sets it.
    pub fn root(
        r: &crate::recipe::Resolved,
        arch: Arch,
        ids: Ids,
        rootfs_tar: Utf8PathBuf,
        overlay_tree: Utf8PathBuf,
        cmdline: String,
    ) -> DiskSpec {
        let q = &r.recipe.qcow2;
        let packages = r.root_packages(arch);
        DiskSpec {
            arch,
            name: r.name().to_string(),
            hostname: q.hostname().to_string(),
            rootfs_tar,
            overlay_tree,
            size: 0,
            uefi: false,
            bios: false,
            cmdline,
            // bullseye ships resolved inside `systemd`.
            resolved: packages
                .iter()
                .any(|p| p == "systemd-resolved" || (q.suite == "bullseye" && p == "systemd")),
            epoch: r.epoch,
            ids,
            pi_boot: None,
            carrier: (r.recipe.seed.has_cloud_init() && r.root_has_cloud_init(arch))
                .then_some(Carrier::Attached),
            fit: false,
        }
    }

    /// The serial console is `ttyS0` on amd64 (16550) and `ttyAMA0` on
    /// arm64 (PL011 of qemu's `virt` and of Arm servers).
    pub fn kernel_cmdline(ids: &Ids, arch: Arch, extra: &[String]) -> String {
        let console = match arch {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        };
        let mut c = format!("root=UUID={} ro console={console},115200n8", ids.root_fs);
        for e in extra {
            c.push(' ');
            c.push_str(e);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_kernel_cmdline() {
        let ids = Ids::derive(1, "demo", Arch::Amd64);
        assert_eq!(ids.root_fs, Ids::derive(1, "demo", Arch::Amd64).root_fs);
        assert_ne!(ids.root_fs, Ids::derive(2, "demo", Arch::Amd64).root_fs);
        let c = DiskSpec::kernel_cmdline(&ids, Arch::Amd64, &["quiet".into()]);
        assert!(
            c.starts_with(&format!("root=UUID={} ro console=ttyS0", ids.root_fs))
                && c.ends_with(" quiet")
        );
        let c = DiskSpec::kernel_cmdline(&ids, Arch::Arm64, &[]);
        assert!(c.ends_with(" ro console=ttyAMA0,115200n8"), "{c}");
    }

    /// One drop-in: NoCloud and ConfigDrive then None (two sources, so that
    /// ds-identify disables cloud-init when neither disk is attached); the
    /// Pi names its boot partition's label and keeps NoCloud alone.
    #[test]
    fn the_carrier_drop_in_limits_cloud_init_to_nocloud() {
        let vm = Carrier::Attached.drop_in();
        assert!(
            vm.contains("\ndatasource_list: [ NoCloud, ConfigDrive, None ]\n"),
            "{vm}"
        );
        assert!(vm.contains("\nlocale: C.UTF-8\n"), "{vm}");
        assert!(!vm.contains("fs_label"), "{vm}");
        let pi = Carrier::BootPartition {
            label: "BOOT".into(),
        }
        .drop_in();
        assert!(
            pi.contains("\ndatasource_list: [ NoCloud, None ]\n"),
            "{pi}"
        );
        assert!(
            pi.ends_with("datasource:\n  NoCloud:\n    fs_label: BOOT\n"),
            "{pi}"
        );
    }
}
