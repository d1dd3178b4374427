//! Release signatures: `SHA256SUMS.minisig`, a [minisign] signature over
//! `SHA256SUMS` (which lists every other file of the release by sha256), so
//! `minisign -Vm SHA256SUMS -p kiln.pub` followed by `sha256sum -c
//! SHA256SUMS` verifies a whole download against a key published apart from
//! it.
//!
//! The files are minisign's own formats, read and checked with the
//! `minisign` crate: secret keys (unencrypted, as `minisign -G -W` and
//! [`keygen`] write them, or scrypt-encrypted with the password in
//! `KILN_SIGN_PASSWORD`), public keys and signatures. The signature itself
//! is made here, by ring's Ed25519, which is deterministic (RFC 8032): the
//! crate's signer mixes random noise into every signature, and a release
//! must be the same bytes each time it is made from the same inputs. The
//! trusted comment carries the release's `SOURCE_DATE_EPOCH` as its
//! timestamp, not the clock, so the same key and the same `SHA256SUMS` give
//! the same `SHA256SUMS.minisig`. Each signature is verified by the crate
//! before it is written.
//!
//! A public key shipped inside the release would prove nothing (whoever can
//! replace the files can replace it too): the manifest records only the key
//! id, and users verify against the public key the project publishes out of
//! band.
//!
//! [minisign]: https://jedisct1.github.io/minisign/

use std::io::Cursor;

use anyhow::{bail, ensure, Context, Result};
use blake2::Digest;
use camino::{Utf8Path, Utf8PathBuf};
use ct_codecs::{Base64, Decoder, Encoder};

use super::SUMS;

/// The signature file of a release, beside `SHA256SUMS`.
pub const SIG: &str = "SHA256SUMS.minisig";
/// Names the secret key file when `--sign-key` is not given (CI secrets).
pub const KEY_ENV: &str = "KILN_SIGN_KEY";
/// The password of an encrypted secret key (never taken from the command line).
pub const PASSWORD_ENV: &str = "KILN_SIGN_PASSWORD";

/// What a secret key file must hold, for errors.
const KEY_FORMAT: &str = "a minisign secret key: an `untrusted comment:` line, then one base64 \
     line (as `minisign -G -W` or `cargo xtask release keygen` write it)";
/// What a public key file must hold, for errors.
const PUB_FORMAT: &str = "a minisign public key: an `untrusted comment:` line, then one base64 \
     line starting `RW` (as `minisign -G` or `cargo xtask release keygen` write it), or that \
     base64 line alone";

/// The decoded length of a secret key: sig_alg, kdf_alg, chk_alg (2 each),
/// kdf salt (32), ops and mem limits (8 each), key id (8), key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
const KEYNUM_AT: usize = 2 + 2 + 2 + 32 + 8 + 8;

/// The secret key file for `--sign-key` (`flag`), else `KILN_SIGN_KEY`
/// (unset or empty: no signing).
pub fn key_path(flag: Option<Utf8PathBuf>) -> Option<Utf8PathBuf> {
    flag.or_else(|| {
        std::env::var(KEY_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Utf8PathBuf::from)
    })
}

/// A minisign key id: the 8 id bytes read little-endian, always written as
/// 16 upper-case hex digits. minisign itself prints the same number without
/// leading zeros (`976846D0E7BB798` for kiln's `0976846D0E7BB798`), so a
/// reader comparing the two compares numbers, not strings.
pub fn key_id(keynum: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*keynum))
}

/// The trusted comment of a release signature: minisign's own layout, with
/// the release's epoch for the timestamp.
pub fn trusted_comment(epoch: i64) -> String {
    format!("timestamp:{epoch}\tfile:{SUMS}\thashed")
}

/// A secret key, loaded and checked.
pub struct SigningKey {
    pub path: Utf8PathBuf,
    keynum: [u8; 8],
    pair: ring::signature::Ed25519KeyPair,
    /// The matching public key, to check each signature before it is written.
    public: minisign::PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, key id {})", self.path, self.key_id())
    }
}

