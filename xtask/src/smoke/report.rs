//! What a smoke run found: one [`Outcome`] per check, printed as it
//! happens and written as JUnit XML (`junit.xml`) and JSON (`smoke.json`),
//! which CI systems render.

use std::fmt::Write as _;

use serde::Serialize;

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The artifact's file name (a JUnit test suite).
    pub artifact: String,
    /// Which guest and boot: `#1 uefi boot 1` (empty for checks across guests).
    pub guest: String,
    /// What was checked: `console /demo: first boot complete/`.
    pub check: String,
    pub ok: bool,
    /// Seconds from qemu's start to the marker (console and HTTP checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_secs: Option<f64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The last console lines, for a failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub console_tail: String,
    /// Not checked on this guest (`message` says why); `ok` stays true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl Outcome {
    /// The line printed for it.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.artifact, self.guest);
        s = s.trim_end().to_string();
        s.push_str(&format!(": {}: ", self.check));
        if self.skipped {
            s.push_str(&self.message);
        } else if self.ok {
            s.push_str("ok");
            if let Some(t) = self.at_secs {
                s.push_str(&format!(" at {t:.1}s"));
            }
        } else {
            s.push_str(&format!("FAILED: {}", self.message));
        }
        s
    }
}

/// One instance's first boot of the appliance that passed: how long it
/// took and which carrier it had. Reported, never checked: wall time under
/// TCG depends on the machine and on what else runs.
#[derive(Debug, Clone, Serialize)]
pub struct FirstBoot {
    pub artifact: String,
    /// `#1 uefi boot 1`.
    pub guest: String,
    /// The carrier attached: `none`, `cdrom`, `disk` or `boot partition`,
    /// with `broken ` before it for a malformed one.
    pub carrier: String,
    /// qemu's start to the boot's last check, seconds.
    pub secs: f64,
}

/// What a carrier added to an artifact's first boot: the mean over the
/// instances with it minus the mean over those without one.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierCost {
    pub artifact: String,
    pub carrier: String,
    pub with_secs: f64,
    pub without_secs: f64,
    pub adds_secs: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Wall time of the whole run, seconds.
    pub secs: f64,
    /// Every instance's first boot that passed.
    pub first_boots: Vec<FirstBoot>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

impl Report {
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok).count()
    }

    /// Per artifact and carrier, what the carrier added to the first boot,
    /// for artifacts with instances both with and without a carrier.
    pub fn carrier_costs(&self) -> Vec<CarrierCost> {
        let mut by: std::collections::BTreeMap<(&str, &str), Vec<f64>> = Default::default();
        for b in &self.first_boots {
            by.entry((b.artifact.as_str(), b.carrier.as_str()))
                .or_default()
                .push(b.secs);
        }
        let mut out = Vec::new();
        for ((artifact, carrier), secs) in &by {
            let Some(without) = by.get(&(*artifact, "none")) else {
                continue;
            };
            if *carrier == "none" {
                continue;
            }
            let (with, without) = (mean(secs), mean(without));
            out.push(CarrierCost {
                artifact: artifact.to_string(),
                carrier: carrier.to_string(),
                with_secs: with,
                without_secs: without,
                adds_secs: with - without,
            });
        }
        out
    }

    /// The summary's lines on first-boot times: each instance's, then what
    /// each carrier added (or why nothing can be compared).
    pub fn timing_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .first_boots
            .iter()
            .map(|b| {
                format!(
                    "{} {}: first boot {:.1}s (qemu start to its last check), carrier: {}",
                    b.artifact, b.guest, b.secs, b.carrier
                )
            })
            .collect();
        let costs = self.carrier_costs();
        for c in &costs {
            v.push(format!(
                "{}: the carrier ({}) adds {:+.1}s to the first boot ({:.1}s with, {:.1}s without)",
                c.artifact, c.carrier, c.adds_secs, c.with_secs, c.without_secs
            ));
        }
        let mut artifacts: Vec<&str> = self
            .first_boots
            .iter()
            .map(|b| b.artifact.as_str())
            .collect();
        artifacts.dedup();
        for a in artifacts {
            let kinds = self.first_boots.iter().filter(|b| b.artifact == a);
            let with = kinds.clone().any(|b| b.carrier != "none");
            if with && !costs.iter().any(|c| c.artifact == a) {
                v.push(format!(
                    "{a}: no instance booted without a carrier: nothing to compare the carrier's first boot with"
                ));
            }
        }
        v
    }

    pub fn json(&self) -> String {
        let v = serde_json::json!({
            "ok": self.failures() == 0,
            "checks": self.outcomes.len(),
            "failures": self.failures(),
            "secs": self.secs,
            "first_boots": self.first_boots,
            "carrier_costs": self.carrier_costs(),
            "outcomes": self.outcomes,
        });
        serde_json::to_string_pretty(&v).expect("a report serializes") + "\n"
    }

    /// JUnit XML: a test suite per artifact, a test case per check.
    pub fn junit(&self) -> String {
        let mut suites: Vec<&str> = self.outcomes.iter().map(|o| o.artifact.as_str()).collect();
        suites.dedup();
        let mut seen = Vec::new();
        suites.retain(|s| {
            let new = !seen.contains(s);
            seen.push(*s);
            new
        });
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"kiln smoke\" tests=\"{}\" failures=\"{}\" time=\"{:.1}\">",
            self.outcomes.len(),
            self.failures(),
            self.secs
        );
        for s in suites {
            let cases: Vec<&Outcome> = self.outcomes.iter().filter(|o| o.artifact == s).collect();
            let failures = cases.iter().filter(|o| !o.ok).count();
            let _ = writeln!(
                x,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
                esc(s),
                cases.len()
            );
            // First-boot times and what a carrier adds: reported, not checked.
            let mut props: Vec<(String, String)> = self
                .first_boots
                .iter()
                .filter(|b| b.artifact == s)
                .map(|b| {
                    (
                        format!("first boot secs: {} (carrier: {})", b.guest, b.carrier),
                        format!("{:.1}", b.secs),
                    )
                })
                .collect();
            for c in self.carrier_costs().iter().filter(|c| c.artifact == s) {
                props.push((
                    format!("carrier adds secs: {}", c.carrier),
                    format!("{:.1}", c.adds_secs),
                ));
            }
            if !props.is_empty() {
                x.push_str("    <properties>\n");
                for (name, value) in props {
                    let _ = writeln!(
                        x,
                        "      <property name=\"{}\" value=\"{}\"/>",
                        esc(&name),
                        esc(&value)
                    );
                }
                x.push_str("    </properties>\n");
            }
            for c in cases {
                let name = if c.guest.is_empty() {
                    c.check.clone()
                } else {
                    format!("{}: {}", c.guest, c.check)
                };
                let _ = write!(
                    x,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.1}\"",
                    esc(s),
                    esc(&name),
                    c.at_secs.unwrap_or(0.0)
                );
                if c.skipped {
                    let _ = writeln!(
                        x,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        esc(&c.message)
                    );
                } else if c.ok {
                    x.push_str("/>\n");
                } else {
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        esc(&c.message),
                        esc(&c.console_tail)
                    );
                }
            }
            x.push_str("  </testsuite>\n");
        }
        x.push_str("</testsuites>\n");
        x
    }
}

