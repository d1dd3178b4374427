//! The context every verb gets: where the project, recipe, cache and output
//! are, and the global flags.

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use crate::fsutil::absolute;
use crate::plan::Plan;
use crate::recipe::Resolved;

pub struct Cx {
    pub root: Utf8PathBuf,
    pub recipe_file: Utf8PathBuf,
    pub cache: Utf8PathBuf,
    pub output: Utf8PathBuf,
    pub dry_run: bool,
    pub json: bool,
    pub force: bool,
    pub no_install: bool,
}

impl Cx {
    /// The context the global flags (`crate::flags::Global`) ask for.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        root: Option<&Utf8Path>,
        recipe: &Utf8Path,
        cache_dir: Option<&Utf8Path>,
        output_dir: Option<&Utf8Path>,
        dry_run: bool,
        json: bool,
        force: bool,
        no_install: bool,
    ) -> Result<Cx> {
        let root = match root {
            Some(r) => absolute(r)?,
            None => crate::fsutil::workspace_root(),
        };
        let recipe_file = Self::locate_recipe(&root, recipe)?;
        let cache = match cache_dir {
            Some(c) => absolute(c)?,
            None => root.join("target/kiln/cache"),
        };
        let output = match output_dir {
            Some(o) => absolute(o)?,
            None => root.join("output"),
        };
        Ok(Cx {
            root,
            recipe_file,
            cache,
            output,
            dry_run,
            json,
            force,
            no_install,
        })
    }

    /// A relative recipe path is looked up in the current directory, then in the root.
    pub fn locate_recipe(root: &Utf8Path, p: &Utf8Path) -> Result<Utf8PathBuf> {
        let here = absolute(p)?;
        if here.exists() || p.is_absolute() {
            return Ok(here);
        }
        Ok(root.join(p))
    }

    pub fn recipe(&self) -> Result<Resolved> {
        crate::recipe::load_resolved(&self.recipe_file, &self.root)
    }

    pub fn plan(&self, verb: &str) -> Plan {
        let mut p = Plan::new(
            verb,
            &self.recipe_file,
            &self.root,
            &self.cache,
            &self.output,
        );
        p.remember_digests = !self.dry_run;
        p
    }

    /// Make the plan with `make`, then print it (`--dry-run`) or run it.
    /// Before any work every tool the whole plan needs is checked, and
    /// installed when kiln may (see [`crate::doctor::ensure`]); the plan is
    /// then made again, since its keys hold the tools' versions. Returns the
    /// plan that ran and what happened to its steps.
    pub fn execute(
        &self,
        make: impl Fn() -> Result<Plan>,
        gate: Option<crate::exec::Gate>,
    ) -> Result<(Plan, Option<crate::exec::Report>)> {
        let mut plan = make()?;
        if !self.dry_run {
            let what = format!("`cargo xtask {}`", plan.verb);
            if crate::doctor::ensure(&plan.needs(), &what, self.no_install)? {
                plan = make()?;
            }
        }
        let report = self.run_plan(&plan, gate)?;
        Ok((plan, report))
    }

    /// Print the plan (`--dry-run`) or run it (its tools are checked by
    /// [`Cx::execute`]).
    fn run_plan(
        &self,
        plan: &Plan,
        gate: Option<crate::exec::Gate>,
    ) -> Result<Option<crate::exec::Report>> {
        if self.dry_run {
            if self.json {
                println!("{}", serde_json::to_string_pretty(&plan.to_json())?);
            } else {
                print!("{}", plan.render());
            }
            return Ok(None);
        }
        let opts = crate::exec::Options {
            force: self.force,
            gate,
        };
        let report = crate::exec::execute(plan, &opts)?;
        if self.json {
            let steps: Vec<_> = report
                .steps
                .iter()
                .map(|(n, o)| serde_json::json!({ "step": n, "outcome": format!("{o:?}").to_lowercase() }))
                .collect();
            println!(
                "{}",
                serde_json::json!({ "steps": steps, "published": report.published })
            );
        }
        Ok(Some(report))
    }
}
