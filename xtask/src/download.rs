//! Downloads: the only network access kiln makes (a base ISO given by URL).
//! A file is fetched once into `<cache>/downloads/<sha256>/<name>`, resumed
//! from `<name>.part` after an interruption, shown with a progress bar, and
//! kept only if its sha256 matches the recipe (a mismatch deletes it).

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::tools::{self, curl};
use crate::ui;

/// The file name a URL is stored under (its last path segment).
pub fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "download".into()
    } else {
        clean
    }
}

/// Where a verified download lives.
pub fn cached_path(dir: &Utf8Path, url: &str, sha256: &str) -> Utf8PathBuf {
    dir.join(sha256).join(file_name(url))
}

/// What to do with an existing partial file, given the size the server
/// announced (if it did).
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// No usable partial file: download from the start.
    Fresh,
    /// Continue after this many bytes.
    From(u64),
    /// The partial file already has every byte: just verify it.
    Complete,
    /// Larger than the file on the server: it is not a prefix of it; restart.
    Discard,
}

pub fn resume_state(partial: Option<u64>, total: Option<u64>) -> Resume {
    match (partial, total) {
        (None | Some(0), _) => Resume::Fresh,
        (Some(p), Some(t)) if p == t => Resume::Complete,
        (Some(p), Some(t)) if p > t => Resume::Discard,
        (Some(p), _) => Resume::From(p),
    }
}

/// Fetch `url` into `dir` (once), verify its sha256, return its path.
pub fn fetch(url: &str, sha256: &str, dir: &Utf8Path) -> Result<Utf8PathBuf> {
    let dest = cached_path(dir, url, sha256);
    if dest.is_file() {
        ui::info(&format!("using downloaded {dest}"));
        return Ok(dest);
    }
    let parent = dest.parent().expect("has a parent");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating download directory {parent}"))?;
    let part = Utf8PathBuf::from(format!("{dest}.part"));
    let total = tools::run(&curl::head(url))
        .ok()
        .and_then(|o| curl::content_length(&o.stdout_str()));
    let have = std::fs::metadata(&part).ok().map(|m| m.len());
    let state = resume_state(have, total);
    if state == Resume::Discard {
        let _ = std::fs::remove_file(&part);
    }
    if state != Resume::Complete {
        match state {
            Resume::From(n) => ui::info(&format!("resuming {url} after {n} bytes")),
            _ => ui::info(&format!("downloading {url}")),
        }
        let bar = Watch::start(&part, total);
        let r = tools::run_unchecked(&curl::get(
            url,
            &part,
            state != Resume::Fresh && state != Resume::Discard,
        ));
        bar.stop();
        match r? {
            Ok(_) => {}
            // 33: the server ignores ranges; start over once.
            Err(f) if f.code == Some(33) => {
                ui::warn(&format!(
                    "{url}: the server cannot resume; downloading from the start"
                ));
                let _ = std::fs::remove_file(&part);
                let bar = Watch::start(&part, total);
                let r = tools::run(&curl::get(url, &part, false));
                bar.stop();
                r.with_context(|| {
                    format!("downloading {url} (the partial file {part} is kept for a retry)")
                })?;
            }
            Err(f) => {
                return Err(anyhow::Error::new(f).context(format!(
                    "downloading {url} (the partial file {part} is kept; run again to resume)"
                )))
            }
        }
    }
    let got = crate::digest::file_sha256(&part)?;
    if got != sha256 {
        let _ = std::fs::remove_file(&part);
        bail!(
            "{url}: sha256 mismatch: the recipe says {sha256}, the download is {got} \
             (deleted it; check iso.base.sha256 against the vendor's SHA256SUMS)"
        );
    }
    std::fs::rename(&part, &dest).with_context(|| format!("renaming {part} to {dest}"))?;
    Ok(dest)
}

/// Progress of a growing file.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(p: &Utf8Path, total: Option<u64>) -> Watch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, p) = (stop.clone(), p.to_owned());
        let t = std::thread::spawn(move || {
            let mut bar = match total {
                Some(t) => ui::Progress::bytes("download", t),
                None => ui::Progress::spinner("download"),
            };
            let mut last = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            bar.inc(last);
            while !s.load(Ordering::Relaxed) {
                let now = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if now > last {
                    bar.inc(now - last);
                    last = now;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            bar.finish();
        });
        Watch { stop, t: Some(t) }
    }
    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Download {
    url: String,
    sha256: String,
    file: String,
    #[serde(skip)]
    dir: Utf8PathBuf,
}

impl Op for Download {
    fn describe(&self) -> serde_json::Value {
        json!({ "download": self })
    }
    fn commands(&self) -> Vec<tools::Cmd> {
        let part = Utf8PathBuf::from(format!(
            "{}.part",
            cached_path(&self.dir, &self.url, &self.sha256)
        ));
        vec![
            curl::head(&self.url),
            curl::get(&self.url, &part, false),
            curl::get(&self.url, &part, true),
        ]
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let src = fetch(&self.url, &self.sha256, &self.dir)?;
        let dest = cx.out.join(&self.file);
        if std::fs::hard_link(&src, &dest).is_err() {
            std::fs::copy(&src, &dest).with_context(|| format!("copying {src} to {dest}"))?;
        }
        Ok(())
    }
}

/// A step whose output holds `file`, downloaded from `url` and verified.
pub fn plan(plan: &mut Plan, url: &str, sha256: &str, step: &str, file: &str) -> Result<usize> {
    let dir = plan.cache.join("downloads");
    let b = StepBuilder::new(step, format!("download {url}"))
        .input(Input::value("url", url))
        .input(Input::value("sha256", sha256))
        .long()
        .op(Download {
            url: url.into(),
            sha256: sha256.into(),
            file: file.into(),
            dir,
        });
    Ok(plan.add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_decisions() {
        assert_eq!(resume_state(None, Some(10)), Resume::Fresh);
        assert_eq!(resume_state(Some(0), None), Resume::Fresh);
        assert_eq!(resume_state(Some(4), Some(10)), Resume::From(4));
        assert_eq!(resume_state(Some(4), None), Resume::From(4));
        assert_eq!(resume_state(Some(10), Some(10)), Resume::Complete);
        assert_eq!(resume_state(Some(11), Some(10)), Resume::Discard);
    }

    #[test]
    fn file_names_from_urls() {
        assert_eq!(
            file_name("https://r.example/24.04/ubuntu-24.04.1-live-server-amd64.iso"),
            "ubuntu-24.04.1-live-server-amd64.iso"
        );
        assert_eq!(file_name("https://x/a.iso?token=1#f"), "a.iso");
        assert_eq!(file_name("https://x/"), "download");
        assert_eq!(file_name("https://x/..%2f"), "download");
    }
}
