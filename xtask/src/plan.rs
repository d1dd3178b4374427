//! Plans: a verb resolves the recipe into a list of [`Step`]s before anything
//! runs. Each step declares its inputs and its actions (external commands as
//! data, or in-process [`Op`]s that describe themselves); the step's cache key
//! is the hash of all of that, and its output directory is named by the key.
//! `--dry-run` prints a plan; [`crate::exec`] runs it.

use std::fmt;
use std::sync::Arc;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::tools::Cmd;

/// Placeholder for the step's own output directory inside planned commands.
/// The executor substitutes a temporary directory; printing substitutes the
/// final cache directory.
pub const OUT: &str = "@OUT@";

/// Bump to invalidate every cache entry when the key's own format changes
/// (kiln's code is covered by [`code_fingerprint`]).
const CACHE_FORMAT: u32 = 2;

/// Marks a complete cache entry (written last by the executor); holds the
/// step's inputs.
pub const STAMP: &str = ".kiln-step.json";

/// Where the project and the cache live, written as these placeholders in
/// what a key hashes: keys depend on content, never on locations.
pub const ROOT_MARK: &str = "@ROOT@";
pub const CACHE_MARK: &str = "@CACHE@";

/// kiln's own code, as a digest of its sources, manifest and lock file
/// (computed by `xtask/build.rs`). Every step that runs kiln's code keys on it.
/// `KILN_CODE_FINGERPRINT` overrides it: tests use that to stand for a changed
/// kiln.
pub fn code_fingerprint() -> String {
    match std::env::var("KILN_CODE_FINGERPRINT") {
        Ok(v) if !v.is_empty() => v,
        _ => env!("KILN_CODE_FINGERPRINT").to_string(),
    }
}

/// In-process work of a step. `describe` is what the plan prints and what the
/// cache key hashes, so it must name every parameter that changes the output.
pub trait Op: Send + Sync {
    fn describe(&self) -> serde_json::Value;
    /// The external commands the op runs, as data (the `@OUT@` placeholder
    /// stands for the step's output directory; an argument known only while
    /// the op runs is written `<what>`, matching anything). `--dry-run`
    /// prints them, the step's tool list and tool versions come from them,
    /// and the executor refuses a command the op did not declare.
    fn commands(&self) -> Vec<Cmd> {
        Vec::new()
    }
    fn run(&self, cx: &OpCx) -> Result<()>;
}

/// What an [`Op`] gets when it runs.
pub struct OpCx<'a> {
    /// The step's (temporary) output directory; everything it writes goes here.
    pub out: &'a Utf8Path,
    pub step: &'a Step,
}

#[derive(Clone)]
pub enum Action {
    Cmd(Box<Cmd>),
    Op(Arc<dyn Op>),
}

impl Action {
    fn describe(&self) -> serde_json::Value {
        match self {
            Action::Cmd(c) => json!({ "cmd": c }),
            Action::Op(o) => {
                let cmds = o.commands();
                if cmds.is_empty() {
                    json!({ "op": o.describe() })
                } else {
                    json!({ "op": o.describe(), "commands": cmds })
                }
            }
        }
    }
    /// The commands this action runs (its own, or an op's declared ones).
    pub fn commands(&self) -> Vec<Cmd> {
        match self {
            Action::Cmd(c) => vec![(**c).clone()],
            Action::Op(o) => o.commands(),
        }
    }
}

/// Something a step's output depends on, recorded with its fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// A file, by content.
    File { path: Utf8PathBuf, sha256: String },
    /// A directory tree, by content (paths, modes, link targets, bytes).
    Tree {
        path: Utf8PathBuf,
        sha256: String,
        files: u64,
    },
    /// A setting.
    Value { name: String, value: String },
    /// An external program and its version.
    Tool { name: String, version: String },
    /// The output of an earlier step.
    Step { name: String, key: String },
    /// kiln's own code ([`code_fingerprint`]), for steps that run it.
    Code { fingerprint: String },
}

