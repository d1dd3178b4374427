//! The rules of the secret scan: what counts as a baked secret or a
//! per-instance identity, how it is recognised, and how it is reported
//! without ever printing the secret itself.
//!
//! Three kinds of checks run on every file the readers hand over:
//! - **markers** over every byte, text or binary (one Aho-Corasick pass):
//!   PEM/OpenSSH/PuTTY private keys and well-known token formats;
//! - **path rules** on the path inside the innermost file system or archive
//!   (`/etc/machine-id`, `ssh_host_*_key`, shell histories, …);
//! - **text rules** on text files up to [`TEXT_LIMIT`] (`.env` assignments,
//!   cloud-config passwords, docker/kube credentials, `/etc/shadow` hashes,
//!   high-entropy values assigned to secret-looking names).

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::Regex;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Text rules run on text files up to this size; larger files get the
/// marker rules only (streamed).
pub const TEXT_LIMIT: u64 = 16 << 20;

/// A rule: its id (used in reports and the recipe's allowlist), what it
/// catches and how to fix a finding.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub description: &'static str,
    pub fix: &'static str,
}

const fn rule(id: &'static str, description: &'static str, fix: &'static str) -> Rule {
    Rule {
        id,
        description,
        fix,
    }
}

pub const RULES: &[Rule] = &[
    rule(
        "private-key",
        "a PEM private key block (RSA, EC, DSA, PKCS#8, encrypted PKCS#8, PGP)",
        "generate keys on the instance at first boot; ship only public keys/certificates",
    ),
    rule(
        "openssh-private-key",
        "an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`)",
        "remove the key; deliver user keys through the cloud-init/autoinstall seed at deploy time",
    ),
    rule(
        "putty-private-key",
        "a PuTTY private key file (`PuTTY-User-Key-File-N:` with private lines)",
        "remove the key; deliver keys at deploy time",
    ),
    rule(
        "ssh-host-key",
        "an SSH host private key (`ssh_host_*_key`): every instance would share one host identity",
        "delete /etc/ssh/ssh_host_*; they are regenerated at first boot (sshd-keygen / cloud-init)",
    ),
    rule(
        "machine-id",
        "a non-empty `/etc/machine-id` (must be empty or `uninitialized` so each instance gets its own)",
        "truncate /etc/machine-id to zero bytes (or write `uninitialized`) as the last build step",
    ),
    rule(
        "dbus-machine-id",
        "`/var/lib/dbus/machine-id` as a regular file with content (a baked D-Bus identity)",
        "remove it or make it a symlink to /etc/machine-id",
    ),
    rule(
        "random-seed",
        "`/var/lib/systemd/random-seed`: every instance would start from the same entropy seed",
        "delete /var/lib/systemd/random-seed from the image",
    ),
    rule(
        "systemd-credential-secret",
        "`/var/lib/systemd/credential.secret`: the host key for systemd-creds encryption",
        "delete /var/lib/systemd/credential.secret from the image; systemd creates one per instance",
    ),
    rule(
        "cloud-init-state",
        "cloud-init instance state (`/var/lib/cloud/instance*`, `/var/lib/cloud/data/`): the image was booted and would not re-run first-boot configuration",
        "run `cloud-init clean --logs` (or delete /var/lib/cloud/instance* and /var/lib/cloud/data) before sealing the image",
    ),
    rule(
        "shadow-password",
        "a usable password hash (or an empty password) in /etc/shadow, shadow-, gshadow(-) or passwd(-)",
        "lock the account (`!`/`*`) and set passwords at deploy time through the seed; remove *- backup files",
    ),
    rule(
        "env-secret",
        "a `.env`-style file assigning a value to a secret-looking name (*PASSWORD*, *SECRET*, *TOKEN*, *_KEY)",
        "leave the value empty or a placeholder like CHANGE_ME; mint secrets at first boot",
    ),
    rule(
        "cloud-config-password",
        "a cloud-config/autoinstall document with `password`, `passwd`, `hashed_passwd` or `plain_text_passwd` set",
        "deliver credentials in the deploy-time seed, not in the image; use ssh keys or `RANDOM`",
    ),
    rule(
        "installer-credentials",
        "subiquity/curtin installer output (`/var/log/installer/*`, `99-installer.cfg`) that still holds credentials from user-data",
        "delete /var/log/installer/autoinstall-user-data and /etc/cloud/cloud.cfg.d/99-installer.cfg (late-commands) or scrub their credentials",
    ),
    rule(
        "docker-auth",
        "a container registry credential file (`config.json`/`auth.json` with `auths` entries holding `auth`/tokens)",
        "log in to registries at deploy time, or use a credential helper; never bake auths",
    ),
    rule(
        "kubeconfig-credentials",
        "a kubeconfig with a token, password or client key",
        "generate cluster credentials on the instance; ship no kubeconfig with user credentials",
    ),
    rule(
        "aws-access-key",
        "a cloud provider access key id (AWS `AKIA…`/`ASIA…`)",
        "revoke the key and use instance roles or deploy-time credentials",
    ),
    rule("github-token", "a GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`)", "revoke the token; inject it at deploy time"),
    rule("gitlab-token", "a GitLab token (`glpat-`, `glrt-`, `gldt-`)", "revoke the token; inject it at deploy time"),
    rule("slack-token", "a Slack token or webhook (`xox?-`, hooks.slack.com/services/…)", "revoke the token; inject it at deploy time"),
    rule("google-api-key", "a Google API key (`AIza…`)", "revoke the key; inject it at deploy time"),
    rule("jwt", "a JSON Web Token (`eyJ….eyJ….…`)", "do not bake issued tokens; obtain them at run time"),
    rule("bearer-token", "an HTTP bearer token written into a file (`Bearer <token>`)", "do not bake tokens; obtain them at run time"),
    rule(
        "shell-history",
        "a non-empty shell or REPL history file (`.bash_history`, `.zsh_history`, `.python_history`, …)",
        "delete history files before sealing the image (build without an interactive shell)",
    ),
    rule(
        "apt-proxy-credentials",
        "apt configuration with credentials (a proxy URL with `user:password@`, or `auth.conf` passwords)",
        "configure authenticated proxies/repositories at deploy time; keep credentials out of /etc/apt",
    ),
    rule(
        "high-entropy-secret",
        "a high-entropy value assigned to a secret-looking name (password, secret, token, api key, …)",
        "remove the value and mint or deliver it at deploy time; if it is not a secret, allowlist it by sha256 with a reason",
    ),
    rule(
        "opaque-content",
        "content kiln cannot open (squashfs, bzip2, lz4, lzma, 7z, LUKS, encrypted or non-deflate ZIP members), so it cannot be proven clean",
        "ship it in a format kiln reads, or allowlist it by path with a reason (e.g. the vendor's installer squashfs)",
    ),
];

