//! Validation of seed files: header, YAML, the autoinstall keys kiln knows
//! (with their types), baked credentials, YAML 1.1 traps, and the GRUB `;`
//! trap in kernel arguments. Every finding names the file, line and column,
//! and says how to fix it.

use std::fmt;

use anyhow::{bail, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::yaml::{self, Kind, Node, Style, Val};

/// Which kind of `user-data` a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedKind {
    /// `#cloud-config` with a top-level `autoinstall:` (Ubuntu installer ISO).
    Autoinstall,
    /// A plain `#cloud-config` for a cloud image (qcow2, Pi).
    CloudConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding. `line`/`col` are 1-based; 0 when they do not apply.
#[derive(Debug, Clone, Serialize)]
pub struct Diag {
    pub severity: Severity,
    pub file: Utf8PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// A finding that does not stop the build.
pub type Warning = Diag;

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

struct Cx<'a> {
    file: &'a Utf8Path,
    allow_passwords: bool,
    /// A template: keys kiln adds itself (version, identity via
    /// interactive-sections) need not be there yet.
    partial: bool,
    diags: Vec<Diag>,
}

impl Cx<'_> {
    fn push(&mut self, sev: Severity, at: Option<&Node>, message: String, hint: Option<String>) {
        let (line, col) = at.map(|n| (n.start.line, n.start.col)).unwrap_or((0, 0));
        if self
            .diags
            .iter()
            .any(|d| d.line == line && d.col == col && d.message == message)
        {
            return;
        }
        self.diags.push(Diag {
            severity: sev,
            file: self.file.to_owned(),
            line,
            col,
            message,
            hint,
        });
    }
    fn error(&mut self, at: &Node, message: String, hint: Option<String>) {
        self.push(Severity::Error, Some(at), message, hint)
    }
    fn warn(&mut self, at: &Node, message: String, hint: Option<String>) {
        self.push(Severity::Warning, Some(at), message, hint)
    }
}

/// Validate a `user-data` file. Errors (all of them, at once) fail; warnings
/// are returned for the caller to print.
pub fn validate_user_data(
    bytes: &[u8],
    file: &Utf8Path,
    kind: SeedKind,
    allow_passwords: bool,
) -> Result<Vec<Warning>> {
    let diags = diagnose(bytes, file, kind, allow_passwords);
    split(diags, file)
}

/// Turn findings into `Err` (when any is an error) or the warnings.
pub fn split(diags: Vec<Diag>, file: &Utf8Path) -> Result<Vec<Warning>> {
    let (errors, warnings): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(|d| format!("  {d}")).collect();
        bail!(
            "{file}: {} problem{} in this seed file:\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            text.join("\n")
        );
    }
    Ok(warnings)
}

/// Every finding for a `user-data` file.
pub fn diagnose(bytes: &[u8], file: &Utf8Path, kind: SeedKind, allow_passwords: bool) -> Vec<Diag> {
    diagnose_inner(bytes, file, kind, allow_passwords, false)
}

/// Findings for a template kiln will add to (required keys may be missing).
pub fn diagnose_template(
    bytes: &[u8],
    file: &Utf8Path,
    kind: SeedKind,
    allow_passwords: bool,
) -> Vec<Diag> {
    diagnose_inner(bytes, file, kind, allow_passwords, true)
}

fn diagnose_inner(
    bytes: &[u8],
    file: &Utf8Path,
    kind: SeedKind,
    allow_passwords: bool,
    partial: bool,
) -> Vec<Diag> {
    let mut cx = Cx {
        file,
        allow_passwords,
        partial,
        diags: Vec::new(),
    };
    let at = |line, col, message: &str, hint: &str| Diag {
        severity: Severity::Error,
        file: file.to_owned(),
        line,
        col,
        message: message.into(),
        hint: Some(hint.into()),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![at(
            0,
            0,
            "not UTF-8 text",
            "cloud-init reads user-data as UTF-8; re-save the file as UTF-8",
        )];
    };
    let first = text.lines().next().unwrap_or("");
    if first.trim_end() != "#cloud-config" {
        let hint = if first.trim_start().starts_with("#cloud-config")
            || first.starts_with('\u{feff}')
        {
            "the header must be exactly `#cloud-config` at the very start of line 1 (no leading spaces or byte-order mark)"
        } else {
            "make `#cloud-config` the first line: without it cloud-init (and the Ubuntu installer) ignores the file"
        };
        cx.diags
            .push(at(1, 1, "missing `#cloud-config` header", hint));
    }
    let root = match yaml::parse(text) {
        Ok(Some(r)) => r,
        Ok(None) => {
            if kind == SeedKind::Autoinstall && !partial {
                cx.diags.push(at(
                    1,
                    1,
                    "the file holds no settings (no `autoinstall:`)",
                    "add `autoinstall:` with `version: 1` below the `#cloud-config` line",
                ));
            }
            return cx.diags;
        }
        Err(e) => {
            let msg = match &e.context {
                Some(c) => format!("YAML does not parse: {} ({c})", e.problem),
                None => format!("YAML does not parse: {}", e.problem),
            };
            cx.diags.push(at(
                e.pos.line,
                e.pos.col,
                &msg,
                "check the indentation (spaces only, no tabs) and quoting near this line; \
                 a value containing `: ` or ` #` must be quoted",
            ));
            return cx.diags;
        }
    };
    let Val::Map(_) = root.val() else {
        cx.error(
            &root,
            format!(
                "the document is {}, not a mapping of settings",
                root.type_name()
            ),
            Some("user-data is `key: value` settings below `#cloud-config`".into()),
        );
        return cx.diags;
    };
    duplicates(&root, &mut cx);
    match kind {
        SeedKind::Autoinstall => autoinstall(&root, &mut cx),
        SeedKind::CloudConfig => {
            if let Some((k, _)) = root.entry("autoinstall") {
                cx.warn(
                    k,
                    "`autoinstall:` in a cloud-init seed for a cloud image has no effect".into(),
                    Some(
                        "autoinstall belongs to the installer ISO's seed (seed.autoinstall)".into(),
                    ),
                );
            }
            cloud_config(&root, "", &mut cx);
        }
    }
    credentials(&root, "", &mut cx);
    traps(&root, &mut cx);
    cx.diags
}

