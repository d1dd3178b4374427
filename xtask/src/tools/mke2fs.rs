//! mkfs.ext4 (e2fsprogs ≥ 1.47.2): ext4 file systems populated from a
//! directory or a tarball (`-d`), with pinned UUID, hash seed and times.

use camino::Utf8Path;

use super::Cmd;

/// The features kiln gives ext4 root file systems, independent of the build
/// host's `/etc/mke2fs.conf`. No `metadata_csum_seed`/`orphan_file`: GRUB
/// 2.06 and bookworm's e2fsck must be able to read the file system.
pub const MKE2FS_CONF: &str = "[defaults]\n\
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
\tdefault_mntopts = acl,user_xattr\n\
\tenable_periodic_fsck = 0\n\
\tblocksize = 4096\n\
\tinode_size = 256\n\
\tinode_ratio = 16384\n\
\n\
[fs_types]\n\
\text4 = {\n\
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n\
\t}\n";

/// e2fsprogs loads libarchive at run time to read `-d` tar archives, and
/// does not depend on its package: without it `mkfs.ext4 -d root.tar` fails
/// with "Operation not permitted while populating file system".
pub const LIBARCHIVE: &str = "/usr/lib/x86_64-linux-gnu/libarchive.so.13";

/// `mkfs.ext4 -d - DISK SIZE` with `-E offset=OFFSET`: an ext4 file system of
/// `size` (e.g. `1024k`) at byte `offset` of an existing (sized, sparse)
/// disk image, populated from the tarball kiln streams into its stdin
/// (`what`). Nothing outside that region is written.
#[allow(clippy::too_many_arguments)]
pub fn mkfs_ext4_at(
    disk: &Utf8Path,
    offset: &str,
    size: &str,
    what: &str,
    label: &str,
    uuid: &str,
    hash_seed: &str,
    config: &Utf8Path,
    epoch: i64,
) -> Cmd {
    Cmd::new(
        "mkfs.ext4",
        format!("ext4 file system `{label}` inside {disk} from {what}"),
    )
    .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
    .arg("-E")
    .arg(format!(
        "hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=1,nodiscard,offset={offset}"
    ))
    .args(["-d", "-", disk.as_str(), size])
    .env("MKE2FS_CONFIG", config.as_str())
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
    .stdin_from(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything that would otherwise vary between two builds of the same
    /// tree is pinned: UUID (`-U`), directory hash seed, owner of the root
    /// directory, time stamps (`SOURCE_DATE_EPOCH`, `E2FSPROGS_FAKE_TIME`)
    /// and the feature set (kiln's own `MKE2FS_CONFIG`, not the host's).
    #[test]
    fn the_file_system_is_pinned_by_uuid_hash_seed_owner_times_and_config() {
        let c = mkfs_ext4_at(
            Utf8Path::new("/w/disk.raw"),
            "135266304",
            "1048576k",
            "the merged root tarball",
            "root",
            "0b6f4d1e-2c3a-4b5c-8d7e-9f0a1b2c3d4e",
            "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
            Utf8Path::new("/w/mke2fs.conf"),
            1_700_000_000,
        );
        assert_eq!(c.program, "mkfs.ext4");
        assert_eq!(
            c.args,
            [
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "root",
                "-U",
                "0b6f4d1e-2c3a-4b5c-8d7e-9f0a1b2c3d4e",
                "-E",
                "hash_seed=5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d,root_owner=0:0,\
                 lazy_itable_init=1,nodiscard,offset=135266304",
                "-d",
                "-",
                "/w/disk.raw",
                "1048576k",
            ]
        );
        assert_eq!(c.stdin_from.as_deref(), Some("the merged root tarball"));
        let env = c.env_pairs();
        assert_eq!(
            env,
            [
                ("E2FSPROGS_FAKE_TIME", "1700000000"),
                ("MKE2FS_CONFIG", "/w/mke2fs.conf"),
                ("SOURCE_DATE_EPOCH", "1700000000"),
            ]
        );
    }

    /// The configuration names every default itself, so the host's
    /// `/etc/mke2fs.conf` cannot change the file system.
    #[test]
    fn the_config_sets_every_default() {
        for key in [
            "base_features = ",
            "default_mntopts = ",
            "enable_periodic_fsck = 0",
            "blocksize = 4096",
            "inode_size = 256",
            "inode_ratio = 16384",
            "features = has_journal,",
        ] {
            assert!(MKE2FS_CONF.contains(key), "{key} missing:\n{MKE2FS_CONF}");
        }
        for unreadable in ["metadata_csum_seed", "orphan_file"] {
            assert!(!MKE2FS_CONF.contains(unreadable), "{unreadable}");
        }
    }
}