impl SigningKey {
    /// Read the secret key file `path`; an encrypted one is decrypted with
    /// `KILN_SIGN_PASSWORD`.
    pub fn load(path: &Utf8Path) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the signing key {path} (--sign-key / {KEY_ENV}; expected {KEY_FORMAT})"
            )
        })?;
        let password = std::env::var(PASSWORD_ENV).ok();
        SigningKey::parse(&text, password.as_deref(), path)
            .with_context(|| format!("the signing key {path}"))
    }

    /// A secret key from the text of its file; `path` is only recorded.
    pub fn parse(text: &str, password: Option<&str>, path: &Utf8Path) -> Result<SigningKey> {
        let mut lines = text.lines();
        let comment = lines.next().unwrap_or("");
        ensure!(
            comment.starts_with("untrusted comment:"),
            "it is not {KEY_FORMAT}: its first line is not an `untrusted comment:`"
        );
        let encoded = lines.next().unwrap_or("").trim();
        ensure!(
            lines.all(|l| l.trim().is_empty()),
            "it is not {KEY_FORMAT}: it has more than two lines"
        );
        let raw = Base64::decode_to_vec(encoded, None)
            .ok()
            .filter(|b| b.len() == SECRET_KEY_BYTES && &b[..2] == b"Ed")
            .with_context(|| {
                format!(
                    "it is not {KEY_FORMAT}: its second line is not the base64 of a \
                     {SECRET_KEY_BYTES}-byte Ed25519 secret key (a public key, or a key of \
                     another tool?)"
                )
            })?;
        let bytes: Vec<u8> = match &raw[2..4] {
            // Unencrypted. `minisign -G -W` (0.11) leaves the checksum zero;
            // a key with one (the minisign crate's, `release keygen`'s) must
            // match it. Either way the seed must give the public key beside it.
            [0, 0] => {
                let chk = &raw[SECRET_KEY_BYTES - 32..];
                if chk.iter().any(|&b| b != 0) {
                    let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
                    h.update(&raw[..2]);
                    h.update(&raw[KEYNUM_AT..KEYNUM_AT + 8 + 64]);
                    ensure!(
                        h.finalize().as_slice() == chk,
                        "its checksum does not match its key: the file is damaged"
                    );
                }
                raw
            }
            b"Sc" => {
                let Some(password) = password else {
                    bail!(
                        "it is encrypted with a password: set {PASSWORD_ENV} to it (kiln never \
                         prompts, nor takes it as an argument), or use an unencrypted key \
                         (`minisign -G -W`, `cargo xtask release keygen`)"
                    );
                };
                let boxed = minisign::SecretKeyBox::from_string(&format!("{comment}\n{encoded}\n"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                // Decrypted, in minisign's layout.
                boxed
                    .into_secret_key(Some(password.to_string()))
                    .map_err(|e| anyhow::anyhow!("decrypting it with {PASSWORD_ENV}: {e}"))?
                    .to_bytes()
            }
            other => bail!(
                "it is encrypted with {:?}, which minisign does not know",
                String::from_utf8_lossy(other)
            ),
        };
        // The key id, then the Ed25519 seed and public key.
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&bytes[KEYNUM_AT..KEYNUM_AT + 8]);
        let key = &bytes[KEYNUM_AT + 8..KEYNUM_AT + 8 + 64];
        let pair =
            ring::signature::Ed25519KeyPair::from_seed_and_public_key(&key[..32], &key[32..])
                .map_err(|e| {
                    anyhow::anyhow!("its Ed25519 key is inconsistent ({e}): the file is damaged")
                })?;
        let mut pk = b"Ed".to_vec();
        pk.extend_from_slice(&keynum);
        pk.extend_from_slice(&key[32..]);
        let public = minisign::PublicKey::from_bytes(&pk).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SigningKey {
            path: path.to_owned(),
            keynum,
            pair,
            public,
        })
    }

    pub fn key_id(&self) -> String {
        key_id(&self.keynum)
    }

    /// The public key as minisign's one base64 line (`RW…`).
    pub fn public_base64(&self) -> String {
        self.public.to_base64()
    }

    /// The text of a minisign signature file over `data` (prehashed, as
    /// minisign 0.8 and later sign), verified before it is returned.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String> {
        ensure!(
            !trusted_comment.contains('\n'),
            "a trusted comment is one line"
        );
        let prehash = blake2::Blake2b512::digest(data);
        let sig = self.pair.sign(&prehash);
        let mut block = Vec::with_capacity(74);
        block.extend_from_slice(b"ED");
        block.extend_from_slice(&self.keynum);
        block.extend_from_slice(sig.as_ref());
        let mut global = sig.as_ref().to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        let global = self.pair.sign(&global);
        let b64 = |b: &[u8]| Base64::encode_to_string(b).expect("base64 of a few bytes");
        let text = format!(
            "untrusted comment: signature from kiln secret key {}\n{}\ntrusted comment: {}\n{}\n",
            self.key_id(),
            b64(&block),
            trusted_comment,
            b64(global.as_ref())
        );
        let parsed = minisign::SignatureBox::from_string(&text)
            .map_err(|e| anyhow::anyhow!("kiln wrote a signature minisign cannot read: {e}"))?;
        minisign::verify(&self.public, &parsed, Cursor::new(data), true, false, false)
            .map_err(|e| anyhow::anyhow!("kiln's signature does not verify with its key: {e}"))?;
        Ok(text)
    }
}