fn duplicates(n: &Node, cx: &mut Cx) {
    match &n.kind {
        Kind::Map { entries, .. } => {
            for (i, (k, v)) in entries.iter().enumerate() {
                if let Some(t) = k.text() {
                    if entries[..i].iter().any(|(p, _)| p.text() == Some(t)) {
                        cx.warn(
                            k,
                            format!(
                                "key `{t}` appears twice in the same mapping; the last one wins"
                            ),
                            Some("remove one of them".into()),
                        );
                    }
                }
                duplicates(v, cx);
            }
        }
        Kind::Seq { items, .. } => items.iter().for_each(|i| duplicates(i, cx)),
        _ => {}
    }
}

/// Expected types of the autoinstall schema: subiquity's published JSON
/// schema (`autoinstall-schema.json`) and its reference manual, for every
/// key kiln writes and the others kiln knows. A key the schema closes
/// (`additionalProperties: false`) is an error when unknown; elsewhere an
/// unknown key is a warning (subiquity warns too).
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Version,
    /// The integer (netplan's `version: 2`).
    IntIs(i64),
    StrList,
    Commands,
    AnyMap,
    Any,
    StrOrNull,
    BoolOrNull,
    BoolOrAuto,
    Enum(&'static [&'static str]),
    Obj(&'static Obj),
    /// A mapping whose keys are names, each value of one type.
    Values(&'static Ty),
    ListOf(&'static Ty),
    /// Exactly one alternative holds (the schema's `oneOf`); when none
    /// does, the errors of the one closest to holding.
    Either(&'static [Ty]),
}

/// A mapping: its known keys, the required ones, and what an unknown key is.
struct Obj {
    fields: &'static [(&'static str, Ty)],
    required: &'static [&'static str],
    unknown: Unknown,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unknown {
    /// The schema closes the mapping (`additionalProperties: false`).
    Error,
    /// The schema allows it, but kiln cannot check it.
    Warn,
    /// Anything goes (cloud-init's and netplan's own keys).
    Silent,
}

const fn obj(fields: &'static [(&'static str, Ty)], unknown: Unknown) -> Obj {
    Obj {
        fields,
        required: &[],
        unknown,
    }
}

/// A netplan v2 network config (the schema's first `network` form).
const NETPLAN: Obj = Obj {
    fields: &[
        ("version", Ty::IntIs(2)),
        ("ethernets", Ty::Values(&Ty::Obj(&NETPLAN_DEVICE))),
        ("wifis", Ty::Values(&Ty::Obj(&NETPLAN_DEVICE))),
        ("bridges", Ty::AnyMap),
        ("bonds", Ty::AnyMap),
        ("tunnels", Ty::AnyMap),
        ("vlans", Ty::AnyMap),
        ("renderer", Ty::Enum(&["networkd", "NetworkManager"])),
    ],
    required: &["version"],
    unknown: Unknown::Warn,
};

const NETPLAN_DEVICE: Obj = obj(
    &[
        (
            "match",
            Ty::Obj(&obj(
                &[
                    ("name", Ty::Str),
                    ("macaddress", Ty::Str),
                    ("driver", Ty::Str),
                ],
                Unknown::Error,
            )),
        ),
        ("dhcp4", Ty::Bool),
        ("dhcp6", Ty::Bool),
        ("optional", Ty::Bool),
        ("set-name", Ty::Str),
        ("addresses", Ty::StrList),
    ],
    Unknown::Silent,
);

/// A disk match spec (the storage layout's and a disk action's `match`).
const DISK_MATCH: Obj = obj(
    &[
        ("model", Ty::Str),
        ("vendor", Ty::Str),
        ("path", Ty::Str),
        ("id_path", Ty::Str),
        ("devpath", Ty::Str),
        ("serial", Ty::Str),
        ("ssd", Ty::Bool),
        ("size", Ty::Enum(&["largest", "smallest"])),
        ("install-media", Ty::Bool),
    ],
    Unknown::Error,
);

