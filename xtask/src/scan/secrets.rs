//! The secret scan's visitor: [`super::walk`] opens the containers, this
//! applies the rules to every file's bytes and every link's path, and
//! collects dpkg's md5sums lists met on the way. An ext file system's files
//! are scanned on worker threads, each file with a visitor of its own
//! ([`Visit::fork`]); the walker merges them back in file order.

use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use super::dpkg;
use super::rules::{self, Engine, Hit, Kind};
use super::sniff::{Format, HEAD};
use super::walk::{self, At, Got, Member, Visit, Walker};

/// Large files are scanned in chunks of this size…
const CHUNK: usize = 8 << 20;
/// …overlapping by this much, so a key that straddles two chunks is whole in one.
const OVERLAP: usize = 128 << 10;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

/// A hit where it was found: (nested path, innermost path, hit, MD5 of the
/// file when dpkg's record could excuse it).
pub(super) type Located = (String, String, Hit, Option<[u8; 16]>);

/// What scanning one artifact found.
pub(super) struct Walked {
    /// Every hit, in walk order.
    pub hits: Vec<Located>,
    /// dpkg's md5sums lists met on the way.
    pub shipped: dpkg::Shipped,
    pub files: u64,
    pub bytes: u64,
    /// Whether all of it was read (an error: the scan fails closed).
    pub result: Result<()>,
}

/// Scan one artifact (a directory or a file of any supported format),
/// applying the rules to every file at every nesting level. Temporary
/// copies go to `tmp`.
pub(super) fn scan(path: &Utf8Path, tmp: Utf8PathBuf) -> Walked {
    let progress = std::fs::metadata(path)
        .ok()
        .filter(|md| md.is_file() && md.len() > 256 << 20)
        .map(|md| {
            let name = format!("scan {}", path.file_name().unwrap_or(""));
            Arc::new(Mutex::new(crate::ui::Progress::bytes(&name, md.len())))
        });
    let mut s = Scan {
        engine: engine(),
        hits: Vec::new(),
        shipped: dpkg::Shipped::default(),
        files: 0,
        bytes: 0,
        progress,
    };
    let result = walk::walk(path, &tmp, &mut s).map(|_| ());
    if let Some(p) = s.progress.take() {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
        }
    }
    Walked {
        hits: s.hits,
        shipped: s.shipped,
        files: s.files,
        bytes: s.bytes,
        result,
    }
}

struct Scan {
    engine: &'static Engine,
    hits: Vec<Located>,
    shipped: dpkg::Shipped,
    files: u64,
    bytes: u64,
    progress: Option<Arc<Mutex<crate::ui::Progress>>>,
}

impl Scan {
    /// Hits in a file, with its MD5 when dpkg's record may excuse them.
    fn record(&mut self, at: &At, hits: Vec<Hit>, md5: Option<[u8; 16]>) {
        let full = at.path();
        for h in hits {
            self.hits.push((full.clone(), at.inner.clone(), h, md5));
        }
    }

    fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
        if let Some(p) = &self.progress {
            p.lock().unwrap_or_else(|e| e.into_inner()).inc(n);
        }
    }
}

impl Visit for Scan {
    const DETAIL: bool = false;

    fn member(&mut self, at: &At, member: Member, _meta: Option<String>) -> Result<()> {
        if let Member::Link(_) = member {
            let hits = self.engine.entry(&at.inner, Kind::Symlink);
            self.record(at, hits, None);
        }
        Ok(())
    }