/// Sign the `SHA256SUMS` of the release directory `dir` into
/// `SHA256SUMS.minisig` with the release's `epoch` as its timestamp.
/// Returns the signature file's fact.
pub fn sign_sums(dir: &Utf8Path, key: &SigningKey, epoch: i64) -> Result<super::facts::FileFact> {
    let sums = dir.join(SUMS);
    let data = std::fs::read(&sums).with_context(|| format!("reading {sums} to sign it"))?;
    let text = key
        .sign(&data, &trusted_comment(epoch))
        .with_context(|| format!("signing {sums} with {}", key.path))?;
    let path = dir.join(SIG);
    std::fs::write(&path, &text).with_context(|| format!("writing the signature {path}"))?;
    Ok(super::facts::FileFact {
        name: SIG.to_string(),
        size: text.len() as u64,
        sha256: crate::digest::bytes_sha256(text.as_bytes()),
    })
}

/// A public key to verify releases with (`--verify-key`).
#[derive(Debug)]
pub struct VerifyingKey {
    pub path: Utf8PathBuf,
    key: minisign::PublicKey,
}

impl VerifyingKey {
    pub fn load(path: &Utf8Path) -> Result<VerifyingKey> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading the public key {path} (--verify-key; expected {PUB_FORMAT})")
        })?;
        VerifyingKey::parse(&text, path).with_context(|| format!("the public key {path}"))
    }

    pub fn parse(text: &str, path: &Utf8Path) -> Result<VerifyingKey> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let encoded = match lines[..] {
            [one] => one.trim(),
            [comment, one] if comment.starts_with("untrusted comment:") => one.trim(),
            _ => bail!("it is not {PUB_FORMAT}"),
        };
        let key = minisign::PublicKey::from_base64(encoded)
            .map_err(|e| anyhow::anyhow!("it is not {PUB_FORMAT} ({e})"))?;
        Ok(VerifyingKey {
            path: path.to_owned(),
            key,
        })
    }

    pub fn key_id(&self) -> String {
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(self.key.keynum());
        key_id(&keynum)
    }

    /// Check `SHA256SUMS.minisig` in `dir` against `SHA256SUMS` there;
    /// returns the signature's trusted comment. A missing, malformed or
    /// wrong signature is an error: a release that cannot be verified is
    /// refused.
    pub fn verify_dir(&self, dir: &Utf8Path) -> Result<String> {
        let sig_path = dir.join(SIG);
        let sums_path = dir.join(SUMS);
        let text = match std::fs::read_to_string(&sig_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{dir} is not signed (there is no {SIG}), and --verify-key {} asks for a signature",
                self.path
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {sig_path}")),
        };
        let data = std::fs::read(&sums_path).with_context(|| format!("reading {sums_path}"))?;
        self.verify(&data, &text).with_context(|| {
            format!(
                "{sums_path} does not verify against {SIG} with the public key {} (key id {})",
                self.path,
                self.key_id()
            )
        })
    }

    /// Check the signature file text `sig` over `data`; returns its trusted comment.
    pub fn verify(&self, data: &[u8], sig: &str) -> Result<String> {
        let parsed = minisign::SignatureBox::from_string(sig)
            .map_err(|e| anyhow::anyhow!("the signature is not a minisign signature ({e})"))?;
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(parsed.keynum());
        ensure!(
            keynum == self.key.keynum(),
            "it was made by the key {}, not by this key ({})",
            key_id(&keynum),
            self.key_id()
        );
        minisign::verify(&self.key, &parsed, Cursor::new(data), true, false, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        parsed
            .trusted_comment()
            .map_err(|e| anyhow::anyhow!("reading its trusted comment: {e}"))
    }
}