/// Rules a private key file is reported under.
const KEY_RULES: &[&str] = &["private-key", "openssh-private-key", "ssh-host-key"];

/// The fix for a finding of `rule` at `path` (inside its file system): for a
/// private key of a per-install identity a package generates
/// ([`crate::identity`]), how to regenerate it; otherwise the rule's own.
pub fn fix(rule: &Rule, path: &str) -> String {
    match crate::identity::key_at(path) {
        Some(id) if KEY_RULES.contains(&rule.id) => format!(
            "remove it from the image and regenerate it at first boot with `{}` \
             (kiln does this for images it builds)",
            id.command()
        ),
        _ => rule.fix.to_string(),
    }
}

/// Look a rule up by id.
pub fn find(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// One match, already redacted. The secret itself is only hashed.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: &'static str,
    /// What a person may see: the context around the secret, never the secret.
    pub excerpt: String,
    /// sha256 of the matched content (for the allowlist).
    pub sha256: String,
    /// Matched content shorter than this is not worth hashing publicly (a
    /// short password's sha256 is easy to reverse): reports withhold it.
    pub hash_public: bool,
    /// 1-based line for text matches.
    pub line: Option<u64>,
    /// Byte range in the file (for de-duplication).
    pub start: u64,
    pub end: u64,
}

/// Content shorter than this has its sha256 withheld from reports.
const MIN_PUBLIC_HASH: usize = 20;

impl Hit {
    pub fn new(rule: &'static str, excerpt: String, secret: &[u8], start: u64, end: u64) -> Hit {
        Hit {
            rule,
            excerpt,
            sha256: hex::encode(Sha256::digest(secret)),
            hash_public: secret.len() >= MIN_PUBLIC_HASH,
            line: None,
            start,
            end,
        }
    }
}

impl Hit {
    /// A hit covering line `no` (1-based) that starts at byte `start` and is
    /// `len` bytes long.
    pub fn on_line(
        rule: &'static str,
        excerpt: String,
        secret: &[u8],
        no: u64,
        start: usize,
        len: usize,
    ) -> Hit {
        let mut h = Hit::new(rule, excerpt, secret, start as u64, (start + len) as u64);
        h.line = Some(no);
        h
    }
}

/// What the readers say about a path besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Marker kinds found by the single byte pass.
#[derive(Debug, Clone, Copy)]
enum Marker {
    PemBegin,
    Putty,
    Aws,
    GitHub,
    GitHubPat,
    GitLab,
    Slack,
    SlackHook,
    Google,
    Jwt,
    Bearer,
}

const MARKERS: &[(&str, Marker)] = &[
    ("-----BEGIN ", Marker::PemBegin),
    ("PuTTY-User-Key-File-", Marker::Putty),
    ("AKIA", Marker::Aws),
    ("ASIA", Marker::Aws),
    ("ghp_", Marker::GitHub),
    ("gho_", Marker::GitHub),
    ("ghu_", Marker::GitHub),
    ("ghs_", Marker::GitHub),
    ("ghr_", Marker::GitHub),
    ("github_pat_", Marker::GitHubPat),
    ("glpat-", Marker::GitLab),
    ("glrt-", Marker::GitLab),
    ("gldt-", Marker::GitLab),
    ("xoxb-", Marker::Slack),
    ("xoxp-", Marker::Slack),
    ("xoxa-", Marker::Slack),
    ("xoxr-", Marker::Slack),
    ("xoxs-", Marker::Slack),
    ("xoxe-", Marker::Slack),
    ("hooks.slack.com/services/T", Marker::SlackHook),
    ("AIza", Marker::Google),
    ("eyJ", Marker::Jwt),
    ("Bearer ", Marker::Bearer),
    ("bearer ", Marker::Bearer),
];

/// Words that make a line worth checking for a secret assignment.
const SECRET_WORDS: &[&str] = &["pass", "secret", "token", "key", "auth", "credential"];

/// Shell and REPL history file names.
const HISTORIES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".ash_history",
    ".history",
    "fish_history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".rediscli_history",
    ".lesshst",
];

