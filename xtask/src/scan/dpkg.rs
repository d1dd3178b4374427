//! Files the distribution shipped, unchanged.
//!
//! Debian's packages carry public test vectors: libgnutls embeds PEM private
//! keys for its self-tests, Python packages ship test certificates with their
//! keys. Those bytes are identical on every Debian system in the world, so
//! they are not a secret of this appliance, and refusing them would make the
//! gate refuse every real root file system.
//!
//! The proof is dpkg's own record: `/var/lib/dpkg/info/<pkg>.md5sums` lists
//! the MD5 of every file a package installed. A finding in a file under the
//! distribution's `/usr` (not `/usr/local`) whose MD5 matches that record is
//! accepted, with the package named as the reason. Everything else stays a
//! finding: files an overlay laid over `/usr`, files changed after install,
//! files dpkg does not know (generated keys such as ssl-cert's snakeoil key in
//! `/etc/ssl/private`, which is a per-instance identity), and anything outside
//! `/usr`.

use std::collections::HashMap;

use md5::{Digest, Md5};

/// dpkg's records, one table per file system (keyed by the nested path of
/// the file system inside the artifact).
#[derive(Default)]
pub struct Shipped {
    tables: HashMap<String, HashMap<String, Record>>,
}

struct Record {
    md5: [u8; 16],
    package: String,
}

/// `inner` is a dpkg md5sums list (`/var/lib/dpkg/info/<pkg>.md5sums`);
/// returns the package name.
pub fn md5sums_package(inner: &str) -> Option<&str> {
    let name = inner.strip_prefix("/var/lib/dpkg/info/")?;
    let pkg = name.strip_suffix(".md5sums")?;
    (!pkg.is_empty() && !pkg.contains('/')).then_some(pkg)
}

/// A file whose findings can be excused by dpkg's record: it lies in the
/// distribution's part of the tree.
pub fn candidate(inner: &str) -> bool {
    inner.starts_with("/usr/") && !inner.starts_with("/usr/local/")
}

/// Incremental MD5 of a candidate file.
#[derive(Default)]
pub struct Hasher(Md5);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

impl Shipped {
    /// Read one md5sums list (`<md5>  <path relative to />` per line) of the
    /// file system `fs`. Malformed lines are skipped: they can only make a
    /// finding stay a finding.
    pub fn add_list(&mut self, fs: &str, package: &str, data: &[u8]) {
        let table = self.tables.entry(fs.to_string()).or_default();
        for line in data.split(|&b| b == b'\n') {
            let Some((sum, path)) = line.split_at_checked(32) else {
                continue;
            };
            let Some(path) = path.strip_prefix(b"  ") else {
                continue;
            };
            let (Ok(path), Ok(sum)) = (std::str::from_utf8(path), hex::decode(sum)) else {
                continue;
            };
            let Ok(md5) = <[u8; 16]>::try_from(sum) else {
                continue;
            };
            table.insert(
                format!("/{}", path.trim_start_matches('/')),
                Record {
                    md5,
                    package: package.to_string(),
                },
            );
        }
    }

    /// Take over the lists another walker read.
    pub fn merge(&mut self, other: Shipped) {
        for (fs, table) in other.tables {
            self.tables.entry(fs).or_default().extend(table);
        }
    }

    /// The package that shipped `inner` (in file system `fs`) with exactly
    /// this MD5. With merged /usr, dpkg may record `/lib/x` for the file
    /// found at `/usr/lib/x`.
    pub fn package(&self, fs: &str, inner: &str, md5: &[u8; 16]) -> Option<&str> {
        let table = self.tables.get(fs)?;
        let alias = inner.strip_prefix("/usr").filter(|rest| {
            ["/lib", "/bin", "/sbin"]
                .iter()
                .any(|d| rest.starts_with(d))
        });
        [Some(inner), alias]
            .into_iter()
            .flatten()
            .filter_map(|p| table.get(p))
            .find(|r| &r.md5 == md5)
            .map(|r| r.package.as_str())
    }
}