/// The cloud-config a `user-data` section carries: what kiln writes into
/// it; `cloud-init` checks the rest on the installed system.
const USER_DATA: Obj = obj(
    &[
        ("hostname", Ty::Str),
        (
            "users",
            Ty::ListOf(&Ty::Either(&[
                Ty::Str,
                Ty::Obj(&Obj {
                    fields: &[
                        ("name", Ty::Str),
                        ("gecos", Ty::Str),
                        ("groups", Ty::Either(&[Ty::Str, Ty::StrList, Ty::AnyMap])),
                        ("shell", Ty::Str),
                        ("lock_passwd", Ty::Bool),
                        ("sudo", Ty::Either(&[Ty::Str, Ty::StrList, Ty::Bool])),
                        ("ssh_authorized_keys", Ty::StrList),
                    ],
                    required: &["name"],
                    unknown: Unknown::Silent,
                }),
            ])),
        ),
    ],
    Unknown::Silent,
);

const AUTOINSTALL: Obj = Obj {
    fields: &[
        ("version", Ty::Version),
        ("interactive-sections", Ty::StrList),
        ("early-commands", Ty::Commands),
        ("late-commands", Ty::Commands),
        ("error-commands", Ty::Commands),
        ("locale", Ty::Str),
        (
            "refresh-installer",
            Ty::Obj(&obj(
                &[("update", Ty::Bool), ("channel", Ty::Str)],
                Unknown::Error,
            )),
        ),
        (
            "keyboard",
            Ty::Obj(&Obj {
                fields: &[
                    ("layout", Ty::Str),
                    ("variant", Ty::Str),
                    ("toggle", Ty::StrOrNull),
                ],
                required: &["layout"],
                unknown: Unknown::Error,
            }),
        ),
        (
            "source",
            Ty::Obj(&obj(
                &[("search_drivers", Ty::Bool), ("id", Ty::Str)],
                Unknown::Warn,
            )),
        ),
        (
            "network",
            Ty::Either(&[
                Ty::Obj(&NETPLAN),
                Ty::Obj(&Obj {
                    fields: &[("network", Ty::Obj(&NETPLAN))],
                    required: &["network"],
                    unknown: Unknown::Warn,
                }),
            ]),
        ),
        ("proxy", Ty::StrOrNull),
        ("apt", Ty::AnyMap),
        (
            "storage",
            Ty::Obj(&obj(
                &[
                    (
                        "layout",
                        Ty::Obj(&Obj {
                            fields: &[
                                ("name", Ty::Enum(&["lvm", "direct", "zfs", "hybrid"])),
                                ("password", Ty::Str),
                                (
                                    "match",
                                    Ty::Either(&[
                                        Ty::Obj(&DISK_MATCH),
                                        Ty::ListOf(&Ty::Obj(&DISK_MATCH)),
                                    ]),
                                ),
                                ("sizing-policy", Ty::Enum(&["scaled", "all"])),
                                ("ptable", Ty::Enum(&["gpt", "msdos"])),
                                ("reset-partition", Ty::Any),
                                ("reset-partition-only", Ty::Bool),
                                ("encrypted", Ty::Bool),
                            ],
                            required: &["name"],
                            unknown: Unknown::Warn,
                        }),
                    ),
                    ("swap", Ty::AnyMap),
                    ("grub", Ty::AnyMap),
                    ("config", Ty::Any),
                ],
                Unknown::Silent,
            )),
        ),
        (
            "identity",
            Ty::Obj(&Obj {
                fields: &[
                    ("realname", Ty::Str),
                    ("username", Ty::Str),
                    ("hostname", Ty::Str),
                    ("password", Ty::Str),
                    ("groups", Ty::Either(&[Ty::StrList, Ty::AnyMap])),
                ],
                required: &["username", "hostname", "password"],
                unknown: Unknown::Error,
            }),
        ),
        (
            "active-directory",
            Ty::Obj(&obj(
                &[("admin-name", Ty::Str), ("domain-name", Ty::Str)],
                Unknown::Error,
            )),
        ),
        (
            "ubuntu-pro",
            Ty::Obj(&obj(&[("token", Ty::Str)], Unknown::Warn)),
        ),
        (
            "ubuntu-advantage",
            Ty::Obj(&obj(&[("token", Ty::Str)], Unknown::Warn)),
        ),
        (
            "ssh",
            Ty::Obj(&obj(
                &[
                    ("install-server", Ty::Bool),
                    ("authorized-keys", Ty::StrList),
                    ("allow-pw", Ty::Bool),
                ],
                Unknown::Warn,
            )),
        ),
        (
            "codecs",
            Ty::Obj(&obj(&[("install", Ty::Bool)], Unknown::Warn)),
        ),
        (
            "drivers",
            Ty::Obj(&obj(&[("install", Ty::Bool)], Unknown::Warn)),
        ),
        (
            "oem",
            Ty::Obj(&Obj {
                fields: &[("install", Ty::BoolOrAuto)],
                required: &["install"],
                unknown: Unknown::Warn,
            }),
        ),
        (
            "snaps",
            Ty::ListOf(&Ty::Obj(&Obj {
                fields: &[
                    ("name", Ty::Str),
                    ("channel", Ty::Str),
                    ("classic", Ty::Bool),
                ],
                required: &["name"],
                unknown: Unknown::Error,
            })),
        ),
        ("debconf-selections", Ty::Str),
        ("packages", Ty::StrList),
        (
            "kernel",
            Ty::Either(&[
                Ty::Obj(&Obj {
                    fields: &[("package", Ty::Str), ("flavor", Ty::Str)],
                    required: &["package"],
                    unknown: Unknown::Warn,
                }),
                Ty::Obj(&Obj {
                    fields: &[("package", Ty::Str), ("flavor", Ty::Str)],
                    required: &["flavor"],
                    unknown: Unknown::Warn,
                }),
            ]),
        ),
        (
            "kernel-crash-dumps",
            Ty::Obj(&Obj {
                fields: &[("enabled", Ty::BoolOrNull)],
                required: &["enabled"],
                unknown: Unknown::Error,
            }),
        ),
        ("timezone", Ty::Str),
        ("updates", Ty::Enum(&["security", "all"])),
        ("shutdown", Ty::Enum(&["reboot", "poweroff"])),
        (
            "reporting",
            Ty::Values(&Ty::Obj(&Obj {
                fields: &[("type", Ty::Str)],
                required: &["type"],
                unknown: Unknown::Silent,
            })),
        ),
        ("user-data", Ty::Obj(&USER_DATA)),
        ("zdevs", Ty::Any),
    ],
    // `version` is required too; `autoinstall` checks it (a template may
    // leave it to kiln).
    required: &[],
    unknown: Unknown::Warn,
};

