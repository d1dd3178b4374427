//! The recipe's `smoke:` section: what `cargo xtask smoke` expects of a
//! booted instance of the appliance, as data. Consumed by `crate::smoke`.

use anyhow::{bail, Result};
use camino::Utf8Path;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a smoke boot checks. Every pattern is a regular expression
/// (Rust `regex` syntax) matched against the guest's serial console.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeOptions {
    /// The first boot of each instance: checks in order, each within its
    /// time counted from the previous one. Default: a login prompt.
    #[serde(default = "default_boot")]
    pub boot: Vec<Check>,
    /// A second boot of the same disk (the first instance's), in order.
    /// Empty: no second boot.
    #[serde(default)]
    pub again: Vec<Check>,
    /// Console patterns of first-boot work: each must appear on the first
    /// boot and none on the second.
    #[serde(default)]
    pub once: Vec<String>,
    /// Console patterns that fail a boot the moment they appear.
    #[serde(default = "default_fail")]
    pub fail: Vec<String>,
    /// The identity report the appliance prints on every boot: a pattern
    /// with the groups `name` and `digest` (digests, never values). Two
    /// instances must differ in every name; a second boot must repeat the
    /// first boot's report.
    #[serde(default)]
    pub identity: Option<String>,
    /// The config carrier: the smoke attaches the recipe's cloud-init seed
    /// to the first instance, with fresh values for `set` in provision.env,
    /// and expects the appliance to report their digests.
    #[serde(default)]
    pub carrier: Option<Carrier>,
    /// Seconds a guest keeps running after its last check, so that what
    /// the boot wrote is on disk before qemu is stopped.
    #[serde(default = "default_settle")]
    pub settle: u64,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// Checks for the remastered installer ISO, after kiln's own check that
    /// the kernel's command line carries the autoinstall arguments.
    #[serde(default)]
    pub iso: Vec<Check>,
    /// Seconds an install boot of kiln's installer ISO has to write and
    /// verify the disk (up to its `install complete` line). TCG writes
    /// about 6 MiB/s of image on an idle core, and under a tenth of that on
    /// a two-core machine busy with other guests: raise it for large disks.
    #[serde(default = "default_install_within")]
    pub install_within: u64,
}

impl Default for SmokeOptions {
    fn default() -> Self {
        SmokeOptions {
            boot: default_boot(),
            again: Vec::new(),
            once: Vec::new(),
            fail: default_fail(),
            identity: None,
            carrier: None,
            settle: default_settle(),
            memory: default_memory(),
            iso: Vec::new(),
            install_within: default_install_within(),
        }
    }
}

/// One check: a console pattern, or an HTTP GET through a port forwarded
/// from 127.0.0.1 to the guest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A console pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// An HTTP path (`/healthz`), retried until it answers as expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The guest's TCP port for `http` (filled by `resolve` for HTTP checks
    /// only; read it through [`Check::port`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The HTTP status `http` must answer ([`Check::status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A pattern the HTTP body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Seconds allowed, from the previous check (or qemu's start).
    #[serde(default = "default_within")]
    pub within: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    /// Settings the smoke sets in provision.env, each to a fresh random
    /// value (64 hex digits).
    pub set: Vec<String>,
    /// The appliance's report of a setting it took from the carrier: a
    /// pattern with the groups `name` and `digest` (sha256 of the value).
    pub report: String,
    /// The appliance's report that an attached carrier could not be
    /// applied (a pattern). `cargo xtask smoke --carrier-broken` attaches a
    /// carrier with a malformed user-data and expects this report, a
    /// completed first boot and every setting minted, none taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

fn default_boot() -> Vec<Check> {
    vec![Check {
        console: Some(r"login: ".into()),
        http: None,
        port: None,
        status: None,
        body: None,
        within: 600,
    }]
}
fn default_fail() -> Vec<String> {
    vec![r"\[FAILED\]".into(), "Kernel panic".into()]
}
fn default_install_within() -> u64 {
    2400
}
fn default_settle() -> u64 {
    10
}
fn default_memory() -> u32 {
    1024
}
fn default_port() -> u16 {
    80
}
fn default_status() -> u16 {
    200
}
fn default_within() -> u64 {
    300
}