impl Input {
    pub fn label(&self) -> String {
        match self {
            Input::File { path, .. } | Input::Tree { path, .. } => path.to_string(),
            Input::Value { name, .. } => name.clone(),
            Input::Tool { name, .. } => format!("tool {name}"),
            Input::Step { name, .. } => format!("step {name}"),
            Input::Code { .. } => "kiln code".into(),
        }
    }
    /// The label with a short fingerprint, for `--dry-run`'s input line.
    pub fn short(&self) -> String {
        let short = |h: &str| h.chars().take(12).collect::<String>();
        match self {
            Input::File { sha256, .. } | Input::Tree { sha256, .. } => {
                format!("{} {}", self.label(), short(sha256))
            }
            Input::Value { name, value } => {
                let v: String = value.chars().take(40).collect();
                format!("{name}={v}")
            }
            Input::Tool { name, version } => format!("tool {name} ({version})"),
            Input::Step { name, key } => format!("step {name} {}", short(key)),
            Input::Code { fingerprint } => format!("kiln code {}", short(fingerprint)),
        }
    }
    pub fn value(name: &str, value: impl fmt::Display) -> Input {
        Input::Value {
            name: name.into(),
            value: value.to_string(),
        }
    }
    pub fn file(path: &Utf8Path) -> Result<Input> {
        Ok(Input::File {
            path: path.to_owned(),
            sha256: crate::digest::file_sha256(path)?,
        })
    }
    /// A large file (a base image), by content, its digest remembered in
    /// `memo` (see [`crate::digest::file_sha256_memo`]).
    pub fn file_memo(path: &Utf8Path, memo: Option<&Utf8Path>) -> Result<Input> {
        Ok(Input::File {
            path: path.to_owned(),
            sha256: crate::digest::file_sha256_memo(path, memo)?,
        })
    }
    pub fn tree(path: &Utf8Path) -> Result<Input> {
        let (sha256, files) = crate::digest::tree_content_digest(path)?;
        Ok(Input::Tree {
            path: path.to_owned(),
            sha256,
            files,
        })
    }
    /// A large tree (a model, an image layout), by content, with each file's
    /// digest remembered in `memo` (see [`crate::digest::file_sha256_memo`]).
    pub fn tree_memo(path: &Utf8Path, memo: Option<&Utf8Path>) -> Result<Input> {
        let (sha256, files, _) = crate::digest::tree_digest_memo(path, memo)?;
        Ok(Input::Tree {
            path: path.to_owned(),
            sha256,
            files,
        })
    }
    pub fn tool(program: &str) -> Input {
        Input::Tool {
            name: program.into(),
            version: crate::doctor::version(program),
        }
    }
    pub fn step(s: &Step) -> Input {
        Input::Step {
            name: s.name.clone(),
            key: s.key.clone(),
        }
    }
}

pub struct Step {
    /// Unique in a plan, e.g. `stage-amd64`; names the cache directory.
    pub name: String,
    pub summary: String,
    pub inputs: Vec<Input>,
    pub actions: Vec<Action>,
    /// Hex sha256 over name, inputs and actions.
    pub key: String,
    /// Final output directory: `<cache>/<name>/<key prefix>`.
    pub out: Utf8PathBuf,
    /// Show a spinner while it runs (long external tools).
    pub long: bool,
    /// Programs its commands run and host files it reads: what the tool
    /// check before any work requires (see [`Plan::needs`]).
    pub needs: Vec<String>,
}

impl Step {
    /// A path inside this step's output.
    pub fn output(&self, rel: &str) -> Utf8PathBuf {
        self.out.join(rel)
    }
    /// Every command the step runs (its own and its ops' declared ones),
    /// with the placeholder resolved to the final directory.
    pub fn commands(&self) -> Vec<Cmd> {
        self.actions
            .iter()
            .flat_map(Action::commands)
            .map(|c| c.substitute(OUT, self.out.as_str()))
            .collect()
    }
    /// The step's inputs as its key hashes them, with the project root and
    /// the cache written as [`ROOT_MARK`] and [`CACHE_MARK`]: what a release
    /// manifest records, naming no location.
    pub fn inputs_relocated(&self, root: &Utf8Path, cache: &Utf8Path) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.inputs).expect("inputs serialize");
        let marks = [
            (cache.to_string(), CACHE_MARK.to_string()),
            (root.to_string(), ROOT_MARK.to_string()),
        ];
        relocate(&mut v, &marks);
        v
    }
    pub fn to_json(&self) -> serde_json::Value {
        let actions: Vec<_> = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Cmd(c) => json!({ "cmd": c.substitute(OUT, self.out.as_str()) }),
                Action::Op(o) => {
                    let cmds: Vec<Cmd> = o
                        .commands()
                        .iter()
                        .map(|c| c.substitute(OUT, self.out.as_str()))
                        .collect();
                    json!({ "op": o.describe(), "commands": cmds })
                }
            })
            .collect();
        json!({
            "name": self.name,
            "summary": self.summary,
            "key": self.key,
            "out": self.out,
            "inputs": self.inputs,
            "needs": self.needs,
            "actions": actions,
        })
    }
}