use crate::recipe::seed::INTERACTIVE_SECTIONS as SECTIONS;

fn autoinstall(root: &Node, cx: &mut Cx) {
    let Some((key, ai)) = root.entry("autoinstall") else {
        let near = match root.val() {
            Val::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.text().is_some_and(near_autoinstall)),
            _ => None,
        };
        match near {
            Some((k, _)) => cx.error(
                k,
                format!(
                    "`{}` is not `autoinstall` (the installer looks for exactly that key)",
                    k.text().unwrap_or("")
                ),
                Some("rename it to `autoinstall:` (one word, lower case)".into()),
            ),
            None => cx.error(
                root,
                "no top-level `autoinstall:` key: the Ubuntu installer would ignore this file"
                    .into(),
                Some("put the installer settings under `autoinstall:` with `version: 1`".into()),
            ),
        }
        return;
    };
    if !matches!(ai.val(), Val::Map(_)) {
        cx.error(ai, format!("`autoinstall` must be a mapping, but it is {}", ai.type_name()), Some("write `autoinstall:` then the settings indented below it, starting with `version: 1`".into()));
        return;
    }
    let _ = key;
    if ai.get("version").is_none() && !cx.partial {
        cx.error(
            ai,
            "`autoinstall` has no `version`".into(),
            Some("add `version: 1` (the only autoinstall schema version)".into()),
        );
    }
    check(ai, Ty::Obj(&AUTOINSTALL), "autoinstall", cx);
    let interactive: Vec<String> = match ai.get("interactive-sections").map(|n| n.val()) {
        Some(Val::Seq(items)) => items
            .iter()
            .filter_map(|i| i.text().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if let Some(Val::Seq(items)) = ai.get("interactive-sections").map(|n| n.val()) {
        for i in items {
            if let Some(t) = i.text() {
                if !SECTIONS.contains(&t) {
                    cx.warn(
                        i,
                        format!("`{t}` is not an installer section subiquity knows"),
                        suggest(t, SECTIONS),
                    );
                }
            }
        }
    }
    let has = |k| ai.get(k).is_some();
    if !cx.partial
        && !has("identity")
        && !has("user-data")
        && !has("active-directory")
        && !interactive.iter().any(|s| s == "identity" || s == "*")
    {
        cx.error(
            ai,
            "autoinstall has no `identity` (nor `user-data`), and `identity` is not an interactive section: the installer cannot create a user".into(),
            Some("add a `user-data` section whose `users` creates the account (kiln's default: an admin user with a locked password and SSH keys), or put `identity` in interactive-sections so the operator creates it".into()),
        );
    }
}

fn near_autoinstall(t: &str) -> bool {
    let norm: String = t
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    t != "autoinstall" && (norm == "autoinstall" || distance(&norm, "autoinstall") <= 2)
}

fn check(n: &Node, ty: Ty, path: &str, cx: &mut Cx) {
    let expect = |cx: &mut Cx, what: &str| {
        let mut hint = Some(match what {
            w if w.starts_with("the integer") => "write `version: 1`, without quotes".to_string(),
            w if w.starts_with("true") => "write true or false, without quotes".to_string(),
            w if w.contains("list") => {
                "write a list: one `- item` per line (or `[a, b]`)".to_string()
            }
            "a mapping" => "write the key, then its settings indented below it".to_string(),
            w if w.starts_with("one of") => format!("use {w}"),
            _ => "quote the value".to_string(),
        });
        if n.style() == Some(Style::Plain) && what.contains("string") {
            if let Val::Bool(_) | Val::Int(_) | Val::Float | Val::Null | Val::Timestamp = n.val() {
                hint = Some(format!(
                    "YAML 1.1 (what cloud-init and the installer use) reads the unquoted `{}` as {}; quote it: \"{}\"",
                    n.text().unwrap_or(""),
                    n.type_name(),
                    n.text().unwrap_or("")
                ));
            }
        }
        let shown = match n.text() {
            Some(t) if t.len() <= 40 => format!(" (`{t}`)"),
            _ => String::new(),
        };
        cx.error(
            n,
            format!(
                "`{path}` must be {what}, but it is {}{shown}",
                n.type_name()
            ),
            hint,
        );
    };
    match ty {
        Ty::Any => {}
        Ty::Str => {
            if !matches!(n.val(), Val::Str(_)) {
                expect(cx, "a string")
            }
        }
        Ty::Bool => {
            if !matches!(n.val(), Val::Bool(_)) {
                expect(cx, "true or false")
            }
        }
        Ty::BoolOrNull => {
            if !matches!(n.val(), Val::Bool(_) | Val::Null) {
                expect(cx, "true, false or empty")
            }
        }
        Ty::BoolOrAuto => {
            if !matches!(n.val(), Val::Bool(_) | Val::Str("auto")) {
                expect(cx, "true, false or \"auto\"")
            }
        }
        Ty::StrOrNull => {
            if !matches!(n.val(), Val::Str(_) | Val::Null) {
                expect(cx, "a string or empty")
            }
        }
        Ty::Version => match n.val() {
            Val::Int(1) => {}
            Val::Int(v) => cx.error(
                n,
                format!("`{path}` is {v}; autoinstall has only version 1"),
                Some("set `version: 1`".into()),
            ),
            _ => expect(cx, "the integer 1"),
        },
        Ty::Enum(choices) => match n.val() {
            Val::Str(s) if choices.contains(&s) => {}
            _ => expect(cx, &format!("one of {}", choices.join(", "))),
        },
        Ty::AnyMap => {
            if !matches!(n.val(), Val::Map(_)) {
                expect(cx, "a mapping")
            }
        }
        Ty::StrList => match n.val() {
            Val::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    check(it, Ty::Str, &format!("{path}[{i}]"), cx);
                }
            }
            _ => expect(cx, "a list of strings"),
        },
        Ty::ListOf(inner) => match n.val() {
            Val::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    check(it, *inner, &format!("{path}[{i}]"), cx);
                }
            }
            _ => expect(cx, "a list"),
        },
        Ty::Commands => commands(n, path, cx),
        Ty::IntIs(want) => match n.val() {
            Val::Int(v) if v == want => {}
            _ => expect(cx, &format!("the integer {want}")),
        },
        Ty::Values(inner) => match n.val() {
            Val::Map(entries) => {
                for (k, v) in entries {
                    let name = k.text().unwrap_or("?");
                    check(v, *inner, &format!("{path}.{name}"), cx);
                }
            }
            _ => expect(cx, "a mapping"),
        },
        Ty::Either(choices) => {
            let mut best: Option<(usize, Ty)> = None;
            let mut holds: Option<Vec<Diag>> = None;
            let mut held = 0;
            for ty in choices {
                let mut trial = Cx {
                    file: cx.file,
                    allow_passwords: cx.allow_passwords,
                    partial: cx.partial,
                    diags: Vec::new(),
                };
                check(n, *ty, path, &mut trial);
                let errors = trial
                    .diags
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                if errors == 0 {
                    held += 1;
                    holds.get_or_insert(trial.diags);
                    continue;
                }
                // Closest: the alternative of the same kind (a mapping for
                // a mapping) with the fewest errors.
                let same_kind = shape(n) == shape_of(*ty);
                let score = errors + if same_kind { 0 } else { 1000 };
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, *ty));
                }
            }
            match (holds, held) {
                // The schema's `oneOf`: exactly one form may hold.
                (Some(_), 2..) => cx.error(
                    n,
                    format!("`{path}` holds more than one of its forms at once"),
                    Some(match path.rsplit('.').next() {
                        Some("kernel") => "give either `package` or `flavor`, not both".to_string(),
                        _ => format!("write `{path}` in one form only"),
                    }),
                ),
                (Some(diags), _) => cx.diags.extend(diags),
                (None, _) => {
                    if let Some((_, ty)) = best {
                        check(n, ty, path, cx);
                    }
                }
            }
        }
        Ty::Obj(o) => {
            let Val::Map(entries) = n.val() else {
                expect(cx, "a mapping");
                return;
            };
            for want in o.required {
                if !entries.iter().any(|(k, _)| k.text() == Some(want)) {
                    cx.error(
                        n,
                        format!("`{path}` has no `{want}`, which the installer requires"),
                        Some(format!("add `{want}:` to `{path}`")),
                    );
                }
            }
            for (k, v) in entries {
                let Some(name) = k.text() else { continue };
                match o.fields.iter().find(|(f, _)| *f == name) {
                    Some((_, t)) => check(v, *t, &format!("{path}.{name}"), cx),
                    None => {
                        let known: Vec<&str> = o.fields.iter().map(|(f, _)| *f).collect();
                        match o.unknown {
                            Unknown::Error => cx.error(
                                k,
                                format!(
                                    "unknown key `{path}.{name}`: the installer's schema allows only {}",
                                    known.join(", ")
                                ),
                                suggest(name, &known).or(Some(format!("remove `{name}`"))),
                            ),
                            Unknown::Warn => cx.warn(
                                k,
                                format!("unknown key `{path}.{name}`: kiln does not check it (the installer may reject it)"),
                                suggest(name, &known),
                            ),
                            Unknown::Silent => {}
                        }
                    }
                }
            }
        }
    }
}