/// `release keygen --out DIR`: a new unencrypted key pair, `DIR/kiln.key`
/// (mode 0600) and `DIR/kiln.pub`; existing files are never replaced.
/// Returns the two paths and the key id.
pub fn keygen(out: &Utf8Path) -> Result<(Utf8PathBuf, Utf8PathBuf, String)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out).with_context(|| format!("creating {out}"))?;
    let key = out.join("kiln.key");
    let public = out.join("kiln.pub");
    for p in [&key, &public] {
        ensure!(
            std::fs::symlink_metadata(p).is_err(),
            "{p} exists: kiln never replaces a key (move it away first, or choose another --out)"
        );
    }
    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| anyhow::anyhow!("generating a key pair: {e}"))?;
    let sk_text = pair
        .sk
        .to_box(Some(
            "kiln release signing key (unencrypted: keep it secret)",
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let mut keynum = [0u8; 8];
    keynum.copy_from_slice(pair.pk.keynum());
    let write = |path: &Utf8Path, text: &str, mode: u32| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {path}"))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {path}"))
    };
    write(&key, &sk_text, 0o600)?;
    if let Err(e) = write(&public, &pk_text, 0o644) {
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
    Ok((key, public, key_id(&keynum)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, SigningKey, VerifyingKey) {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let (key, public, id) = keygen(dir).unwrap();
        let sk = SigningKey::load(&key).unwrap();
        let pk = VerifyingKey::load(&public).unwrap();
        assert_eq!(sk.key_id(), id);
        assert_eq!(pk.key_id(), id);
        (d, sk, pk)
    }

    #[test]
    fn key_ids_keep_their_leading_zeros() {
        let keynum = 0x0976_846D_0E7B_B798_u64.to_le_bytes();
        assert_eq!(key_id(&keynum), "0976846D0E7BB798");
        assert_eq!(key_id(&[0; 8]), "0000000000000000");
    }

    #[test]
    fn signatures_are_deterministic_and_verify() {
        let (_d, sk, pk) = pair();
        let a = sk.sign(b"sums\n", &trusted_comment(1700000000)).unwrap();
        let b = sk.sign(b"sums\n", &trusted_comment(1700000000)).unwrap();
        assert_eq!(a, b, "the same key, data and epoch give the same bytes");
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), 4, "{a}");
        assert!(lines[0].starts_with("untrusted comment: "), "{a}");
        assert!(
            lines[1].starts_with("RU"),
            "a prehashed (`ED`) signature: {a}"
        );
        assert_eq!(
            lines[2],
            "trusted comment: timestamp:1700000000\tfile:SHA256SUMS\thashed"
        );
        assert_eq!(
            pk.verify(b"sums\n", &a).unwrap(),
            "timestamp:1700000000\tfile:SHA256SUMS\thashed"
        );
        let other = sk.sign(b"sums\n", &trusted_comment(1700000001)).unwrap();
        assert_ne!(a, other);
        // Other data, or an edited trusted comment, does not verify.
        assert!(pk.verify(b"sums!\n", &a).is_err());
        let edited = a.replace("timestamp:1700000000", "timestamp:1700000009");
        assert!(pk.verify(b"sums\n", &edited).is_err());
    }

    #[test]
    fn a_signature_by_another_key_names_both_keys() {
        let (_d, sk, _) = pair();
        let (_e, _, other) = pair();
        let sig = sk.sign(b"x", &trusted_comment(1)).unwrap();
        let err = format!("{:#}", other.verify(b"x", &sig).unwrap_err());
        assert!(
            err.contains(&sk.key_id()) && err.contains(&other.key_id()),
            "{err}"
        );
    }

    #[test]
    fn malformed_keys_say_what_is_expected() {
        let p = Utf8Path::new("/k/kiln.key");
        let cases = [
            "",
            "not a key\n",
            "untrusted comment: x\nnot base64!\n",
            // A public key where the secret key belongs.
            "untrusted comment: minisign public key: 1\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n",
        ];
        for text in cases {
            let err = format!("{:#}", SigningKey::parse(text, None, p).unwrap_err());
            assert!(err.contains("minisign secret key"), "{text:?}: {err}");
        }
        let err = format!(
            "{:#}",
            VerifyingKey::parse("untrusted comment: x\nRWQ\n", p).unwrap_err()
        );
        assert!(err.contains("minisign public key"), "{err}");
        // A bare base64 line is a public key too (minisign -P).
        let pk = VerifyingKey::parse(
            "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n",
            p,
        )
        .unwrap();
        assert_eq!(pk.key_id(), "E7620F1842B4E81F");
    }

    #[test]
    fn a_damaged_key_is_refused() {
        let (d, _, _) = pair();
        let path = Utf8Path::from_path(d.path()).unwrap().join("kiln.key");
        let text = std::fs::read_to_string(&path).unwrap();
        let (comment, encoded) = text.trim_end().split_once('\n').unwrap();
        let mut raw = Base64::decode_to_vec(encoded, None).unwrap();
        raw[KEYNUM_AT + 20] ^= 1;
        let bad = format!("{comment}\n{}\n", Base64::encode_to_string(&raw).unwrap());
        let err = format!("{:#}", SigningKey::parse(&bad, None, &path).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
        // `minisign -G -W` (0.11) writes no checksum: the seed must still
        // give the public key beside it.
        let mut raw = Base64::decode_to_vec(encoded, None).unwrap();
        raw[SECRET_KEY_BYTES - 32..].fill(0);
        let w = format!("{comment}\n{}\n", Base64::encode_to_string(&raw).unwrap());
        SigningKey::parse(&w, None, &path).unwrap();
        raw[KEYNUM_AT + 20] ^= 1;
        let bad = format!("{comment}\n{}\n", Base64::encode_to_string(&raw).unwrap());
        let err = format!("{:#}", SigningKey::parse(&bad, None, &path).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn an_encrypted_key_needs_the_password_from_the_environment() {
        let pair = minisign::KeyPair::generate_encrypted_keypair(Some("pw".into())).unwrap();
        let text = pair.sk.to_box(None).unwrap().to_string();
        let p = Utf8Path::new("/k/enc.key");
        let err = format!("{:#}", SigningKey::parse(&text, None, p).unwrap_err());
        assert!(err.contains(PASSWORD_ENV), "{err}");
        let err = format!(
            "{:#}",
            SigningKey::parse(&text, Some("wrong"), p).unwrap_err()
        );
        assert!(err.contains(PASSWORD_ENV), "{err}");
        let sk = SigningKey::parse(&text, Some("pw"), p).unwrap();
        let pk = VerifyingKey::parse(&pair.pk.to_box().unwrap().to_string(), p).unwrap();
        let sig = sk.sign(b"data", &trusted_comment(5)).unwrap();
        pk.verify(b"data", &sig).unwrap();
    }

    #[test]
    fn keygen_never_replaces_a_key() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let (key, _, _) = keygen(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(&key).unwrap();
        let err = format!("{:#}", keygen(dir).unwrap_err());
        assert!(err.contains("kiln.key") && err.contains("exists"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), before);
    }
}
