//! The PostgreSQL backend of the deploy lock and the journal against a throwaway server: two
//! deploys of one environment never both hold the lock, and records survive a reopen.

#[path = "support/pg.rs"]
mod pg;

use pg::PgServer;
use platform::drivers::postgres::{AdminOptions, SslMode};
use platform::journal::{Journal, LockBackend, LockError, StepOutcome, StepRecord, lock_postgres};
use platform::sensitive::SecretString;
use time::OffsetDateTime;

fn admin(server: &PgServer) -> AdminOptions {
    let mut options = AdminOptions::new("127.0.0.1", pg::ADMIN_USER, SecretString::new(pg::ADMIN_PASSWORD));
    options.port = server.port();
    options.sslmode = SslMode::Disable;
    options
}

fn record(step_id: &str, fingerprint: &str, outcome: StepOutcome, second: i64) -> StepRecord {
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap();
    StepRecord {
        step_id: step_id.to_owned(),
        fingerprint: fingerprint.to_owned(),
        outcome,
        started_at: at,
        finished_at: at,
        outputs: serde_json::json!({ "files": [format!("{step_id}.yaml")] }),
        snapshot: serde_json::json!({ "fingerprint": fingerprint }),
    }
}

#[tokio::test]
async fn second_postgres_lock_of_an_environment_is_refused_naming_the_holder() {
    let Some(server) = PgServer::try_start() else { return };
    let options = admin(&server);

    let first = lock_postgres(&options, "staging").await.expect("the first deploy takes the lock");
    let error = lock_postgres(&options, "staging").await.expect_err("a second deploy must not run");

    let LockError::Held { environment, pid, backend, .. } = &error else {
        panic!("expected Held, got {error:?}");
    };
    assert_eq!(environment, "staging");
    assert_eq!(*pid, std::process::id());
    assert!(matches!(backend, LockBackend::Postgres { .. }), "{backend:?}");
    assert!(error.to_string().starts_with("environment `staging` is being deployed by "), "{error}");
    // Another environment is independent.
    let other = lock_postgres(&options, "prod").await.expect("another environment's lock is free");

    first.release().await.expect("release");
    let again = lock_postgres(&options, "staging").await.expect("free again after release");
    again.release().await.expect("release");
    other.release().await.expect("release");
}

#[tokio::test]
async fn postgres_journal_keeps_records_and_lineage_across_reopen() {
    let Some(server) = PgServer::try_start() else { return };
    let options = admin(&server);

    let mut journal = Journal::open_postgres(&options, "staging").await.expect("open creates the schema");
    let lineage = journal.header().lineage;
    assert!(journal.latest().await.unwrap().is_empty());
    let records = [
        record("opus/a/release", "f1", StepOutcome::Succeeded, 0),
        record("opus/b/release", "f2", StepOutcome::Failed { message: "helm failed".to_owned() }, 1),
        record("opus/b/release", "f3", StepOutcome::Succeeded, 2),
    ];
    for r in &records {
        journal.append(r).await.expect("append");
    }
    drop(journal);

    let reopened = Journal::open_postgres(&options, "staging").await.expect("reopen");
    assert_eq!(reopened.header().lineage, lineage);
    let latest = reopened.latest().await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest["opus/a/release"], records[0]);
    assert_eq!(latest["opus/b/release"], records[2]);
    assert!(latest["opus/b/release"].succeeded_with("f3"));
    let history = reopened.history(10).await.unwrap();
    assert_eq!(history, vec![records[2].clone(), records[1].clone(), records[0].clone()]);

    // Another environment in the same database has its own journal.
    let other = Journal::open_postgres(&options, "prod").await.expect("open prod");
    assert_ne!(other.header().lineage, lineage);
    assert!(other.latest().await.unwrap().is_empty());
}
