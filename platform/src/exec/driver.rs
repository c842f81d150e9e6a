//! What a target must do for each kind of step. The scheduler calls a [`Driver`]; the
//! `directory` and `kube` targets implement it, and tests use drivers that fail or hang on
//! command.

use futures::future::BoxFuture;

use crate::plan::{Plan, Step};

/// What a successful step leaves for the journal: non-secret facts (a Helm revision, files
/// written, what changed).
pub type StepOutput = serde_json::Value;

/// Why a step failed. Every text is shown to operators: drivers redact secrets first.
///
/// The error keeps its chain of causes (the `io::Error` behind "could not run helm", the TLS
/// error behind "the API server could not be reached") as [`std::error::Error::source`], so it
/// renders as `caused by:` lines like every other error of the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    cause: Option<Box<Cause>>,
    /// Output captured from a child process (helm), already redacted.
    pub output: Option<String>,
}

/// One link of a [`StepError`]'s chain of causes, kept as text so the error stays `Clone`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Cause {
    message: String,
    #[source]
    next: Option<Box<Cause>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError { message: message.into(), cause: None, output: None }
    }

    /// The error's message, with its causes kept as this error's causes.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> StepError {
        let message = error.to_string();
        let mut texts = Vec::new();
        let mut source = error.source();
        let mut last = error.to_string();
        while let Some(inner) = source {
            let text = inner.to_string();
            // Errors that already print their cause in their message (`...: connection refused`)
            // are not repeated.
            if !last.ends_with(&text) {
                texts.push(text.clone());
            }
            last = text;
            source = inner.source();
        }
        let cause =
            texts.into_iter().rev().fold(None, |next, message| Some(Box::new(Cause { message, next })));
        StepError { message, cause, output: None }
    }

    pub fn with_output(mut self, output: impl Into<String>) -> StepError {
        self.output = Some(output.into());
        self
    }

    /// The causes, outermost first.
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cause = self.cause.as_deref();
        while let Some(inner) = cause {
            out.push(inner.message.clone());
            cause = inner.next.as_deref();
        }
        out
    }

    /// The message and one `caused by:` line per cause, for journals and summaries.
    pub fn rendered(&self) -> String {
        let mut text = self.message.clone();
        for cause in self.causes() {
            text.push_str("\n  caused by: ");
            text.push_str(&cause);
        }
        text
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Reports a running step's phase to the progress display.
pub type PhaseReporter = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Performs steps against one target.
pub trait Driver: Send + Sync {
    /// Runs one step. Called only for steps whose dependencies succeeded.
    fn run<'a>(
        &'a self,
        step: &'a Step,
        phase: PhaseReporter,
    ) -> BoxFuture<'a, Result<StepOutput, StepError>>;

    /// For a step whose last success was recorded under an older fingerprint format with the
    /// same inputs (a format migration): whether what it did then still holds on the target,
    /// given what the current format adds. `true` re-records the step without running it.
    /// Targets for which the newer format adds no input keep the default.
    fn still_applied<'a>(&'a self, step: &'a Step) -> BoxFuture<'a, bool> {
        let _ = step;
        Box::pin(async { true })
    }

    /// Called once before a run, with the environment's whole plan (also when only part of it
    /// runs) and the journal's lineage, which the target records (so a deploy from another
    /// journal is detected): the directory target writes the bundle's index and removes the
    /// temporary files of writes a killed deploy left.
    fn prepare<'a>(&'a self, whole: &'a Plan, lineage: &'a str) -> BoxFuture<'a, Result<(), StepError>> {
        let _ = (whole, lineage);
        Box::pin(async { Ok(()) })
    }

    /// What reads this target's live state for the refresh, when it can be read.
    fn observer(&self) -> Option<&dyn super::Observer> {
        None
    }

    /// Called after a complete, successful run of the whole plan: removes what no step of
    /// `plan` produces any more (the directory target: files of removed components).
    fn clean_up<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Vec<Cleanup>> {
        let _ = plan;
        Box::pin(async { Vec::new() })
    }

    /// Called before `prepare` when the deploy is about to change the target (steps to run,
    /// things to remove): the target keeps who changed it with the inventory that `prepare`
    /// writes anyway (the bundle's index, the cluster's inventory Secret), so a deploy that
    /// changes nothing writes nothing more.
    fn note_change(&self, record: &crate::change_record::ChangeRecord) {
        let _ = record;
    }
}

/// One piece of a target's housekeeping after a complete run ([`Driver::clean_up`]): a path
/// relative to a directory target's root, or what a cluster object is (`helm release
/// opus/oob-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    Removed {
        path: String,
    },
    NotRemoved {
        path: String,
        error: String,
    },
    /// Left the configuration but kept (a namespace, a database): no longer managed.
    Retained {
        path: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not run helm (`helm` on PATH) for status of release `dapr`")]
    struct Spawn {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_step_error_keeps_the_chain_of_causes() {
        let error = Spawn { source: std::io::Error::from_raw_os_error(libc::ENOENT) };
        let step = StepError::from_error(&error);
        assert_eq!(step.message, "could not run helm (`helm` on PATH) for status of release `dapr`");
        let cause = std::error::Error::source(&step).expect("the io error is the cause");
        assert_eq!(cause.to_string(), "No such file or directory (os error 2)");
        assert!(
            step.rendered().ends_with("\n  caused by: No such file or directory (os error 2)"),
            "{}",
            step.rendered()
        );
    }

    #[test]
    fn a_cause_the_message_already_ends_with_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("the API server could not be reached: connection refused")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("connection refused"));
        let step = StepError::from_error(&error);
        assert!(step.causes().is_empty());
    }
}