/// One package dpkg's status file (`/var/lib/dpkg/status`) records as
/// installed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package it was built from (its own name when the status
    /// names none).
    pub source: String,
    /// The source package's version (the binary's when the status names none).
    pub source_version: String,
}

/// The installed packages of a dpkg status file, sorted by name and
/// architecture. Stanzas whose `Status` is not `… installed` (removed with
/// their configuration kept, half-installed) are left out.
pub fn installed(status: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (!l.starts_with([' ', '\t']) && k == key).then(|| v.trim().to_string())
            })
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if field("Status").is_none_or(|s| s.split_whitespace().nth(2) != Some("installed")) {
            continue;
        }
        let (source, source_version) = match field("Source") {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (
                    n.to_string(),
                    v.trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .to_string(),
                ),
                None => (s, version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        out.push(Installed {
            name,
            version,
            architecture: field("Architecture").unwrap_or_else(|| "all".into()),
            source,
            source_version,
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_match_by_path_and_md5_only() {
        let body = b"hello";
        let sum = hex::encode(md5(body));
        let list = format!(
            "{sum}  usr/lib/x86_64-linux-gnu/libdemo.so.1\n{sum}  lib/x86_64-linux-gnu/libold.so.2\nshort line\n"
        );
        let mut s = Shipped::default();
        s.add_list("disk!p2", "libdemo1:amd64", list.as_bytes());
        let m = md5(body);
        assert_eq!(
            s.package("disk!p2", "/usr/lib/x86_64-linux-gnu/libdemo.so.1", &m),
            Some("libdemo1:amd64")
        );
        // merged /usr: recorded as /lib, found under /usr/lib
        assert_eq!(
            s.package("disk!p2", "/usr/lib/x86_64-linux-gnu/libold.so.2", &m),
            Some("libdemo1:amd64")
        );
        // changed content, another file system, an unknown path
        assert_eq!(
            s.package(
                "disk!p2",
                "/usr/lib/x86_64-linux-gnu/libdemo.so.1",
                &md5(b"x")
            ),
            None
        );
        assert_eq!(
            s.package("disk!p1", "/usr/lib/x86_64-linux-gnu/libdemo.so.1", &m),
            None
        );
        assert_eq!(s.package("disk!p2", "/usr/lib/other.so", &m), None);
    }

    #[test]
    fn only_the_distributions_usr_is_a_candidate() {
        assert!(candidate("/usr/lib/x86_64-linux-gnu/libgnutls.so.30"));
        assert!(!candidate("/usr/local/lib/app.so"));
        assert!(!candidate("/etc/ssl/private/ssl-cert-snakeoil.key"));
        assert!(!candidate("/opt/demo/key.pem"));
        assert_eq!(
            md5sums_package("/var/lib/dpkg/info/libgnutls30:amd64.md5sums"),
            Some("libgnutls30:amd64")
        );
        assert_eq!(md5sums_package("/var/lib/dpkg/info/x.list"), None);
    }

    #[test]
    fn the_status_file_gives_installed_packages_with_their_sources() {
        let status = "Package: libstdc++6\nStatus: install ok installed\nArchitecture: amd64\n\
Source: gcc-12 (12.2.0-14)\nVersion: 12.2.0-14\nDescription: GNU Standard C++ Library v3\n \
continued: not a field\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n\
Package: coreutils\nStatus: install ok installed\nArchitecture: amd64\nSource: coreutils-src\n\
Version: 9.1-1\n";
        let got = installed(status);
        let names: Vec<_> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "coreutils", "libstdc++6"]);
        assert_eq!(
            got[2],
            Installed {
                name: "libstdc++6".into(),
                version: "12.2.0-14".into(),
                architecture: "amd64".into(),
                source: "gcc-12".into(),
                source_version: "12.2.0-14".into(),
            }
        );
        assert_eq!(
            (got[0].source.as_str(), got[0].source_version.as_str()),
            ("base-files", "12.4+deb12u5")
        );
        assert_eq!(
            (got[1].source.as_str(), got[1].source_version.as_str()),
            ("coreutils-src", "9.1-1")
        );
    }
}
