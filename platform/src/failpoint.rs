//! Test-only crashes, armed by `OPUS_FAILPOINT` (entries separated by commas):
//! `kill-after:<step-id>` (deploy), `kill-at:<phase>` (a phase boundary of `rotate-keys` or
//! `secrets updatekeys`), `kill-batch:<batch>:<point>` (inside a batch of file writes: see
//! [`kill_in_batch`]) and `batch-size:<n>` (smaller batches, so a test sees several). Only builds with the `failpoints` feature read the
//! variable; the test builds enable it (xtask's dev-dependency on this crate), so a release
//! binary can never be made to kill itself.

/// The variable that arms a failpoint.
pub const FAILPOINT_ENV: &str = "OPUS_FAILPOINT";

/// What follows `prefix` in `OPUS_FAILPOINT`; always `None` without the `failpoints` feature.
pub fn armed(prefix: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        let value = std::env::var(FAILPOINT_ENV).ok()?;
        value.split(',').find_map(|entry| entry.strip_prefix(prefix)).map(str::to_owned)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = prefix;
        None
    }
}

/// Kills the process (SIGKILL: no cleanup runs) when `OPUS_FAILPOINT` names this point.
pub fn kill_if_armed(prefix: &str, point: &str) {
    if armed(prefix).is_some_and(|armed| armed == point) {
        kill_now();
    }
}

/// `kill-batch:<batch>:<point>`: kills the process at `point` of the `batch`th batch (1-based),
/// `point` being `written:<k>`, `flushed`, `renamed:<k>` or `done`.
pub fn kill_in_batch(batch: usize, point: crate::secrets::batch::BatchPoint) {
    use crate::secrets::batch::BatchPoint;
    let text = match point {
        BatchPoint::Written(k) => format!("{batch}:written:{k}"),
        BatchPoint::Flushed => format!("{batch}:flushed"),
        BatchPoint::Renamed(k) => format!("{batch}:renamed:{k}"),
        BatchPoint::Done => format!("{batch}:done"),
    };
    kill_if_armed("kill-batch:", &text);
}

/// The batch size `batch-size:<n>` asks for, else `default`.
pub fn batch_size(default: usize) -> usize {
    armed("batch-size:").and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

fn kill_now() {
    // SAFETY: kill(2) with our own pid and a valid signal number has no preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}
