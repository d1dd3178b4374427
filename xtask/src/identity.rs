//! Per-install identities that Debian packages generate when they are
//! installed: keys made once by a package's maintainer script, which every
//! instance of an image would share. The one table here drives every place
//! that handles them:
//!
//! - builder 1's disk assembly drops their files from the Debian root
//!   (`qcow2::merge`) and, for each entry whose package the root holds,
//!   writes a first-boot unit that regenerates them before the services that
//!   use them (the qcow2, the OVA built from it and the Pi image);
//! - builder 2 removes them from the vendor image and installs the same units
//!   (`qcow2::customize`);
//! - the installer ISO's late-commands remove and regenerate them on the
//!   installed system (`seed::generate`);
//! - the secret scan names the regeneration command in its fix when it
//!   recognises one of their private keys (`scan`).
//!
//! A scan of a Debian root with python3, nginx, postgresql, podman,
//! docker.io, containerd, git, curl and openssh found exactly these two kinds.

/// A path of the root (relative, no leading `/`) an identity consists of.
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// This file.
    Exact(&'static str),
    /// Every file whose path starts with this.
    Prefix(&'static str),
    /// Symbolic links in `dir` (ending in `/`) that point at `target`: the
    /// hash links `openssl rehash` and `make-ssl-cert` make for a certificate
    /// (named after the subject's hash, so not a fixed name).
    LinkTo {
        dir: &'static str,
        target: &'static str,
    },
}

impl Pattern {
    /// Does the root's entry `rel` (a symbolic link to `link` if `Some`)
    /// match?
    pub fn matches(&self, rel: &str, link: Option<&str>) -> bool {
        match *self {
            Pattern::Exact(p) => rel == p,
            Pattern::Prefix(p) => rel.len() > p.len() && rel.starts_with(p),
            Pattern::LinkTo { dir, target } => {
                rel.strip_prefix(dir).is_some_and(|n| !n.contains('/'))
                    && link.is_some_and(|l| l == target || l.ends_with(&format!("/{target}")))
            }
        }
    }

    /// A shell command that removes the matching files under `/`.
    fn remove_sh(&self) -> String {
        match *self {
            Pattern::Exact(p) => format!("rm -f /{p}"),
            Pattern::Prefix(p) => format!("rm -f /{p}*"),
            // The links `openssl rehash` and `make-ssl-cert` make are
            // relative (the bare file name). No quotes: this runs inside
            // `sh -c '…'` too.
            Pattern::LinkTo { dir, target } => {
                let d = dir.trim_end_matches('/');
                format!("if [ -d /{d} ]; then find /{d} -maxdepth 1 -lname {target} -delete; fi")
            }
        }
    }
}

/// One kind of per-install identity.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Names the first-boot unit: `kiln-<name>.service`.
    pub name: &'static str,
    /// What it is, for the unit's description and the docs.
    pub what: &'static str,
    /// The Debian package whose installation generates it.
    pub package: &'static str,
    /// What the image must not hold: every file of it, public ones too, so
    /// the pair is regenerated whole.
    pub remove: &'static [Pattern],
    /// Its private keys (examples of them for a `Prefix`), which the scan
    /// reports wherever they are.
    pub keys: &'static [&'static str],
    /// The program that regenerates it; the unit is skipped without it.
    pub program: &'static str,
    /// The command (absolute program, arguments) that regenerates it.
    pub regenerate: &'static str,
    /// The unit runs only while this file is missing (`None`: the command
    /// itself only fills in what is missing).
    pub unless: Option<&'static str>,
    /// Services that must start after it; it is also wanted by them.
    /// Ordering before a unit that does not exist is harmless.
    pub before: &'static [&'static str],
    /// Also before the network (`network-pre.target`), and so before every
    /// network service (they start after `network.target`). Such a unit runs
    /// early, right after the local file systems: with default dependencies
    /// (after `sysinit.target`) it would close an ordering cycle with units
    /// that need the network before `sysinit.target` (cloud-init).
    pub before_network: bool,
}

