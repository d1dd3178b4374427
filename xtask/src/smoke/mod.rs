//! Smoke boots: boot an artifact kiln built under qemu and check what the
//! recipe's `smoke:` section says the appliance promises.
//!
//! A run has three phases. [`prepare`] turns each artifact into a base disk
//! qemu can boot (the qcow2 itself, the VMDK out of an OVA, the Pi card
//! decompressed with its boot files taken out of its FAT, the ISO as a
//! CD-ROM) in a work directory. kiln's offline installer ISO is not an
//! appliance itself: each of its instances first installs onto a blank
//! disk of its own (the install boot, watched for the installer's done and
//! failure lines), then that disk boots alone through the same checks as
//! a qcow2. [`guests`] lays out the guests: `instances`
//! copies of each disk, each on its own throw-away qcow2 overlay (the
//! artifact is never written), firmwares spread over the instances, the
//! first instance booted a second time and given the config carrier. Then
//! the guests run in parallel, up to the cores available; each boot's
//! console is watched ([`crate::tools::console`]) for the checks in order,
//! HTTP checks go through ports forwarded from 127.0.0.1, and qemu is
//! stopped after the last check (or the first failure). Finally the checks
//! across boots: the identity report differs between instances and repeats
//! on the second boot, first-boot work does not run again, the carrier's
//! values reached the appliance.
//!
//! The report ([`report`]) is printed check by check and written to
//! `output/smoke/` with every console log.

pub mod http;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use regex::Regex;

use crate::recipe::smoke::{Check, SmokeOptions};
use crate::recipe::{Arch, Resolved};
use crate::tools::console::{Console, Wait};
use crate::tools::qemu_system::{self, Boot, Firmware, Media};
use crate::tools::{self, Cmd};
use report::Outcome;

/// What kind of artifact a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Iso,
    Qcow2,
    Ova,
    Pi,
}

/// An artifact to smoke.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: Utf8PathBuf,
    pub format: Format,
    pub arch: Arch,
}

impl Artifact {
    /// Recognise an artifact by its name, as kiln names them
    /// (`<name>-<version>-<arch>.qcow2`, `….ova`, `…-arm64-pi.img[.zst]`,
    /// `….iso`).
    pub fn from_path(path: &Utf8Path) -> Result<Artifact> {
        let name = path.file_name().unwrap_or("");
        let format = if name.ends_with(".qcow2") {
            Format::Qcow2
        } else if name.ends_with(".ova") {
            Format::Ova
        } else if name.ends_with(".img.zst") || name.ends_with(".img") {
            Format::Pi
        } else if name.ends_with(".iso") {
            Format::Iso
        } else {
            bail!(
                "{path}: not an artifact smoke can boot (a .qcow2, .ova, .iso, or a Raspberry Pi \
                 .img/.img.zst)"
            );
        };
        if !path.is_file() {
            bail!("{path}: no such file (build it first, or run `cargo xtask smoke` without arguments to build and boot the recipe's artifacts)");
        }
        let arch = if format == Format::Pi || name.contains("-arm64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        Ok(Artifact {
            path: crate::fsutil::absolute(path)?,
            format,
            arch,
        })
    }

    pub fn name(&self) -> &str {
        self.path.file_name().unwrap_or("artifact")
    }
}

/// Which firmware the guests boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareChoice {
    /// What the artifact supports (the recipe's `qcow2.firmware`, the OVA's
    /// descriptor; arm64 disks UEFI; the ISO both).
    Auto,
    Uefi,
    Bios,
    Both,
}

/// How the config carrier is attached to a VM (a Pi's always rides on its
/// FAT boot partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CarrierAs {
    /// `cidata.iso` (ISO 9660, label `cidata`) as a CD-ROM; a read-only
    /// virtio disk on arm64, whose `virt` machine has no IDE.
    Cdrom,
    /// `cidata.img` (FAT, label `CIDATA`) as a second, read-only virtio disk.
    Disk,
}

impl CarrierAs {
    pub fn name(self) -> &'static str {
        match self {
            CarrierAs::Cdrom => "cdrom",
            CarrierAs::Disk => "disk",
        }
    }
}

/// Which carrier an instance boots with first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierKind {
    /// The recipe's seed with fresh values: the appliance must take them.
    Good,
    /// The same seed with a malformed user-data: first boot must complete,
    /// report the carrier as not applied, and mint every setting.
    Broken,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub instances: usize,
    pub firmware: FirmwareChoice,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Attach the config carrier to the first instance (when the recipe
    /// declares one).
    pub carrier: bool,
    /// How a VM gets it.
    pub carrier_as: CarrierAs,
    /// Give every instance without the carrier a broken one instead (a
    /// malformed user-data).
    pub carrier_broken: bool,
    /// Scratch space (overlays, extracted disks); removed by the caller.
    pub work: Utf8PathBuf,
    /// Where console logs go (`<dir>/<artifact>/…log`).
    pub logs: Utf8PathBuf,
    /// Boots at once (default: the cores available).
    pub parallel: usize,
    /// vCPUs per guest; `None`: the cores shared among the boots at once
    /// (one or two each).
    pub vcpus: Option<u32>,
}

/// The vCPUs each guest gets when `parallel` boot at once and
/// [`Options::vcpus`] does not say: the cores shared among them, one or two.
pub fn vcpus_each(parallel: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / parallel.max(1)).clamp(1, 2) as u32
}

/// A base disk a guest boots from, made by [`prepare`].
#[derive(Debug, Clone)]
enum Base {
    /// A disk image (boots on an overlay).
    Disk {
        path: Utf8PathBuf,
        format: String,
        firmwares: Vec<Firmware>,
    },
    /// A Raspberry Pi card with the files its firmware would load.
    Pi {
        card: Utf8PathBuf,
        kernel: Utf8PathBuf,
        dtb: Utf8PathBuf,
        initrd: Utf8PathBuf,
        cmdline: String,
    },
    /// A remastered Ubuntu ISO (read-only, no overlay).
    Cdrom { path: Utf8PathBuf },
    /// kiln's offline installer ISO: installed onto a blank raw disk of
    /// `disk_bytes` (sparse), which then boots alone.
    Installer { iso: Utf8PathBuf, disk_bytes: u64 },
}

/// One guest: an instance of an artifact.
#[derive(Debug, Clone)]
pub struct Guest {
    pub artifact: String,
    pub arch: Arch,
    pub instance: usize,
    /// `uefi`, `bios` or `raspi3b`.
    pub machine: String,
    firmware: Firmware,
    base: Base,
    /// Checks of each boot, in order: the first boot, then (first instance
    /// only) the second.
    boots: Vec<Vec<Check>>,
    /// The carrier attached on the appliance's first boot.
    carrier: Option<CarrierKind>,
    /// The guest's overlay disk and UEFI variables.
    overlay: Utf8PathBuf,
    vars: Option<Utf8PathBuf>,
}

impl Guest {
    /// Whether boot 0 installs (kiln's installer ISO) rather than boots the
    /// appliance.
    fn installs(&self) -> bool {
        matches!(self.base, Base::Installer { .. })
    }