/// The compiled rule set. Build once, share.
pub struct Engine {
    markers: AhoCorasick,
    words: AhoCorasick,
    env_line: Regex,
    cc_key: Regex,
    cc_flow: Regex,
    chpasswd_entry: Regex,
    kube_line: Regex,
    apt_proxy: Regex,
    apt_auth: Regex,
    docker_fallback: Regex,
    assign: Regex,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        let re = |s: &str| Regex::new(s).expect("rule regex compiles");
        Engine {
            markers: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(MARKERS.iter().map(|(p, _)| p))
                .expect("marker automaton"),
            // Lower, Title and UPPER case spelled out: a case-sensitive
            // automaton keeps its SIMD prefilter (a case-insensitive one
            // scans byte by byte, several times slower on large text).
            words: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(SECRET_WORDS.iter().flat_map(|w| {
                    let mut t = w.to_string();
                    t[..1].make_ascii_uppercase();
                    [w.to_string(), t, w.to_ascii_uppercase()]
                }))
                .expect("word automaton"),
            env_line: re(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$"),
            cc_key: re(
                r"^\s*(?:-\s+)?(password|passwd|hashed_passwd|plain_text_passwd)\s*:\s*(.*?)\s*$",
            ),
            cc_flow: re(r"[{,]\s*(password|passwd|hashed_passwd|plain_text_passwd)\s*:\s*([^,}]*)"),
            chpasswd_entry: re(r"^\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_.-]*):(\S+)\s*$"),
            kube_line: re(
                r"^\s*(?:-\s+)?(token|client-key-data|password|id-token|refresh-token)\s*:\s*(.*?)\s*$",
            ),
            apt_proxy: re(r#"(?i)[a-z][a-z0-9+.-]*://([^:@/\s"';]+):([^@/\s"';]+)@"#),
            apt_auth: re(r"^\s*password\s+(\S+)"),
            docker_fallback: re(r#""(auth|identitytoken|registrytoken|password)"\s*:\s*"([^"]+)""#),
            assign: re(
                r#"(?i)([a-z0-9_.-]*(?:pass(?:wd|word)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key|client[_-]?secret|credentials?)[a-z0-9_.-]*)["']?\s*(?:=|:|=>)\s*["']?([A-Za-z0-9+/=_~-]{20,})"#,
            ),
        }
    }

    /// Rules for an entry that has no content to read (directory, symlink, device).
    pub fn entry(&self, path: &str, kind: Kind) -> Vec<Hit> {
        let mut hits = Vec::new();
        if kind == Kind::Symlink && is_cloud_state(path) {
            hits.push(Hit::new(
                "cloud-init-state",
                format!("{path} (symlink)"),
                path.as_bytes(),
                0,
                0,
            ));
        }
        hits
    }

    /// Every rule on a whole file held in memory.
    pub fn file(&self, path: &str, data: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.path_rules(path, data.len() as u64, data, &mut hits);
        self.markers(data, 0, 0, is_doc(path), &mut hits);
        if is_text(data) {
            self.text_rules(path, data, &mut hits);
        }
        finish(hits, data)
    }

    /// Path rules for a file too large to hold (`head` = its first bytes).
    pub fn large_file_path_rules(&self, path: &str, size: u64, head: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.path_rules(path, size, head, &mut hits);
        hits
    }

    /// Marker rules on one chunk of a large file. `base` is the chunk's
    /// offset in the file; hits starting before `from` (inside the overlap
    /// already scanned with the previous chunk) are skipped.
    pub fn chunk(&self, path: &str, data: &[u8], base: u64, from: usize) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.markers(data, base, from, is_doc(path), &mut hits);
        dedup(hits)
    }

    fn path_rules(&self, path: &str, size: u64, data: &[u8], hits: &mut Vec<Hit>) {
        let base = basename(path);
        let whole = |rule: &'static str, what: String, hits: &mut Vec<Hit>| {
            hits.push(Hit::new(rule, what, data, 0, size));
        };
        if base.starts_with("ssh_host_") && base.ends_with("_key") && size > 0 {
            whole(
                "ssh-host-key",
                format!("{base} [redacted, {size} bytes]"),
                hits,
            );
        }
        if path_is(path, "/etc/machine-id") {
            let t = String::from_utf8_lossy(data);
            let t = t.trim();
            if !t.is_empty() && t != "uninitialized" {
                whole(
                    "machine-id",
                    format!("machine-id [redacted, {} chars]", t.len()),
                    hits,
                );
            }
        }
        if path_is(path, "/var/lib/dbus/machine-id") && size > 0 {
            whole(
                "dbus-machine-id",
                format!("regular file [redacted, {size} bytes]"),
                hits,
            );
        }
        if path_is(path, "/var/lib/systemd/random-seed") && size > 0 {
            whole(
                "random-seed",
                format!("random seed [redacted, {size} bytes]"),
                hits,
            );
        }
        if path_is(path, "/var/lib/systemd/credential.secret") && size > 0 {
            whole(
                "systemd-credential-secret",
                format!("credential secret [redacted, {size} bytes]"),
                hits,
            );
        }
        if is_cloud_state(path) {
            whole(
                "cloud-init-state",
                format!("instance state file ({size} bytes)"),
                hits,
            );
        }
        if HISTORIES.contains(&base) && size > 0 {
            whole(
                "shell-history",
                format!("{base} [redacted, {size} bytes]"),
                hits,
            );
        }
    }