/// The kind of node a value is, and the kind a type wants.
#[derive(PartialEq, Eq)]
enum Shape {
    Map,
    Seq,
    Scalar,
}

fn shape(n: &Node) -> Shape {
    match n.val() {
        Val::Map(_) => Shape::Map,
        Val::Seq(_) => Shape::Seq,
        _ => Shape::Scalar,
    }
}

fn shape_of(ty: Ty) -> Shape {
    match ty {
        Ty::Obj(_) | Ty::Values(_) | Ty::AnyMap => Shape::Map,
        Ty::StrList | Ty::Commands | Ty::ListOf(_) => Shape::Seq,
        _ => Shape::Scalar,
    }
}

/// `early-/late-/error-commands`: each item is a string (run with `sh -c`)
/// or a list of strings (run directly).
fn commands(n: &Node, path: &str, cx: &mut Cx) {
    let Val::Seq(items) = n.val() else {
        cx.error(
            n,
            format!(
                "`{path}` must be a list of commands, but it is {}",
                n.type_name()
            ),
            Some("write one `- command` per line".into()),
        );
        return;
    };
    for (i, it) in items.iter().enumerate() {
        match it.val() {
            Val::Str(_) => {}
            Val::Seq(words) => {
                for (j, w) in words.iter().enumerate() {
                    if !matches!(w.val(), Val::Str(_)) {
                        cx.error(w, format!("`{path}[{i}][{j}]` must be a string, but it is {}", w.type_name()), Some("quote every word of a command given as a list: [\"cmd\", \"arg\"]".into()));
                    }
                }
            }
            Val::Map(_) => cx.error(
                it,
                format!("`{path}[{i}]` is a mapping, not a command"),
                Some("an unquoted command containing `: ` is read as `key: value`; quote the whole command".into()),
            ),
            _ => cx.error(
                it,
                format!("`{path}[{i}]` must be a string (run with sh -c) or a list of strings, but it is {}", it.type_name()),
                Some("quote the command".into()),
            ),
        }
    }
}

