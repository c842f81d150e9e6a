//! No input can crash, hang or exhaust the gate (issue #13): each limit of `cargo xtask check`
//! on the files an operator writes, as a clear diagnostic with a location (snapshots in
//! `tests/snapshots/gate_limits__*`), and a fuzz-style property test that feeds mutated copies
//! of the shipped files to the real loaders and the real binary.

mod util;

use std::time::{Duration, Instant};

use platform::compile::{Compiled, compile_environment};
use platform::diagnostic::{Diagnostic, render_plain};
use platform::load::tree::FsTree;
use util::Repo;

const CONSENT: &str = "environments/staging/opus/oob-consent/component.toml";
const CONSENT_SECRETS: &str = "environments/staging/opus/oob-consent/secrets.enc.yaml";

/// What `check` reports for an environment, compiled without keys as `cargo xtask check` does.
struct Checked {
    report: Compiled,
    rendered: String,
}

fn check(repo: &Repo, env: &str) -> Checked {
    let report = compile_environment(&FsTree::new(repo.root()), &components::catalog(), env, None)
        .unwrap_or_else(|e| panic!("environment `{env}` could not be loaded: {e}"));
    let rendered = render_plain(&report.diagnostics, &report.sources);
    Checked { report, rendered }
}

impl Checked {
    fn find(&self, message: &str) -> &Diagnostic {
        self.report
            .diagnostics
            .iter()
            .find(|d| d.message.contains(message))
            .unwrap_or_else(|| panic!("no diagnostic with `{message}`; got:\n{}", self.rendered))
    }

    fn location(&self, diagnostic: &Diagnostic) -> String {
        let label = diagnostic.primary.as_ref().unwrap_or_else(|| panic!("no location:\n{}", self.rendered));
        self.report.sources.location(label.span)
    }
}

// --- Rendering ------------------------------------------------------------------------------

#[test]
fn a_diagnostic_past_column_65536_renders_with_its_exact_location() {
    let repo = Repo::shipped();
    let long = "x".repeat(70_000);
    repo.replace(CONSENT, "demo = \"somestring\"", &format!("demo = \"{long}\" oops"));
    let at = repo.location_of(CONSENT, "oops");
    assert!(at.ends_with(":7:70011"), "{at}");
    let run = repo.xtask(&["check", "staging"]);
    run.assert_code(1).assert_stderr_contains(&format!("[{at}]"));
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.lines().all(|line| line.chars().count() < 400), "long lines are shortened");
    let checked = check(&repo, "staging");
    insta::assert_snapshot!(checked.rendered);
}

// --- Secrets files --------------------------------------------------------------------------