/// Builds one step; `finish` computes its key and output directory.
pub struct StepBuilder {
    name: String,
    summary: String,
    inputs: Vec<Input>,
    actions: Vec<Action>,
    long: bool,
    host_files: Vec<String>,
}

impl StepBuilder {
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> StepBuilder {
        StepBuilder {
            name: name.into(),
            summary: summary.into(),
            inputs: Vec::new(),
            actions: Vec::new(),
            long: false,
            host_files: Vec::new(),
        }
    }
    /// Something of the build host the step uses beyond its commands'
    /// programs: a file (an absolute path: firmware, a boot loader image),
    /// keyed by content, or a program its tools run in turn, keyed by
    /// version. Either is required before any work.
    pub fn requires(mut self, name: &str) -> StepBuilder {
        let p = Utf8Path::new(name);
        self.inputs.push(if !p.is_absolute() {
            Input::tool(name)
        } else if p.is_file() {
            Input::file(p).unwrap_or_else(|_| Input::value(name, "unreadable"))
        } else {
            Input::value(name, "missing")
        });
        self.host_files.push(name.to_string());
        self
    }
    pub fn input(mut self, i: Input) -> StepBuilder {
        self.inputs.push(i);
        self
    }
    pub fn inputs(mut self, i: impl IntoIterator<Item = Input>) -> StepBuilder {
        self.inputs.extend(i);
        self
    }
    pub fn after(self, s: &Step) -> StepBuilder {
        self.input(Input::step(s))
    }
    pub fn cmd(mut self, c: Cmd) -> StepBuilder {
        self.actions.push(Action::Cmd(Box::new(c)));
        self
    }
    pub fn op(mut self, o: impl Op + 'static) -> StepBuilder {
        self.actions.push(Action::Op(Arc::new(o)));
        self
    }
    pub fn long(mut self) -> StepBuilder {
        self.long = true;
        self
    }
    /// Compute the key and output directory. The step's tools come from its
    /// commands (each keyed by its version); a step with an in-process op
    /// keys on kiln's code. What the key hashes names the project root and
    /// the cache only as [`ROOT_MARK`] and [`CACHE_MARK`], and a file input
    /// by its digest, so the same inputs give the same key wherever the
    /// checkout, the cache or a base image lives.
    pub fn finish(mut self, root: &Utf8Path, cache: &Utf8Path) -> Step {
        let mut programs: Vec<String> = self
            .actions
            .iter()
            .flat_map(Action::commands)
            .map(|c| c.program)
            .collect();
        programs.sort();
        programs.dedup();
        for p in &programs {
            let have = |i: &Input| matches!(i, Input::Tool { name, .. } if name == p);
            if !self.inputs.iter().any(have) {
                self.inputs.push(Input::tool(p));
            }
        }
        if self.actions.iter().any(|a| matches!(a, Action::Op(_))) {
            self.inputs.push(Input::Code {
                fingerprint: code_fingerprint(),
            });
        }
        let mut doc = json!({
            "format": CACHE_FORMAT,
            "name": self.name,
            "inputs": self.inputs,
            "actions": self.actions.iter().map(Action::describe).collect::<Vec<_>>(),
        });
        let mut marks: Vec<(String, String)> = self
            .inputs
            .iter()
            .filter_map(|i| match i {
                Input::File { path, sha256 } => {
                    Some((path.to_string(), format!("@file:{sha256}@")))
                }
                _ => None,
            })
            .collect();
        marks.push((cache.to_string(), CACHE_MARK.into()));
        marks.push((root.to_string(), ROOT_MARK.into()));
        relocate(&mut doc, &marks);
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&doc).expect("plan serializes"));
        let key = hex::encode(h.finalize());
        let out = cache.join(sanitize(&self.name)).join(&key[..20]);
        let mut needs = programs;
        needs.extend(self.host_files);
        Step {
            name: self.name,
            summary: self.summary,
            inputs: self.inputs,
            actions: self.actions,
            key,
            out,
            long: self.long,
            needs,
        }
    }
}