/// Every per-install identity kiln resets and regenerates.
pub const IDENTITIES: &[Identity] = &[
    Identity {
        name: "ssh-hostkeys",
        what: "SSH host keys",
        package: "openssh-server",
        remove: &[Pattern::Prefix("etc/ssh/ssh_host_")],
        keys: &[
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ecdsa_key",
            "etc/ssh/ssh_host_rsa_key",
        ],
        program: "/usr/bin/ssh-keygen",
        regenerate: "/usr/bin/ssh-keygen -A",
        unless: None,
        before: &["ssh.service"],
        before_network: false,
    },
    Identity {
        name: "ssl-cert-snakeoil",
        what: "snakeoil TLS key and certificate (ssl-cert)",
        package: "ssl-cert",
        remove: &[
            Pattern::Exact("etc/ssl/private/ssl-cert-snakeoil.key"),
            Pattern::Exact("etc/ssl/certs/ssl-cert-snakeoil.pem"),
            Pattern::LinkTo {
                dir: "etc/ssl/certs/",
                target: "ssl-cert-snakeoil.pem",
            },
        ],
        keys: &["etc/ssl/private/ssl-cert-snakeoil.key"],
        program: "/usr/sbin/make-ssl-cert",
        regenerate: "/usr/sbin/make-ssl-cert generate-default-snakeoil --force-overwrite",
        unless: Some("/etc/ssl/private/ssl-cert-snakeoil.key"),
        // Before the network, and so before every service that may use the
        // pair (e.g. each `postgresql@<version>-<cluster>.service`, which no
        // fixed name matches); the usual users are named as well.
        before: &[
            "apache2.service",
            "nginx.service",
            "postgresql.service",
            "dovecot.service",
            "postfix.service",
            "exim4.service",
            "lighttpd.service",
        ],
        before_network: true,
    },
];

impl Identity {
    /// The first-boot unit's file name.
    pub fn unit_name(&self) -> String {
        format!("kiln-{}.service", self.name)
    }

    /// Targets and services that want the unit (`[Install] WantedBy=`):
    /// `multi-user.target` and the services it comes before.
    pub fn wanted_by(&self) -> Vec<&'static str> {
        let mut v = vec!["multi-user.target"];
        v.extend(self.before.iter().copied());
        v
    }

    /// The first-boot unit that regenerates it.
    pub fn unit(&self) -> String {
        let mut u = format!(
            "# Written by kiln: this instance's own {what}, made at first boot\n\
             # (the image holds none: kiln removed those `{package}` made when it was built).\n\
             [Unit]\nDescription=Generate this instance's {what}\n\
             ConditionPathExists={program}\n",
            what = self.what,
            package = self.package,
            program = self.program
        );
        if let Some(f) = self.unless {
            u.push_str(&format!("ConditionPathExists=!{f}\n"));
        }
        let mut before: Vec<&str> = self.before.to_vec();
        if self.before_network {
            u.push_str(
                "DefaultDependencies=no\nAfter=local-fs.target\nWants=network-pre.target\n\
                 Conflicts=shutdown.target\n",
            );
            before.extend(["network-pre.target", "shutdown.target"]);
        }
        u.push_str(&format!("Before={}\n", before.join(" ")));
        u.push_str(&format!(
            "\n[Service]\nType=oneshot\nExecStart={}\nRemainAfterExit=yes\n\n\
             [Install]\nWantedBy={}\n",
            self.regenerate,
            self.wanted_by().join(" ")
        ));
        u
    }

    /// The regeneration command as a user types it (program without its
    /// directory).
    pub fn command(&self) -> &'static str {
        let (prog, _) = self
            .regenerate
            .split_once(' ')
            .unwrap_or((self.regenerate, ""));
        let dir = prog.rsplit_once('/').map_or(0, |(d, _)| d.len() + 1);
        &self.regenerate[dir..]
    }

    /// One shell command that removes every file of it from `/`.
    pub fn remove_sh(&self) -> String {
        self.remove
            .iter()
            .map(Pattern::remove_sh)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The shell command the installer ISO runs in the installed system:
    /// remove, then regenerate when the package's program is there.
    pub fn reset_sh(&self) -> String {
        format!(
            "{}; if [ -x {} ]; then {}; fi",
            self.remove_sh(),
            self.program,
            self.regenerate
        )
    }

    /// Is `path` (absolute, or ending in one of its key paths at a component
    /// boundary, e.g. a tree scanned from above its root) one of its private
    /// keys?
    pub fn is_key(&self, path: &str) -> bool {
        let rel = path.trim_start_matches('/');
        // `rel` and each of its tails after a `/`.
        let tails = std::iter::once(rel).chain(rel.match_indices('/').map(|(i, _)| &rel[i + 1..]));
        tails.into_iter().any(|t| {
            self.keys.iter().any(|k| {
                t == *k
                    // A family of keys (`ssh_host_*_key`): any member without
                    // an extension (not the `.pub` beside it).
                    || self.remove.iter().any(|r| {
                        matches!(r, Pattern::Prefix(p) if k.starts_with(p)
                            && t.strip_prefix(p).is_some_and(|n| {
                                !n.is_empty() && !n.contains(['/', '.'])
                            }))
                    })
            })
        })
    }
}