    fn markers(&self, data: &[u8], base: u64, from: usize, doc: bool, hits: &mut Vec<Hit>) {
        for m in self.markers.find_iter(data) {
            let i = m.start();
            if i < from {
                continue;
            }
            let kind = MARKERS[m.pattern().as_usize()].1;
            let prev_ok = i == 0 || !is_word(data[i - 1]);
            let at = |end: usize| (base + i as u64, base + end as u64);
            match kind {
                Marker::PemBegin => {
                    if let Some((rule, label, end)) = pem_block(data, i) {
                        let (s, e) = at(end);
                        hits.push(Hit::new(
                            rule,
                            format!("-----BEGIN {label}----- [redacted, {} bytes]", end - i),
                            &data[i..end],
                            s,
                            e,
                        ));
                    }
                }
                Marker::Putty => {
                    let win = &data[i..data.len().min(i + 16384)];
                    if let Some(p) = memchr::memmem::find(win, b"Private-Lines:") {
                        let end = memchr::memmem::find(&win[p..], b"Private-MAC:")
                            .map(|q| p + q)
                            .and_then(|q| memchr::memchr(b'\n', &win[q..]).map(|n| q + n))
                            .unwrap_or(win.len());
                        let first = win.iter().take(80).position(|&b| b == b'\n').unwrap_or(0);
                        let head = String::from_utf8_lossy(&win[..first]).trim().to_string();
                        let (s, e) = at(i + end);
                        hits.push(Hit::new(
                            "putty-private-key",
                            format!("{head} [redacted, {end} bytes]"),
                            &win[..end],
                            s,
                            e,
                        ));
                    }
                }
                Marker::Aws if prev_ok => {
                    let n = run_len(&data[i + 4..], |b| {
                        b.is_ascii_uppercase() || b.is_ascii_digit()
                    });
                    let end = i + 4 + n;
                    if n == 16 && (end == data.len() || !is_word(data[end])) {
                        let tok = &data[i..end];
                        if !contains(tok, b"EXAMPLE") {
                            let (s, e) = at(end);
                            let pre = String::from_utf8_lossy(&tok[..4]);
                            hits.push(Hit::new(
                                "aws-access-key",
                                format!("{pre}[redacted]"),
                                tok,
                                s,
                                e,
                            ));
                        }
                    }
                }
                Marker::GitHub if prev_ok => {
                    let n = run_len(&data[i + 4..], |b| b.is_ascii_alphanumeric());
                    if n >= 36 {
                        self.token(hits, "github-token", data, i, 4, i + 4 + n, base);
                    }
                }
                Marker::GitHubPat if prev_ok => {
                    let n = run_len(&data[i + 11..], |b| b.is_ascii_alphanumeric() || b == b'_');
                    if n >= 40 {
                        self.token(hits, "github-token", data, i, 11, i + 11 + n, base);
                    }
                }
                Marker::GitLab if prev_ok => {
                    let p = m.end() - i;
                    let n = run_len(&data[m.end()..], |b| {
                        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
                    });
                    if n >= 20 {
                        self.token(hits, "gitlab-token", data, i, p, m.end() + n, base);
                    }
                }
                Marker::Slack if prev_ok => {
                    let n = run_len(&data[i + 5..], |b| b.is_ascii_alphanumeric() || b == b'-');
                    let tok = &data[i + 5..i + 5 + n];
                    if n >= 10 && tok.iter().any(u8::is_ascii_digit) {
                        self.token(hits, "slack-token", data, i, 5, i + 5 + n, base);
                    }
                }
                Marker::SlackHook => {
                    let p = m.end() - i - 1;
                    let n = run_len(&data[i + p..], |b| b.is_ascii_alphanumeric() || b == b'/');
                    if n >= 20 {
                        self.token(hits, "slack-token", data, i, p, i + p + n, base);
                    }
                }
                Marker::Google if prev_ok => {
                    let n = run_len(&data[i + 4..], |b| {
                        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
                    });
                    if n == 35 {
                        self.token(hits, "google-api-key", data, i, 4, i + 4 + n, base);
                    }
                }
                Marker::Jwt if prev_ok && !doc => {
                    if let Some(end) = jwt_at(data, i) {
                        self.token(hits, "jwt", data, i, 3, end, base);
                    }
                }
                Marker::Bearer if !doc => {
                    let t0 = i + 7;
                    let n = run_len(&data[t0..], |b| {
                        b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
                    });
                    let tok = &data[t0..t0 + n];
                    if n >= 20 && looks_random(tok) {
                        let (s, e) = at(t0 + n);
                        hits.push(Hit::new(
                            "bearer-token",
                            format!("Bearer [redacted, {n} chars]"),
                            tok,
                            s,
                            e,
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn token(
        &self,
        hits: &mut Vec<Hit>,
        rule: &'static str,
        data: &[u8],
        i: usize,
        prefix: usize,
        end: usize,
        base: u64,
    ) {
        let tok = &data[i..end];
        let pre = String::from_utf8_lossy(&tok[..prefix]);
        hits.push(Hit::new(
            rule,
            format!("{pre}[redacted, {} chars]", end - i - prefix),
            tok,
            base + i as u64,
            base + end as u64,
        ));
    }

    fn text_rules(&self, path: &str, data: &[u8], hits: &mut Vec<Hit>) {
        let base = basename(path);
        let doc = is_doc(path);
        let shadow = [
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/gshadow",
            "/etc/gshadow-",
        ]
        .iter()
        .any(|p| path_is(path, p));
        let passwd = path_is(path, "/etc/passwd") || path_is(path, "/etc/passwd-");
        if shadow || passwd {
            self.shadow(data, base.starts_with('g'), passwd, hits);
        }
        let env = base == ".env"
            || base.ends_with(".env")
            || base.starts_with(".env.")
            || path_is(path, "/etc/environment");
        if env && !doc {
            self.env(data, hits);
        }
        let installer = path.contains("/var/log/installer/")
            || path_is(path, "/etc/cloud/cloud.cfg.d/99-installer.cfg");
        let trimmed = trim_start(data);
        let cloud_config = trimmed.starts_with(b"#cloud-config")
            || matches!(
                base,
                "user-data" | "vendor-data" | "autoinstall.yaml" | "autoinstall-user-data"
            )
            || path.contains("/etc/cloud/cloud.cfg");
        if installer {
            self.cloud_config(data, "installer-credentials", hits);
        } else if cloud_config && !doc {
            self.cloud_config(data, "cloud-config-password", hits);
        }
        if matches!(base, "config.json" | "auth.json" | ".dockercfg") && contains(data, b"\"auth") {
            self.docker(data, hits);
        }
        let kube = path.contains("/.kube/")
            || base.ends_with("kubeconfig")
            || base == "k3s.yaml"
            || contains(data, b"kind: Config")
            || contains(data, b"\"kind\": \"Config\"");
        if kube && !doc && (contains(data, b"users:") || contains(data, b"\"users\"")) {
            self.kube(data, hits);
        }
        // apt's man pages show `[user][:password]@` URLs: documentation is exempt.
        if !doc
            && (path.contains("/etc/apt/") || base.starts_with("apt.conf") || base == "auth.conf")
        {
            self.apt(
                data,
                base == "auth.conf" || path.contains("/auth.conf.d/"),
                hits,
            );
        }
        // The heuristic runs where appliances keep their own configuration:
        // everywhere but the distribution's /usr (except /usr/local) and docs.
        let vendor = path.starts_with("/usr/") && !path.starts_with("/usr/local/");
        if !doc && !vendor {
            self.assignments(data, hits);
        }
    }

    fn shadow(&self, data: &[u8], gshadow: bool, passwd: bool, hits: &mut Vec<Hit>) {
        for (no, start, line) in lines(data) {
            let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
            if fields.len() < 2 || fields[0].is_empty() || line.starts_with(b"#") {
                continue;
            }
            let user = String::from_utf8_lossy(fields[0]);
            let pw = fields[1];
            let usable_hash = pw.starts_with(b"$")
                || (pw.len() == 13
                    && pw
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/'));
            let empty = pw.is_empty() && !gshadow && !passwd;
            let passwd_hash = passwd && !matches!(pw, b"x" | b"*" | b"!" | b"") && usable_hash;
            if (usable_hash && !passwd) || passwd_hash || empty {
                let what = if empty {
                    format!("{user}::… (empty password: login without a password)")
                } else {
                    let id = if pw.starts_with(b"$") {
                        let end = pw[1..]
                            .iter()
                            .position(|&b| b == b'$')
                            .map(|p| p + 2)
                            .unwrap_or(1);
                        String::from_utf8_lossy(&pw[..end]).into_owned()
                    } else {
                        String::new()
                    };
                    format!("{user}:{id}[redacted hash]:…")
                };
                let secret = if empty { line } else { pw };
                hits.push(Hit::on_line(
                    "shadow-password",
                    what,
                    secret,
                    no,
                    start,
                    line.len(),
                ));
            }
        }
    }

    fn env(&self, data: &[u8], hits: &mut Vec<Hit>) {
        for (no, start, line) in lines(data) {
            let Some(c) = self.env_line.captures(line) else {
                continue;
            };
            let name = String::from_utf8_lossy(&c[1]).to_ascii_uppercase();
            if !secret_name(&name) {
                continue;
            }
            let value = strip_env_value(&c[2]);
            if is_placeholder(value) {
                continue;
            }
            hits.push(Hit::on_line(
                "env-secret",
                format!(
                    "{}=[redacted, {} chars]",
                    String::from_utf8_lossy(&c[1]),
                    value.len()
                ),
                value,
                no,
                start,
                line.len(),
            ));
        }
    }

    fn cloud_config(&self, data: &[u8], rule: &'static str, hits: &mut Vec<Hit>) {
        let mut chpasswd_indent: Option<usize> = None;
        for (no, start, line) in lines(data) {
            let indent = line.iter().take_while(|&&b| b == b' ').count();
            let body = &line[indent..];
            if body.is_empty() || body.starts_with(b"#") {
                continue;
            }
            if let Some(ci) = chpasswd_indent {
                if indent <= ci {
                    chpasswd_indent = None;
                }
            }
            if body.starts_with(b"chpasswd:") {
                chpasswd_indent = Some(indent);
            }
            let mut found: Option<(Vec<u8>, Vec<u8>)> = None;
            if let Some(c) = self.cc_key.captures(line) {
                found = Some((c[1].to_vec(), c[2].to_vec()));
            } else if let Some(c) = self.cc_flow.captures(line) {
                found = Some((c[1].to_vec(), c[2].to_vec()));
            } else if chpasswd_indent.is_some() {
                if let Some(c) = self.chpasswd_entry.captures(line) {
                    if !c[2].starts_with(b"//") {
                        found = Some((c[1].to_vec(), c[2].to_vec()));
                    }
                }
            }
            let Some((key, value)) = found else { continue };
            let v = strip_quotes(trim(&value));
            if is_placeholder(v)
                || v.eq_ignore_ascii_case(b"RANDOM")
                || v == b"R"
                || v.starts_with(b"|")
                || v.starts_with(b">")
            {
                continue;
            }
            hits.push(Hit::on_line(
                rule,
                format!(
                    "{}: [redacted, {} chars]",
                    String::from_utf8_lossy(&key),
                    v.len()
                ),
                v,
                no,
                start,
                line.len(),
            ));
        }
    }

    fn docker(&self, data: &[u8], hits: &mut Vec<Hit>) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
                for (registry, entry) in auths {
                    for key in ["auth", "identitytoken", "registrytoken", "password"] {
                        if let Some(s) = entry.get(key).and_then(|s| s.as_str()) {
                            if !s.is_empty() {
                                hits.push(Hit::new(
                                    "docker-auth",
                                    format!(
                                        "auths.{registry}.{key} = [redacted, {} chars]",
                                        s.len()
                                    ),
                                    s.as_bytes(),
                                    0,
                                    data.len() as u64,
                                ));
                            }
                        }
                    }
                }
            }
            return;
        }
        for (no, start, line) in lines(data) {
            for c in self.docker_fallback.captures_iter(line) {
                hits.push(Hit::on_line(
                    "docker-auth",
                    format!(
                        "\"{}\": [redacted, {} chars]",
                        String::from_utf8_lossy(&c[1]),
                        c[2].len()
                    ),
                    &c[2],
                    no,
                    start,
                    line.len(),
                ));
            }
        }
    }

    fn kube(&self, data: &[u8], hits: &mut Vec<Hit>) {
        for (no, start, line) in lines(data) {
            let Some(c) = self.kube_line.captures(line) else {
                continue;
            };
            let v = strip_quotes(trim(&c[2]));
            if is_placeholder(v) {
                continue;
            }
            hits.push(Hit::on_line(
                "kubeconfig-credentials",
                format!(
                    "{}: [redacted, {} chars]",
                    String::from_utf8_lossy(&c[1]),
                    v.len()
                ),
                v,
                no,
                start,
                line.len(),
            ));
        }
    }

    fn apt(&self, data: &[u8], auth_conf: bool, hits: &mut Vec<Hit>) {
        for (no, start, line) in lines(data) {
            let t = trim(line);
            if t.starts_with(b"#") || t.starts_with(b"//") {
                continue;
            }
            let mut push = |what: String, secret: &[u8]| {
                hits.push(Hit::on_line(
                    "apt-proxy-credentials",
                    what,
                    secret,
                    no,
                    start,
                    line.len(),
                ));
            };
            if let Some(c) = self.apt_proxy.captures(line) {
                if !is_placeholder(&c[2]) {
                    push(
                        format!("{}:[redacted]@… in a URL", String::from_utf8_lossy(&c[1])),
                        &c[2],
                    );
                }
            } else if auth_conf {
                if let Some(c) = self.apt_auth.captures(line) {
                    if !is_placeholder(&c[1]) {
                        push(format!("password [redacted, {} chars]", c[1].len()), &c[1]);
                    }
                }
            }
        }
    }

    /// High-entropy values assigned to secret-looking names, in any text file.
    fn assignments(&self, data: &[u8], hits: &mut Vec<Hit>) {
        let mut last_line_end = 0usize;
        for m in self.words.find_iter(data) {
            if m.start() < last_line_end {
                continue;
            }
            let ls = memchr::memrchr(b'\n', &data[..m.start()])
                .map(|p| p + 1)
                .unwrap_or(0);
            let le = memchr::memchr(b'\n', &data[m.start()..])
                .map(|p| m.start() + p)
                .unwrap_or(data.len());
            last_line_end = le;
            if hits
                .iter()
                .any(|h| (h.start as usize) < le && (h.end as usize) > ls)
            {
                continue;
            }
            let line = &data[ls..le];
            for c in self.assign.captures_iter(line) {
                let v = c.get(2).expect("group 2");
                let value = v.as_bytes();
                if is_placeholder(value) || !looks_random(value) {
                    continue;
                }
                let mut h = Hit::new(
                    "high-entropy-secret",
                    format!(
                        "{} = [redacted, {} chars]",
                        String::from_utf8_lossy(&c[1]),
                        value.len()
                    ),
                    value,
                    (ls + v.start()) as u64,
                    (ls + v.end()) as u64,
                );
                h.line = Some(line_of(data, ls));
                hits.push(h);
            }
        }
    }
}

/// Sort, drop overlapping hits (a JWT inside a bearer token), fill in lines.
fn finish(hits: Vec<Hit>, data: &[u8]) -> Vec<Hit> {
    let mut hits = dedup(hits);
    for h in &mut hits {
        if h.line.is_none() && h.end > h.start && is_text(data) {
            h.line = Some(line_of(data, h.start as usize));
        }
    }
    hits
}

fn dedup(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut out: Vec<Hit> = Vec::new();
    for h in hits {
        let overlaps = h.end > h.start
            && out
                .iter()
                .any(|k| k.end > k.start && h.start < k.end && k.start < h.end);
        if !overlaps {
            out.push(h);
        }
    }
    out
}

fn line_of(data: &[u8], at: usize) -> u64 {
    memchr::memchr_iter(b'\n', &data[..at.min(data.len())]).count() as u64 + 1
}

/// `(1-based line number, start offset, line without newline)`.
fn lines(data: &[u8]) -> impl Iterator<Item = (u64, usize, &[u8])> {
    let mut start = 0usize;
    let mut no = 0u64;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &data[start..])
            .map(|p| start + p)
            .unwrap_or(data.len());
        let mut line = &data[start..end];
        if line.ends_with(b"\r") {
            line = &line[..line.len() - 1];
        }
        let s = start;
        start = end + 1;
        no += 1;
        Some((no, s, line))
    })
}

/// A PEM private-key block at `i` (which holds `-----BEGIN `): rule, label,
/// end offset. A bare marker without a body (as in the strings of
/// `ssh-keygen` or libcrypto) is not a key.
fn pem_block(data: &[u8], i: usize) -> Option<(&'static str, String, usize)> {
    let rest = &data[i + 11..];
    let lab_len = rest.iter().take(64).position(|&b| b == b'-')?;
    if !rest[lab_len..].starts_with(b"-----") {
        return None;
    }
    let label = &rest[..lab_len];
    if !label
        .iter()
        .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'#')
    {
        return None;
    }
    if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
        return None;
    }
    let body = i + 11 + lab_len + 5;
    let mut count = 0usize;
    let mut j = body;
    while j < data.len() && j < body + 2048 && count < 64 {
        let b = data[j];
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' {
            count += 1;
        } else if !b" \t\r\n\\:,-".contains(&b) {
            break;
        }
        j += 1;
    }
    if count < 64 {
        return None;
    }
    let search_end = data.len().min(body + (1 << 16));
    let end = match memchr::memmem::find(&data[body..search_end], b"-----END ") {
        Some(p) => {
            let e = body + p + 9;
            memchr::memmem::find(&data[e..search_end.min(e + 80)], b"-----")
                .map(|q| e + q + 5)
                .unwrap_or(e)
        }
        None => data.len().min(body + 4096),
    };
    let label_s = String::from_utf8_lossy(label).into_owned();
    let rule = if label == b"OPENSSH PRIVATE KEY" {
        "openssh-private-key"
    } else {
        "private-key"
    };
    Some((rule, label_s, end))
}