/// Replace each location in `marks` (tried in order, the first match wins)
/// by its placeholder, wherever it stands as a whole path prefix in a string
/// of `v`: `/p/overlay` and `--dir=/p/overlay/x` for `/p`, not `/p2`.
fn relocate(v: &mut serde_json::Value, marks: &[(String, String)]) {
    use serde_json::Value;
    match v {
        Value::String(s) if marks.iter().any(|(from, _)| s.contains(from.as_str())) => {
            *s = relocate_str(s, marks);
        }
        Value::Array(a) => a.iter_mut().for_each(|x| relocate(x, marks)),
        Value::Object(o) => o.values_mut().for_each(|x| relocate(x, marks)),
        _ => {}
    }
}

fn relocate_str(s: &str, marks: &[(String, String)]) -> String {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "._-+@~/".contains(c);
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < s.len() {
        let before_ok = s[..i].chars().next_back().is_none_or(|c| !path_char(c));
        if before_ok {
            for (from, to) in marks {
                if from.len() > 1 && s[i..].starts_with(from.as_str()) {
                    let after = s[i + from.len()..].chars().next();
                    if after.is_none_or(|c| c == '/' || !path_char(c)) {
                        out.push_str(to);
                        i += from.len();
                        continue 'scan;
                    }
                }
            }
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A finished artifact: a file in a step's output, published into `output/`.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    /// The file inside a step's output directory.
    pub from: Utf8PathBuf,
    /// File name in the output directory.
    pub name: String,
    /// Also write `<name>.sha256` (`sha256sum -c` format, basename).
    pub sha256: bool,
    /// Scan it for secrets before publishing.
    pub scan: bool,
}

/// Everything a verb will do.
pub struct Plan {
    pub verb: String,
    pub recipe: Utf8PathBuf,
    /// The project root (written as [`ROOT_MARK`] in keys).
    pub root: Utf8PathBuf,
    pub cache: Utf8PathBuf,
    pub output: Utf8PathBuf,
    pub steps: Vec<Step>,
    pub publish: Vec<Publish>,
    /// See [`Plan::digest_memo`].
    pub remember_digests: bool,
    /// Extra text for `--dry-run` (e.g. a grub.cfg diff).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn new(
        verb: &str,
        recipe: &Utf8Path,
        root: &Utf8Path,
        cache: &Utf8Path,
        output: &Utf8Path,
    ) -> Plan {
        Plan {
            verb: verb.into(),
            recipe: recipe.to_owned(),
            root: root.to_owned(),
            cache: cache.to_owned(),
            output: output.to_owned(),
            steps: Vec::new(),
            publish: Vec::new(),
            remember_digests: true,
            notes: Vec::new(),
        }
    }

    /// Add a step; returns its index (use [`Plan::step`] to read it back).
    pub fn add(&mut self, b: StepBuilder) -> usize {
        let s = b.finish(&self.root, &self.cache);
        assert!(
            self.steps.iter().all(|o| o.name != s.name),
            "duplicate step name {} in plan",
            s.name
        );
        self.steps.push(s);
        self.steps.len() - 1
    }

    pub fn step(&self, i: usize) -> &Step {
        &self.steps[i]
    }

    pub fn find(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Where large inputs' file digests are remembered between plans
    /// (`None`: hash without remembering, e.g. for `--dry-run`, which writes
    /// nothing).
    pub fn digest_memo(&self) -> Option<Utf8PathBuf> {
        self.remember_digests.then(|| self.cache.join("digests"))
    }

    /// Every program and host file the plan's steps need, each once.
    pub fn needs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.steps.iter().flat_map(|s| s.needs.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn publish(&mut self, from: Utf8PathBuf, name: String, scan: bool) {
        self.publish.push(Publish {
            from,
            name,
            sha256: true,
            scan,
        });
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "verb": self.verb,
            "recipe": self.recipe,
            "cache": self.cache,
            "output": self.output,
            "steps": self.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
            "publish": self.publish,
            "notes": self.notes,
        })
    }

    /// Human-readable plan for `--dry-run`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "plan for `{}` ({})", self.verb, self.recipe);
        for (i, st) in self.steps.iter().enumerate() {
            let cached = if st.out.join(STAMP).exists() {
                " [cached]"
            } else {
                ""
            };
            let _ = writeln!(s, "{}. {} — {}{cached}", i + 1, st.name, st.summary);
            let _ = writeln!(s, "   key {}  out {}", &st.key[..16], st.out);
            let inputs: Vec<String> = st.inputs.iter().map(Input::short).collect();
            let _ = writeln!(s, "   inputs: {}", inputs.join(", "));
            for a in &st.actions {
                match a {
                    Action::Cmd(c) => {
                        let _ = writeln!(s, "   $ {}", c.substitute(OUT, st.out.as_str()));
                    }
                    Action::Op(o) => {
                        let _ = writeln!(s, "   * {}", o.describe());
                        for c in o.commands() {
                            let _ = writeln!(s, "     $ {}", c.substitute(OUT, st.out.as_str()));
                        }
                    }
                }
            }
        }
        for p in &self.publish {
            let _ = writeln!(
                s,
                "publish {} -> {}{}{}",
                p.from,
                self.output.join(&p.name),
                if p.sha256 { " (+ .sha256)" } else { "" },
                if p.scan { " after secret scan" } else { "" }
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "{n}");
        }
        s
    }
}

