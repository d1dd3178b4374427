//! The release workflow, `.github/workflows/release.yml` (the one file
//! GitHub runs; `ci/release.yml` links to it): actionlint passes it, and its
//! matrix is exactly the targets and architectures the demo recipe builds,
//! so neither can change without the other.

mod support;

use std::collections::BTreeSet;

use camino::Utf8PathBuf;
use support::{require, workspace};

const WORKFLOW: &str = ".github/workflows/release.yml";

fn workflow() -> Utf8PathBuf {
    workspace().join(WORKFLOW)
}

#[test]
fn the_release_workflow_passes_actionlint_and_shellcheck() {
    require(&["actionlint", "shellcheck"]);
    let wf = workflow();
    match xtask::tools::run_unchecked(&xtask::tools::actionlint::check(&[&wf])).unwrap() {
        Ok(_) => {}
        Err(f) => panic!(
            "actionlint refused {wf}:\n{}{}",
            String::from_utf8_lossy(&f.stdout),
            String::from_utf8_lossy(&f.stderr)
        ),
    }
}

#[test]
fn ci_links_to_the_one_workflow_file() {
    let link = workspace().join("ci/release.yml");
    let target = std::fs::read_link(&link).expect("ci/release.yml is a symbolic link");
    assert_eq!(target.to_str().unwrap(), format!("../{WORKFLOW}"));
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(workflow()).unwrap()
    );
    // GitHub does not follow a symbolic link in .github/workflows: the real
    // file is there.
    assert!(std::fs::symlink_metadata(workflow())
        .unwrap()
        .file_type()
        .is_file());
}

fn text(v: &yaml_serde::Value, what: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
        .to_string()
}

#[test]
fn the_release_matrix_is_every_target_and_architecture_of_the_demo_recipe() {
    let doc: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(workflow()).unwrap()).unwrap();
    let job = &doc["jobs"]["release"];
    let include = job["strategy"]["matrix"]["include"]
        .as_sequence()
        .expect("jobs.release.strategy.matrix.include is a list");
    let mut have = BTreeSet::new();
    for e in include {
        let target = text(&e["target"], "a matrix entry's target");
        let arch = text(&e["arch"], "a matrix entry's arch");
        let runner = text(&e["runner"], "a matrix entry's runner");
        // Each part is built on a runner of its own architecture.
        assert_eq!(
            runner.ends_with("-arm"),
            arch == "arm64",
            "{target} ({arch}) runs on {runner}"
        );
        assert!(
            have.insert((target.clone(), arch.clone())),
            "{target} ({arch}) is in the matrix twice"
        );
    }
    let root = workspace();
    let r = xtask::recipe::load_resolved(&root.join("recipes/demo.yaml"), &root).unwrap();
    let want: BTreeSet<(String, String)> =
        xtask::targets::matrix(&r, &xtask::targets::Options::default())
            .into_iter()
            .map(|(f, a)| (f.name().to_string(), a.debian().to_string()))
            .collect();
    assert_eq!(
        have, want,
        "{WORKFLOW}'s release matrix is not what recipes/demo.yaml builds"
    );
    assert_eq!(job["runs-on"], "${{ matrix.runner }}");
    // The job builds its entry and nothing else.
    let steps = job["steps"].as_sequence().unwrap();
    let build = steps
        .iter()
        .find(|s| s["id"] == "part")
        .expect("a step with id `part` builds the release part");
    assert_eq!(build["env"]["TARGET"], "${{ matrix.target }}");
    assert_eq!(build["env"]["ARCH"], "${{ matrix.arch }}");
    assert!(text(&build["run"], "the build step's script")
        .contains(r#"cargo xtask release --targets "$TARGET" --arch "$ARCH""#));
    // The publish job assembles every part, and waits for the tests.
    let publish = &doc["jobs"]["publish"];
    let needs: Vec<String> = publish["needs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| text(n, "a need"))
        .collect();
    assert_eq!(needs, ["test", "release"]);
    assert!(publish["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("release assemble parts/*"))));
}
