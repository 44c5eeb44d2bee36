//! The matrix's results: what one kernel's console said (the scenario's `LDK-…` lines), and the
//! tables kernel × check and kernel × program printed at the end.

use std::time::Duration;

/// One check's outcome on one kernel.
pub(super) struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// One eBPF program's size on one kernel: translated instructions and instructions the verifier
/// processed.
pub(super) struct Program {
    pub name: String,
    pub xlated: String,
    pub verified: String,
}

/// What one kernel's run reported.
pub(super) struct Run {
    pub label: String,
    /// `uname -r` as the scenario saw it.
    pub release: Option<String>,
    pub checks: Vec<Check>,
    pub programs: Vec<Program>,
    /// Whether the run got to its end by itself, within its time limit.
    pub finished: bool,
    pub elapsed: Duration,
    /// Why it did not finish, when it did not.
    pub problem: Option<String>,
}

impl Run {
    pub(super) fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            release: None,
            checks: Vec::new(),
            programs: Vec::new(),
            finished: false,
            elapsed: Duration::ZERO,
            problem: None,
        }
    }

    /// Takes in one console line, if it is one of the scenario's.
    pub(super) fn line(&mut self, line: &str) {
        let mut words = line.trim().splitn(4, ' ');
        match words.next() {
            Some("LDK-KERNEL") => self.release = words.next().map(str::to_owned),
            Some("LDK-RESULT") => {
                let (Some(name), Some(verdict)) = (words.next(), words.next()) else {
                    return;
                };
                self.checks.push(Check {
                    name: name.to_owned(),
                    pass: verdict == "PASS",
                    detail: words.next().unwrap_or_default().to_owned(),
                });
            }
            Some("LDK-PROG") => {
                let Some(name) = words.next() else { return };
                let rest: Vec<&str> = words.flat_map(str::split_whitespace).collect();
                let field = |key: &str| {
                    rest.iter()
                        .find_map(|w| w.strip_prefix(key))
                        .unwrap_or("?")
                        .to_owned()
                };
                self.programs.push(Program {
                    name: name.to_owned(),
                    xlated: field("xlated="),
                    verified: field("verified="),
                });
            }
            _ => {}
        }
    }

    fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }
}

/// Every name in first-seen order across the runs.
fn names<'a>(runs: &'a [Run], of: impl Fn(&'a Run) -> Vec<&'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for r in runs {
        for n in of(r) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header);
    line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
}

/// Prints the tables and every failure's detail; true if every cell is green.
pub(super) fn print(runs: &[Run]) -> bool {
    let checks = names(runs, |r| r.checks.iter().map(|c| c.name.as_str()).collect());
    let mut header = vec!["check".to_owned()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    let mut rows = vec![{
        let mut row = vec!["kernel".to_owned()];
        row.extend(
            runs.iter()
                .map(|r| r.release.clone().unwrap_or_else(|| "?".to_owned())),
        );
        row
    }];
    let mut green = true;
    for name in &checks {
        let mut row = vec![(*name).to_owned()];
        for r in runs {
            row.push(match r.check(name) {
                Some(c) if c.pass => "PASS".to_owned(),
                Some(_) => "FAIL".to_owned(),
                None => "missing".to_owned(),
            });
            green &= r.check(name).is_some_and(|c| c.pass);
        }
        rows.push(row);
    }
    let mut row = vec!["finished".to_owned()];
    for r in runs {
        let ok = r.finished && r.problem.is_none() && !r.checks.is_empty();
        row.push(if ok { "PASS" } else { "FAIL" }.to_owned());
        green &= ok;
    }
    rows.push(row);
    let mut row = vec!["time".to_owned()];
    row.extend(
        runs.iter()
            .map(|r| format!("{:.0} s", r.elapsed.as_secs_f64())),
    );
    rows.push(row);
    println!("\n==> kernel matrix");
    print_table(&header, &rows);

    let programs = names(runs, |r| {
        r.programs.iter().map(|p| p.name.as_str()).collect()
    });
    if !programs.is_empty() {
        println!(
            "\n==> eBPF programs as loaded by the model-vs-program test: \
             translated insns / insns the verifier processed"
        );
        let mut header = vec!["program".to_owned()];
        header.extend(runs.iter().map(|r| r.label.clone()));
        let rows: Vec<Vec<String>> = programs
            .iter()
            .map(|name| {
                let mut row = vec![(*name).to_owned()];
                row.extend(runs.iter().map(|r| {
                    r.program(name).map_or_else(
                        || "-".to_owned(),
                        |p| format!("{} / {}", p.xlated, p.verified),
                    )
                }));
                row
            })
            .collect();
        print_table(&header, &rows);
    }

    let mut failures = Vec::new();
    for r in runs {
        if let Some(p) = &r.problem {
            failures.push(format!("{}: {p}", r.label));
        }
        for c in r.checks.iter().filter(|c| !c.pass) {
            failures.push(format!("{} {}: {}", r.label, c.name, c.detail));
        }
        for name in checks.iter().filter(|n| r.check(n).is_none()) {
            failures.push(format!(
                "{} {name}: no result (the run ended before it)",
                r.label
            ));
        }
    }
    if !failures.is_empty() {
        println!("\n==> failures");
        for f in &failures {
            println!("  {f}");
        }
    }
    green
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_fill_the_run() {
        let mut r = Run::new("6.12");
        for l in [
            "[    1.0] random kernel line",
            "LDK-KERNEL 6.12.117+deb12-amd64",
            "LDK-RESULT up-native PASS 3s",
            "LDK-RESULT up-skb FAIL lockdown up: error: no TCX",
            "LDK-PROG lockdown_ingress type=6 xlated=1234 verified=5678",
        ] {
            r.line(l);
        }
        assert_eq!(r.release.as_deref(), Some("6.12.117+deb12-amd64"));
        assert_eq!(r.checks.len(), 2);
        assert!(r.checks[0].pass);
        assert!(!r.checks[1].pass);
        assert_eq!(r.checks[1].detail, "lockdown up: error: no TCX");
        let p = r.program("lockdown_ingress").expect("the program line");
        assert_eq!((p.xlated.as_str(), p.verified.as_str()), ("1234", "5678"));
    }

    #[test]
    fn a_missing_check_or_an_unfinished_run_is_red() {
        let mut a = Run::new("a");
        a.line("LDK-RESULT one PASS");
        a.line("LDK-RESULT two PASS");
        a.finished = true;
        let mut b = Run::new("b");
        b.line("LDK-RESULT one PASS");
        b.finished = true;
        assert!(!print(&[a, b]));
        let mut c = Run::new("c");
        c.line("LDK-RESULT one PASS");
        assert!(!print(&[c]));
        let mut d = Run::new("d");
        d.line("LDK-RESULT one PASS");
        d.finished = true;
        assert!(print(&[d]));
    }
}
