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

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Wall time of the whole run, seconds.
    pub secs: f64,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok).count()
    }

    pub fn json(&self) -> String {
        let v = serde_json::json!({
            "ok": self.failures() == 0,
            "checks": self.outcomes.len(),
            "failures": self.failures(),
            "secs": self.secs,
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
}