impl Check {
    /// The guest port of an HTTP check.
    pub fn port(&self) -> u16 {
        self.port
            .expect("an HTTP check's port is filled by SmokeOptions::resolve")
    }
    /// The status an HTTP check expects.
    pub fn status(&self) -> u16 {
        self.status
            .expect("an HTTP check's status is filled by SmokeOptions::resolve")
    }
    /// What the report calls this check.
    pub fn describe(&self) -> String {
        match (&self.console, &self.http) {
            (Some(c), _) => format!("console /{c}/"),
            (None, Some(h)) => {
                let mut s = format!("GET {h} (port {}) -> {}", self.port(), self.status());
                if let Some(b) = &self.body {
                    s.push_str(&format!(", body /{b}/"));
                }
                s
            }
            (None, None) => "nothing".into(),
        }
    }
}

fn regex(file: &Utf8Path, field: &str, p: &str) -> Result<Regex> {
    Regex::new(p)
        .map_err(|e| anyhow::anyhow!("{file}: smoke.{field}: `{p}` is not a valid pattern: {e}"))
}

fn groups(file: &Utf8Path, field: &str, p: &str, want: &[&str]) -> Result<()> {
    let re = regex(file, field, p)?;
    let names: Vec<&str> = re.capture_names().flatten().collect();
    for w in want {
        if !names.contains(w) {
            bail!(
                "{file}: smoke.{field}: `{p}` has no `(?P<{w}>…)` group (it needs {})",
                want.iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
    }
    Ok(())
}

impl SmokeOptions {
    /// Check every pattern and check now, naming the field.
    pub fn resolve(&mut self, file: &Utf8Path, has_provision_env: bool) -> Result<()> {
        for (field, checks) in [
            ("boot", &mut self.boot),
            ("again", &mut self.again),
            ("iso", &mut self.iso),
        ] {
            for (i, c) in checks.iter_mut().enumerate() {
                let at = format!("{field}[{i}]");
                match (&c.console, &c.http) {
                    (Some(p), None) => {
                        regex(file, &at, p)?;
                        if c.port.is_some() || c.status.is_some() {
                            bail!("{file}: smoke.{at}: `port` and `status` belong to `http:` checks, not console ones");
                        }
                    }
                    (None, Some(path)) => {
                        if !path.starts_with('/') {
                            bail!("{file}: smoke.{at}.http: `{path}` must be a path starting with `/`");
                        }
                        if let Some(b) = &c.body {
                            regex(file, &format!("{at}.body"), b)?;
                        }
                        if field == "iso" {
                            bail!("{file}: smoke.{at}: the installer ISO is checked on its console only");
                        }
                        c.port.get_or_insert(default_port());
                        c.status.get_or_insert(default_status());
                    }
                    _ => bail!(
                        "{file}: smoke.{at}: a check has exactly one of `console: PATTERN` or `http: /PATH`"
                    ),
                }
                if c.within == 0 {
                    bail!("{file}: smoke.{at}.within: must be at least 1 (seconds)");
                }
            }
        }
        if self.boot.is_empty() {
            bail!("{file}: smoke.boot: needs at least one check (what says the appliance is up)");
        }
        if self.install_within == 0 {
            bail!("{file}: smoke.install_within: must be at least 1 (seconds)");
        }
        for p in self.once.iter() {
            regex(file, "once", p)?;
        }
        if !self.once.is_empty() && self.again.is_empty() {
            bail!("{file}: smoke.once: needs a second boot (`smoke.again`) to check that first-boot work does not run again");
        }
        for p in self.fail.iter() {
            regex(file, "fail", p)?;
        }
        if let Some(p) = &self.identity {
            groups(file, "identity", p, &["name", "digest"])?;
        }
        if let Some(c) = &self.carrier {
            groups(file, "carrier.report", &c.report, &["name", "digest"])?;
            if let Some(p) = &c.refused {
                regex(file, "carrier.refused", p)?;
            }
            if c.set.is_empty() {
                bail!("{file}: smoke.carrier.set: name at least one provision.env setting");
            }
            for n in &c.set {
                let ok = !n.is_empty()
                    && !n.starts_with(|c: char| c.is_ascii_digit())
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    bail!("{file}: smoke.carrier.set: `{n}` is not a shell variable name");
                }
            }
            if !has_provision_env {
                bail!(
                    "{file}: smoke.carrier: the carrier writes provision.env, but the recipe has no \
                     `seed.cloud_init.provision_env`"
                );
            }
        }
        if self.memory < 256 {
            bail!(
                "{file}: smoke.memory: {} MiB is too little to boot (at least 256)",
                self.memory
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<SmokeOptions> {
        let mut s: SmokeOptions = yaml_serde::from_str(y)?;
        s.resolve(Utf8Path::new("r.yaml"), true)?;
        Ok(s)
    }

    #[test]
    fn defaults_wait_for_a_login_prompt_and_fail_on_failed_units() {
        let s = parse("{}").unwrap();
        assert_eq!(s.boot.len(), 1);
        assert_eq!(s.boot[0].console.as_deref(), Some("login: "));
        assert!(s.fail.iter().any(|f| f.contains("FAILED")));
        assert!(s.again.is_empty() && s.identity.is_none());
        assert_eq!(s.install_within, 2400);
        // The installer's done line gets the recipe's time.
        let s = parse("install_within: 5000").unwrap();
        let checks = crate::smoke::install_checks(&s);
        let done = checks.last().unwrap();
        assert_eq!(
            (done.console.as_deref(), done.within),
            (Some(crate::iso::installer::DONE_MARKER), 5000)
        );
    }

    #[test]
    fn http_checks_get_their_port_and_status_and_console_checks_none() {
        let s =
            parse("boot: [{console: up}, {http: /}, {http: /x, port: 8080, status: 204}]").unwrap();
        assert_eq!((s.boot[0].port, s.boot[0].status), (None, None));
        assert_eq!((s.boot[1].port(), s.boot[1].status()), (80, 200));
        assert_eq!((s.boot[2].port(), s.boot[2].status()), (8080, 204));
        // `recipe show` prints what applies to each check.
        let shown = yaml_serde::to_string(&s).unwrap();
        assert!(!shown.contains("- console: up\n  port"), "{shown}");
        assert_eq!(shown.matches("port:").count(), 2, "{shown}");
    }

    #[test]
    fn bad_checks_are_named() {
        for (y, want) in [
            (
                "boot: [{console: 'a(', within: 3}]",
                "smoke.boot[0]: `a(` is not a valid pattern",
            ),
            ("boot: [{console: a, http: /x}]", "exactly one of"),
            ("boot: [{http: x}]", "must be a path starting with `/`"),
            ("boot: [{console: a, within: 0}]", "smoke.boot[0].within"),
            ("boot: []", "needs at least one check"),
            ("identity: 'id (?P<name>\\S+)'", "no `(?P<digest>…)` group"),
            ("once: [x]", "needs a second boot"),
            (
                "carrier: {set: [A-B], report: '(?P<name>x)(?P<digest>y)'}",
                "not a shell variable name",
            ),
            ("iso: [{http: /}]", "console only"),
            ("install_within: 0", "smoke.install_within"),
            ("memory: 64", "too little"),
            (
                "boot: [{console: a, port: 8080}]",
                "belong to `http:` checks",
            ),
        ] {
            let e = format!("{:#}", parse(y).unwrap_err());
            assert!(e.contains(want), "{y}: {e}");
        }
        let mut s: SmokeOptions =
            yaml_serde::from_str("carrier: {set: [A], report: '(?P<name>x)(?P<digest>y)'}")
                .unwrap();
        let e = format!(
            "{:#}",
            s.resolve(Utf8Path::new("r.yaml"), false).unwrap_err()
        );
        assert!(e.contains("no `seed.cloud_init.provision_env`"), "{e}");
    }
}