/// A JWT at `i`: three base64url segments, the first two decoding to JSON
/// objects (`eyJ` = `{"`), the header naming an `alg`.
fn jwt_at(data: &[u8], i: usize) -> Option<usize> {
    let seg = |from: usize| {
        run_len(&data[from..], |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        })
    };
    let a = seg(i);
    if a < 10 || data.get(i + a) != Some(&b'.') {
        return None;
    }
    let p = i + a + 1;
    let b = seg(p);
    if b < 10 || !data[p..].starts_with(b"eyJ") || data.get(p + b) != Some(&b'.') {
        return None;
    }
    let s = p + b + 1;
    let c = seg(s);
    if c < 16 {
        return None;
    }
    let header = b64url_decode(&data[i..i + a])?;
    if !contains(&header, b"\"alg\"") {
        return None;
    }
    Some(s + c)
}

fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        })
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn run_len(data: &[u8], ok: impl Fn(u8) -> bool) -> usize {
    data.iter().take(4096).take_while(|&&b| ok(b)).count()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Text: no NUL byte in the first 8 KiB.
pub fn is_text(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(8192)]).is_none()
}

/// Documentation shipped by packages (`/usr/share/doc`, man/info pages,
/// Python package metadata): its examples (sample cloud-configs, RFC example
/// tokens) are exempt from the structural and heuristic rules. Key markers,
/// provider token formats and path rules still apply.
pub fn is_doc(path: &str) -> bool {
    [
        "/usr/share/doc/",
        "/usr/share/man/",
        "/usr/share/info/",
        "/usr/share/gtk-doc/",
        "/usr/share/help/",
    ]
    .iter()
    .any(|d| path.contains(d))
        || path
            .split('/')
            .any(|c| c.ends_with(".egg-info") || c.ends_with(".dist-info"))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `path` is `p` (absolute) or ends with it at a component boundary (a tree
/// scanned from above its root, e.g. a stage step's `tree/`).
fn path_is(path: &str, p: &str) -> bool {
    path == p || (path.ends_with(p) && p.starts_with('/'))
}

fn is_cloud_state(path: &str) -> bool {
    ["/var/lib/cloud/instance", "/var/lib/cloud/data/"]
        .iter()
        .any(|p| {
            path.find(p).is_some_and(|i| {
                let rest = &path[i + p.len()..];
                // `/var/lib/cloud/instance`, `…/instance/…`, `…/instances/…`, `…/data/…`
                p.ends_with('/')
                    || rest.is_empty()
                    || rest.starts_with('/')
                    || rest.starts_with("s/")
            })
        })
}

fn secret_name(upper: &str) -> bool {
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "CREDENTIAL",
        "APIKEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || upper.ends_with("_KEY")
        || upper == "KEY"
        || upper.ends_with("_PASS")
        || upper.ends_with("_PW")
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|p| p + 1)
        .unwrap_or(s);
    &v[s..e.max(s)]
}

fn trim_start(v: &[u8]) -> &[u8] {
    let v = v.strip_prefix(b"\xef\xbb\xbf").unwrap_or(v);
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    &v[s..]
}

fn strip_quotes(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && (v[0] == b'"' || v[0] == b'\'') && v[v.len() - 1] == v[0] {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// A `.env` value: quotes removed, an unquoted trailing ` # comment` dropped.
fn strip_env_value(v: &[u8]) -> &[u8] {
    let v = trim(v);
    if v.first().is_some_and(|&q| q == b'"' || q == b'\'') {
        let q = v[0];
        return match v[1..].iter().position(|&b| b == q) {
            Some(p) => &v[1..1 + p],
            None => &v[1..],
        };
    }
    match memchr::memmem::find(v, b" #") {
        Some(p) => trim(&v[..p]),
        None => v,
    }
}

/// Empty values, references to other variables, and the usual placeholders.
pub fn is_placeholder(v: &[u8]) -> bool {
    let v = strip_quotes(trim(v));
    let reference = v.starts_with(b"$") && !is_crypt_hash(v);
    if v.is_empty() || reference || v.starts_with(b"%") || v.starts_with(b"{{") {
        return true;
    }
    if v.iter()
        .all(|&b| b == b'*' || b == b'x' || b == b'X' || b == b'.' || b == b'-')
    {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "change_me",
        "changeme",
        "change-me",
        "placeholder",
        "replace_me",
        "replaceme",
        "replace-me",
        "example",
        "<",
        "your_",
        "your-",
        "todo",
        "fixme",
        "redacted",
        "dummy",
    ];
    if WORDS.iter().any(|w| contains(&lower, w.as_bytes())) {
        return true;
    }
    matches!(
        &lower[..],
        b"none" | b"null" | b"nil" | b"true" | b"false" | b"yes" | b"no" | b"''" | b"\"\"" | b"~"
    )
}

/// A crypt(3) hash (`$6$salt$hash`, `$y$…`, `$2b$…`), not a `$VARIABLE`.
fn is_crypt_hash(v: &[u8]) -> bool {
    v.len() > 4
        && v[0] == b'$'
        && v[1..]
            .iter()
            .take(4)
            .position(|&b| b == b'$')
            .is_some_and(|p| p > 0 && v[1..1 + p].iter().all(u8::is_ascii_alphanumeric))
}

/// Shannon entropy in bits per byte.
pub fn entropy(v: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in v {
        counts[b as usize] += 1;
    }
    let n = v.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Looks like a generated secret: long, mixed letters and digits, high
/// entropy, and at least 16 characters without a `-`/`_`/`~` separator
/// (so `X-aws-ec2-metadata-token` or `binutils-all/i386` are not secrets).
pub fn looks_random(v: &[u8]) -> bool {
    let longest = v
        .split(|b| b"-_~".contains(b))
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    v.len() >= 20
        && longest >= 16
        && v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_alphabetic)
        && entropy(v) >= 3.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(hits: &[Hit]) -> Vec<&'static str> {
        hits.iter().map(|h| h.rule).collect()
    }

    #[test]
    fn every_rule_id_is_unique_and_described() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate rule {}", r.id);
            assert!(!r.description.is_empty() && !r.fix.is_empty());
        }
    }

    #[test]
    fn bare_markers_in_binaries_are_not_keys() {
        let e = Engine::new();
        let bin = b"\x7fELF\0\0-----BEGIN OPENSSH PRIVATE KEY-----\n\0-----END OPENSSH PRIVATE KEY-----\n\0";
        assert!(e.file("/usr/bin/ssh-keygen", bin).is_empty());
        assert!(e
            .file("/usr/bin/x", b"Authorization: Bearer %s\n")
            .is_empty());
    }

    #[test]
    fn env_placeholders_and_references_pass() {
        let e = Engine::new();
        let ok = b"DB_PASSWORD=\nAPI_TOKEN=CHANGE_ME\nSECRET_KEY=\"${FROM_ENV}\"\nNAME=demo\n# X_TOKEN=abc\n";
        assert!(
            e.file("/etc/demo/app.env", ok).is_empty(),
            "{:?}",
            ids(&e.file("/etc/demo/app.env", ok))
        );
        let bad = b"DB_PASSWORD='hunter2'\n";
        let h = e.file("/etc/demo/app.env", bad);
        assert_eq!(ids(&h), ["env-secret"]);
        assert!(!h[0].excerpt.contains("hunter2"));
        assert!(!h[0].hash_public, "short secrets have their hash withheld");
        assert_eq!(h[0].line, Some(1));
    }

    #[test]
    fn shadow_locked_accounts_pass() {
        let e = Engine::new();
        let ok = b"root:*:19000:0:99999:7:::\ndemo:!:19000::::::\nsys:!$6$abc$def:1::::::\n";
        assert!(e.file("/etc/shadow", ok).is_empty());
        let bad = b"root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n";
        let h = e.file("/etc/shadow", bad);
        assert_eq!(ids(&h), ["shadow-password"]);
        assert!(
            h[0].excerpt.starts_with("root:$6$[redacted"),
            "{}",
            h[0].excerpt
        );
        assert_eq!(
            ids(&e.file("/etc/shadow", b"root::19000:0:99999:7:::\n")),
            ["shadow-password"]
        );
    }

    #[test]
    fn machine_id_empty_or_uninitialized_passes() {
        let e = Engine::new();
        assert!(e.file("/etc/machine-id", b"").is_empty());
        assert!(e.file("/etc/machine-id", b"uninitialized\n").is_empty());
        assert_eq!(
            ids(&e.file("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n")),
            ["machine-id"]
        );
    }

    #[test]
    fn cloud_config_random_and_hashes() {
        let e = Engine::new();
        let ok = b"#cloud-config\nchpasswd:\n  expire: false\n  users:\n    - name: demo\n      password: RANDOM\n";
        assert!(
            e.file("/x/user-data", ok).is_empty(),
            "{:?}",
            ids(&e.file("/x/user-data", ok))
        );
        let bad = b"#cloud-config\nautoinstall:\n  identity:\n    password: \"$6$abc$defghijk\"\n";
        assert_eq!(ids(&e.file("/x/user-data", bad)), ["cloud-config-password"]);
        let list = b"#cloud-config\nchpasswd:\n  list: |\n    root:s3cretpw\n";
        assert_eq!(
            ids(&e.file("/x/user-data", list)),
            ["cloud-config-password"]
        );
    }

    #[test]
    fn tokens_with_examples_excluded() {
        let e = Engine::new();
        assert!(e.file("/doc", b"key AKIAIOSFODNN7EXAMPLE here").is_empty());
        assert_eq!(
            ids(&e.file("/doc", b"key AKIAZ7QW3ERT5YUI8OPA here")),
            ["aws-access-key"]
        );
    }

    #[test]
    fn assignment_needs_entropy() {
        let e = Engine::new();
        assert!(e
            .file("/a.yaml", b"api_token: this_is_not_random_at_all_really\n")
            .is_empty());
        let h = e.file("/a.yaml", b"api_token: 9fQ2xL7vR1mZ8kT4pW6sB3nH5jD0cY\n");
        assert_eq!(ids(&h), ["high-entropy-secret"]);
        assert!(!h[0].excerpt.contains("9fQ2x"));
    }
}
