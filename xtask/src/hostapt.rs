//! The build host's apt configuration: which Debian mirror it uses. kiln never
//! hard-codes a mirror host; it reads the host's sources (deb822 `.sources` or
//! one-line `sources.list`) unless a recipe names a mirror.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// Where the build host's apt configuration lives.
pub const ETC_APT: &str = "/etc/apt";

/// One apt source entry, as the host declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// The file it came from (for error messages).
    pub file: Utf8PathBuf,
}

/// Every `deb` source in `etc_apt` (normally `/etc/apt`).
pub fn sources(etc_apt: &Utf8Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    let list = etc_apt.join("sources.list");
    if list.is_file() {
        out.extend(parse_one_line(&read(&list)?, &list));
    }
    let dir = etc_apt.join("sources.list.d");
    if dir.is_dir() {
        let mut files: Vec<Utf8PathBuf> = dir
            .read_dir_utf8()
            .with_context(|| format!("listing {dir}"))?
            .filter_map(|e| e.ok().map(|e| e.into_path()))
            .collect();
        files.sort();
        for f in files {
            match f.extension() {
                Some("list") => out.extend(parse_one_line(&read(&f)?, &f)),
                Some("sources") => out.extend(parse_deb822(&read(&f)?, &f)),
                _ => {}
            }
        }
    }
    Ok(out)
}

fn read(p: &Utf8Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading apt source {p}"))
}

pub fn parse_one_line(text: &str, file: &Utf8Path) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        // Options in brackets: `deb [signed-by=…] uri suite comp…`
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
            file: file.to_owned(),
        });
    }
    out
}

pub fn parse_deb822(text: &str, file: &Utf8Path) -> Vec<Source> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut types = String::new();
        let mut uris = String::new();
        let mut suites = String::new();
        let mut comps = String::new();
        let mut enabled = true;
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v,
                "uris" => uris = v,
                "suites" => suites = v,
                "components" => comps = v,
                "enabled" => enabled = v != "no",
                _ => {}
            }
        }
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                out.push(Source {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: comps.split_whitespace().map(str::to_string).collect(),
                    file: file.to_owned(),
                });
            }
        }
    }
    out
}

/// The Debian archive mirror the host uses for `suite` (e.g. `bookworm`): the
/// URI of a source whose suite is exactly `suite`.
pub fn debian_mirror(sources: &[Source], suite: &str) -> Result<String> {
    if let Some(s) = sources
        .iter()
        .find(|s| s.suite == suite && !s.uri.contains("security"))
    {
        return Ok(s.uri.clone());
    }
    if sources.is_empty() {
        bail!("the build host has no apt sources; name a mirror in the recipe (qcow2.mirror)");
    }
    bail!(
        "the build host's apt sources name no mirror for suite `{suite}` (found: {}); \
         name a mirror in the recipe",
        sources
            .iter()
            .map(|s| format!("{} {}", s.uri, s.suite))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The security archive the host uses for `suite`, if any (`<suite>-security`).
pub fn security_mirror(sources: &[Source], suite: &str) -> Option<String> {
    let want = format!("{suite}-security");
    sources
        .iter()
        .find(|s| s.suite == want)
        .map(|s| s.uri.clone())
}

/// `VERSION_CODENAME` of the running system, from `/etc/os-release`.
pub fn host_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line() {
        let f = Utf8Path::new("x.sources");
        let s = parse_deb822(
            "Types: deb\n# comment\nURIs: http://m.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://src\nSuites: bookworm\n\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
            f,
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            debian_mirror(&s, "bookworm").unwrap(),
            "http://m.example/debian"
        );
        assert_eq!(
            security_mirror(&s, "bookworm").unwrap(),
            "http://sec.example/debian-security"
        );
        let l = parse_one_line("deb [signed-by=/k.gpg arch=amd64] http://x/debian trixie main contrib # c\n#deb http://y z\n", f);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].suite, "trixie");
        assert_eq!(l[0].components, ["main", "contrib"]);
        assert!(debian_mirror(&l, "bookworm")
            .unwrap_err()
            .to_string()
            .contains("trixie"));
    }
}
