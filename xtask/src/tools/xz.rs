//! `xz` (xz-utils): the Raspberry Pi image compressed as `.img.xz` when the
//! recipe asks for it, and read back by the lint.

use camino::Utf8Path;

use super::Cmd;

/// `xz -6 -T0 --block-size=64MiB -c SRC > OUT`. The explicit block size
/// makes the output independent of the thread count (single-threaded xz
/// splits into the same blocks), so builds on machines with different core
/// counts give the same bytes.
pub fn compress(src: &Utf8Path, out: &Utf8Path) -> Cmd {
    Cmd::new(
        "xz",
        format!("compress {} with xz", src.file_name().unwrap_or("")),
    )
    .args(["-6", "-T0", "--block-size=64MiB", "-c", src.as_str()])
    .stdout_to(out)
}

/// `xz -dc SRC > OUT`.
pub fn decompress(src: &Utf8Path, out: &Utf8Path) -> Cmd {
    Cmd::new("xz", format!("unpack {}", src.file_name().unwrap_or("")))
        .args(["-dc", src.as_str()])
        .stdout_to(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_pins_the_output() {
        let c = compress(Utf8Path::new("/w/pi.img"), Utf8Path::new("/w/pi.img.xz"));
        assert_eq!(c.program, "xz");
        assert_eq!(
            c.args,
            ["-6", "-T0", "--block-size=64MiB", "-c", "/w/pi.img"]
        );
    }
}