    /// Index of the appliance's first boot among the guest's boots.
    fn first_boot(&self) -> usize {
        usize::from(self.installs())
    }

    /// `install`, `boot 1`, `boot 2`: what boot `boot` is.
    fn boot_name(&self, boot: usize) -> String {
        match (self.installs(), boot) {
            (true, 0) => "install".into(),
            (true, n) => format!("boot {n}"),
            (false, n) => format!("boot {}", n + 1),
        }
    }

    fn label(&self, boot: usize) -> String {
        format!(
            "#{} {} {}",
            self.instance,
            self.machine,
            self.boot_name(boot)
        )
    }

    /// The qemu command of boot `boot` (host ports forwarded per guest port).
    fn cmd(
        &self,
        boot: usize,
        o: &SmokeOptions,
        ports: &BTreeMap<u16, u16>,
        carrier: Option<&Media>,
        cpus: u32,
        accel: &str,
    ) -> Cmd {
        let mut b = match &self.base {
            Base::Pi {
                kernel,
                dtb,
                initrd,
                cmdline,
                ..
            } => {
                return qemu_system::raspi3b(
                    &self.overlay,
                    "qcow2",
                    kernel,
                    dtb,
                    initrd,
                    &format!("{cmdline} console=ttyAMA0,115200"),
                )
            }
            Base::Cdrom { path } => Boot::new(self.firmware).cdrom(path),
            Base::Installer { iso, .. } if boot == 0 => Boot::new(self.firmware)
                .cdrom(iso)
                .disk(&self.overlay, "raw"),
            Base::Disk { .. } | Base::Installer { .. } => {
                let format = if self.installs() { "raw" } else { "qcow2" };
                let mut b = Boot::new(self.firmware).disk(&self.overlay, format);
                if self.arch == Arch::Arm64 {
                    b = b.arm64();
                }
                for (guest, host) in ports {
                    b = b.forward(*host, *guest);
                }
                if let Some(c) = carrier {
                    b = b.seed(c.clone());
                }
                b
            }
        };
        b.memory_mib = o.memory;
        b.accel = accel.to_string();
        b.cpus = cpus;
        b.vars = self.vars.clone();
        b.cmd()
    }
}

/// The tools a smoke of `artifacts` needs (checked before any boot):
/// `carrier_disk` when the carrier is written as a FAT image.
pub fn needs(artifacts: &[Artifact], carrier_disk: bool) -> Vec<String> {
    let mut v: Vec<String> = vec!["qemu-img".into()];
    if carrier_disk {
        v.extend(["mkfs.vfat".into(), "mcopy".into()]);
    }
    for a in artifacts {
        match (a.format, a.arch) {
            (Format::Pi, _) => v.extend(["qemu-system-aarch64".into(), "mcopy".into()]),
            (_, Arch::Arm64) => {
                v.extend(["qemu-system-aarch64".into(), qemu_system::AAVMF_CODE.into()])
            }
            _ => v.extend(["qemu-system-x86_64".into(), qemu_system::OVMF_CODE.into()]),
        }
    }
    v.sort();
    v.dedup();
    v
}

/// Make each artifact bootable in `work` (see the module docs).
fn prepare(r: &Resolved, a: &Artifact, firmware: FirmwareChoice, work: &Utf8Path) -> Result<Base> {
    let dir = work.join(a.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
    let pick = |supported: Vec<Firmware>| -> Result<Vec<Firmware>> {
        let want = match firmware {
            FirmwareChoice::Auto => return Ok(supported),
            FirmwareChoice::Uefi => vec![Firmware::Uefi],
            FirmwareChoice::Bios => vec![Firmware::Bios],
            FirmwareChoice::Both => vec![Firmware::Uefi, Firmware::Bios],
        };
        for f in &want {
            if !supported.contains(f) {
                bail!(
                    "{}: boots with {} only; `--firmware {}` cannot boot it",
                    a.name(),
                    supported
                        .iter()
                        .map(|f| fw_name(*f))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    fw_name(*f)
                );
            }
        }
        Ok(want)
    };
    Ok(match a.format {
        Format::Qcow2 => {
            let supported = if a.arch == Arch::Arm64 {
                vec![Firmware::Uefi]
            } else {
                use crate::recipe::qcow2::Firmware as F;
                match r.recipe.qcow2.firmware {
                    F::Uefi => vec![Firmware::Uefi],
                    F::Bios => vec![Firmware::Bios],
                    F::Both => vec![Firmware::Uefi, Firmware::Bios],
                }
            };
            Base::Disk {
                path: a.path.clone(),
                format: "qcow2".into(),
                firmwares: pick(supported)?,
            }
        }
        Format::Ova => {
            let (vmdk, efi) = crate::ova::extract_disk(&a.path, &dir)?;
            let supported = if efi {
                vec![Firmware::Uefi]
            } else {
                vec![Firmware::Bios]
            };
            Base::Disk {
                path: vmdk,
                format: "vmdk".into(),
                firmwares: pick(supported)?,
            }
        }
        Format::Pi => {
            let card = crate::pi::lint::unpack(&a.path, &dir)?;
            let files = crate::pi::boot_files(&card, &dir)?;
            Base::Pi {
                card,
                kernel: files.kernel,
                dtb: files.dtb,
                initrd: files.initrd,
                cmdline: files.cmdline,
            }
        }
        Format::Iso => {
            pick(vec![Firmware::Uefi, Firmware::Bios])?;
            if is_installer(&a.path)? {
                Base::Installer {
                    iso: a.path.clone(),
                    disk_bytes: r.recipe.qcow2.size_bytes,
                }
            } else {
                Base::Cdrom {
                    path: a.path.clone(),
                }
            }
        }
    })
}

/// Whether `iso` is kiln's offline installer (it carries the payload's
/// checksum) rather than a remastered Ubuntu ISO.
fn is_installer(iso: &Utf8Path) -> Result<bool> {
    let w = crate::scan::source::Window::open(iso)?;
    let fs = crate::scan::iso9660::Iso::open(w)
        .with_context(|| format!("{iso}: reading its ISO 9660 file system"))?;
    let mut found = false;
    let payload = crate::iso::installer::PAYLOAD_SHA256;
    fs.walk(|e| {
        found |= e.path.trim_start_matches('/') == payload;
        Ok(())
    })
    .with_context(|| format!("{iso}: listing its files"))?;
    Ok(found)
}

/// The install boot's checks: the recipe's `smoke.iso` ones, then the
/// installer's own line that the disk is written and verified.
pub fn install_checks(o: &SmokeOptions) -> Vec<Check> {
    let mut v: Vec<Check> = o.iso.to_vec();
    v.push(Check {
        // Plain words: the line as the installer prints it is its pattern.
        console: Some(crate::iso::installer::DONE_MARKER.to_string()),
        http: None,
        port: None,
        status: None,
        body: None,
        within: o.install_within,
    });
    v
}

fn fw_name(f: Firmware) -> &'static str {
    match f {
        Firmware::Uefi => "uefi",
        Firmware::Bios => "bios",
    }
}