/// Write JSON to a file (helper for ops).
pub fn write_json(path: &Utf8Path, v: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Noop(Utf8PathBuf);
    impl Op for Noop {
        fn describe(&self) -> serde_json::Value {
            json!({ "reads": self.0 })
        }
        fn commands(&self) -> Vec<Cmd> {
            vec![Cmd::new("mcopy", "copy").args(["-i", self.0.as_str(), "<file>"])]
        }
        fn run(&self, _: &OpCx) -> Result<()> {
            Ok(())
        }
    }

    /// The same step planned for a project and cache at `base`.
    fn step_at(base: &str, file: &Utf8Path) -> Step {
        let root = Utf8PathBuf::from(format!("{base}/project"));
        let cache = Utf8PathBuf::from(format!("{base}/cache"));
        let earlier = cache.join("stage-amd64/abc");
        StepBuilder::new("disk", "assemble")
            .input(Input::file(file).unwrap())
            .input(Input::value("overlay", root.join("overlay")))
            .cmd(Cmd::new("qemu-img", "convert").args([
                earlier.join("disk.raw").as_str(),
                &format!("--opt={root}/x"),
                &format!("{OUT}/out.qcow2"),
            ]))
            .op(Noop(earlier))
            .finish(&root, &cache)
    }

    #[test]
    fn keys_depend_on_content_not_on_where_the_project_cache_or_inputs_live() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let (a, b) = (dir.join("a.iso"), dir.join("elsewhere.iso"));
        std::fs::write(&a, "base").unwrap();
        std::fs::write(&b, "base").unwrap();
        let here = step_at("/home/u/kiln", &a);
        let there = step_at("/ci/runner/w", &b);
        assert_eq!(here.key, there.key);
        assert!(here.out.starts_with("/home/u/kiln/cache/disk"));
        std::fs::write(&b, "other base").unwrap();
        assert_ne!(step_at("/ci/runner/w", &b).key, here.key);
    }

    #[test]
    fn a_step_keys_on_its_commands_tools_and_on_kilns_code_when_it_runs_kiln() {
        let d = tempfile::tempdir().unwrap();
        let f = Utf8Path::from_path(d.path()).unwrap().join("f");
        std::fs::write(&f, "x").unwrap();
        let s = step_at("/p", &f);
        assert_eq!(s.needs, ["mcopy", "qemu-img"]);
        let tools: Vec<&str> = s
            .inputs
            .iter()
            .filter_map(|i| match i {
                Input::Tool { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(tools, ["mcopy", "qemu-img"]);
        assert!(s.inputs.contains(&Input::Code {
            fingerprint: code_fingerprint()
        }));
        let external = StepBuilder::new("rootfs", "mmdebstrap")
            .cmd(Cmd::new("mmdebstrap", "root"))
            .finish(Utf8Path::new("/p"), Utf8Path::new("/c"));
        assert!(!external
            .inputs
            .iter()
            .any(|i| matches!(i, Input::Code { .. })));
        assert_eq!(external.needs, ["mmdebstrap"]);
    }

    #[test]
    fn locations_are_replaced_only_as_whole_path_prefixes() {
        let marks = [
            ("/c".to_string(), CACHE_MARK.to_string()),
            ("/p".to_string(), ROOT_MARK.to_string()),
        ];
        let r = |s: &str| relocate_str(s, &marks);
        assert_eq!(r("/p"), "@ROOT@");
        assert_eq!(
            r("/p/overlay x=/c/step/1"),
            "@ROOT@/overlay x=@CACHE@/step/1"
        );
        assert_eq!(r("--dir=/p/a"), "--dir=@ROOT@/a");
        assert_eq!(
            r("/p2/a /cache /x/p /etc/cloud"),
            "/p2/a /cache /x/p /etc/cloud"
        );
    }
}