/// Is the root's entry `rel` (without `./` or `/`; a symbolic link to `link`
/// if `Some`) a file of a per-install identity?
pub fn is_identity_file(rel: &str, link: Option<&str>) -> bool {
    IDENTITIES
        .iter()
        .any(|i| i.remove.iter().any(|p| p.matches(rel, link)))
}

/// The identities whose package is in `installed`.
pub fn installed<'a>(
    installed: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'static Identity> + 'a {
    IDENTITIES.iter().filter(move |i| installed(i.package))
}

/// The identity whose private key `path` is (see [`Identity::is_key`]).
pub fn key_at(path: &str) -> Option<&'static Identity> {
    IDENTITIES.iter().find(|i| i.is_key(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_commands() {
        let snake = &IDENTITIES[1];
        assert!(is_identity_file(
            "etc/ssl/private/ssl-cert-snakeoil.key",
            None
        ));
        assert!(is_identity_file(
            "etc/ssl/certs/ssl-cert-snakeoil.pem",
            None
        ));
        assert!(is_identity_file(
            "etc/ssl/certs/7a3c5e1f.0",
            Some("ssl-cert-snakeoil.pem")
        ));
        assert!(!is_identity_file(
            "etc/ssl/certs/7a3c5e1f.0",
            Some("ISRG_Root_X1.pem")
        ));
        assert!(!is_identity_file("etc/ssl/certs/ca-certificates.crt", None));
        assert!(is_identity_file("etc/ssh/ssh_host_rsa_key.pub", None));
        assert!(!is_identity_file("etc/ssh/sshd_config", None));
        assert_eq!(
            snake.command(),
            "make-ssl-cert generate-default-snakeoil --force-overwrite"
        );
        assert_eq!(IDENTITIES[0].command(), "ssh-keygen -A");
        let u = snake.unit();
        assert!(
            u.contains("ConditionPathExists=!/etc/ssl/private/ssl-cert-snakeoil.key\n"),
            "{u}"
        );
        assert!(
            u.contains("ConditionPathExists=/usr/sbin/make-ssl-cert\n"),
            "{u}"
        );
        // Before the network, early (no cycle with cloud-init's units, which
        // need the network before sysinit.target), stopped at shutdown.
        for l in [
            "DefaultDependencies=no\n",
            "After=local-fs.target\n",
            "Wants=network-pre.target\n",
            "Conflicts=shutdown.target\n",
            " postfix.service exim4.service lighttpd.service network-pre.target shutdown.target\n",
        ] {
            assert!(u.contains(l), "{l:?} in {u}");
        }
        assert!(u.contains("\nBefore=apache2.service nginx.service"), "{u}");
        assert!(
            u.contains("WantedBy=multi-user.target apache2.service nginx.service"),
            "{u}"
        );
        let ssh = IDENTITIES[0].unit();
        assert!(
            ssh.contains("\nBefore=ssh.service\n")
                && ssh.contains("\nWantedBy=multi-user.target ssh.service\n")
                && !ssh.contains("Wants=")
                && !ssh.contains("DefaultDependencies"),
            "{ssh}"
        );
        assert_eq!(
            snake.remove_sh(),
            "rm -f /etc/ssl/private/ssl-cert-snakeoil.key; rm -f /etc/ssl/certs/ssl-cert-snakeoil.pem; \
             if [ -d /etc/ssl/certs ]; then find /etc/ssl/certs -maxdepth 1 -lname ssl-cert-snakeoil.pem -delete; fi"
        );
        for (path, id) in [
            (
                "/etc/ssl/private/ssl-cert-snakeoil.key",
                Some("ssl-cert-snakeoil"),
            ),
            (
                "tree/etc/ssl/private/ssl-cert-snakeoil.key",
                Some("ssl-cert-snakeoil"),
            ),
            ("/etc/ssh/ssh_host_ed25519_key", Some("ssh-hostkeys")),
            ("/srv/x/etc/ssh/ssh_host_dsa_key", Some("ssh-hostkeys")),
            ("/etc/ssh/ssh_host_ed25519_key.pub", None),
            ("/etc/ssl/private/other.key", None),
            ("/home/u/.ssh/id_ed25519", None),
        ] {
            assert_eq!(key_at(path).map(|i| i.name), id, "{path}");
        }
    }
}
