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
