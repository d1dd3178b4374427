//! The `.mf` manifest: one `SHA256(file)= hex` line per file it covers (the
//! `.ovf` and every referenced file, never itself). Algorithm in upper case,
//! no space before `(`, one space after `=`.

use std::io::Read;

use anyhow::{Context, Result};
use camino::Utf8Path;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

pub use crate::recipe::ova::DigestAlgo;

/// One manifest line.
pub fn line(algo: DigestAlgo, file: &str, hex: &str) -> String {
    format!("{}({file})= {hex}\n", algo.manifest_name())
}

/// A running digest of one of the algorithms manifests use.
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: DigestAlgo) -> Hasher {
        match algo {
            DigestAlgo::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestAlgo::Sha1 => Hasher::Sha1(Sha1::new()),
        }
    }
    /// By manifest name (`SHA1`, `SHA256`, `SHA512`).
    pub fn by_name(name: &str) -> Option<Hasher> {
        Some(match name {
            "SHA1" => Hasher::Sha1(Sha1::new()),
            "SHA256" => Hasher::Sha256(Sha256::new()),
            "SHA512" => Hasher::Sha512(Sha512::new()),
            _ => return None,
        })
    }
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    pub fn hex(self) -> String {
        match self {
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A digest computed on a second thread: [`Background::feed`] copies each
/// chunk into a recycled buffer and hands it over, so hashing overlaps the
/// caller's reading and writing.
pub struct Background {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    pub fn spawn(mut h: Hasher) -> Background {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let handle = std::thread::spawn(move || {
            for buf in rx {
                h.update(&buf);
                let _ = back.try_send(buf);
            }
            h.hex()
        });
        Background {
            tx: Some(tx),
            spare,
            handle: Some(handle),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let mut b = self.spare.try_recv().unwrap_or_default();
        b.clear();
        b.extend_from_slice(data);
        if let Some(tx) = &self.tx {
            // A send fails only if the thread is gone; `finish` reports that.
            let _ = tx.send(b);
        }
    }

    /// The hex digest of everything fed.
    pub fn finish(mut self) -> String {
        drop(self.tx.take());
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("the hashing thread panicked")
    }
}

/// Hex digest of a file, streamed.
pub fn file_digest(path: &Utf8Path, algo: DigestAlgo) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {path} to hash it"))?;
    let mut h = Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::signals::check()?;
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {path}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.hex())
}

/// A parsed manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algo: String,
    pub file: String,
    pub hex: String,
}

/// Parse a manifest strictly; errors name the line.
pub fn parse(text: &str) -> std::result::Result<Vec<Entry>, Vec<String>> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let n = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let parsed = (|| {
            let open = l.find('(')?;
            let close = l.rfind(")= ")?;
            let algo = &l[..open];
            let file = &l[open + 1..close];
            let hex = &l[close + 3..];
            Some((algo, file, hex))
        })();
        let Some((algo, file, hex)) = parsed else {
            problems.push(format!("manifest line {n} `{l}` is not `ALGO(file)= hex`"));
            continue;
        };
        let want = match algo {
            "SHA1" => 40,
            "SHA256" => 64,
            "SHA512" => 128,
            _ => {
                problems.push(format!(
                    "manifest line {n}: unknown digest algorithm `{algo}` (SHA1, SHA256, SHA512)"
                ));
                continue;
            }
        };
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!(
                "manifest line {n}: `{hex}` is not {want} hex digits"
            ));
            continue;
        }
        if file.is_empty() {
            problems.push(format!("manifest line {n} names no file"));
            continue;
        }
        entries.push(Entry {
            algo: algo.into(),
            file: file.into(),
            hex: hex.to_ascii_lowercase(),
        });
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_and_parse() {
        let hex = "ab".repeat(32);
        let l = line(DigestAlgo::Sha256, "a.ovf", &hex);
        assert_eq!(l, format!("SHA256(a.ovf)= {hex}\n"));
        let e = parse(&l).unwrap();
        assert_eq!(
            e,
            [Entry {
                algo: "SHA256".into(),
                file: "a.ovf".into(),
                hex: hex.clone()
            }]
        );
        assert!(parse(&format!("SHA256 (a.ovf) = {hex}")).is_err());
        assert!(parse("SHA256(a.ovf)= abc").is_err());
        assert!(parse(&format!("MD5(a.ovf)= {}", "a".repeat(32))).is_err());
        assert_eq!(
            parse(&line(DigestAlgo::Sha1, "d.vmdk", &"0".repeat(40))).unwrap()[0].algo,
            "SHA1"
        );
    }

    #[test]
    fn hashers_match_known_values() {
        let mut h = Hasher::new(DigestAlgo::Sha1);
        h.update(b"abc");
        assert_eq!(h.hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut h = Hasher::by_name("SHA256").unwrap();
        h.update(b"abc");
        assert_eq!(h.hex(), crate::digest::bytes_sha256(b"abc"));
    }
}