/// cloud-config keys kiln checks itself (`cloud-init schema` checks the rest).
fn cloud_config(root: &Node, _path: &str, cx: &mut Cx) {
    if let Some(Val::Seq(files)) = root.get("write_files").map(|n| n.val()) {
        for (i, f) in files.iter().enumerate() {
            if let Some(p) = f.get("permissions") {
                if !matches!(p.val(), Val::Str(_)) {
                    cx.error(
                        p,
                        format!("`write_files[{i}].permissions` must be a quoted string like '0600', but it is {}", p.type_name()),
                        Some("unquoted, 0600 is the octal number 384 in YAML 1.1 and 600 in YAML 1.2: quote it".into()),
                    );
                }
            }
        }
    }
}

/// Baked credentials: password hashes, plain passwords, private keys.
fn credentials(n: &Node, path: &str, cx: &mut Cx) {
    match &n.kind {
        Kind::Map { entries, .. } => {
            for (k, v) in entries {
                let Some(name) = k.text() else { continue };
                let p = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                let present = !matches!(v.val(), Val::Null) && v.text() != Some("");
                let parent = path.rsplit('.').next().unwrap_or("");
                let parent = parent.split('[').next().unwrap_or("");
                let is_password = matches!(name, "passwd" | "hashed_passwd" | "plain_text_passwd")
                    || (name == "password" && matches!(parent, "identity" | "users"))
                    || (name == "list" && parent == "chpasswd");
                if is_password && present {
                    let msg = format!("`{p}` bakes a password (or its hash) into the seed");
                    let hint = "it lands in the image (/var/log/installer/autoinstall-user-data, \
                                /etc/cloud/cloud.cfg.d/99-installer.cfg) and in every copy of the seed; \
                                log in with SSH keys (seed.autoinstall.ssh_authorized_keys, a locked \
                                password) or let the operator set it (interactive-sections: [identity]). To accept the risk: seed.allow_passwords: true"
                        .to_string();
                    if cx.allow_passwords {
                        cx.warn(v, format!("{msg} (allowed by seed.allow_passwords)"), None);
                    } else {
                        cx.error(v, msg, Some(hint));
                    }
                }
                if parent == "ssh_keys" && name.ends_with("_private") && present {
                    cx.error(
                        v,
                        format!("`{p}` bakes an SSH host private key into the seed"),
                        Some(
                            "every instance would share it; let the host generate its keys".into(),
                        ),
                    );
                }
                if v.text().is_some_and(|t| t.contains("PRIVATE KEY-----")) {
                    cx.error(
                        v,
                        format!("`{p}` holds a private key"),
                        Some("never put private keys into a seed".into()),
                    );
                }
                credentials(v, &p, cx);
            }
        }
        Kind::Seq { items, .. } => {
            for (i, it) in items.iter().enumerate() {
                credentials(it, &format!("{path}[{i}]"), cx);
            }
        }
        _ => {}
    }
}