#[test]
fn deep_nesting_in_a_secrets_file_is_refused_before_parsing() {
    let repo = Repo::shipped();
    let depth = 100_000;
    let deep = format!("deep: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    repo.write(CONSENT_SECRETS, &(deep + &repo.read(CONSENT_SECRETS)));
    let started = Instant::now();
    let checked = check(&repo, "staging");
    eprintln!("bench: 100000 levels of YAML nesting refused in {:?}", started.elapsed());
    let d = checked.find("nesting deeper than 64 levels");
    assert!(d.message.contains(&format!("{CONSENT_SECRETS}: line 1, column 70:")), "{}", d.message);
    assert!(checked.location(d).starts_with(CONSENT_SECRETS));
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn yaml_aliases_in_a_secrets_file_are_refused() {
    let repo = Repo::shipped();
    // Nine levels of nine aliases: a billion leaves once expanded.
    let mut laughs = String::from("a0: &a0 [lol]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        laughs.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    repo.write(CONSENT_SECRETS, &(laughs + &repo.read(CONSENT_SECRETS)));
    let checked = check(&repo, "staging");
    let d = checked.find("YAML anchors and aliases");
    assert!(d.message.contains(&format!("{CONSENT_SECRETS}: line 1, column 5:")), "{}", d.message);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn a_secrets_file_over_one_mebibyte_is_refused() {
    let repo = Repo::shipped();
    let padding = format!("# {}\n", "x".repeat(1 << 20));
    repo.write(CONSENT_SECRETS, &(padding + &repo.read(CONSENT_SECRETS)));
    let checked = check(&repo, "staging");
    // The repository's file-size limit is the first to refuse it, before the file is read.
    let d = checked.find("is larger than the limit of 1048576 bytes");
    assert!(checked.location(d).starts_with(CONSENT_SECRETS));
    insta::assert_snapshot!(checked.rendered);
}

// --- Templates ------------------------------------------------------------------------------

fn with_custom_value(template: &str) -> Repo {
    let repo = Repo::shipped();
    repo.replace(CONSENT, "demo = \"somestring\"", &format!("demo = \"{template}\""));
    repo
}

#[test]
fn an_endless_values_custom_loop_runs_out_of_fuel() {
    let repo =
        with_custom_value("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    let started = Instant::now();
    let checked = check(&repo, "staging");
    eprintln!("bench: a 10^10-step loop stopped after {:?}", started.elapsed());
    let d = checked.find("ran out of fuel: it executed more than 100000 instructions");
    assert_eq!(checked.location(d), repo.location_of(CONSENT, "range(100000) %}{% endfor"));
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn values_custom_output_over_one_mebibyte_is_refused() {
    let chunk = "y".repeat(1000);
    let repo = with_custom_value(&format!("{{% for i in range(2000) %}}{chunk}{{{{ i }}}}{{% endfor %}}"));
    let checked = check(&repo, "staging");
    let d = checked.find("the rendered text exceeds the limit of 1 MiB");
    assert_eq!(checked.location(d), repo.location_of(CONSENT, "i }}"));
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn a_secret_through_a_filter_is_refused_at_the_expression() {
    let repo = with_custom_value("{{ secrets.db.password | upper }}");
    let checked = check(&repo, "staging");
    let d = checked.find("a secret is used other than by placing it whole");
    assert_eq!(checked.location(d), repo.location_of(CONSENT, "secrets.db.password | upper"));
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn printing_every_secret_or_concatenating_one_is_refused() {
    for (template, at) in [("{{ secrets }}", "secrets }}"), ("x-{{ 'y' ~ secrets.db.password }}", "'y' ~")] {
        let repo = with_custom_value(template);
        let checked = check(&repo, "staging");
        let d = checked.find("a secret is used other than by placing it whole");
        assert_eq!(checked.location(d), repo.location_of(CONSENT, at), "{template}");
        assert!(checked.report.plan.is_none());
    }
    // Placing a secret, alone or in a longer string, is what templates are for.
    let repo = with_custom_value("postgres://u:{{ secrets.db.password }}@db/consent");
    let checked = check(&repo, "staging");
    assert!(checked.report.diagnostics.is_empty(), "{}", checked.rendered);
}

#[test]
fn a_forged_placeholder_in_values_custom_is_refused() {
    let repo = with_custom_value("\\u0001opus-sensitive:0\\u0001");
    let checked = check(&repo, "staging");
    let d = checked.find("`values_custom` contains the control character U+0001");
    assert_eq!(checked.location(d), repo.location_of(CONSENT, "\"\\u0001"));
    insta::assert_snapshot!(checked.rendered);
}

// --- Fuzzing --------------------------------------------------------------------------------

/// xorshift64*: deterministic, so a failing case is reproduced by its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The shipped files of `staging` (and the client file it shares), by path.
fn staging_files(repo: &Repo) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let mut files = vec!["environments/client.toml".to_owned()];
    walk(repo.root(), &repo.root().join("environments/staging"), &mut files);
    files
}

/// One random change to a file's bytes; returns what it did.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let at = rng.below(bytes.len() + 1);
    let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    match rng.below(9) {
        0 => {
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            format!("{flips} bit flips")
        }
        1 => {
            bytes.truncate(at);
            format!("truncated at {at}")
        }
        2 => {
            let depth = [65, 200, 5_000, 100_000][rng.below(4)];
            let (open, close) = [("[", "]"), ("{a=", "}"), ("- ", "")][rng.below(3)];
            let nested = format!("deep = {}{}\n", open.repeat(depth), close.repeat(depth));
            bytes.splice(line_start..line_start, nested.bytes());
            format!("{depth} levels of `{open}` at {line_start}")
        }
        3 => {
            let len = [70_000, 1 << 20, 3 << 20][rng.below(3)];
            let value = format!("huge = \"{}\"\n", "h".repeat(len));
            bytes.splice(line_start..line_start, value.bytes());
            format!("a {len}-byte value at {line_start}")
        }
        4 => {
            let junk: &[u8] = [&b"\xff\xfe"[..], b"\xc3", b"\xed\xa0\x80", b"\0"][rng.below(4)];
            bytes.splice(at..at, junk.iter().copied());
            format!("invalid UTF-8 {junk:?} at {at}")
        }
        5 => {
            let end = (at + rng.below(200)).min(bytes.len());
            let chunk = bytes[at..end].to_vec();
            let times = 1 + rng.below(2000);
            for _ in 0..times {
                bytes.splice(end..end, chunk.iter().copied());
            }
            format!("{}..{end} repeated {times} times", at)
        }
        6 => {
            let text = [
                "x: &a [1]\ny: *a\n",
                "{{ secrets }}",
                "{{ secrets.db.password | upper }}",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                "{{ inputs.replicas ~ secrets.db.password }}",
                "\u{1}opus-sensitive:0\u{1}",
                "[[[[[[",
                "\"\"\"",
                "\r\r\r",
                "\u{1b}[2J",
            ][rng.below(10)];
            bytes.splice(at..at, text.bytes());
            format!("{text:?} inserted at {at}")
        }
        7 => {
            let text = [
                "demo = \"{% for i in range(3000) %}",
                "user = \"{{ secrets.db }}\"\n",
                "[values_custom.x]\ny = \"{{ secrets | tojson }}\"\n",
                "[values_custom.big]\nz = \"{% for i in range(5000) %}zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz{{ i }}{% endfor %}\"\n",
            ][rng.below(4)];
            bytes.splice(line_start..line_start, text.bytes());
            format!("{text:?} inserted at {line_start}")
        }
        _ => {
            let end = (at + rng.below(64)).min(bytes.len());
            bytes.drain(at..end);
            format!("{at}..{end} removed")
        }
    }
}

/// A report passes when nothing panicked, every diagnostic renders, and any problem is found
/// with a place: a label in a file, or the file's path in the message.
fn assert_located(case: usize, what: &str, path: &str, report: &Compiled) {
    let rendered = render_plain(&report.diagnostics, &report.sources);
    if report.diagnostics.is_empty() {
        return;
    }
    let located = report.diagnostics.iter().any(|d| d.primary.is_some() || d.message.contains(path));
    assert!(located, "case {case} ({what} in {path}): no diagnostic has a location:\n{rendered}");
    assert!(report.plan.is_none(), "case {case}: a plan despite errors");
}

#[test]
fn mutated_shipped_files_never_crash_hang_or_exhaust_the_gate() {
    let repo = Repo::shipped();
    let files = staging_files(&repo);
    let catalog = components::catalog();
    let tree = FsTree::new(repo.root());
    let mut rng = Rng(0x005e_ed0f_0b05_1337);
    let mut slowest = (Duration::ZERO, String::new());
    let cases = 300;
    let via_binary = 12;
    for case in 0..cases {
        let path = &files[rng.below(files.len())];
        let full = repo.root().join(path);
        let original = std::fs::read(&full).unwrap();
        let mut bytes = original.clone();
        let mut what = mutate(&mut rng, &mut bytes);
        if rng.below(4) == 0 {
            what = format!("{what}, then {}", mutate(&mut rng, &mut bytes));
        }
        // `GATE_FUZZ_CASE=n` runs case n alone, with its timings.
        let only = std::env::var("GATE_FUZZ_CASE").ok().and_then(|n| n.parse::<usize>().ok());
        if only.is_some_and(|n| n != case) {
            continue;
        }
        std::fs::write(&full, &bytes).unwrap();
        let started = Instant::now();
        if only.is_some() {
            let report = compile_environment(&tree, &catalog, "staging", None).unwrap();
            let compiled = started.elapsed();
            let rendered = render_plain(&report.diagnostics, &report.sources);
            eprintln!(
                "case {case}: {what} in {path}: {} bytes, {} diagnostics, compiled in {compiled:?}, rendered ({} bytes) in {:?}",
                bytes.len(),
                report.diagnostics.len(),
                rendered.len(),
                started.elapsed() - compiled
            );
        }
        if case % (cases / via_binary) == 0 {
            let run = repo.xtask(&["check", "staging"]);
            assert!(
                matches!(run.code, Some(0..=2)) && !run.stderr.contains("panicked"),
                "case {case} ({what} in {path}): exit {:?}\n{}",
                run.code,
                run.stderr
            );
            if run.code != Some(0) {
                assert!(run.stderr.contains("environments/"), "case {case}: no location:\n{}", run.stderr);
            }
        } else {
            match compile_environment(&tree, &catalog, "staging", None) {
                Ok(report) => assert_located(case, &what, path, &report),
                Err(error) => assert!(!error.to_string().is_empty(), "case {case}: an empty error"),
            }
        }
        let elapsed = started.elapsed();
        if elapsed > slowest.0 {
            slowest = (elapsed, format!("case {case}: {what} in {path}"));
        }
        std::fs::write(&full, &original).unwrap();
    }
    eprintln!("bench: {cases} mutated inputs; slowest {:?} ({})", slowest.0, slowest.1);
}