/// The ISO's own first check: the kernel's command line carries the
/// autoinstall arguments kiln put in its boot menu.
fn iso_checks(o: &SmokeOptions) -> Vec<Check> {
    let words: Vec<String> = crate::seed::autoinstall_kernel_words()
        .iter()
        .map(|w| regex::escape(&w.replace('\\', "")))
        .collect();
    let mut v = vec![Check {
        console: Some(format!("Command line:.*{}", words.join(" "))),
        http: None,
        port: None,
        status: None,
        body: None,
        within: 300,
    }];
    v.extend(o.iso.iter().cloned());
    v
}

/// Lay out the guests of every artifact (see the module docs).
fn guests(o: &SmokeOptions, opts: &Options, prepared: &[(Artifact, Base)]) -> Vec<Guest> {
    let mut out = Vec::new();
    for (a, base) in prepared {
        let dir = opts.work.join(a.name());
        let (firmwares, machine_of): (Vec<Firmware>, fn(Firmware) -> String) = match base {
            Base::Disk { firmwares, .. } => (firmwares.clone(), |f| fw_name(f).to_string()),
            Base::Cdrom { .. } | Base::Installer { .. } => match opts.firmware {
                FirmwareChoice::Uefi => (vec![Firmware::Uefi], |f| fw_name(f).to_string()),
                FirmwareChoice::Bios => (vec![Firmware::Bios], |f| fw_name(f).to_string()),
                _ => (vec![Firmware::Uefi, Firmware::Bios], |f| {
                    fw_name(f).to_string()
                }),
            },
            Base::Pi { .. } => (vec![Firmware::Uefi], |_| "raspi3b".to_string()),
        };
        let iso = matches!(base, Base::Cdrom { .. });
        // An ISO boots once per firmware; a disk as many instances as asked,
        // at least one per firmware, firmwares taken in turn.
        let n = if iso {
            firmwares.len()
        } else {
            opts.instances.max(firmwares.len())
        };
        for i in 0..n {
            let firmware = firmwares[i % firmwares.len()];
            let instance = i + 1;
            let installs = matches!(base, Base::Installer { .. });
            let mut boots = vec![if iso { iso_checks(o) } else { o.boot.clone() }];
            if installs {
                boots.insert(0, install_checks(o));
            }
            if instance == 1 && !iso && !o.again.is_empty() {
                boots.push(o.again.clone());
            }
            let uefi = firmware == Firmware::Uefi && !matches!(base, Base::Pi { .. });
            out.push(Guest {
                artifact: a.name().to_string(),
                arch: a.arch,
                instance,
                machine: machine_of(firmware),
                firmware,
                base: base.clone(),
                boots,
                carrier: match (iso || o.carrier.is_none(), instance == 1 && opts.carrier) {
                    (true, _) => None,
                    (false, true) => Some(CarrierKind::Good),
                    (false, false) => opts.carrier_broken.then_some(CarrierKind::Broken),
                },
                // The installer's target disk, or the disk's overlay.
                overlay: dir.join(format!(
                    "instance-{instance}.{}",
                    if installs { "raw" } else { "qcow2" }
                )),
                vars: uefi.then(|| dir.join(format!("instance-{instance}-vars.fd"))),
            });
        }
    }
    out
}

/// What one boot saw.
#[derive(Debug, Default)]
struct BootResult {
    outcomes: Vec<Outcome>,
    console: String,
    passed: bool,
}

/// What one guest's boots saw.
#[derive(Debug, Default)]
struct GuestResult {
    boots: Vec<BootResult>,
}

/// The last `n` lines of a console.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run the boots of one guest and write their console logs.
fn run_guest(
    g: &Guest,
    o: &SmokeOptions,
    opts: &Options,
    carriers: &Carriers,
    cpus: u32,
    accel: &str,
    print: &(dyn Fn(&Outcome) + Sync),
) -> Result<GuestResult> {
    let fail: Vec<Regex> = o
        .fail
        .iter()
        .map(|p| Regex::new(p).expect("checked"))
        .collect();
    let mut install_fail = fail.clone();
    install_fail.push(
        Regex::new(&regex::escape(crate::iso::installer::FAIL_MARKER)).expect("an escaped literal"),
    );
    // Every guest port an HTTP check names gets a free host port.
    let mut ports = BTreeMap::new();
    for c in g.boots.iter().flatten() {
        if c.http.is_some() && !ports.contains_key(&c.port()) {
            ports.insert(c.port(), free_port()?);
        }
    }
    let mut result = GuestResult::default();
    for (i, checks) in g.boots.iter().enumerate() {
        let label = g.label(i);
        let attached = if i == g.first_boot() {
            g.carrier.and_then(|k| carriers.get(k))
        } else {
            None
        };
        let cmd = g.cmd(i, o, &ports, attached.map(|c| &c.attach), cpus, accel);
        crate::ui::info(&format!(
            "smoke: {} {label}: booting under {accel}{} ({} checks)",
            g.artifact,
            match (attached, &g.base) {
                (None, _) => String::new(),
                (Some(c), Base::Pi { .. }) => format!(" with {} on its boot partition", c.what()),
                (Some(c), _) => format!(" with {} as a {}", c.what(), c.attached_as.name()),
            },
            checks.len()
        ));
        crate::ui::debug(&format!("$ {cmd}"));
        // The install boot ends at the installer's done line: there is
        // nothing to let settle.
        let installing = g.installs() && i == 0;
        let (fail, settle) = if installing {
            (&install_fail, 0)
        } else {
            (&fail, o.settle)
        };
        let b = run_boot(g, &label, &cmd, checks, fail, &ports, settle, print)?;
        let log_dir = opts.logs.join(&g.artifact);
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {log_dir}"))?;
        let log = log_dir.join(format!(
            "instance-{}-{}-{}.log",
            g.instance,
            g.machine,
            g.boot_name(i).replace(' ', "-")
        ));
        std::fs::write(&log, &b.console)
            .with_context(|| format!("writing the console log {log}"))?;
        let passed = b.passed;
        result.boots.push(b);
        if !passed {
            break;
        }
    }
    Ok(result)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free TCP port on 127.0.0.1 for the guest's forwarded port")?
        .port())
}

