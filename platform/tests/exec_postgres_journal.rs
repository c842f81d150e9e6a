//! The PostgreSQL backend of the deploy lock and the journal against a throwaway server: two
//! deploys of one environment never both hold the lock, records survive a reopen, and a
//! missing journal database is created by the commands that write it (never by read-only
//! ones), or explained when the admin role may not create it.

#[path = "support/pg.rs"]
mod pg;

use pg::PgServer;
use platform::journal::{
    Journal, JournalError, LockBackend, LockError, NotCreatedReason, StepOutcome, StepRecord, lock_postgres,
};
use platform::postgres::{self as driver, AdminOptions, SslMode};
use platform::sensitive::SecretString;
use platform::session::{self, JournalPlace};
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

/// The admin's options on `database`.
fn admin_on(server: &PgServer, database: &str) -> AdminOptions {
    AdminOptions { database: database.to_owned(), ..admin(server) }
}

/// Whether `database` exists, asked as the superuser from `postgres`.
async fn database_exists(server: &PgServer, database: &str) -> bool {
    let mut connection = driver::connect(&admin(server)).await.expect("connect to postgres");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut connection)
        .await
        .expect("look up the database")
}

/// An error and all its causes, as the CLI prints them, and their `Debug` forms.
fn everything_said(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = format!("{error}\n{error:?}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        said.push_str(&format!("\n{inner}\n{inner:?}"));
        cause = inner.source();
    }
    said
}

#[tokio::test]
async fn missing_journal_database_is_created_when_the_admin_may() {
    let Some(server) = PgServer::try_start() else { return };
    let options = admin_on(&server, "opus_deploy");
    assert!(!database_exists(&server, "opus_deploy").await);

    let mut journal = Journal::open_postgres(&options, "staging").await.expect("open creates the database");
    assert!(database_exists(&server, "opus_deploy").await);
    let first = record("opus/a/release", "f1", StepOutcome::Succeeded, 0);
    journal.append(&first).await.expect("append");
    let lineage = journal.header().lineage;
    drop(journal);
    let reopened = Journal::open_postgres(&options, "staging").await.expect("reopen");
    assert_eq!(reopened.header().lineage, lineage);
    assert_eq!(reopened.latest().await.unwrap()["opus/a/release"], first);
    assert!(server.log_contents().contains("CREATE DATABASE \"opus_deploy\""));

    // A deploy takes the lock before it opens the journal: the lock creates the database too.
    let lock_first = admin_on(&server, "opus_lock_first");
    let lock = lock_postgres(&lock_first, "staging").await.expect("the lock creates the database");
    assert!(database_exists(&server, "opus_lock_first").await);
    Journal::open_postgres(&lock_first, "staging").await.expect("open after the lock");
    lock.release().await.expect("release");

    // A name that would need escaping in SQL is not created, even by a superuser.
    let error = Journal::open_postgres(&admin_on(&server, "Opus_Journal"), "staging")
        .await
        .expect_err("a name with capitals is not created");
    assert!(
        matches!(&error, JournalError::DatabaseNotCreated { reason: NotCreatedReason::InvalidName(_), .. }),
        "{error:?}"
    );
    assert!(!database_exists(&server, "Opus_Journal").await);
}

#[tokio::test]
async fn concurrent_creations_of_the_journal_database_all_succeed() {
    let Some(server) = PgServer::try_start() else { return };
    let options = admin_on(&server, "opus_shared");
    // Several operators' first deploys at once: whoever loses the CREATE DATABASE race
    // (duplicate_database, or a unique violation) goes on with the winner's database.
    let opens = ["a", "b", "c", "d"].map(|environment| Journal::open_postgres(&options, environment));
    for opened in futures::future::join_all(opens).await {
        let journal = opened.expect("every open succeeds");
        assert!(journal.latest().await.unwrap().is_empty());
    }
    assert!(database_exists(&server, "opus_shared").await);
}

#[tokio::test]
async fn missing_journal_database_without_createdb_is_explained_with_the_sql_to_run() {
    let Some(server) = PgServer::try_start() else { return };
    let app_password = "app-canary-5f2c";
    let mut connection = driver::connect(&admin(&server)).await.expect("connect as the superuser");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE opus_app LOGIN NOCREATEDB PASSWORD '{app_password}'"
    )))
    .execute(&mut connection)
    .await
    .expect("create a role without CREATEDB");
    let options = AdminOptions {
        user: "opus_app".to_owned(),
        password: SecretString::new(app_password),
        ..admin_on(&server, "opus_deploy")
    };

    let error = Journal::open_postgres(&options, "staging").await.expect_err("the role may not create it");
    let JournalError::DatabaseNotCreated { database, host, role, reason, .. } = &error else {
        panic!("expected DatabaseNotCreated, got {error:?}");
    };
    assert_eq!((database.as_str(), host.as_str(), role.as_str()), ("opus_deploy", "127.0.0.1", "opus_app"));
    assert_eq!(*reason, NotCreatedReason::NoPrivilege);
    let message = error.to_string();
    let (first_line, help) = message.split_once('\n').expect("a message and a help line");
    assert!(first_line.contains("`opus_deploy`") && first_line.contains("127.0.0.1"), "{first_line}");
    assert!(first_line.contains("`opus_app` may not create it"), "{first_line}");
    assert!(help.starts_with("help: "), "{help}");
    assert!(help.contains("`CREATE DATABASE \"opus_deploy\" OWNER \"opus_app\";`"), "{help}");
    assert!(help.contains("`database = \"<name>\"` under `[journal]` in env.toml"), "{help}");
    assert!(!everything_said(&error).contains(app_password), "{error:?}");
    assert!(!database_exists(&server, "opus_deploy").await);

    // Taking the deploy lock (what a deploy does first) says the same.
    let error = lock_postgres(&options, "staging").await.expect_err("the lock cannot create it either");
    let LockError::Postgres { source: JournalError::DatabaseNotCreated { .. }, .. } = &error else {
        panic!("expected a lock error caused by DatabaseNotCreated, got {error:?}");
    };
    assert!(!everything_said(&error).contains(app_password), "{error:?}");

    // Once an administrator ran the SQL of the help, the same role opens the journal.
    sqlx::raw_sql("CREATE DATABASE \"opus_deploy\" OWNER \"opus_app\";")
        .execute(&mut connection)
        .await
        .expect("run the SQL of the help");
    Journal::open_postgres(&options, "staging").await.expect("open once the database exists");
}

#[tokio::test]
async fn missing_journal_database_is_not_created_by_read_only_commands() {
    let Some(server) = PgServer::try_start() else { return };
    let place = JournalPlace::Postgres(Box::new(admin_on(&server, "opus_deploy")));

    // A database nobody created yet holds no journal: `status` and `plan` say "none yet".
    let opened = session::open_existing_journal(&place, "staging").await;
    assert!(matches!(opened, Ok(None)), "no journal to read: {opened:?}");
    assert!(!database_exists(&server, "opus_deploy").await, "a read-only open created the database");
    assert!(!server.log_contents().contains("CREATE DATABASE"), "a read-only open ran CREATE DATABASE");

    // The journal a deploy then creates is read by the same read-only open.
    Journal::open_postgres(place_options(&place), "staging").await.expect("a deploy creates it");
    let opened = session::open_existing_journal(&place, "staging").await.expect("read-only open");
    assert!(opened.is_some());
}

fn place_options(place: &JournalPlace) -> &AdminOptions {
    match place {
        JournalPlace::Postgres(options) => options,
        JournalPlace::File { .. } => unreachable!("a PostgreSQL place"),
    }
}
