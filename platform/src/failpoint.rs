//! Test-only crashes, armed by `OPUS_FAILPOINT`: `kill-after:<step-id>` (deploy) and
//! `kill-after-file:<k>` (key rotation). Only builds with the `failpoints` feature read the
//! variable; the test builds enable it (xtask's dev-dependency on this crate), so a release
//! binary can never be made to kill itself.

/// The variable that arms a failpoint.
pub const FAILPOINT_ENV: &str = "OPUS_FAILPOINT";

/// What follows `prefix` in `OPUS_FAILPOINT`; always `None` without the `failpoints` feature.
pub fn armed(prefix: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        std::env::var(FAILPOINT_ENV).ok()?.strip_prefix(prefix).map(str::to_owned)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = prefix;
        None
    }
}
