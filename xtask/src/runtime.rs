//! The one tokio runtime a command runs its asynchronous work on (the journal, the key store,
//! the drivers): multi-threaded, so a deploy's parallel steps and helm's child processes run
//! side by side.

use std::future::Future;

/// Runs `future` to completion on a new runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime (threads and an I/O driver)")
        .block_on(future)
}
