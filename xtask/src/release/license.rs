//! The licenses of a root's Debian packages, read from their machine-readable
//! copyright files (`/usr/share/doc/<package>/copyright` in the DEP-5
//! format), as SPDX license expressions for the SBOM.
//!
//! A package's declared license is every `License:` of its `Files:`
//! paragraphs, joined with `AND`. Debian's short names map to SPDX ids where
//! the two agree (`GPL-2+` is `GPL-2.0-or-later`, `Expat` is `MIT`); any
//! other short name becomes `LicenseRef-deb-<name>`, declared once in the
//! document. A package whose copyright file is not DEP-5, or whose
//! `License:` line is not a short-name expression (prose, an empty line),
//! gets no expression: the SBOM says `NOASSERTION` for it.

use std::collections::BTreeMap;

/// Debian short names (lower case) and their SPDX ids.
const SPDX: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.0+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("curl", "curl"),
    ("expat", "MIT"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("fsfap", "FSFAP"),
    ("isc", "ISC"),
    ("mit", "MIT"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("ofl-1.1", "OFL-1.1"),
    ("openldap-2.8", "OLDAP-2.8"),
    ("openssl", "OpenSSL"),
    ("psf-2", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
    ("0bsd", "0BSD"),
];

/// A package's declared license: an SPDX expression and the
/// `LicenseRef-deb-…` ids it uses, with the Debian short name each stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub expression: String,
    pub refs: BTreeMap<String, String>,
}

/// The declared license of a package from its copyright file's text;
/// `None` when the file is not DEP-5 or a `License:` is not an expression
/// of short names.
pub fn declared(copyright: &str) -> Option<Declared> {
    let text = copyright.replace("\r\n", "\n");
    let mut paragraphs = text.split("\n\n").filter(|p| !p.trim().is_empty());
    let header = paragraphs.next()?;
    if !field(header, "Format").is_some_and(|f| f.contains("copyright-format/1.0")) {
        return None;
    }
    let mut terms: Vec<String> = Vec::new();
    let mut refs = BTreeMap::new();
    for p in paragraphs.filter(|p| field(p, "Files").is_some()) {
        let e = expression(field(p, "License")?, &mut refs)?;
        if !terms.contains(&e) {
            terms.push(e);
        }
    }
    if terms.is_empty() {
        return None;
    }
    let expression = if terms.len() == 1 {
        terms.remove(0)
    } else {
        terms
            .iter()
            .map(|t| {
                if t.contains(' ') {
                    format!("({t})")
                } else {
                    t.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    Some(Declared { expression, refs })
}

/// The first line of field `name` in a paragraph (names are case-insensitive).
fn field<'a>(paragraph: &'a str, name: &str) -> Option<&'a str> {
    paragraph.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (!l.starts_with([' ', '\t']) && k.eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// A `License:` synopsis (`GPL-2+ or Artistic`, `GPL-2+ with Autoconf
/// exception`) as an SPDX expression.
fn expression(synopsis: &str, refs: &mut BTreeMap<String, String>) -> Option<String> {
    let words: Vec<&str> = synopsis.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut term: Vec<&str> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let op = w.eq_ignore_ascii_case("or") || w.eq_ignore_ascii_case("and");
        if op {
            out.push(license(&term, refs)?);
            out.push(w.to_ascii_uppercase());
            term.clear();
        } else {
            term.push(w);
        }
        if i == words.len() - 1 {
            out.push(license(&term, refs)?);
        }
    }
    Some(out.join(" "))
}

/// One license of a synopsis: a short name, or `NAME with … exception`
/// (kept whole, as a reference: exceptions are not mapped).
fn license(words: &[&str], refs: &mut BTreeMap<String, String>) -> Option<String> {
    let name = words.join(" ");
    let short = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b))
    };
    let ok = match words {
        [one] => short(one),
        [first, with, .., last] => {
            short(first)
                && with.eq_ignore_ascii_case("with")
                && last.eq_ignore_ascii_case("exception")
                && words.len() <= 6
        }
        _ => false,
    };
    if !ok {
        return None;
    }
    if let [one] = words {
        let lower = one.to_ascii_lowercase();
        if let Some((_, id)) = SPDX.iter().find(|(k, _)| *k == lower) {
            return Some(id.to_string());
        }
    }
    let id: String = name
        .chars()
        .map(|c| match c {
            '+' => "plus".to_string(),
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => c.to_string(),
            _ => "-".to_string(),
        })
        .collect();
    let id = format!("LicenseRef-deb-{id}");
    refs.insert(id.clone(), name);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str =
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                        Upstream-Name: demo\n\nFiles: *\nCopyright: 2020 A\nLicense: GPL-2+\n\n\
                        Files: lib/*\nCopyright: 2021 B\nLicense: LGPL-2.1+ or Expat\n\n\
                        Files: m4/*\nCopyright: FSF\nLicense: GPL-2+ with Autoconf exception\n\n\
                        Files: doc/*\nCopyright: 2020 A\nLicense: GPL-2+\n\n\
                        License: GPL-2+\n This program is free software …\n";

    #[test]
    fn files_paragraphs_make_one_expression() {
        let d = declared(DEP5).unwrap();
        assert_eq!(
            d.expression,
            "GPL-2.0-or-later AND (LGPL-2.1-or-later OR MIT) AND \
             LicenseRef-deb-GPL-2plus-with-Autoconf-exception"
        );
        assert_eq!(
            d.refs
                .get("LicenseRef-deb-GPL-2plus-with-Autoconf-exception"),
            Some(&"GPL-2+ with Autoconf exception".to_string())
        );
        let one = DEP5.split("\n\nFiles: lib").next().unwrap();
        assert_eq!(declared(one).unwrap().expression, "GPL-2.0-or-later");
    }

    #[test]
    fn what_is_not_an_expression_of_short_names_is_not_guessed() {
        // Not DEP-5.
        assert_eq!(
            declared("This package was debianized by …\n\nGPL-2\n"),
            None
        );
        // Prose in a License line.
        let prose = DEP5.replace(
            "License: LGPL-2.1+ or Expat",
            "License: Permission to use, copy, modify, and distribute this software and its",
        );
        assert_eq!(declared(&prose), None);
        // An empty License line.
        assert_eq!(
            declared(&DEP5.replace("License: LGPL-2.1+ or Expat", "License:")),
            None
        );
        // A dangling operator.
        assert_eq!(declared(&DEP5.replace("or Expat", "or")), None);
        // Unknown short names are references, case kept.
        let other = DEP5.replace("LGPL-2.1+ or Expat", "OpenLDAP-2.8 and UMich");
        assert!(declared(&other)
            .unwrap()
            .expression
            .contains("(OLDAP-2.8 AND LicenseRef-deb-UMich)"),);
    }
}
