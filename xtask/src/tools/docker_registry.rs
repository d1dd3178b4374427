//! `docker-registry` (CNCF distribution, Debian's package of the same
//! name): a throw-away OCI registry on 127.0.0.1 for the tests that push
//! to or copy from a registry (`release --push`/`release pull`, registry
//! image sources). kiln itself never runs it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::console::{Console, Wait};
use super::Cmd;

/// `docker-registry serve CONFIG`.
pub fn serve(config: &Utf8Path) -> Cmd {
    Cmd::new("docker-registry", "serve a local OCI registry").args(["serve", config.as_str()])
}

/// HTTPS for a [`LocalRegistry`]: the server's certificate and key.
#[derive(Debug, Clone)]
pub struct Tls {
    pub certificate: Utf8PathBuf,
    pub key: Utf8PathBuf,
}

/// How a [`LocalRegistry`] serves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// HTTPS with this certificate (plain HTTP when `None`).
    pub tls: Option<Tls>,
    /// Maintenance mode: reads work, every write is refused (HTTP 405).
    pub read_only: bool,
    /// HTTP basic authentication against this htpasswd file (bcrypt
    /// entries only): every request without good credentials gets a 401
    /// with a `Basic` challenge.
    pub htpasswd: Option<Utf8PathBuf>,
}

/// A registry serving `127.0.0.1:<port>`, storing into `<dir>/storage`,
/// stopped (its process group) when dropped, also when a test panics.
pub struct LocalRegistry {
    console: Console,
    port: u16,
}

impl LocalRegistry {
    /// Start a registry whose configuration and storage live in `dir` (a
    /// directory the caller owns and removes), serving as `options` say.
    /// Ready when this returns: it logged that it listens.
    pub fn start(dir: &Utf8Path, options: &Options) -> Result<LocalRegistry> {
        // The registry cannot bind port 0: take a free port from the kernel
        // and hand it over. Another process may take it in between: retry.
        let listening = regex::Regex::new(r"listening on 127\.0\.0\.1:\d+").expect("static");
        let fatal =
            [regex::Regex::new(r"level=(fatal|panic)|address already in use").expect("static")];
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("finding a free port on 127.0.0.1")?
                .port();
            let config = dir.join(format!("config-{attempt}.yml"));
            std::fs::write(&config, config_text(dir, port, options))
                .with_context(|| format!("writing {config}"))?;
            let mut console = Console::spawn(&serve(&config))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            match console.wait_for(&listening, 0, &fatal, deadline)? {
                Wait::Found { .. } => return Ok(LocalRegistry { console, port }),
                other => {
                    console.stop();
                    failures.push(format!(
                        "port {port}: {other:?}\n{}",
                        console.text().trim_end()
                    ));
                }
            }
        }
        bail!(
            "docker-registry did not start:\n{}",
            failures.join("\n---\n")
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as a reference names the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the registry printed so far (its log and access log).
    pub fn log(&self) -> String {
        self.console.text()
    }
}

/// The configuration: filesystem storage under `dir`, info-level logs
/// (the "listening on" line [`LocalRegistry::start`] waits for), deletes
/// allowed (tests may remove a manifest).
fn config_text(dir: &Utf8Path, port: u16, options: &Options) -> String {
    let read_only = if options.read_only {
        "  maintenance:\n    readonly:\n      enabled: true\n"
    } else {
        ""
    };
    let tls = match &options.tls {
        Some(t) => format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            t.certificate, t.key
        ),
        None => String::new(),
    };
    let auth = match &options.htpasswd {
        Some(path) => format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {path}\n"),
        None => String::new(),
    };
    format!(
        "version: 0.1\nlog:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {dir}/storage\n  delete:\n    enabled: true\n{read_only}\
         {auth}http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test\n{tls}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_stores_under_the_directory_and_listens_on_loopback() {
        let text = config_text(Utf8Path::new("/t/reg"), 5123, &Options::default());
        assert!(text.contains("rootdirectory: /t/reg/storage"), "{text}");
        assert!(text.contains("addr: 127.0.0.1:5123"), "{text}");
        assert!(
            !text.contains("tls:") && !text.contains("readonly") && !text.contains("auth:"),
            "{text}"
        );
        let options = Options {
            tls: Some(Tls {
                certificate: "/t/c.crt".into(),
                key: "/t/c.key".into(),
            }),
            read_only: true,
            htpasswd: Some("/t/htpasswd".into()),
        };
        let text = config_text(Utf8Path::new("/t/reg"), 5123, &options);
        assert!(
            text.contains("  tls:\n    certificate: /t/c.crt\n    key: /t/c.key\n"),
            "{text}"
        );
        assert!(
            text.contains("  maintenance:\n    readonly:\n      enabled: true\n"),
            "{text}"
        );
        // Valid YAML, with both sections under `storage:`.
        let v: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(v["storage"]["maintenance"]["readonly"]["enabled"], true);
        assert_eq!(v["http"]["tls"]["key"], "/t/c.key");
        assert_eq!(v["auth"]["htpasswd"]["path"], "/t/htpasswd");
        assert_eq!(v["auth"]["htpasswd"]["realm"], "kiln-test");
    }
}