/// Plain scalars that YAML 1.1 readers (cloud-init) and YAML 1.2 readers
/// would read differently.
fn traps(n: &Node, cx: &mut Cx) {
    match &n.kind {
        Kind::Map { entries, .. } => entries.iter().for_each(|(_, v)| traps(v, cx)),
        Kind::Seq { items, .. } => items.iter().for_each(|i| traps(i, cx)),
        Kind::Scalar {
            text,
            style: Style::Plain,
        } => {
            let t = text.as_str();
            if matches!(n.val(), Val::Bool(_))
                && !t.eq_ignore_ascii_case("true")
                && !t.eq_ignore_ascii_case("false")
            {
                cx.warn(n, format!("unquoted `{t}` is a boolean for cloud-init (YAML 1.1) but a string for YAML 1.2 tools"), Some(format!("write `true`/`false` for a boolean, or \"{t}\" for the word")));
            } else if matches!(n.val(), Val::Int(_))
                && t.len() > 1
                && t.trim_start_matches(['-', '+']).starts_with('0')
                && !t.contains(['x', 'b'])
            {
                cx.warn(n, format!("unquoted `{t}` is an octal number for cloud-init (YAML 1.1) but decimal for YAML 1.2 tools"), Some(format!("quote it: '{t}'")));
            }
        }
        _ => {}
    }
}

