//! GRUB configuration files of the installer ISO (`boot/grub/grub.cfg`,
//! `boot/grub/loopback.cfg`): a lexer and block parser for GRUB's script
//! syntax (words, quotes, escapes, comments, `;`/newline separators,
//! `{ … }` blocks), and the patch kiln applies:
//!
//! - every `linux`/`linuxefi` command gets the autoinstall arguments before
//!   `---` (or at the end when it has no `---`); `linux16` (memtest) is left alone;
//! - a new default entry, copied from the first entry that boots a kernel,
//!   first looks for the installed system's marker file and boots that disk
//!   if found, else runs the installer;
//! - `set timeout=` and `set default=` are replaced (or added).
//!
//! Edits are byte-range replacements on the original text, so everything the
//! patch does not touch (comments, indentation, other entries) is kept as is.

use anyhow::{bail, Result};

/// A word of a GRUB command: its value after quote/escape removal and its
/// byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(Word),
    /// Newline or `;`.
    Sep,
    Open(usize, usize),
    Close(usize, usize),
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn lex(text: &str) -> Result<Vec<Tok>> {
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let is_space = |c: u8| c == b' ' || c == b'\t' || c == b'\r';
    let ends_word = |c: Option<&u8>| matches!(c, None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';'));
    while i < b.len() {
        let c = b[i];
        if is_space(c) {
            i += 1;
            continue;
        }
        if c == b'\n' || c == b';' {
            toks.push(Tok::Sep);
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'\\' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            continue;
        }
        if (c == b'{' || c == b'}') && ends_word(b.get(i + 1)) {
            toks.push(if c == b'{' {
                Tok::Open(i, i + 1)
            } else {
                Tok::Close(i, i + 1)
            });
            i += 1;
            continue;
        }
        // A word: runs until unquoted whitespace, newline or `;`.
        let start = i;
        let mut out = Vec::new();
        while i < b.len() {
            let c = b[i];
            if is_space(c) || c == b'\n' || c == b';' {
                break;
            }
            match c {
                b'\\' => {
                    match b.get(i + 1) {
                        Some(b'\n') => {}
                        Some(&n) => out.push(n),
                        None => out.push(b'\\'),
                    }
                    i += 2;
                }
                b'\'' => {
                    let Some(close) = b[i + 1..].iter().position(|&x| x == b'\'') else {
                        bail!("line {}: unterminated single quote", line_of(text, i));
                    };
                    out.extend_from_slice(&b[i + 1..i + 1 + close]);
                    i += close + 2;
                }
                b'"' => {
                    let open = i;
                    i += 1;
                    loop {
                        match b.get(i) {
                            None => {
                                bail!("line {}: unterminated double quote", line_of(text, open))
                            }
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b'\\')
                                if matches!(b.get(i + 1), Some(b'"' | b'\\' | b'$' | b'\n')) =>
                            {
                                if b[i + 1] != b'\n' {
                                    out.push(b[i + 1]);
                                }
                                i += 2;
                            }
                            Some(&x) => {
                                out.push(x);
                                i += 1;
                            }
                        }
                    }
                }
                b'$' if b.get(i + 1) == Some(&b'{') => {
                    let Some(close) = b[i..].iter().position(|&x| x == b'}') else {
                        bail!("line {}: unterminated ${{…}}", line_of(text, i));
                    };
                    out.extend_from_slice(&b[i..i + close + 1]);
                    i += close + 1;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        let end = i.min(b.len());
        toks.push(Tok::Word(Word {
            text: String::from_utf8_lossy(&out).into_owned(),
            start,
            end,
        }));
    }
    Ok(toks)
}

/// One command: its words, block depth and the entry it belongs to.
#[derive(Debug, Clone)]
pub struct Command {
    pub words: Vec<Word>,
    /// Number of enclosing `{ }` blocks (menuentry, submenu, function).
    pub depth: usize,
    /// Index into [`Config::entries`] of the innermost enclosing entry.
    pub entry: Option<usize>,
}

impl Command {
    pub fn name(&self) -> &str {
        &self.words[0].text
    }
    pub fn start(&self) -> usize {
        self.words[0].start
    }
    pub fn end(&self) -> usize {
        self.words.last().expect("commands have words").end
    }
}

/// A `menuentry`/`submenu` (or any other `{ }` block such as `function`).
#[derive(Debug, Clone)]
pub struct Entry {
    /// `menuentry`, `submenu`, `function`, …
    pub kind: String,
    /// The first argument (the title of a menu entry).
    pub title: String,
    /// Value of `--id`, if given.
    pub id: Option<String>,
    /// Index of the command that opens the block.
    pub head: usize,
    pub depth: usize,
    /// Byte range of `{` and of `}`.
    pub open: (usize, usize),
    pub close: (usize, usize),
}

/// A parsed configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub commands: Vec<Command>,
    pub entries: Vec<Entry>,
}

