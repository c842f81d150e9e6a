//! The three faces of a run: indicatif bars on a terminal, timestamped lines in CI or when
//! piped, and JSON lines (`--output json`) for machines. All implement `platform`'s
//! `Progress` trait; the executor never knows which one it talks to.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use platform::drivers::kube::RequestCounter;
use platform::exec::{Progress, StepEvent, StepStatus, Summary};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn now() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Started => "started",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Unchanged => "unchanged",
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    | {l}\n")).collect()
}

/// Timestamped lines on stderr, one per event; a failed step's output follows its line.
pub struct PlainProgress;

impl Progress for PlainProgress {
    fn start(&self, total: usize) {
        eprintln!("{} deploying {total} steps", now());
    }

    fn step(&self, event: &StepEvent) {
        let mut line = format!("{} {:<9} {}", now(), status_word(event.status), event.step);
        if let Some(ms) = event.duration_ms {
            line.push_str(&format!(" ({:.1}s)", ms as f64 / 1000.0));
        }
        if let Some(message) = &event.message {
            line.push_str(&format!(": {message}"));
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
        if let Some(output) = &event.output {
            let _ = write!(err, "{}", indent(output));
        }
    }

    fn phase(&self, _step: &str, _phase: &str) {}

    fn finish(&self, _summary: &Summary) {}
}

/// One JSON object per line on stdout for every step event, then a summary object. For a
/// cluster target the summary has `"api_requests": {"GET": n, "PATCH": m, ..., "mutating": k}`:
/// the requests Opus Deploy's own client sent (not helm's), by HTTP method, for the whole
/// deploy: the summary is printed when the deploy is done with the target (its clean-up
/// included), when this is dropped.
pub struct JsonProgress {
    api_requests: Option<RequestCounter>,
    summary: std::sync::Mutex<Option<serde_json::Value>>,
}

impl JsonProgress {
    pub fn new(api_requests: Option<RequestCounter>) -> JsonProgress {
        JsonProgress { api_requests, summary: std::sync::Mutex::new(None) }
    }
}

impl Drop for JsonProgress {
    fn drop(&mut self) {
        let Some(mut value) = self.summary.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if let Some(requests) = &self.api_requests {
            value["api_requests"] = serde_json::to_value(requests.snapshot()).expect("serializable");
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }
}

impl Progress for JsonProgress {
    fn start(&self, _total: usize) {}

    fn step(&self, event: &StepEvent) {
        let mut value = serde_json::to_value(event).expect("serializable");
        value["event"] = serde_json::json!("step");
        value["time"] = serde_json::json!(now());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }

    fn phase(&self, _step: &str, _phase: &str) {}

    fn finish(&self, summary: &Summary) {
        let value = serde_json::json!({
            "event": "summary",
            "succeeded": summary.succeeded.len(),
            "failed": summary.failed.len(),
            "skipped": summary.skipped.len(),
            "unchanged": summary.unchanged.len(),
            "interrupted": summary.interrupted,
        });
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }
}

/// An overall bar plus a spinner per running step with its phase.
pub struct TerminalProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Mutex<BTreeMap<String, ProgressBar>>,
}

impl TerminalProgress {
    pub fn new() -> TerminalProgress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>12.bold.cyan} [{bar:30.cyan/blue}] {pos}/{len} steps {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_prefix("Deploying");
        TerminalProgress { multi, overall, running: Mutex::new(BTreeMap::new()) }
    }

    fn line(&self, text: String) {
        // Printed above the bars, so finished steps stay readable in order.
        let _ = self.multi.println(text);
    }
}

impl Progress for TerminalProgress {
    fn start(&self, total: usize) {
        self.overall.set_length(total as u64);
    }

    fn step(&self, event: &StepEvent) {
        let mut running = self.running.lock().expect("not poisoned");
        match event.status {
            StepStatus::Started => {
                let bar = self.multi.insert_before(&self.overall, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {wide_msg}").expect("valid template"),
                );
                bar.set_prefix(event.step.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                running.insert(event.step.clone(), bar);
            }
            status => {
                if let Some(bar) = running.remove(&event.step) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.overall.inc(1);
                let (mark, color) = match status {
                    StepStatus::Succeeded => ("✓", "\x1b[32m"),
                    StepStatus::Failed => ("✗", "\x1b[31m"),
                    StepStatus::Skipped => ("-", "\x1b[33m"),
                    _ => ("=", "\x1b[2m"),
                };
                let color = if crate::ui::color() { color } else { "" };
                let reset = if color.is_empty() { "" } else { "\x1b[0m" };
                let mut text = format!("  {color}{mark} {:<9}{reset} {}", status_word(status), event.step);
                if let Some(ms) = event.duration_ms {
                    text.push_str(&format!(" ({:.1}s)", ms as f64 / 1000.0));
                }
                if let Some(message) = &event.message {
                    text.push_str(&format!(": {message}"));
                }
                if let Some(output) = &event.output {
                    text.push('\n');
                    text.push_str(indent(output).trim_end());
                }
                self.line(text);
            }
        }
    }

    fn phase(&self, step: &str, phase: &str) {
        if let Some(bar) = self.running.lock().expect("not poisoned").get(step) {
            bar.set_message(phase.to_owned());
        }
    }

    fn finish(&self, _summary: &Summary) {
        self.overall.finish_and_clear();
    }
}
