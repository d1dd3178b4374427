//! YAML for seeds, read the way cloud-init and subiquity read it.
//!
//! Reading: libyaml's event parser (the one `yaml_serde` is built on) gives
//! every node with its position and scalar style, so errors point at a line
//! and column and templates can be extended by inserting text at exact
//! places. Plain scalars are resolved with the YAML **1.1** rules of PyYAML's
//! `SafeLoader` (what cloud-init uses): `on`/`yes` are booleans, `0644` is an
//! octal number.
//!
//! Writing: [`Out`] emits block YAML whose strings are always double-quoted,
//! so no value can change type between YAML 1.1 and 1.2 readers.

use std::ffi::CStr;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

/// A position in the text: byte index, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub index: usize,
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_mark(m: sys::yaml_mark_t) -> Pos {
        Pos {
            index: m.index as usize,
            line: m.line as usize + 1,
            col: m.column as usize + 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Single,
    Double,
    Literal,
    Folded,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar {
        text: String,
        style: Style,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
    },
    Alias,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub start: Pos,
    pub end: Pos,
    pub tag: Option<String>,
    pub kind: Kind,
}

/// A resolved value (YAML 1.1 / PyYAML SafeLoader semantics).
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float,
    Timestamp,
    Str(&'a str),
    Seq(&'a [Node]),
    Map(&'a [(Node, Node)]),
    Alias,
}

/// A YAML syntax error.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub problem: String,
    pub context: Option<String>,
}

const STR_TAG: &str = "tag:yaml.org,2002:str";

/// Parse the first document of `text`. `Ok(None)` for an empty stream.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut p = RawParser::new(text.as_bytes());
    let mut stack: Vec<Partial> = Vec::new();
    let mut root: Option<Node> = None;
    let mut docs = 0;
    loop {
        let ev = p.next()?;
        match ev {
            Ev::StreamStart | Ev::DocumentEnd => {}
            Ev::DocumentStart(pos) => {
                docs += 1;
                if docs > 1 {
                    return Err(SyntaxError {
                        pos,
                        problem:
                            "a second YAML document (`---`) follows; a seed file holds one document"
                                .into(),
                        context: None,
                    });
                }
            }
            Ev::StreamEnd => return Ok(root),
            Ev::Scalar(n) | Ev::Alias(n) => push_node(&mut stack, &mut root, n),
            Ev::SeqStart { start, tag, flow } => stack.push(Partial::Seq {
                start,
                tag,
                flow,
                items: Vec::new(),
            }),
            Ev::MapStart { start, tag, flow } => stack.push(Partial::Map {
                start,
                tag,
                flow,
                entries: Vec::new(),
                key: None,
            }),
            Ev::SeqEnd(end) => match stack.pop() {
                Some(Partial::Seq {
                    start,
                    tag,
                    flow,
                    items,
                }) => {
                    let n = Node {
                        start,
                        end,
                        tag,
                        kind: Kind::Seq { items, flow },
                    };
                    push_node(&mut stack, &mut root, n)
                }
                _ => unreachable!("libyaml pairs sequence events"),
            },
            Ev::MapEnd(end) => match stack.pop() {
                Some(Partial::Map {
                    start,
                    tag,
                    flow,
                    entries,
                    ..
                }) => {
                    let n = Node {
                        start,
                        end,
                        tag,
                        kind: Kind::Map { entries, flow },
                    };
                    push_node(&mut stack, &mut root, n)
                }
                _ => unreachable!("libyaml pairs mapping events"),
            },
        }
    }
}

enum Partial {
    Seq {
        start: Pos,
        tag: Option<String>,
        flow: bool,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        tag: Option<String>,
        flow: bool,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

fn push_node(stack: &mut [Partial], root: &mut Option<Node>, n: Node) {
    match stack.last_mut() {
        None => *root = Some(n),
        Some(Partial::Seq { items, .. }) => items.push(n),
        Some(Partial::Map { entries, key, .. }) => match key.take() {
            None => *key = Some(n),
            Some(k) => entries.push((k, n)),
        },
    }
}

enum Ev {
    StreamStart,
    StreamEnd,
    DocumentStart(Pos),
    DocumentEnd,
    Scalar(Node),
    Alias(Node),
    SeqStart {
        start: Pos,
        tag: Option<String>,
        flow: bool,
    },
    SeqEnd(Pos),
    MapStart {
        start: Pos,
        tag: Option<String>,
        flow: bool,
    },
    MapEnd(Pos),
}

/// Owns a libyaml parser reading from a borrowed buffer.
struct RawParser<'a> {
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    _input: &'a [u8],
}

impl<'a> RawParser<'a> {
    fn new(input: &'a [u8]) -> RawParser<'a> {
        let mut sys = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        // SAFETY: the parser lives in a Box (it never moves) and is
        // initialized before use; `input` outlives the parser.
        unsafe {
            let p = sys.as_mut_ptr();
            if sys::yaml_parser_initialize(p).fail {
                panic!("libyaml: out of memory");
            }
            sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as _);
        }
        RawParser { sys, _input: input }
    }

    fn next(&mut self) -> Result<Ev, SyntaxError> {
        let mut ev = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser is initialized; the event is deleted after it
        // has been converted into owned data.
        unsafe {
            let p = self.sys.as_mut_ptr();
            if (&*p).error != sys::YAML_NO_ERROR || sys::yaml_parser_parse(p, ev.as_mut_ptr()).fail
            {
                return Err(error(p));
            }
            let e = ev.as_mut_ptr();
            let out = convert(&*e);
            sys::yaml_event_delete(e);
            Ok(out)
        }
    }
}

impl Drop for RawParser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`.
        unsafe { sys::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

unsafe fn cstr(p: *const u8) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: libyaml hands out NUL-terminated strings.
        Some(
            unsafe { CStr::from_ptr(p as *const std::ffi::c_char) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

unsafe fn error(p: *const sys::yaml_parser_t) -> SyntaxError {
    // SAFETY: the caller passes an initialized parser in an error state.
    unsafe {
        let problem =
            cstr((&*p).problem as *const u8).unwrap_or_else(|| "the YAML parser failed".into());
        let context = cstr((&*p).context as *const u8);
        SyntaxError {
            pos: Pos::from_mark((&*p).problem_mark),
            problem,
            context,
        }
    }
}

unsafe fn convert(e: &sys::yaml_event_t) -> Ev {
    let start = Pos::from_mark(e.start_mark);
    let end = Pos::from_mark(e.end_mark);
    // SAFETY: union fields are read according to the event type.
    unsafe {
        match e.type_ {
            sys::YAML_STREAM_START_EVENT => Ev::StreamStart,
            sys::YAML_STREAM_END_EVENT => Ev::StreamEnd,
            sys::YAML_DOCUMENT_START_EVENT => Ev::DocumentStart(start),
            sys::YAML_DOCUMENT_END_EVENT => Ev::DocumentEnd,
            sys::YAML_ALIAS_EVENT => Ev::Alias(Node {
                start,
                end,
                tag: None,
                kind: Kind::Alias,
            }),
            sys::YAML_SCALAR_EVENT => {
                let s = e.data.scalar;
                let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                let style = match s.style {
                    sys::YAML_SINGLE_QUOTED_SCALAR_STYLE => Style::Single,
                    sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE => Style::Double,
                    sys::YAML_LITERAL_SCALAR_STYLE => Style::Literal,
                    sys::YAML_FOLDED_SCALAR_STYLE => Style::Folded,
                    _ => Style::Plain,
                };
                Ev::Scalar(Node {
                    start,
                    end,
                    tag: cstr(s.tag),
                    kind: Kind::Scalar {
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        style,
                    },
                })
            }
            sys::YAML_SEQUENCE_START_EVENT => Ev::SeqStart {
                start,
                tag: cstr(e.data.sequence_start.tag),
                flow: e.data.sequence_start.style == sys::YAML_FLOW_SEQUENCE_STYLE,
            },
            sys::YAML_SEQUENCE_END_EVENT => Ev::SeqEnd(end),
            sys::YAML_MAPPING_START_EVENT => Ev::MapStart {
                start,
                tag: cstr(e.data.mapping_start.tag),
                flow: e.data.mapping_start.style == sys::YAML_FLOW_MAPPING_STYLE,
            },
            sys::YAML_MAPPING_END_EVENT => Ev::MapEnd(end),
            _ => Ev::DocumentEnd,
        }
    }
}

impl Node {
    /// The value as PyYAML's SafeLoader (YAML 1.1) resolves it.
    pub fn val(&self) -> Val<'_> {
        match &self.kind {
            Kind::Alias => Val::Alias,
            Kind::Seq { items, .. } => Val::Seq(items),
            Kind::Map { entries, .. } => Val::Map(entries),
            Kind::Scalar { text, style } => {
                if *style != Style::Plain
                    || self.tag.as_deref() == Some(STR_TAG)
                    || self.tag.as_deref() == Some("!")
                {
                    return Val::Str(text);
                }
                resolve_plain(text)
            }
        }
    }

    /// The scalar text (any style), if this is a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn style(&self) -> Option<Style> {
        match &self.kind {
            Kind::Scalar { style, .. } => Some(*style),
            _ => None,
        }
    }

    /// The mapping entry whose key is `key` (the last one, as PyYAML keeps).
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map { entries, .. } => entries
                .iter()
                .rev()
                .find(|(k, _)| k.text() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn is_flow(&self) -> bool {
        matches!(
            self.kind,
            Kind::Seq { flow: true, .. } | Kind::Map { flow: true, .. }
        )
    }

    /// "a string", "a list", … for messages.
    pub fn type_name(&self) -> &'static str {
        match self.val() {
            Val::Null => "empty (null)",
            Val::Bool(_) => "a boolean",
            Val::Int(_) => "an integer",
            Val::Float => "a number",
            Val::Timestamp => "a date",
            Val::Str(_) => "a string",
            Val::Seq(_) => "a list",
            Val::Map(_) => "a mapping",
            Val::Alias => "an alias",
        }
    }

    /// JSON with YAML 1.1 types (dates and floats as their text): what
    /// cloud-init would load, for comparisons and tests.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self.val() {
            Val::Null => J::Null,
            Val::Bool(b) => J::Bool(b),
            Val::Int(i) => J::from(i),
            Val::Float | Val::Timestamp | Val::Alias => {
                J::String(self.text().unwrap_or("*alias").to_string())
            }
            Val::Str(s) => J::String(s.to_string()),
            Val::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Val::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k.val() {
                        Val::Str(s) => s.to_string(),
                        _ => k.text().unwrap_or("?").to_string(),
                    };
                    m.insert(key, v.to_json());
                }
                J::Object(m)
            }
        }
    }
}

/// PyYAML's implicit resolvers (yaml/resolver.py), for a plain scalar.
pub fn resolve_plain(s: &str) -> Val<'_> {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Val::Null;
    }
    if matches!(
        s,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
    ) {
        return Val::Bool(true);
    }
    if matches!(
        s,
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF"
    ) {
        return Val::Bool(false);
    }
    if let Some(i) = yaml11_int(s) {
        return Val::Int(i);
    }
    if is_yaml11_float(s) {
        return Val::Float;
    }
    if is_timestamp(s) {
        return Val::Timestamp;
    }
    Val::Str(s)
}

fn yaml11_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let digits = |t: &str, radix: u32| -> Option<i64> {
        if t.is_empty() || !t.chars().all(|c| c == '_' || c.is_digit(radix)) {
            return None;
        }
        let clean: String = t.chars().filter(|&c| c != '_').collect();
        if clean.is_empty() {
            return Some(0);
        }
        i64::from_str_radix(&clean, radix).ok()
    };
    let v = if let Some(b) = body.strip_prefix("0b") {
        digits(b, 2)?
    } else if let Some(x) = body.strip_prefix("0x") {
        digits(x, 16)?
    } else if body == "0" {
        0
    } else if let Some(o) = body.strip_prefix('0') {
        digits(o, 8)?
    } else if body.contains(':') {
        // Sexagesimal: 1:30 == 90.
        let mut parts = body.split(':');
        let first = parts.next()?;
        if !first.starts_with(|c: char| ('1'..='9').contains(&c)) {
            return None;
        }
        let mut v = digits(first, 10)?;
        for p in parts {
            if p.is_empty()
                || p.len() > 2
                || !p.bytes().all(|b| b.is_ascii_digit())
                || p.as_bytes()[0] > b'5' && p.len() == 2
            {
                return None;
            }
            v = v * 60 + p.parse::<i64>().ok()?;
        }
        v
    } else if body.starts_with(|c: char| ('1'..='9').contains(&c)) {
        digits(body, 10)?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn is_yaml11_float(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(body, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    // [0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?  or  \.[0-9][0-9_]*(...)?
    let (mant, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if let Some(e) = exp {
        let ok = e.len() > 1
            && (e.starts_with('-') || e.starts_with('+'))
            && e[1..].bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return false;
        }
    }
    let Some((int, frac)) = mant.split_once('.') else {
        return false;
    };
    let digits_ = |t: &str| t.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if int.is_empty() {
        !frac.is_empty() && frac.as_bytes()[0].is_ascii_digit() && digits_(frac)
    } else {
        int.as_bytes()[0].is_ascii_digit() && digits_(int) && digits_(frac) && !frac.contains('.')
    }
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && s[5..]
            .split(['-', 'T', 't', ' '])
            .take(2)
            .all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// A value kiln writes. Strings are always double-quoted.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Str(String),
    /// Multi-line text, written as a literal block (`|`) when that keeps it exact.
    Text(String),
    Bool(bool),
    Int(i64),
    Seq(Vec<Out>),
    Map(Vec<(String, Out)>),
}

impl Out {
    pub fn s(v: impl Into<String>) -> Out {
        Out::Str(v.into())
    }
    pub fn strs<I: IntoIterator<Item = S>, S: Into<String>>(v: I) -> Out {
        Out::Seq(v.into_iter().map(|s| Out::Str(s.into())).collect())
    }
    pub fn map(entries: Vec<(&str, Out)>) -> Out {
        Out::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
}

/// `"…"`: a JSON string is a valid YAML double-quoted scalar.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn literal_ok(s: &str) -> bool {
    s.ends_with('\n')
        && !s.ends_with("\n\n")
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || (!c.is_control() && c != '\u{feff}'))
}

/// Write `entries` as a block mapping indented by `indent` spaces.
pub fn emit_map(entries: &[(String, Out)], indent: usize, out: &mut String) {
    for (k, v) in entries {
        debug_assert!(k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        out.push_str(&" ".repeat(indent));
        out.push_str(k);
        out.push(':');
        emit_value(v, indent, out);
    }
}

/// Write one sequence item (`- …`) at `indent`.
pub fn emit_item(v: &Out, indent: usize, out: &mut String) {
    out.push_str(&" ".repeat(indent));
    out.push('-');
    match v {
        Out::Map(entries) if !entries.is_empty() => {
            // First entry on the dash line, the rest aligned under it.
            let mut first = String::new();
            emit_map(&entries[..1], indent + 2, &mut first);
            out.push(' ');
            out.push_str(first.trim_start_matches(' '));
            emit_map(&entries[1..], indent + 2, out);
        }
        Out::Seq(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| matches!(i, Out::Str(_) | Out::Int(_) | Out::Bool(_))) =>
        {
            out.push(' ');
            out.push_str(&flow(items));
            out.push('\n');
        }
        other => {
            emit_value_inline(other, indent, out);
        }
    }
}

fn flow(items: &[Out]) -> String {
    let parts: Vec<String> = items.iter().map(scalar).collect();
    format!("[{}]", parts.join(", "))
}

fn scalar(v: &Out) -> String {
    match v {
        Out::Str(s) | Out::Text(s) => quote(s),
        Out::Bool(b) => b.to_string(),
        Out::Int(i) => i.to_string(),
        Out::Seq(_) | Out::Map(_) => unreachable!("not a scalar"),
    }
}

// After `key:` (value of a mapping entry at `indent`).
fn emit_value(v: &Out, indent: usize, out: &mut String) {
    match v {
        Out::Map(e) if e.is_empty() => out.push_str(" {}\n"),
        Out::Seq(s) if s.is_empty() => out.push_str(" []\n"),
        Out::Map(e) => {
            out.push('\n');
            emit_map(e, indent + 2, out);
        }
        Out::Seq(items) => {
            out.push('\n');
            for i in items {
                emit_item(i, indent + 2, out);
            }
        }
        Out::Text(t) if literal_ok(t) => {
            out.push_str(" |\n");
            for line in t.lines() {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

// After `-` (a sequence item that is not a non-empty map).
fn emit_value_inline(v: &Out, indent: usize, out: &mut String) {
    match v {
        Out::Seq(items) if !items.is_empty() => {
            out.push('\n');
            for i in items {
                emit_item(i, indent + 2, out);
            }
        }
        _ => emit_value(v, indent, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_resolution_matches_pyyaml() {
        assert!(matches!(resolve_plain("on"), Val::Bool(true)));
        assert!(matches!(resolve_plain("No"), Val::Bool(false)));
        assert!(matches!(resolve_plain("y"), Val::Str("y")));
        assert!(matches!(resolve_plain("0644"), Val::Int(420)));
        assert!(matches!(resolve_plain("0x1f"), Val::Int(31)));
        assert!(matches!(resolve_plain("1_000"), Val::Int(1000)));
        assert!(matches!(resolve_plain("1:30"), Val::Int(90)));
        assert!(matches!(resolve_plain("08"), Val::Str("08")));
        assert!(matches!(resolve_plain("1.5"), Val::Float));
        assert!(matches!(resolve_plain("1.2.3"), Val::Str(_)));
        assert!(matches!(resolve_plain("2001-12-14"), Val::Timestamp));
        assert!(matches!(resolve_plain("~"), Val::Null));
        assert!(matches!(resolve_plain("en_US.UTF-8"), Val::Str(_)));
    }

    #[test]
    fn positions_and_styles() {
        let t = "a: 1\nb:\n  - 'x'\n  - y: on\n";
        let n = parse(t).unwrap().unwrap();
        let (k, v) = n.entry("b").unwrap();
        assert_eq!((k.start.line, k.start.col), (2, 1));
        let Val::Seq(items) = v.val() else { panic!() };
        assert_eq!(items[0].style(), Some(Style::Single));
        assert_eq!((items[1].start.line, items[1].start.col), (4, 5));
        assert!(matches!(items[1].get("y").unwrap().val(), Val::Bool(true)));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn emitted_yaml_reads_back_as_written() {
        let v = vec![
            ("mode".to_string(), Out::s("0644")),
            ("flag".to_string(), Out::s("on")),
            ("yes".to_string(), Out::Bool(true)),
            ("n".to_string(), Out::Int(1)),
            (
                "cmds".to_string(),
                Out::Seq(vec![Out::s("echo a: b # c"), Out::strs(["ls", "-l"])]),
            ),
            (
                "files".to_string(),
                Out::Seq(vec![Out::map(vec![
                    ("path", Out::s("/x")),
                    ("content", Out::Text("a\n  b\n\nc\n".into())),
                ])]),
            ),
            ("empty".to_string(), Out::Seq(vec![])),
            ("odd".to_string(), Out::Text(" leading space\n".into())),
        ];
        let mut s = String::new();
        emit_map(&v, 0, &mut s);
        let n = parse(&s).unwrap().unwrap();
        let j = n.to_json();
        assert_eq!(j["mode"], "0644");
        assert_eq!(j["flag"], "on");
        assert_eq!(j["yes"], true);
        assert_eq!(j["cmds"][0], "echo a: b # c");
        assert_eq!(j["cmds"][1][1], "-l");
        assert_eq!(j["files"][0]["content"], "a\n  b\n\nc\n");
        assert_eq!(j["odd"], " leading space\n");
        assert_eq!(j["empty"], serde_json::json!([]));
    }
}
