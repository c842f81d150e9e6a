//! Terminal output: diagnostics, errors and notes on stderr, with colors only on a terminal
//! and never when `NO_COLOR` is set.

use std::io::IsTerminal;

use platform::diagnostic::Diagnostic;
use platform::source::SourceMap;

/// Whether stderr gets colors.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn handler() -> miette::GraphicalReportHandler {
    let theme =
        if color() { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let width = if std::io::stderr().is_terminal() { terminal_width() } else { 100 };
    miette::GraphicalReportHandler::new_themed(theme).with_width(width).with_links(false)
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

/// Prints diagnostics to stderr.
pub fn diagnostics(diagnostics: &[Diagnostic], sources: &SourceMap) {
    let handler = handler();
    for diagnostic in diagnostics.iter().take(platform::diagnostic::MAX_RENDERED_DIAGNOSTICS) {
        let rendered = diagnostic.render(sources);
        let mut out = String::new();
        if handler.render_report(&mut out, &rendered).is_ok() {
            eprint!("{out}");
        } else {
            eprintln!("error: {}", diagnostic.message);
        }
    }
    if let Some(note) = platform::diagnostic::not_shown(diagnostics.len()) {
        eprintln!("{note}");
    }
}

/// Prints an error that stopped a command, with its chain of causes.
pub fn error(error: &dyn std::fmt::Display) {
    eprintln!("error: {error}");
}

/// Prints an error value and its `source()` chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        eprintln!("  caused by: {inner}");
        cause = inner.source();
    }
}

/// A status line on stderr (`checked `prod``).
pub fn status(verb: &str, rest: &str) {
    if color() {
        eprintln!("\x1b[1;32m{verb:>12}\x1b[0m {rest}");
    } else {
        eprintln!("{verb:>12} {rest}");
    }
}

/// Writes data to stdout; a closed pipe (`| head`) ends quietly.
pub fn stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        // Broken pipe: the reader has what it wanted.
    }
}

/// Asks the operator to type the environment's name before changing a protected environment.
/// Refuses without a terminal: `--yes` is the way to say yes in a script.
pub fn confirm_protected(environment: &str, doing: &str) -> Result<(), crate::Outcome> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        error(&format!("`{environment}` is protected: pass --yes to {doing} without a terminal"));
        return Err(crate::Outcome::CouldNotStart);
    }
    eprint!("`{environment}` is protected. Type its name to {doing}: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() || answer.trim() != environment {
        error(&"not confirmed; nothing was changed");
        return Err(crate::Outcome::CouldNotStart);
    }
    Ok(())
}

/// `?` for commands: prints an error with its causes and turns it into the outcome to exit
/// with.
pub trait OrExit<T> {
    fn or_exit(self, outcome: crate::Outcome) -> Result<T, crate::Outcome>;
}

impl<T, E: std::error::Error + 'static> OrExit<T> for Result<T, E> {
    fn or_exit(self, outcome: crate::Outcome) -> Result<T, crate::Outcome> {
        self.map_err(|e| {
            error_chain(&e);
            outcome
        })
    }
}
