//! What a target must do for each kind of step. The scheduler calls a [`Driver`]; the
//! `directory` and `kube` targets implement it, and tests use drivers that fail or hang on
//! command.

use futures::future::BoxFuture;

use crate::plan::Step;

/// What a successful step leaves for the journal: non-secret facts (a Helm revision, files
/// written, what changed).
pub type StepOutput = serde_json::Value;

/// Why a step failed. Both texts are shown to operators: drivers redact secrets first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    /// Output captured from a child process (helm), already redacted.
    pub output: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError { message: message.into(), output: None }
    }

    pub fn with_output(mut self, output: impl Into<String>) -> StepError {
        self.output = Some(output.into());
        self
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
}