/// One boot: start qemu, run the checks in order, let the guest settle,
/// stop qemu.
#[allow(clippy::too_many_arguments)]
fn run_boot(
    g: &Guest,
    label: &str,
    cmd: &Cmd,
    checks: &[Check],
    fail: &[Regex],
    ports: &BTreeMap<u16, u16>,
    settle: u64,
    print: &(dyn Fn(&Outcome) + Sync),
) -> Result<BootResult> {
    let mut c = Console::spawn(cmd)?;
    let mut out = BootResult::default();
    let mut from = 0;
    let mut failed = false;
    for check in checks {
        let deadline = Instant::now() + Duration::from_secs(check.within);
        let what = check.describe();
        let mut outcome = Outcome {
            artifact: g.artifact.clone(),
            guest: label.to_string(),
            check: what.clone(),
            ok: false,
            at_secs: None,
            message: String::new(),
            console_tail: String::new(),
            skipped: false,
        };
        if failed {
            outcome.message = "not run: an earlier check failed".into();
            out.outcomes.push(outcome);
            continue;
        }
        if check.http.is_some() && matches!(g.base, Base::Pi { .. }) {
            outcome.ok = true;
            outcome.skipped = true;
            outcome.message = "skipped: qemu's raspi3b gives the guest no network".into();
            print(&outcome);
            out.outcomes.push(outcome);
            continue;
        }
        let r = match (&check.console, &check.http) {
            (Some(p), _) => {
                let re = Regex::new(p).expect("checked by the recipe");
                c.wait_for(&re, from, fail, deadline)?
            }
            (None, Some(path)) => {
                let (w, last) = http_check(
                    &mut c,
                    check,
                    path,
                    ports[&check.port()],
                    from,
                    fail,
                    deadline,
                )?;
                if w == Wait::TimedOut {
                    outcome.message = format!(
                        "not answered as expected within {}s; last try: {last}",
                        check.within
                    );
                }
                w
            }
            (None, None) => unreachable!("checked by the recipe"),
        };
        match r {
            Wait::Found { end, at } => {
                if check.console.is_some() {
                    from = end;
                }
                outcome.ok = true;
                outcome.at_secs = Some(at.as_secs_f64());
            }
            Wait::TimedOut if check.http.is_some() => {}
            Wait::TimedOut => {
                outcome.message = format!("not seen within {}s", check.within);
            }
            Wait::Exited { status } => {
                outcome.message = format!("qemu exited ({status}) first");
            }
            Wait::Failed { line } => {
                outcome.message = format!("the console showed a failure first: {line}");
            }
        }
        if !outcome.ok {
            failed = true;
            c.stop();
            outcome.console_tail = tail(&c.text(), 50);
        }
        print(&outcome);
        out.outcomes.push(outcome);
    }
    if !failed {
        // The guest runs on for `settle`, still watched for failure lines
        // (a guest that powers off once its checks passed is fine).
        let until = Instant::now() + Duration::from_secs(settle);
        let never = Regex::new(r"\A\z.").expect("a pattern that never matches");
        let problem = match c.wait_for(&never, from, fail, until)? {
            Wait::Failed { line } => Some(format!("the console showed a failure: {line}")),
            Wait::Exited { .. } | Wait::Found { .. } | Wait::TimedOut => None,
        };
        if let Some(message) = problem {
            failed = true;
            c.stop();
            let outcome = Outcome {
                artifact: g.artifact.clone(),
                guest: label.to_string(),
                check: format!("nothing failed in the {settle}s after the last check"),
                ok: false,
                at_secs: None,
                message,
                console_tail: tail(&c.text(), 50),
                skipped: false,
            };
            print(&outcome);
            out.outcomes.push(outcome);
        }
    }
    c.stop();
    out.console = c.text();
    out.passed = !failed;
    Ok(out)
}

