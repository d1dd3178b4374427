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

/// Bump to invalidate every cache entry when step semantics change.
const CACHE_FORMAT: u32 = 1;

/// In-process work of a step. `describe` is what the plan prints and what the
/// cache key hashes, so it must name every parameter that changes the output.
pub trait Op: Send + Sync {
    fn describe(&self) -> serde_json::Value;
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
    Cmd(Cmd),
    Op(Arc<dyn Op>),
}

impl Action {
    fn describe(&self) -> serde_json::Value {
        match self {
            Action::Cmd(c) => json!({ "cmd": c }),
            Action::Op(o) => json!({ "op": o.describe() }),
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
    /// A directory tree, by a cheap manifest (paths, sizes, mtimes): for
    /// multi-GiB inputs such as models.
    TreeMeta {
        path: Utf8PathBuf,
        sha256: String,
        files: u64,
        bytes: u64,
    },
    /// A setting.
    Value { name: String, value: String },
    /// An external program and its version.
    Tool { name: String, version: String },
    /// The output of an earlier step.
    Step { name: String, key: String },
}

impl Input {
    pub fn label(&self) -> String {
        match self {
            Input::File { path, .. } | Input::Tree { path, .. } | Input::TreeMeta { path, .. } => {
                path.to_string()
            }
            Input::Value { name, .. } => name.clone(),
            Input::Tool { name, .. } => format!("tool {name}"),
            Input::Step { name, .. } => format!("step {name}"),
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
    pub fn tree(path: &Utf8Path) -> Result<Input> {
        let (sha256, files) = crate::digest::tree_content_digest(path)?;
        Ok(Input::Tree {
            path: path.to_owned(),
            sha256,
            files,
        })
    }
    pub fn tree_meta(path: &Utf8Path) -> Result<Input> {
        let m = crate::digest::tree_meta_digest(path)?;
        Ok(Input::TreeMeta {
            path: path.to_owned(),
            sha256: m.sha256,
            files: m.files,
            bytes: m.bytes,
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
}

impl Step {
    /// A path inside this step's output.
    pub fn output(&self, rel: &str) -> Utf8PathBuf {
        self.out.join(rel)
    }
    /// The actions' commands with the placeholder resolved to the final directory.
    pub fn commands(&self) -> Vec<Cmd> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Cmd(c) => Some(c.substitute(OUT, self.out.as_str())),
                Action::Op(_) => None,
            })
            .collect()
    }
    pub fn to_json(&self) -> serde_json::Value {
        let actions: Vec<_> = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Cmd(c) => json!({ "cmd": c.substitute(OUT, self.out.as_str()) }),
                Action::Op(o) => json!({ "op": o.describe() }),
            })
            .collect();
        json!({
            "name": self.name,
            "summary": self.summary,
            "key": self.key,
            "out": self.out,
            "inputs": self.inputs,
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
}

impl StepBuilder {
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> StepBuilder {
        StepBuilder {
            name: name.into(),
            summary: summary.into(),
            inputs: Vec::new(),
            actions: Vec::new(),
            long: false,
        }
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
        self.actions.push(Action::Cmd(c));
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
    pub fn finish(self, cache: &Utf8Path) -> Step {
        let mut h = Sha256::new();
        let doc = json!({
            "format": CACHE_FORMAT,
            "name": self.name,
            "inputs": self.inputs,
            "actions": self.actions.iter().map(Action::describe).collect::<Vec<_>>(),
        });
        h.update(serde_json::to_vec(&doc).expect("plan serializes"));
        let key = hex::encode(h.finalize());
        let out = cache.join(sanitize(&self.name)).join(&key[..20]);
        Step {
            name: self.name,
            summary: self.summary,
            inputs: self.inputs,
            actions: self.actions,
            key,
            out,
            long: self.long,
        }
    }
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
    pub cache: Utf8PathBuf,
    pub output: Utf8PathBuf,
    pub steps: Vec<Step>,
    pub publish: Vec<Publish>,
    /// Extra text for `--dry-run` (e.g. a grub.cfg diff).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn new(verb: &str, recipe: &Utf8Path, cache: &Utf8Path, output: &Utf8Path) -> Plan {
        Plan {
            verb: verb.into(),
            recipe: recipe.to_owned(),
            cache: cache.to_owned(),
            output: output.to_owned(),
            steps: Vec::new(),
            publish: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Add a step; returns its index (use [`Plan::step`] to read it back).
    pub fn add(&mut self, b: StepBuilder) -> usize {
        let s = b.finish(&self.cache);
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
            let cached = if st.out.join(crate::exec::STAMP).exists() {
                " [cached]"
            } else {
                ""
            };
            let _ = writeln!(s, "{}. {} — {}{cached}", i + 1, st.name, st.summary);
            let _ = writeln!(s, "   key {}  out {}", &st.key[..16], st.out);
            for a in &st.actions {
                match a {
                    Action::Cmd(c) => {
                        let _ = writeln!(s, "   $ {}", c.substitute(OUT, st.out.as_str()));
                    }
                    Action::Op(o) => {
                        let _ = writeln!(s, "   * {}", o.describe());
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