    fn leaf(&mut self, at: &At, rest: &mut dyn Read) -> Result<()> {
        self.files += 1;
        let inner = at.inner.as_str();
        let mut buf = Vec::new();
        rest.take(rules::TEXT_LIMIT + 1).read_to_end(&mut buf)?;
        let fs = at.chain[..at.chain.len().saturating_sub(1)].join("!");
        let candidate = dpkg::candidate(inner);
        if buf.len() as u64 <= rules::TEXT_LIMIT {
            self.add_bytes(buf.len() as u64);
            if let Some(pkg) = dpkg::md5sums_package(inner) {
                self.shipped.add_list(&fs, pkg, &buf);
            }
            let hits = self.engine.file(inner, &buf);
            let md5 = (candidate && !hits.is_empty()).then(|| dpkg::md5(&buf));
            self.record(at, hits, md5);
            return Ok(());
        }
        let mut hasher = candidate.then(dpkg::Hasher::default);
        // Large: path rules on the head, markers chunk by chunk.
        let mut hits =
            self.engine
                .large_file_path_rules(inner, buf.len() as u64, &buf[..HEAD.min(buf.len())]);
        let mut base = 0u64;
        loop {
            let mut more = Vec::with_capacity(CHUNK);
            (&mut *rest)
                .take((CHUNK.saturating_sub(buf.len())) as u64 + 1)
                .read_to_end(&mut more)?;
            let last = more.is_empty();
            buf.extend_from_slice(&more);
            let until = if last {
                buf.len()
            } else {
                buf.len().saturating_sub(OVERLAP)
            };
            hits.extend(
                self.engine
                    .chunk(inner, &buf[..], base, 0)
                    .into_iter()
                    .filter(|h| h.start < base + until as u64),
            );
            if let Some(h) = &mut hasher {
                h.update(&buf[..until]);
            }
            if last {
                self.add_bytes(buf.len() as u64);
                break;
            }
            self.add_bytes(until as u64);
            buf.drain(..until);
            base += until as u64;
        }
        // Hits in the overlap were seen twice only if they started before `until`; dedupe by start.
        hits.sort_by_key(|h| (h.start, h.rule));
        hits.dedup_by_key(|h| (h.start, h.rule));
        let md5 = hasher
            .filter(|_| !hits.is_empty())
            .map(dpkg::Hasher::finish);
        self.record(at, hits, md5);
        Ok(())
    }

    fn opaque(&mut self, at: &At, what: &str, size: u64, sha256: &str) -> Result<()> {
        self.files += 1;
        self.add_bytes(size);
        let mut h = Hit::new(
            "opaque-content",
            format!("{what}, {size} bytes, not opened"),
            &[],
            0,
            0,
        );
        h.sha256 = sha256.to_string();
        h.hash_public = true;
        self.record(at, vec![h], None);
        Ok(())
    }

    fn unreadable(&mut self, why: &str) -> Result<()> {
        // What cannot be read cannot be proven clean.
        Err(anyhow::anyhow!("{why}"))
    }

    /// A small compressed file where a Debian package may have put it
    /// (`/usr/share/doc/*/examples/*.gz`): dpkg's md5sums record the file
    /// as shipped, compressed, so the hits in its content carry the
    /// compressed file's path and MD5, by which that record excuses them.
    fn compressed(
        w: &mut Walker<'_, Self>,
        at: &At,
        fmt: Format,
        len: Option<u64>,
        mut raw: Box<dyn Read + '_>,
        depth: u32,
        digest: bool,
    ) -> Result<Got> {
        if !dpkg::candidate(&at.inner) || len.is_some_and(|l| l > rules::TEXT_LIMIT) {
            return w.decompress(at, fmt, raw, depth, digest);
        }
        let mut all = Vec::new();
        (&mut raw)
            .take(rules::TEXT_LIMIT + 1)
            .read_to_end(&mut all)?;
        let md5 = (all.len() as u64 <= rules::TEXT_LIMIT).then(|| dpkg::md5(&all));
        let before = w.v.hits.len();
        let whole = Box::new(Cursor::new(all).chain(raw));
        let got = w.decompress(at, fmt, whole, depth, digest)?;
        if md5.is_some() {
            let full = at.path();
            for (f, i, _, m) in &mut w.v.hits[before..] {
                if *f == full {
                    *i = at.inner.clone();
                    *m = md5;
                }
            }
        }
        Ok(got)
    }

    fn fork(&self) -> Option<Scan> {
        Some(Scan {
            engine: self.engine,
            hits: Vec::new(),
            shipped: dpkg::Shipped::default(),
            files: 0,
            bytes: 0,
            progress: self.progress.clone(),
        })
    }

    fn merge(&mut self, part: Scan) {
        self.hits.extend(part.hits);
        self.shipped.merge(part.shipped);
        self.files += part.files;
        self.bytes += part.bytes;
    }
}