/// Retry GET until it answers as `check` says, qemu exits, a failure
/// pattern shows, or the deadline passes.
fn http_check(
    c: &mut Console,
    check: &Check,
    path: &str,
    port: u16,
    from: usize,
    fail: &[Regex],
    deadline: Instant,
) -> Result<(Wait, String)> {
    let body = check
        .body
        .as_deref()
        .map(|b| Regex::new(b).expect("checked by the recipe"));
    let never = Regex::new(r"\A\z.").expect("a pattern that never matches");
    let mut last;
    loop {
        // Watch the console for failures and exits meanwhile.
        match c.wait_for(&never, from, fail, Instant::now())? {
            Wait::TimedOut => {}
            w => return Ok((w, String::new())),
        }
        match http::get(port, path, Duration::from_secs(5)) {
            Ok(a)
                if a.status == check.status()
                    && body.as_ref().is_none_or(|b| b.is_match(&a.body)) =>
            {
                return Ok((
                    Wait::Found {
                        end: from,
                        at: c.elapsed(),
                    },
                    String::new(),
                ));
            }
            Ok(a) => {
                last = format!(
                    "answered {} with {:?}",
                    a.status,
                    a.body.chars().take(200).collect::<String>()
                )
            }
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            return Ok((Wait::TimedOut, last));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A sparse copy of the raw card `from` at `to`.
fn copy_card(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    let mut src = std::fs::File::open(from).with_context(|| format!("opening {from}"))?;
    let mut dst = std::fs::File::create(to).with_context(|| format!("creating {to}"))?;
    crate::fsutil::copy_sparse(&mut src, &mut dst)
        .with_context(|| format!("copying the card {from} to {to}"))?;
    Ok(())
}

/// The config carrier the smoke attaches: the recipe's seed with a
/// provision.env of fresh values, as a cidata ISO (attached to x86 and
/// `virt` guests) and as the files a Raspberry Pi reads from its FAT boot
/// partition (written onto the first instance's own copy of the card).
pub struct Carrier {
    pub kind: CarrierKind,
    /// What a VM gets: the cidata ISO ([`Media::Seed`]) or FAT image
    /// ([`Media::SeedDisk`]).
    pub attach: Media,
    pub attached_as: CarrierAs,
    /// The Pi's seed files (`user-data`, `meta-data`, `network-config`).
    pub pi_files: Vec<Utf8PathBuf>,
    /// Setting name to the sha256 (hex) of the value set.
    pub digests: BTreeMap<String, String>,
}

impl Carrier {
    fn what(&self) -> &'static str {
        match self.kind {
            CarrierKind::Good => "the config carrier",
            CarrierKind::Broken => "a broken config carrier (malformed user-data)",
        }
    }
}

/// The carriers of a run: the good one, the broken one, either or none.
#[derive(Default)]
pub struct Carriers {
    good: Option<Carrier>,
    broken: Option<Carrier>,
}

impl Carriers {
    fn get(&self, k: CarrierKind) -> Option<&Carrier> {
        match k {
            CarrierKind::Good => self.good.as_ref(),
            CarrierKind::Broken => self.broken.as_ref(),
        }
    }
}

/// What makes the carrier's user-data malformed: a tab-indented line, the
/// slip of an operator editing `cidata.img` by hand (YAML forbids tabs in
/// indentation, so cloud-init cannot load the document and applies none of
/// it).
pub const MALFORMED_USER_DATA: &str = "\t- a tab-indented line: YAML cannot load this document\n";

/// `user_data` made malformed (see [`MALFORMED_USER_DATA`]).
pub fn malformed(user_data: &str) -> String {
    let mut s = user_data.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(MALFORMED_USER_DATA);
    s
}

/// Write the carrier: the recipe's cloud-init seed, generated as for the
/// qcow2 target but with a provision.env holding a fresh random value for
/// each of `smoke.carrier.set`; for [`CarrierKind::Broken`], with its
/// user-data made malformed. `attach` says whether VMs get it as the cidata
/// ISO or the FAT image.
fn make_carrier(
    r: &Resolved,
    work: &Utf8Path,
    kind: CarrierKind,
    attach: CarrierAs,
) -> Result<Option<Carrier>> {
    let Some(c) = &r.recipe.smoke.carrier else {
        return Ok(None);
    };
    let dir = work.join(match kind {
        CarrierKind::Good => "carrier",
        CarrierKind::Broken => "carrier-broken",
    });
    let spoil = |user_data: &str| match kind {
        CarrierKind::Good => user_data.to_string(),
        CarrierKind::Broken => malformed(user_data),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
    let mut env = String::from("# set by `cargo xtask smoke`: fresh values for this run\n");
    let mut digests = BTreeMap::new();
    for name in &c.set {
        let mut bytes = [0u8; 32];
        getrandom(&mut bytes)?;
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        env.push_str(&format!("{name}={value}\n"));
        digests.insert(name.clone(), crate::digest::bytes_sha256(value.as_bytes()));
    }
    let provision = dir.join("provision.env");
    std::fs::write(&provision, env).with_context(|| format!("writing {provision}"))?;
    let mut r2 = r.clone();
    r2.recipe.seed.cloud_init.provision_env = Some(provision);
    let seed = crate::seed::generate(&r2, crate::seed::SeedTarget::Qcow2)
        .context("generating the carrier's cloud-init seed")?;
    let mut files = vec![
        (dir.join(crate::seed::USER_DATA), crate::seed::USER_DATA),
        (dir.join(crate::seed::META_DATA), crate::seed::META_DATA),
    ];
    std::fs::write(&files[0].0, spoil(&seed.user_data))
        .with_context(|| format!("writing the carrier's user-data {}", files[0].0))?;
    std::fs::write(&files[1].0, &seed.meta_data)
        .with_context(|| format!("writing the carrier's meta-data {}", files[1].0))?;
    if let Some(n) = &seed.network_config {
        let p = dir.join(crate::seed::NETWORK_CONFIG);
        std::fs::write(&p, n)
            .with_context(|| format!("writing the carrier's network-config {p}"))?;
        files.push((p, crate::seed::NETWORK_CONFIG));
    }
    let media = match attach {
        CarrierAs::Cdrom => {
            let iso = dir.join(crate::seed::CIDATA_ISO);
            tools::run(&tools::xorriso::cidata_iso(
                &iso,
                crate::seed::CIDATA_ISO_LABEL,
                &files,
                r.epoch,
            ))?;
            Media::Seed(iso)
        }
        CarrierAs::Disk => {
            // As `cargo xtask seed` writes cidata.img for the operator.
            let img = dir.join(crate::seed::CIDATA_IMG);
            tools::run(&tools::dosfstools::mkfs_vfat_image(
                &img,
                crate::seed::CIDATA_FAT_LABEL,
                crate::seed::CIDATA_FAT_KIB,
                r.epoch,
            ))?;
            let paths: Vec<Utf8PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
            tools::run(&tools::mtools::mcopy_into(&img, &paths, r.epoch))?;
            Media::SeedDisk(img)
        }
    };
    let mut pi_files = Vec::new();
    if r.recipe.pi.is_some() {
        let pi = dir.join("pi");
        std::fs::create_dir_all(&pi).with_context(|| format!("creating {pi}"))?;
        let seed = crate::seed::generate(&r2, crate::seed::SeedTarget::Pi)
            .context("generating the carrier's cloud-init seed for the Raspberry Pi")?;
        for (name, data) in [
            (
                crate::seed::USER_DATA,
                Some(spoil(&seed.user_data).into_bytes()),
            ),
            (crate::seed::META_DATA, Some(seed.meta_data.into_bytes())),
            (crate::seed::NETWORK_CONFIG, seed.network_config),
        ] {
            if let Some(data) = data {
                let p = pi.join(name);
                std::fs::write(&p, data).with_context(|| format!("writing {p}"))?;
                pi_files.push(p);
            }
        }
    }
    Ok(Some(Carrier {
        kind,
        attach: media,
        attached_as: attach,
        pi_files,
        digests,
    }))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("reading /dev/urandom for the carrier's values")
}

/// `name` → `digest` pairs of every match of `re` in `console`.
fn reported(re: &Regex, console: &str) -> BTreeMap<String, String> {
    re.captures_iter(console)
        .map(|c| (c["name"].to_string(), c["digest"].to_string()))
        .collect()
}

/// Boot every artifact and check it. Returns the report; the caller
/// writes it and fails the run on any failed check.
pub fn run(r: &Resolved, artifacts: &[Artifact], opts: &Options) -> Result<report::Report> {
    let started = Instant::now();
    let o = &r.recipe.smoke;
    let mut prepared = Vec::new();
    for a in artifacts {
        crate::ui::info(&format!("smoke: preparing {}", a.name()));
        prepared.push((a.clone(), prepare(r, a, opts.firmware, &opts.work)?));
    }
    let guests = guests(o, opts, &prepared);
    let wants = |k: CarrierKind| guests.iter().any(|g| g.carrier == Some(k));
    if wants(CarrierKind::Broken) && o.carrier.as_ref().is_some_and(|c| c.refused.is_none()) {
        bail!(
            "{}: smoke.carrier.refused is not set: `--carrier-broken` needs the pattern of the \
             appliance's console report that the carrier could not be applied",
            r.file
        );
    }
    let mut carriers = Carriers::default();
    if wants(CarrierKind::Good) {
        carriers.good = make_carrier(r, &opts.work, CarrierKind::Good, opts.carrier_as)?;
    }
    if wants(CarrierKind::Broken) {
        carriers.broken = make_carrier(r, &opts.work, CarrierKind::Broken, opts.carrier_as)?;
    }
    for g in &guests {
        if let Base::Disk { path, format, .. } = &g.base {
            tools::run(&tools::qemu_img::overlay(path, format, &g.overlay, None))?;
        }
        if let Base::Pi { card, .. } = &g.base {
            // The carrier rides on the card's FAT boot partition, where a Pi
            // operator puts it: the carrier's instance boots its own copy
            // of the card with the seed files replaced.
            let base = match g.carrier.and_then(|k| carriers.get(k)) {
                Some(c) => {
                    let own = g.overlay.with_extension("card.img");
                    copy_card(card, &own)?;
                    let at = crate::pi::boot_partition_offset(&own)?;
                    tools::run(&tools::mtools::replace_at(&own, at, &c.pi_files))?;
                    own
                }
                None => card.clone(),
            };
            // On a card twice the image's size (qemu's SD card must be a
            // power of two), as an operator's card usually is: first boot
            // grows the root partition to its end (checked below).
            let len = std::fs::metadata(&base)
                .with_context(|| format!("reading the size of the card {base}"))?
                .len();
            let size = Some((len * 2).next_power_of_two());
            tools::run(&tools::qemu_img::overlay(&base, "raw", &g.overlay, size))?;
        }
        if let Base::Installer { disk_bytes, .. } = &g.base {
            // A blank disk: a sparse file takes no space until written.
            std::fs::File::create(&g.overlay)
                .and_then(|f| f.set_len(*disk_bytes))
                .with_context(|| format!("creating the blank target disk {}", g.overlay))?;
        }
        if let Some(v) = &g.vars {
            let from = match g.arch {
                Arch::Amd64 => qemu_system::OVMF_VARS,
                Arch::Arm64 => qemu_system::AAVMF_VARS,
            };
            std::fs::copy(from, v)
                .with_context(|| format!("copying the UEFI variables {from} to {v}"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("making {v} writable"))?;
        }
    }
    let parallel = opts.parallel.clamp(1, guests.len().max(1));
    let cpus = opts.vcpus.unwrap_or_else(|| vcpus_each(parallel)).max(1);
    crate::ui::info(&format!(
        "smoke: {} guest(s), {parallel} at a time, {cpus} vCPU(s) each",
        guests.len(),
    ));
    let accels = accelerators(&guests, o, opts, cpus)?;
    let print = |x: &Outcome| crate::ui::info(&format!("smoke: {}", x.line()));
    let queue = Mutex::new((0..guests.len()).collect::<Vec<_>>());
    let results: Mutex<BTreeMap<usize, Result<GuestResult>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                while let Some(i) = next(&queue) {
                    let g = &guests[i];
                    let res = run_guest(g, o, opts, &carriers, cpus, accels[i], &print);
                    let stop = res.is_err();
                    results.lock().unwrap().insert(i, res);
                    if stop {
                        // An interrupt (or a broken host) ends the run: no new guests.
                        queue.lock().unwrap().clear();
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    let mut outcomes = Vec::new();
    let mut done: Vec<(&Guest, GuestResult)> = Vec::new();
    for (i, g) in guests.iter().enumerate() {
        match results.remove(&i) {
            Some(Ok(res)) => done.push((g, res)),
            Some(Err(e)) => {
                return Err(e.context(format!("smoke boot of {} {}", g.artifact, g.label(0))))
            }
            None => {}
        }
    }
    for (_, res) in &done {
        for b in &res.boots {
            outcomes.extend(b.outcomes.iter().cloned());
        }
    }
    let across = cross_checks(o, &done, &carriers);
    for x in &across {
        print(x);
    }
    outcomes.extend(across);
    Ok(report::Report {
        outcomes,
        secs: started.elapsed().as_secs_f64(),
        first_boots: first_boots(&done, opts.carrier_as),
    })
}

/// Each instance's first boot of the appliance that passed: qemu's start to
/// its last check, and the carrier it had.
fn first_boots(done: &[(&Guest, GuestResult)], carrier_as: CarrierAs) -> Vec<report::FirstBoot> {
    let mut out = Vec::new();
    for (g, res) in done {
        let f = g.first_boot();
        let Some(b) = res.boots.get(f).filter(|b| b.passed) else {
            continue;
        };
        let Some(secs) = b.outcomes.iter().filter_map(|o| o.at_secs).reduce(f64::max) else {
            continue;
        };
        let how = if matches!(g.base, Base::Pi { .. }) {
            "boot partition"
        } else {
            carrier_as.name()
        };
        out.push(report::FirstBoot {
            artifact: g.artifact.clone(),
            guest: g.label(f),
            carrier: match g.carrier {
                None => "none".into(),
                Some(CarrierKind::Good) => how.into(),
                Some(CarrierKind::Broken) => format!("broken {how}"),
            },
            secs,
        });
    }
    out
}

/// How long the KVM probe waits for the guest's kernel to show time passing.
const KVM_PROBE: Duration = Duration::from_secs(30);

/// Each guest's accelerator. TCG unless `--accel kvm`; then KVM for the
/// guests of the host's own architecture (not the Pi's `raspi3b`, which
/// qemu emulates only) when `/dev/kvm` opens and a probe boot shows KVM
/// makes progress; otherwise TCG, with a warning saying why. (On some
/// hosts a KVM guest hangs in early boot instead of failing: the probe is
/// what tells.)
fn accelerators(
    guests: &[Guest],
    o: &SmokeOptions,
    opts: &Options,
    cpus: u32,
) -> Result<Vec<&'static str>> {
    let native = |g: &Guest| {
        !matches!(g.base, Base::Pi { .. })
            && match g.arch {
                Arch::Amd64 => std::env::consts::ARCH == "x86_64",
                Arch::Arm64 => std::env::consts::ARCH == "aarch64",
            }
    };
    let mut kvm = false;
    if opts.accel == "kvm" {
        if let Some(g) = guests.iter().find(|g| native(g)) {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm");
            match opened {
                Err(e) => crate::ui::warn(&format!(
                    "--accel kvm: /dev/kvm cannot be opened ({e}); booting under TCG instead"
                )),
                Ok(_) => {
                    let (ok, seen) = kvm_progresses(g, o, cpus)?;
                    if ok {
                        crate::ui::info(&format!(
                            "smoke: KVM probe on {} ({}): {seen}; booting under KVM",
                            g.artifact, g.machine
                        ));
                    } else {
                        crate::ui::warn(&format!(
                            "--accel kvm: KVM probe on {} ({}): {seen}; booting under TCG instead",
                            g.artifact, g.machine
                        ));
                    }
                    kvm = ok;
                }
            }
        } else {
            crate::ui::warn(
                "--accel kvm: no guest is of this host's architecture; booting under TCG",
            );
        }
    }
    Ok(guests
        .iter()
        .map(|g| if kvm && native(g) { "kvm" } else { "tcg" })
        .collect())
}

/// Boot `g` under KVM on a snapshot (qemu `-snapshot`: nothing is written
/// to its disks) for up to [`KVM_PROBE`], watching its console for kernel
/// time past one second (a printk timestamp `[    1.234567]`): proof the
/// guest runs, whatever it prints later. Returns the verdict and what was
/// seen.
fn kvm_progresses(g: &Guest, o: &SmokeOptions, cpus: u32) -> Result<(bool, String)> {
    let cmd = g
        .cmd(0, o, &BTreeMap::new(), None, cpus, "kvm")
        .arg("-snapshot");
    let mut c = Console::spawn(&cmd)?;
    let time = Regex::new(r"\[\s*[1-9][0-9]*\.[0-9]{6}\]").expect("static regex");
    let w = c.wait_for(&time, 0, &[], Instant::now() + KVM_PROBE)?;
    // What the guest showed (before qemu's own words on being stopped).
    let text = c.text();
    c.stop();
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(nothing)")
        .to_string();
    Ok(match w {
        Wait::Found { at, .. } => (
            true,
            format!("kernel time passed 1 s after {:.1}s", at.as_secs_f64()),
        ),
        Wait::Exited { status } => (false, format!("qemu exited ({status}): {last}")),
        _ => (
            false,
            format!(
                "no kernel time past 1 s within {}s; last console line: {last}",
                KVM_PROBE.as_secs()
            ),
        ),
    })
}

/// The next guest to boot, if any.
fn next(queue: &Mutex<Vec<usize>>) -> Option<usize> {
    let mut q = queue.lock().unwrap();
    (!q.is_empty()).then(|| q.remove(0))
}

/// An instance and the identity its first boot reported.
type Reported<'a> = (&'a Guest, BTreeMap<String, String>);

/// Whether a Pi guest's first boot grew its root partition: kiln's
/// `kiln-grow-root` reports `… grown from A MiB to B MiB` once, on the boot
/// that finds the card larger than the partition. `None` when it did.
fn grew(console: &str) -> Option<String> {
    let re = Regex::new(r"kiln-grow-root: \S+ grown from (\d+) MiB to (\d+) MiB").expect("valid");
    match re.captures(console) {
        Some(c) if c[2].parse::<u64>().ok() > c[1].parse::<u64>().ok() => None,
        Some(c) => Some(format!(
            "kiln-grow-root reported {} but did not grow",
            &c[0]
        )),
        None => Some(
            "no `kiln-grow-root: … grown` line on the first boot: the root partition \
             did not grow to the end of a card larger than the image"
                .into(),
        ),
    }
}

/// The checks across boots and instances (identity, first-boot work, carrier,
/// a Pi card's growth).
fn cross_checks(
    o: &SmokeOptions,
    done: &[(&Guest, GuestResult)],
    carriers: &Carriers,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let outcome =
        |g: &Guest, guest: String, check: String, problem: Option<String>, console: &str| Outcome {
            artifact: g.artifact.clone(),
            guest,
            check,
            ok: problem.is_none(),
            at_secs: None,
            message: problem.clone().unwrap_or_default(),
            console_tail: if problem.is_some() {
                tail(console, 50)
            } else {
                String::new()
            },
            skipped: false,
        };
    let identity = o
        .identity
        .as_deref()
        .map(|p| Regex::new(p).expect("checked"));
    // Per artifact: the first boots' identity reports.
    let mut firsts: BTreeMap<&str, Vec<Reported>> = BTreeMap::new();
    for (g, res) in done {
        if g.boots.len() == 1 && matches!(g.base, Base::Cdrom { .. }) {
            continue;
        }
        let f = g.first_boot();
        let Some(first) = res.boots.get(f).filter(|b| b.passed) else {
            continue;
        };
        if let Some(re) = &identity {
            let ids = reported(re, &first.console);
            out.push(outcome(
                g,
                g.label(f),
                "identity report".into(),
                ids.is_empty()
                    .then(|| format!("no line matched /{}/", re.as_str())),
                &first.console,
            ));
            if let Some(second) = res.boots.get(f + 1).filter(|b| b.passed) {
                let again = reported(re, &second.console);
                let changed: Vec<String> = ids
                    .iter()
                    .filter(|(k, v)| again.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                out.push(outcome(
                    g,
                    g.label(f + 1),
                    "identity unchanged since the first boot".into(),
                    (!changed.is_empty())
                        .then(|| format!("changed or missing: {}", changed.join(", "))),
                    &second.console,
                ));
            }
            firsts
                .entry(g.artifact.as_str())
                .or_default()
                .push((g, ids));
        }
        if let Some(second) = res.boots.get(f + 1).filter(|b| b.passed) {
            for p in &o.once {
                let re = Regex::new(p).expect("checked");
                let problem = if !re.is_match(&first.console) {
                    Some("not seen on the first boot".to_string())
                } else if re.is_match(&second.console) {
                    Some("seen again on the second boot: first-boot work ran again".to_string())
                } else {
                    None
                };
                out.push(outcome(
                    g,
                    g.label(f + 1),
                    format!("once /{p}/"),
                    problem,
                    &second.console,
                ));
            }
        }
        if matches!(g.base, Base::Pi { .. }) {
            out.push(outcome(
                g,
                g.label(f),
                "the root partition grew to the end of a larger card".into(),
                grew(&first.console),
                &first.console,
            ));
        }
        let carrier = g.carrier.and_then(|k| carriers.get(k));
        if let (Some(c), Some(spec)) = (
            carrier.filter(|c| c.kind == CarrierKind::Broken),
            &o.carrier,
        ) {
            let refused = spec.refused.as_deref().expect("checked before any boot");
            let re = Regex::new(refused).expect("checked");
            out.push(outcome(
                g,
                g.label(f),
                "broken carrier reported as not applied".into(),
                (!re.is_match(&first.console)).then(|| {
                    format!("no line matched /{refused}/: the appliance did not say the carrier was not applied")
                }),
                &first.console,
            ));
            let re = Regex::new(&spec.report).expect("checked");
            let got = reported(&re, &first.console);
            for name in c.digests.keys() {
                out.push(outcome(
                    g,
                    g.label(f),
                    format!("broken carrier: {name} minted, not taken"),
                    got.get(name).map(|d| {
                        format!("reported {name} as provisioned (sha256={d}) from a carrier whose user-data is malformed")
                    }),
                    &first.console,
                ));
            }
        }
        if let (Some(c), Some(spec)) = (carrier.filter(|c| c.kind == CarrierKind::Good), &o.carrier)
        {
            let re = Regex::new(&spec.report).expect("checked");
            let got = reported(&re, &first.console);
            for (name, want) in &c.digests {
                let problem = match got.get(name) {
                    Some(d) if d == want => None,
                    Some(d) => Some(format!("reported digest {d}, the carrier set one whose digest is {want}")),
                    None => Some(format!("no report of {name} matched /{}/: the appliance did not take it from the carrier", spec.report)),
                };
                out.push(outcome(
                    g,
                    g.label(f),
                    format!("carrier setting {name} reached the appliance"),
                    problem,
                    &first.console,
                ));
            }
        }
    }
    for (artifact, ids) in firsts {
        if ids.len() < 2 {
            continue;
        }
        let mut shared = Vec::new();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                for (name, d) in &ids[i].1 {
                    if ids[j].1.get(name) == Some(d) {
                        shared.push(format!(
                            "#{} and #{} share {name} ({d})",
                            ids[i].0.instance, ids[j].0.instance
                        ));
                    }
                }
            }
        }
        out.push(Outcome {
            artifact: artifact.to_string(),
            guest: String::new(),
            check: format!("{} instances have distinct identities", ids.len()),
            ok: shared.is_empty(),
            at_secs: None,
            message: if shared.is_empty() {
                String::new()
            } else {
                format!(
                    "{}: a baked identity (every instance must mint its own)",
                    shared.join("; ")
                )
            },
            console_tail: String::new(),
            skipped: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smoke options for planning tests: TCG, the carrier on a CD-ROM, two
    /// guests at a time.
    fn options(instances: usize, firmware: FirmwareChoice) -> Options {
        Options {
            instances,
            firmware,
            accel: "tcg".into(),
            carrier: true,
            carrier_as: CarrierAs::Cdrom,
            carrier_broken: false,
            work: "/w".into(),
            logs: "/l".into(),
            parallel: 2,
            vcpus: None,
        }
    }

    #[test]
    fn a_pi_card_must_report_its_root_grown() {
        assert_eq!(
            grew("[  9.1] kiln-grow-root: /dev/mmcblk0p2 grown from 1792 MiB to 3840 MiB\n"),
            None
        );
        let e = grew("kiln-grow-root: /dev/mmcblk0p2 grown from 1792 MiB to 1792 MiB").unwrap();
        assert!(e.contains("did not grow"), "{e}");
        let e = grew("demo: bootstrap ok\n").unwrap();
        assert!(e.contains("no `kiln-grow-root"), "{e}");
    }

    #[test]
    fn artifacts_are_recognised_by_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        for (name, format, arch) in [
            ("demo-1-amd64.qcow2", Format::Qcow2, Arch::Amd64),
            ("demo-1-arm64.qcow2", Format::Qcow2, Arch::Arm64),
            ("demo-1-amd64.ova", Format::Ova, Arch::Amd64),
            ("demo-1-arm64-pi.img.zst", Format::Pi, Arch::Arm64),
            ("demo-1-amd64.iso", Format::Iso, Arch::Amd64),
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
            let a = Artifact::from_path(&dir.join(name)).unwrap();
            assert_eq!((a.format, a.arch), (format, arch), "{name}");
        }
        let e = format!("{:#}", Artifact::from_path(&dir.join("x.tar")).unwrap_err());
        assert!(e.contains("not an artifact smoke can boot"), "{e}");
        let e = format!(
            "{:#}",
            Artifact::from_path(&dir.join("gone.qcow2")).unwrap_err()
        );
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn the_iso_check_matches_the_autoinstall_command_line() {
        let c = &iso_checks(&SmokeOptions::default())[0];
        let re = Regex::new(c.console.as_ref().unwrap()).unwrap();
        assert!(re.is_match(
            "[    0.000000] Command line: BOOT_IMAGE=/casper/vmlinuz console=ttyS0,115200 autoinstall ds=nocloud;s=/cdrom/nocloud/ ---"
        ));
        assert!(!re.is_match("Command line: BOOT_IMAGE=/casper/vmlinuz ---"));
    }

    /// kiln's installer ISO: every instance installs first (onto its own
    /// raw disk), then boots that disk through the recipe's checks; the
    /// carrier and the second boot follow the install on instance 1.
    #[test]
    fn installer_guests_install_then_boot_their_disk() {
        let mut o = SmokeOptions::default();
        o.again = o.boot.clone();
        o.carrier = Some(crate::recipe::smoke::Carrier {
            set: vec!["TOKEN".into()],
            report: "x".into(),
            refused: None,
        });
        let opts = options(2, FirmwareChoice::Both);
        let a = Artifact {
            path: "/o/demo-1-amd64.iso".into(),
            format: Format::Iso,
            arch: Arch::Amd64,
        };
        let base = Base::Installer {
            iso: a.path.clone(),
            disk_bytes: 1 << 31,
        };
        let g = guests(&o, &opts, &[(a, base)]);
        assert_eq!(g.len(), 2);
        let labels: Vec<String> = (0..g[0].boots.len()).map(|i| g[0].label(i)).collect();
        assert_eq!(
            labels,
            ["#1 uefi install", "#1 uefi boot 1", "#1 uefi boot 2"]
        );
        assert_eq!(g[1].label(0), "#2 bios install");
        assert_eq!(g[1].boots.len(), 2);
        let done = g[0].boots[0].last().unwrap().console.clone().unwrap();
        assert!(Regex::new(&done)
            .unwrap()
            .is_match(crate::iso::installer::DONE_MARKER));
        assert_eq!(g[0].first_boot(), 1);
        assert_eq!(
            (g[0].carrier, g[1].carrier),
            (Some(CarrierKind::Good), None)
        );
        assert_eq!(g[0].overlay, "/w/demo-1-amd64.iso/instance-1.raw");
        assert!(g[0].vars.is_some() && g[1].vars.is_none());
        // The install boot is the CD-ROM with the blank disk; the next boot
        // the disk alone.
        let install = g[0]
            .cmd(0, &o, &BTreeMap::new(), None, 1, "tcg")
            .args
            .join(" ");
        assert!(
            install.contains("media=cdrom") && install.contains("instance-1.raw,format=raw"),
            "{install}"
        );
        let boot = g[0]
            .cmd(1, &o, &BTreeMap::new(), None, 1, "tcg")
            .args
            .join(" ");
        assert!(
            !boot.contains("media=cdrom") && boot.contains("instance-1.raw,format=raw"),
            "{boot}"
        );
    }

    /// `--carrier-broken`: the instances without the carrier get the broken
    /// one (all of them with `--no-carrier`); an ISO gets none; the broken
    /// carrier's user-data does not load as YAML, and `--carrier-as disk`
    /// attaches the carrier as a second disk.
    #[test]
    fn broken_carriers_go_to_the_instances_without_the_carrier() {
        let o = SmokeOptions {
            carrier: Some(crate::recipe::smoke::Carrier {
                set: vec!["TOKEN".into()],
                report: "x".into(),
                refused: Some("not applied".into()),
            }),
            ..SmokeOptions::default()
        };
        let mut opts = Options {
            carrier_as: CarrierAs::Disk,
            carrier_broken: true,
            ..options(3, FirmwareChoice::Uefi)
        };
        let a = Artifact {
            path: "/o/demo-1-amd64.qcow2".into(),
            format: Format::Qcow2,
            arch: Arch::Amd64,
        };
        let base = Base::Disk {
            path: a.path.clone(),
            format: "qcow2".into(),
            firmwares: vec![Firmware::Uefi],
        };
        let kinds = |opts: &Options| -> Vec<Option<CarrierKind>> {
            guests(&o, opts, &[(a.clone(), base.clone())])
                .iter()
                .map(|g| g.carrier)
                .collect()
        };
        use CarrierKind::{Broken, Good};
        assert_eq!(kinds(&opts), [Some(Good), Some(Broken), Some(Broken)]);
        opts.carrier = false;
        assert_eq!(kinds(&opts), [Some(Broken), Some(Broken), Some(Broken)]);
        opts.carrier_broken = false;
        assert_eq!(kinds(&opts), [None, None, None]);
        let iso = Base::Cdrom {
            path: "/o/x.iso".into(),
        };
        opts.carrier_broken = true;
        assert!(guests(&o, &opts, &[(a.clone(), iso)])
            .iter()
            .all(|g| g.carrier.is_none()));

        let g = &guests(&o, &opts, &[(a.clone(), base.clone())])[0];
        let seed = Media::SeedDisk("/w/carrier-broken/cidata.img".into());
        let cmd = g
            .cmd(0, &o, &BTreeMap::new(), Some(&seed), 1, "tcg")
            .to_string();
        assert!(
            cmd.contains("file=/w/carrier-broken/cidata.img,format=raw,if=virtio,readonly=on"),
            "{cmd}"
        );

        let good = "#cloud-config\nwrite_files:\n  - path: /etc/demo/provision.env\n    content: |\n      TOKEN=x\n";
        assert!(yaml_serde::from_str::<yaml_serde::Value>(good).is_ok());
        let bad = malformed(good);
        assert!(bad.starts_with(good), "the seed is kept, a line added");
        assert!(
            yaml_serde::from_str::<yaml_serde::Value>(&bad).is_err(),
            "the broken carrier's user-data loads as YAML:\n{bad}"
        );
    }

    #[test]
    fn reports_are_read_by_name_and_digest() {
        let re = Regex::new(r"demo: identity (?P<name>\S+) sha256=(?P<digest>[0-9a-f]+)").unwrap();
        let m = reported(
            &re,
            "x\ndemo: identity machine-id sha256=ab12\r\ndemo: identity secrets sha256=cd\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["machine-id"], "ab12");
    }
}
