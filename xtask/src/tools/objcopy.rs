//! objcopy (binutils): add sections to a PE image — the unified kernel image
//! (systemd EFI stub + os-release + command line + kernel + initrd).

use camino::Utf8Path;

use super::Cmd;

/// Path of the systemd EFI stub for amd64 (package `systemd-boot-efi`).
pub const EFI_STUB_X64: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// One section to add: name, file, virtual address (image base included).
pub struct Section<'a> {
    pub name: &'a str,
    pub file: &'a Utf8Path,
    /// Where the section loads; `None` in a planned command, where it is not
    /// known until the files are (written `<vma>`).
    pub vma: Option<u64>,
}

/// `objcopy --add-section NAME=FILE --change-section-vma NAME=VMA … STUB OUT`.
/// `SOURCE_DATE_EPOCH` pins the PE time stamp (binutils ≥ 2.35).
pub fn add_sections(stub: &Utf8Path, sections: &[Section], out: &Utf8Path, epoch: i64) -> Cmd {
    let mut c = Cmd::new("objcopy", "assemble the unified kernel image");
    for s in sections {
        c = c
            .arg("--add-section")
            .arg(format!("{}={}", s.name, s.file))
            .arg("--change-section-vma")
            .arg(match s.vma {
                Some(v) => format!("{}={v:#x}", s.name),
                None => format!("{}=<vma>", s.name),
            });
    }
    c.args([stub.as_str(), out.as_str()])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SOURCE_DATE_EPOCH` pins the UKI's PE time stamp.
    #[test]
    fn the_uki_time_stamp_comes_from_the_epoch() {
        let c = add_sections(
            Utf8Path::new(EFI_STUB_X64),
            &[Section {
                name: ".linux",
                file: Utf8Path::new("/w/vmlinuz"),
                vma: Some(0x2000000),
            }],
            Utf8Path::new("/w/demo.efi"),
            1_700_000_000,
        );
        assert_eq!(c.program, "objcopy");
        assert_eq!(
            c.args,
            [
                "--add-section",
                ".linux=/w/vmlinuz",
                "--change-section-vma",
                ".linux=0x2000000",
                EFI_STUB_X64,
                "/w/demo.efi",
            ]
        );
        let env = c.env_pairs();
        assert_eq!(env, [("SOURCE_DATE_EPOCH", "1700000000")]);
    }
}