/// XML text: the five entities escaped, characters XML 1.0 forbids (a
/// console's escape sequences) dropped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: bool) -> Outcome {
        Outcome {
            artifact: "demo-1-amd64.qcow2".into(),
            guest: "#1 uefi boot 1".into(),
            check: "console /a<b/".into(),
            ok,
            at_secs: ok.then_some(12.5),
            message: if ok {
                String::new()
            } else {
                "no match within 3s".into()
            },
            console_tail: if ok {
                String::new()
            } else {
                "\x1b[0mlast & line\r".into()
            },
            skipped: false,
        }
    }

    #[test]
    fn junit_is_well_formed_and_counts_failures() {
        let skipped = Outcome {
            skipped: true,
            message: "skipped: no network".into(),
            at_secs: None,
            ..outcome(true)
        };
        assert_eq!(
            skipped.line(),
            "demo-1-amd64.qcow2 #1 uefi boot 1: console /a<b/: skipped: no network"
        );
        let r = Report {
            outcomes: vec![outcome(true), outcome(false), skipped],
            secs: 30.0,
            first_boots: Vec::new(),
        };
        let x = r.junit();
        // Well-formed: every event reads. The failure's text is the tail
        // without its control characters.
        let mut rd = quick_xml::Reader::from_str(&x);
        loop {
            match rd.read_event().unwrap_or_else(|e| panic!("{e}\n{x}")) {
                quick_xml::events::Event::Eof => break,
                _ => continue,
            }
        }
        assert!(x.contains(">[0mlast &amp; line</failure>"), "{x}");
        assert!(x.contains("tests=\"3\" failures=\"1\""), "{x}");
        assert!(
            x.contains("<skipped message=\"skipped: no network\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"no match within 3s\">"),
            "{x}"
        );
        assert!(x.contains("name=\"#1 uefi boot 1: console /a&lt;b/\""));
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["failures"], 1);
        assert_eq!(
            outcome(true).line(),
            "demo-1-amd64.qcow2 #1 uefi boot 1: console /a<b/: ok at 12.5s"
        );
    }

    /// Instances with and without a carrier: each first boot's time, and
    /// the carrier's cost as the difference of the means, in the summary,
    /// JUnit's properties and the JSON.
    #[test]
    fn carrier_costs_compare_with_instances_without_one() {
        let boot = |guest: &str, carrier: &str, secs: f64| FirstBoot {
            artifact: "a.qcow2".into(),
            guest: guest.into(),
            carrier: carrier.into(),
            secs,
        };
        let mut r = Report {
            outcomes: vec![Outcome {
                artifact: "a.qcow2".into(),
                ..outcome(true)
            }],
            secs: 300.0,
            first_boots: vec![
                boot("#1 uefi boot 1", "disk", 130.0),
                boot("#2 uefi boot 1", "none", 100.0),
                boot("#3 uefi boot 1", "none", 110.0),
                boot("#4 uefi boot 1", "broken disk", 120.0),
            ],
        };
        let c = r.carrier_costs();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].carrier.as_str(), c[0].adds_secs),
            ("broken disk", 15.0)
        );
        assert_eq!((c[1].carrier.as_str(), c[1].adds_secs), ("disk", 25.0));
        let lines = r.timing_lines();
        assert!(
            lines.contains(
                &"a.qcow2: the carrier (disk) adds +25.0s to the first boot (130.0s with, 105.0s without)"
                    .to_string()
            ),
            "{lines:#?}"
        );
        let x = r.junit();
        assert!(
            x.contains("<property name=\"carrier adds secs: disk\" value=\"25.0\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<property name=\"first boot secs: #2 uefi boot 1 (carrier: none)\" value=\"100.0\"/>"),
            "{x}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["carrier_costs"][1]["adds_secs"], 25.0);
        // Only instances with a carrier: nothing to compare, and it says so.
        r.first_boots.retain(|b| b.carrier != "none");
        assert!(r.carrier_costs().is_empty());
        assert!(r
            .timing_lines()
            .iter()
            .any(|l| l.contains("no instance booted without a carrier")));
    }
}