fn suggest(word: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (distance(word, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// Levenshtein distance (short keys only).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Validate a `network-config` (netplan v2 or cloud-init v1), as shipped.
pub fn validate_network_config(bytes: &[u8], file: &Utf8Path) -> Result<Vec<Warning>> {
    let mut cx = Cx {
        file,
        allow_passwords: false,
        partial: false,
        diags: Vec::new(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{file}: not UTF-8 text"))?;
    let root = match yaml::parse(text) {
        Ok(Some(r)) => r,
        Ok(None) => bail!("{file}: empty network-config\n    hint: remove seed.cloud_init.network_config, or write a netplan `version: 2` config"),
        Err(e) => bail!("{file}:{}:{}: YAML does not parse: {}\n    hint: check indentation and quoting near this line", e.pos.line, e.pos.col, e.problem),
    };
    let body = root.get("network").unwrap_or(&root);
    match body.get("version").map(|v| v.val()) {
        Some(Val::Int(1 | 2)) => {}
        Some(_) => cx.error(
            body.get("version").unwrap(),
            "network-config `version` must be 1 or 2".into(),
            Some("netplan syntax is `version: 2`".into()),
        ),
        None => cx.error(
            body,
            "network-config has no `version` (1 or 2)".into(),
            Some("start with `version: 2` followed by `ethernets:`".into()),
        ),
    }
    credentials(&root, "", &mut cx);
    traps(&root, &mut cx);
    split(cx.diags, file)
}

/// Check a kernel command line kiln will write into a GRUB `linux` line.
/// GRUB ends a command at an unescaped `;` (or newline) and silently drops
/// the rest — the classic "autoinstall does not trigger" — and treats `#` at
/// the start of a word as a comment.
pub fn check_kernel_args(args: &str) -> Result<()> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut word_start = true;
    let mut quote_at = 0;
    for (i, c) in args.char_indices() {
        let col = args[..i].chars().count() + 1;
        if escaped {
            escaped = false;
            word_start = false;
            continue;
        }
        match (quote, c) {
            (_, '\n' | '\r') => bail!("kernel arguments `{}` contain a line break at column {col}: GRUB would end the `linux` command there", args.escape_debug()),
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => {
                quote = Some(c);
                quote_at = col;
            }
            (None, ';') => bail!(
                "kernel arguments `{args}` contain an unescaped `;` at column {col}: GRUB ends the \
                 `linux` command there and silently drops everything after it (so the installer \
                 never sees the NoCloud source)\n    hint: escape it as `\\;` or quote the argument: \
                 `ds=nocloud\\;s=/cdrom/nocloud/`"
            ),
            (None, '#') if word_start => bail!(
                "kernel arguments `{args}`: `#` at column {col} starts a GRUB comment; the rest of the line is dropped\n    hint: escape it as `\\#`"
            ),
            (None, '|' | '&' | '<' | '>') => bail!(
                "kernel arguments `{args}`: `{c}` at column {col} is special to the GRUB shell\n    hint: quote or escape it"
            ),
            _ => {}
        }
        word_start = c == ' ' || c == '\t';
    }
    if escaped {
        bail!("kernel arguments `{args}` end with a lone `\\`");
    }
    if quote.is_some() {
        bail!("kernel arguments `{args}`: the quote at column {quote_at} is never closed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_semicolon_trap() {
        assert!(check_kernel_args("autoinstall ds=nocloud\\;s=/cdrom/nocloud/ ---").is_ok());
        assert!(check_kernel_args("autoinstall 'ds=nocloud;s=/cdrom/nocloud/'").is_ok());
        assert!(check_kernel_args("autoinstall \"ds=nocloud;s=/cdrom/nocloud/\"").is_ok());
        let e = check_kernel_args("autoinstall ds=nocloud;s=/cdrom/nocloud/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 23") && e.contains("\\;"), "{e}");
        assert!(check_kernel_args("quiet #x").is_err());
        assert!(check_kernel_args("a=b#c").is_ok());
        assert!(check_kernel_args("a 'b").is_err());
        assert!(check_kernel_args("a\nb").is_err());
    }

    fn errors(text: &str) -> Vec<String> {
        diagnose(text.as_bytes(), "t".into(), SeedKind::Autoinstall, false)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect()
    }

    const UNATTENDED: &str = "#cloud-config\nautoinstall:\n  version: 1\n  network:\n    version: 2\n    \
        ethernets:\n      wired:\n        match:\n          name: \"e*\"\n        dhcp4: true\n        \
        optional: true\n  storage:\n    layout:\n      name: direct\n      match:\n        size: largest\n  \
        user-data:\n    hostname: demo\n    users:\n      - name: demo-admin\n        groups: [adm, sudo]\n        \
        lock_passwd: true\n        sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n        ssh_authorized_keys: [\"ssh-ed25519 AAAA k\"]\n";

    #[test]
    fn both_modes_are_valid_without_warnings() {
        let all = diagnose(
            UNATTENDED.as_bytes(),
            "t".into(),
            SeedKind::Autoinstall,
            false,
        );
        assert!(all.is_empty(), "{all:#?}");
        // Interactive: the screens decide; no identity, no network needed.
        let interactive = "#cloud-config\nautoinstall:\n  version: 1\n  interactive-sections: [network, storage, identity]\n  \
            storage:\n    layout:\n      name: lvm\n      match: [{serial: \"CT*\"}, {size: largest}]\n";
        let all = diagnose(
            interactive.as_bytes(),
            "t".into(),
            SeedKind::Autoinstall,
            false,
        );
        assert!(all.is_empty(), "{all:#?}");
        // The schema's second network form (netplan under `network:`).
        let nested = UNATTENDED.replace("  network:\n    version: 2\n", "  network:\n    network:\n      version: 2\n")
            .replace("    ethernets:\n      wired:\n        match:\n          name: \"e*\"\n        dhcp4: true\n        optional: true\n",
                     "      ethernets:\n        wired:\n          dhcp4: true\n");
        assert!(errors(&nested).is_empty(), "{:#?}", errors(&nested));
        // Without interactive identity and without user-data: no account.
        let e = errors(&UNATTENDED.replace("  user-data:", "  user-datas:"));
        assert!(
            e.iter().any(|e| e.contains("cannot create a user")),
            "{e:#?}"
        );
    }

    #[test]
    fn closed_mappings_required_keys_and_either_name_the_key_path() {
        let e = errors(&UNATTENDED.replace(
            "          name: \"e*\"",
            "          name: \"e*\"\n          label: x",
        ));
        assert!(
            e.iter().any(|e| e.contains(
                "t:10:11: unknown key `autoinstall.network.ethernets.wired.match.label`"
            )),
            "{e:#?}"
        );
        let e = errors(&UNATTENDED.replace("        size: largest", "        size: 1"));
        assert!(
            e.iter().any(|e| e.contains(
                "`autoinstall.storage.layout.match.size` must be one of largest, smallest"
            )),
            "{e:#?}"
        );
        // A list of match specs: the item's path.
        let e = errors(&UNATTENDED.replace("        size: largest", "        - ssd: maybe"));
        assert!(
            e.iter()
                .any(|e| e
                    .contains("`autoinstall.storage.layout.match[0].ssd` must be true or false")),
            "{e:#?}"
        );
        let e = errors(&format!(
            "{UNATTENDED}  kernel:\n    package: linux-image-generic\n    flavor: hwe\n"
        ));
        assert!(
            e.iter()
                .any(|e| e.contains("`autoinstall.kernel` holds more than one")),
            "{e:#?}"
        );
        assert!(errors(&format!("{UNATTENDED}  kernel:\n    flavor: hwe\n")).is_empty());
        let e = errors(&UNATTENDED.replace("      name: direct\n", ""));
        assert!(
            e.iter()
                .any(|e| e.contains("`autoinstall.storage.layout` has no `name`")),
            "{e:#?}"
        );
        let e = errors(&UNATTENDED.replace(
            "ssh_authorized_keys: [\"ssh-ed25519 AAAA k\"]",
            "ssh_authorized_keys: \"ssh-ed25519 AAAA k\"",
        ));
        assert!(
            e.iter().any(|e| e.contains(
                "`autoinstall.user-data.users[0].ssh_authorized_keys` must be a list of strings"
            )),
            "{e:#?}"
        );
    }

    #[test]
    fn distance_and_near_misses() {
        assert_eq!(distance("autoinstal", "autoinstall"), 1);
        assert!(near_autoinstall("autoInstall"));
        assert!(near_autoinstall("auto-install"));
        assert!(near_autoinstall("autoinstal"));
        assert!(!near_autoinstall("packages"));
    }
}