/// Parse a GRUB configuration file; errors name the line.
pub fn parse(text: &str) -> Result<Config> {
    let toks = lex(text)?;
    let mut commands: Vec<Command> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut cur: Vec<Word> = Vec::new();
    let flush = |cur: &mut Vec<Word>, commands: &mut Vec<Command>, stack: &[usize]| {
        if !cur.is_empty() {
            commands.push(Command {
                words: std::mem::take(cur),
                depth: stack.len(),
                entry: stack.last().copied(),
            });
        }
    };
    for t in toks {
        match t {
            Tok::Word(w) => cur.push(w),
            Tok::Sep => flush(&mut cur, &mut commands, &stack),
            Tok::Open(s, e) => {
                if cur.is_empty() {
                    bail!(
                        "line {}: `{{` without a command before it",
                        line_of(text, s)
                    );
                }
                flush(&mut cur, &mut commands, &stack);
                let head = commands.len() - 1;
                let h = &commands[head];
                let kind = h.name().to_string();
                let title = h.words.get(1).map(|w| w.text.clone()).unwrap_or_default();
                let id = h
                    .words
                    .iter()
                    .position(|w| w.text == "--id")
                    .and_then(|i| h.words.get(i + 1))
                    .map(|w| w.text.clone())
                    .or_else(|| {
                        h.words
                            .iter()
                            .find_map(|w| w.text.strip_prefix("--id=").map(str::to_string))
                    });
                entries.push(Entry {
                    kind,
                    title,
                    id,
                    head,
                    depth: stack.len(),
                    open: (s, e),
                    close: (0, 0),
                });
                stack.push(entries.len() - 1);
            }
            Tok::Close(s, e) => {
                flush(&mut cur, &mut commands, &stack);
                let Some(i) = stack.pop() else {
                    bail!("line {}: `}}` without a matching `{{`", line_of(text, s));
                };
                entries[i].close = (s, e);
            }
        }
    }
    flush(&mut cur, &mut commands, &stack);
    if let Some(&i) = stack.last() {
        bail!(
            "line {}: `{} {}` opens a block that is never closed with `}}`",
            line_of(text, entries[i].open.0),
            entries[i].kind,
            entries[i].title
        );
    }
    Ok(Config { commands, entries })
}

/// Commands that load a Linux kernel and take its command line.
pub fn is_linux(cmd: &str) -> bool {
    cmd == "linux" || cmd == "linuxefi"
}

impl Config {
    /// Indices of `linux`/`linuxefi` commands.
    pub fn linux_commands(&self) -> Vec<usize> {
        (0..self.commands.len())
            .filter(|&i| is_linux(self.commands[i].name()))
            .collect()
    }
    /// Top-level `set NAME=…` commands: (command index, word index of `NAME=…`).
    fn top_level_set(&self, name: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (i, c) in self.commands.iter().enumerate() {
            if c.depth == 0 && c.name() == "set" {
                for (j, w) in c.words.iter().enumerate().skip(1) {
                    if w.text.split_once('=').map(|(k, _)| k) == Some(name) {
                        v.push((i, j));
                    }
                }
            }
        }
        v
    }
}

