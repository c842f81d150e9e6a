//! Tests of the file deploy lock: a second deploy is refused with the holder named, a stale
//! lock of an exited process is taken over, another host's lock never is, and of many racing
//! deploys exactly one wins.

#![allow(clippy::result_large_err)]

use std::path::Path;
use std::sync::{Arc, Barrier};

use platform::journal::{LockBackend, LockError, LockHolder, lock_file};
use time::OffsetDateTime;

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The pid of a process that has exited (and was reaped).
fn exited_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn write_lock_file(path: &Path, host: &str, pid: u32) -> LockHolder {
    let holder = LockHolder {
        environment: "prod".into(),
        user: "alice".into(),
        host: host.into(),
        pid,
        started_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        command: "deploy prod".into(),
    };
    std::fs::write(path, serde_json::to_vec(&holder).unwrap()).unwrap();
    holder
}

#[test]
fn a_second_lock_fails_naming_holder_host_pid_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    let first = lock_file(&path, "prod").unwrap();
    assert!(first.stale_taken_over().is_none());

    let error = lock_file(&path, "prod").unwrap_err();
    let LockError::Held { environment, holder, host, pid, since, backend, .. } = &error else {
        panic!("expected Held, got {error:?}");
    };
    assert_eq!(environment, "prod");
    assert_eq!(holder, &first.holder().user);
    assert_eq!(host, &this_host());
    assert_eq!(*pid, std::process::id());
    assert_eq!(*since, first.holder().started_at);
    assert_eq!(backend, &LockBackend::File { path: path.clone() });
    let message = error.to_string();
    let expected_start = format!(
        "environment `prod` is being deployed by {}@{} (pid {}) since ",
        first.holder().user,
        this_host(),
        std::process::id()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn dropping_the_guard_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    let first = lock_file(&path, "prod").unwrap();
    assert!(path.exists());
    drop(first);
    assert!(!path.exists());
    let second = lock_file(&path, "prod").unwrap();
    assert!(second.stale_taken_over().is_none());
}

#[test]
fn a_stale_lock_of_an_exited_process_on_this_host_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    let stale = write_lock_file(&path, &this_host(), exited_pid());

    let guard = lock_file(&path, "prod").unwrap();
    assert_eq!(guard.stale_taken_over(), Some(&stale));
    // The file now names us, and a further deploy is refused.
    let on_disk: LockHolder = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(&on_disk, guard.holder());
    assert!(matches!(lock_file(&path, "prod"), Err(LockError::Held { .. })));
}

#[test]
fn a_lock_of_a_live_process_is_not_stale_even_without_its_flock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    write_lock_file(&path, &this_host(), std::process::id());
    let error = lock_file(&path, "prod").unwrap_err();
    assert!(matches!(error, LockError::Held { ref holder, .. } if holder == "alice"), "{error:?}");
}

#[test]
fn a_lock_of_another_host_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    write_lock_file(&path, "other-host.example", exited_pid());
    let error = lock_file(&path, "prod").unwrap_err();
    assert!(error.to_string().contains("alice@other-host.example"), "{error}");
    assert!(path.exists());
}

#[test]
fn an_unreadable_lock_file_is_reported_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.lock");
    std::fs::write(&path, "{not json").unwrap();
    let error = lock_file(&path, "prod").unwrap_err();
    assert!(matches!(error, LockError::Unreadable { .. }), "{error:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
}

#[test]
fn of_many_racing_deploys_exactly_one_takes_the_lock() {
    const N_THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("prod.lock"));
    let barrier = Arc::new(Barrier::new(N_THREADS));
    let threads: Vec<_> = (0..N_THREADS)
        .map(|_| {
            let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                lock_file(&path, "prod")
            })
        })
        .collect();
    // Guards are kept until every thread is done, so no winner releases early.
    let results: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let n_won = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(n_won, 1, "{results:?}");
    for result in &results {
        if let Err(error) = result {
            assert!(matches!(error, LockError::Held { .. }), "{error:?}");
        }
    }
}

#[test]
fn of_many_racing_deploys_over_a_stale_lock_exactly_one_takes_it_over() {
    const N_THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("prod.lock"));
    write_lock_file(&path, &this_host(), exited_pid());
    let barrier = Arc::new(Barrier::new(N_THREADS));
    let threads: Vec<_> = (0..N_THREADS)
        .map(|_| {
            let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                lock_file(&path, "prod")
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter_map(|result| result.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(winners[0].stale_taken_over().map(|holder| holder.user.as_str()), Some("alice"));
}