/// What kiln adds to a GRUB configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Patch {
    /// Kernel arguments as GRUB words (escaped), e.g. `ds=nocloud\;s=/cdrom/nocloud/`.
    pub args: Vec<String>,
    /// Title of the new default entry.
    pub title: String,
    /// `--id` of the new entry, also used for `set default=`.
    pub id: String,
    /// Absolute path of the installed-system marker file (on the installed disk).
    pub marker: String,
    /// Menu timeout in seconds.
    pub timeout: u32,
}

/// Quote a string as one GRUB word (single quotes; `'` as `'\''`).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The value of a GRUB word after unquoting.
fn unquote(word: &str) -> Result<String> {
    match lex(word)?.as_slice() {
        [Tok::Word(w)] => Ok(w.text.clone()),
        _ => bail!("`{word}` is not a single GRUB word"),
    }
}

fn apply(text: &str, mut edits: Vec<(usize, usize, String)>) -> String {
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = String::with_capacity(text.len() + 1024);
    let mut at = 0;
    for (s, e, r) in edits {
        out.push_str(&text[at..s]);
        out.push_str(&r);
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

/// Start of the line holding byte `pos`.
fn line_start(text: &str, pos: usize) -> usize {
    text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0)
}

/// Patch one configuration file. `file` names it in errors.
pub fn patch(text: &str, p: &Patch, file: &str) -> Result<String> {
    let cfg = parse(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let linux = cfg.linux_commands();
    if linux.is_empty() {
        bail!(
            "{file}: no `linux` command found, so there is no kernel command line to add the \
             autoinstall arguments to (is this an Ubuntu live-server ISO?)"
        );
    }
    if let Some(e) = cfg
        .entries
        .iter()
        .find(|e| e.id.as_deref() == Some(p.id.as_str()))
    {
        bail!(
            "{file}: already has kiln's entry `{}` (--id {}): remaster the original Ubuntu ISO, \
             not one kiln built",
            e.title,
            p.id
        );
    }
    let wanted: Vec<(String, String)> = p
        .args
        .iter()
        .map(|a| Ok((a.clone(), unquote(a)?)))
        .collect::<Result<_>>()?;
    let mut edits = Vec::new();
    // 1. Kernel arguments on every linux line, before `---`.
    for &i in &linux {
        let c = &cfg.commands[i];
        let args = &c.words[2.min(c.words.len())..];
        let mut add = Vec::new();
        for (raw, val) in &wanted {
            if args.iter().any(|w| &w.text == val) {
                continue;
            }
            if let Some((key, _)) = val.split_once('=') {
                if let Some(w) = args
                    .iter()
                    .find(|w| w.text.split_once('=').map(|x| x.0) == Some(key))
                {
                    bail!(
                        "{file}:{}: the kernel command line already sets `{}`; kiln would set `{val}`",
                        line_of(text, w.start),
                        w.text
                    );
                }
            }
            add.push(raw.as_str());
        }
        if add.is_empty() {
            continue;
        }
        let add = add.join(" ");
        match args.iter().find(|w| w.text == "---") {
            Some(sep) => edits.push((sep.start, sep.start, format!("{add} "))),
            None => edits.push((c.end(), c.end(), format!(" {add}"))),
        }
    }
    // 2. Timeout and default.
    let mut head = String::new();
    for (name, value) in [
        ("timeout", p.timeout.to_string()),
        ("default", p.id.clone()),
    ] {
        let sets = cfg.top_level_set(name);
        if sets.is_empty() {
            head.push_str(&format!("set {name}={value}\n"));
        }
        for (c, w) in sets {
            let w = &cfg.commands[c].words[w];
            edits.push((w.start, w.end, format!("{name}={value}")));
        }
    }
    if !head.is_empty() {
        // Pushed before the entry: at the same offset, edits keep their order.
        edits.push((
            0,
            0,
            format!("# kiln: menu timeout and default entry\n{head}"),
        ));
    }
    // 3. The new default entry, built from the first entry that boots a
    //    kernel (after step 1, so it carries the arguments too).
    let Some(template) = linux.iter().find_map(|&i| cfg.commands[i].entry) else {
        bail!("{file}: the `linux` commands are not inside any menuentry");
    };
    let tpl = &cfg.entries[template];
    let body_edits: Vec<_> = edits
        .iter()
        .filter(|e| e.0 >= tpl.open.1 && e.1 <= tpl.close.0)
        .map(|(s, e, r)| (s - tpl.open.1, e - tpl.open.1, r.clone()))
        .collect();
    let body = apply(&text[tpl.open.1..tpl.close.0], body_edits);
    let body = body.trim_matches('\n');
    let indent = body
        .lines()
        .next()
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .unwrap_or("\t");
    let indent = if indent.is_empty() { "\t" } else { indent };
    let entry = format!(
        "menuentry {title} --id {id} {{\n\
         {indent}# kiln: boot the installed system if this machine already has it\n\
         {indent}if search --no-floppy --file --set=installed {marker}; then\n\
         {indent}{indent}set root=$installed\n\
         {indent}{indent}configfile ($installed)/boot/grub/grub.cfg\n\
         {indent}fi\n\
         {body}\n}}\n",
        title = quote(&p.title),
        id = quote(&p.id),
        marker = quote(&p.marker),
    );
    // Before the first top-level entry, else at the end.
    let at = cfg
        .entries
        .iter()
        .find(|e| e.depth == 0 && (e.kind == "menuentry" || e.kind == "submenu"))
        .map(|e| line_start(text, cfg.commands[e.head].start()))
        .unwrap_or(text.len());
    let mut insert = entry;
    if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
        insert.insert(0, '\n');
    }
    edits.push((at, at, insert));
    let out = apply(text, edits);
    // The result must parse and boot the installer from every linux line.
    let check =
        parse(&out).map_err(|e| anyhow::anyhow!("{file}: patched text does not parse: {e}"))?;
    for i in check.linux_commands() {
        let words: Vec<&str> = check.commands[i]
            .words
            .iter()
            .map(|w| w.text.as_str())
            .collect();
        for (_, v) in &wanted {
            anyhow::ensure!(
                words.contains(&v.as_str()),
                "{file}: internal error: `{v}` missing from a linux line"
            );
        }
    }
    Ok(out)
}

/// A unified diff of two texts (whole-file hunk context of 3 lines), for `--dry-run`.
pub fn diff(old: &str, new: &str, name: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table (the files are small).
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, line): ' ', '-', '+'
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    if ops.iter().all(|o| o.0 == ' ') {
        return out;
    }
    const CTX: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CTX);
        let mut end = changed[k] + CTX + 1;
        while k + 1 < changed.len() && changed[k + 1] <= end + CTX {
            k += 1;
            end = changed[k] + CTX + 1;
        }
        let end = end.min(ops.len());
        let old_start = ops[..start].iter().filter(|o| o.0 != '+').count();
        let new_start = ops[..start].iter().filter(|o| o.0 != '-').count();
        let old_len = ops[start..end].iter().filter(|o| o.0 != '+').count();
        let new_len = ops[start..end].iter().filter(|o| o.0 != '-').count();
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            old_start + 1,
            new_start + 1
        ));
        for (t, l) in &ops[start..end] {
            out.push(*t);
            out.push_str(l);
            out.push('\n');
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ubuntu 24.04 live-server `boot/grub/grub.cfg` (shape as shipped).
    const NOBLE: &str = r#"set timeout=30

loadfont unicode

set menu_color_normal=white/black
set menu_color_highlight=black/light-gray

menuentry "Try or Install Ubuntu Server" {
	set gfxpayload=keep
	linux	/casper/vmlinuz  ---
	initrd	/casper/initrd
}
menuentry "Ubuntu Server with the HWE kernel" {
	set gfxpayload=keep
	linux	/casper/hwe-vmlinuz  ---
	initrd	/casper/hwe-initrd
}
grub_platform
if [ "$grub_platform" = "efi" ]; then
menuentry 'Boot from next volume' {
	exit 1
}
menuentry 'UEFI Firmware Settings' {
	fwsetup
}
else
menuentry 'Test memory' {
	linux16 /boot/memtest86+x64.bin
}
fi
"#;

    const LOOPBACK: &str = r#"menuentry "Try or Install Ubuntu Server" {
	set gfxpayload=keep
	linux	/casper/vmlinuz  iso-scan/filename=${iso_path} ---
	initrd	/casper/initrd
}
"#;

    const ARGS: &str = r"autoinstall ds=nocloud\;s=/cdrom/nocloud/";

    fn patch_spec() -> Patch {
        Patch {
            args: vec![
                "autoinstall".into(),
                r"ds=nocloud\;s=/cdrom/nocloud/".into(),
            ],
            title: "Install demo (it's zero-touch)".into(),
            id: "kiln-demo".into(),
            marker: "/etc/demo/installed".into(),
            timeout: 5,
        }
    }

    #[test]
    fn lexes_quotes_escapes_and_braces() {
        let c =
            parse("menuentry 'a b' --class x {\n linux /v a\\;b \"c d\" ${x}y # c\n}\n").unwrap();
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].title, "a b");
        let l = &c.commands[c.linux_commands()[0]];
        let w: Vec<_> = l.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(w, ["linux", "/v", "a;b", "c d", "${x}y"]);
        assert_eq!(l.entry, Some(0));
        assert_eq!(l.depth, 1);
    }

    #[test]
    fn parses_ubuntu_noble_config() {
        let c = parse(NOBLE).unwrap();
        let titles: Vec<_> = c.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Try or Install Ubuntu Server",
                "Ubuntu Server with the HWE kernel",
                "Boot from next volume",
                "UEFI Firmware Settings",
                "Test memory"
            ]
        );
        assert_eq!(
            c.linux_commands().len(),
            2,
            "linux16 is not a linux command line to patch"
        );
    }

    #[test]
    fn patches_every_linux_line_with_escaped_args_before_separator() {
        let out = patch(NOBLE, &patch_spec(), "grub.cfg").unwrap();
        let expect = format!("linux\t/casper/vmlinuz  {ARGS} ---");
        // Two original entries plus the new default one.
        assert_eq!(out.matches(&expect).count(), 2, "{out}");
        assert_eq!(
            out.matches(&format!("linux\t/casper/hwe-vmlinuz  {ARGS} ---"))
                .count(),
            1
        );
        assert!(
            out.contains("linux16 /boot/memtest86+x64.bin\n"),
            "memtest untouched"
        );
        assert!(
            out.contains("\nset timeout=5\n") && !out.contains("timeout=30"),
            "{out}"
        );
        assert!(out.contains("\nset default=kiln-demo\n"), "{out}");
        // The kernel sees `;` (not a cut-off command line).
        let c = parse(&out).unwrap();
        for i in c.linux_commands() {
            let ws: Vec<_> = c.commands[i].words.iter().map(|w| w.text.clone()).collect();
            assert!(
                ws.contains(&"ds=nocloud;s=/cdrom/nocloud/".to_string()),
                "{ws:?}"
            );
            assert_eq!(ws.last().unwrap(), "---");
        }
    }

    #[test]
    fn new_default_entry_checks_marker_then_installs() {
        let out = patch(NOBLE, &patch_spec(), "grub.cfg").unwrap();
        let c = parse(&out).unwrap();
        let e = &c.entries[0];
        assert_eq!(e.title, "Install demo (it's zero-touch)");
        assert_eq!(e.id.as_deref(), Some("kiln-demo"));
        assert_eq!(c.entries[1].title, "Try or Install Ubuntu Server");
        let body = &out[e.open.1..e.close.0];
        let search = body
            .find("if search --no-floppy --file --set=installed '/etc/demo/installed'; then")
            .unwrap();
        let config = body
            .find("configfile ($installed)/boot/grub/grub.cfg")
            .unwrap();
        let linux = body.find(&format!("/casper/vmlinuz  {ARGS} ---")).unwrap();
        assert!(search < config && config < linux, "{body}");
        assert!(body.contains("initrd\t/casper/initrd"));
        // The new entry is at top level, ahead of the original first entry.
        assert_eq!(e.depth, 0);
    }

    #[test]
    fn loopback_keeps_iso_scan_argument() {
        let out = patch(LOOPBACK, &patch_spec(), "loopback.cfg").unwrap();
        let line = format!("linux\t/casper/vmlinuz  iso-scan/filename=${{iso_path}} {ARGS} ---");
        assert_eq!(out.matches(&line).count(), 2, "{out}");
        assert!(out.starts_with(
            "# kiln: menu timeout and default entry\nset timeout=5\nset default=kiln-demo\n"
        ));
    }

    #[test]
    fn appends_when_there_is_no_separator() {
        let t = "menuentry x {\n linux /vmlinuz quiet\n}\n";
        let out = patch(t, &patch_spec(), "grub.cfg").unwrap();
        assert!(
            out.contains(&format!(" linux /vmlinuz quiet {ARGS}\n}}")),
            "{out}"
        );
    }

    #[test]
    fn keeps_arguments_already_present() {
        let t = "set timeout=1\nmenuentry x {\n linux /vmlinuz autoinstall ---\n}\n";
        let out = patch(t, &patch_spec(), "grub.cfg").unwrap();
        assert_eq!(
            out.matches("autoinstall").count(),
            2,
            "once per linux line: {out}"
        );
        assert!(out.contains("linux /vmlinuz autoinstall ds=nocloud\\;s=/cdrom/nocloud/ ---"));
    }

    #[test]
    fn conflicting_datasource_is_an_error() {
        let t = "menuentry x {\n linux /vmlinuz ds=nocloud-net\\;s=http://x/ ---\n}\n";
        let e = patch(t, &patch_spec(), "grub.cfg").unwrap_err().to_string();
        assert!(
            e.contains("grub.cfg:2") && e.contains("already sets"),
            "{e}"
        );
    }

    #[test]
    fn no_linux_line_is_an_error() {
        let e = patch(
            "set timeout=3\nmenuentry x {\n chainloader +1\n}\n",
            &patch_spec(),
            "grub.cfg",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no `linux` command"), "{e}");
    }

    #[test]
    fn unbalanced_blocks_are_errors() {
        let e = parse("menuentry x {\n linux /v\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("never closed"), "{e}");
        let e = parse("linux /v\n}\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("menuentry 'x {\n").unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn refuses_to_patch_twice() {
        let once = patch(NOBLE, &patch_spec(), "grub.cfg").unwrap();
        let e = patch(&once, &patch_spec(), "grub.cfg")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already has kiln's entry"), "{e}");
    }

    #[test]
    fn diff_shows_changed_lines() {
        let out = patch(LOOPBACK, &patch_spec(), "loopback.cfg").unwrap();
        let d = diff(LOOPBACK, &out, "boot/grub/loopback.cfg");
        assert!(
            d.starts_with("--- a/boot/grub/loopback.cfg\n+++ b/boot/grub/loopback.cfg\n@@ -1,"),
            "{d}"
        );
        assert!(d.contains("+set timeout=5\n"));
        assert!(
            d.contains("-\tlinux\t/casper/vmlinuz  iso-scan/filename=${iso_path} ---\n"),
            "{d}"
        );
        assert!(diff("a\n", "a\n", "x").lines().count() == 2);
    }
}
