//! Tests of the PostgreSQL driver against a real, throwaway server (`support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use platform::drivers::postgres::{self, ProvisionChange, Provisioning, ScramVerifier};
use platform::postgres::{AdminOptions, Identifier, PostgresError, SslMode};
use platform::sensitive::SecretString;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _};

use pg::PgServer;

const CANARY: &str = "canary-pw-41d9b0c3";
const CANARY_NEW: &str = "canary-pw-new-7e22aa15";

fn admin(server: &PgServer) -> AdminOptions {
    let mut options = AdminOptions::new("127.0.0.1", pg::ADMIN_USER, SecretString::new(pg::ADMIN_PASSWORD));
    options.port = server.port();
    options.sslmode = SslMode::Disable;
    options
}

fn provisioning(password: &str) -> Provisioning {
    Provisioning {
        role: Identifier::new("role", "api_consent").unwrap(),
        database: Identifier::new("database", "api_consent_db").unwrap(),
        password: SecretString::new(password),
    }
}

async fn log_in(
    server: &PgServer,
    user: &str,
    password: &str,
    database: &str,
) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(server.port())
        .username(user)
        .password(password)
        .database(database)
        .ssl_mode(PgSslMode::Disable)
        .connect()
        .await
}

#[tokio::test]
async fn provisioning_from_nothing_creates_a_role_that_owns_its_database() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let outcome = postgres::provision(&admin(&server), &provisioning(CANARY)).await.unwrap();
    assert!(outcome.changes.contains(&ProvisionChange::CreatedRole), "{outcome:?}");
    assert!(outcome.changes.contains(&ProvisionChange::CreatedDatabase), "{outcome:?}");
    assert!(!outcome.changes.contains(&ProvisionChange::ChangedPassword));

    // The application's role can log in and create its tables in schema public.
    let mut connection = log_in(&server, "api_consent", CANARY, "api_consent_db").await.unwrap();
    sqlx::raw_sql("CREATE TABLE public.consents (id int primary key); DROP TABLE public.consents")
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn rerun_with_the_same_password_changes_nothing() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let admin = admin(&server);
    let first = postgres::provision(&admin, &provisioning(CANARY)).await.unwrap();
    assert!(!first.is_unchanged());
    let second = postgres::provision(&admin, &provisioning(CANARY)).await.unwrap();
    assert!(second.is_unchanged(), "{second:?}");
    assert!(server.log_contents().matches("ALTER ROLE").count() == 0);
}

#[tokio::test]
async fn changed_password_is_applied_and_the_old_one_stops_working() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let admin = admin(&server);
    postgres::provision(&admin, &provisioning(CANARY)).await.unwrap();
    let outcome = postgres::provision(&admin, &provisioning(CANARY_NEW)).await.unwrap();
    assert_eq!(outcome.changes, [ProvisionChange::ChangedPassword]);

    log_in(&server, "api_consent", CANARY_NEW, "api_consent_db").await.unwrap().close().await.unwrap();
    let refused = log_in(&server, "api_consent", CANARY, "api_consent_db").await;
    let error = refused.expect_err("the old password is refused");
    assert!(error.to_string().contains("password authentication failed"), "{error}");
}

#[tokio::test]
async fn cleartext_passwords_never_reach_the_server_log() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let admin = admin(&server);
    postgres::provision(&admin, &provisioning(CANARY)).await.unwrap();
    postgres::provision(&admin, &provisioning(CANARY_NEW)).await.unwrap();
    let log = server.log_contents();
    // The log does record our statements, verifiers included: the check below can fail.
    assert!(log.contains("CREATE ROLE \"api_consent\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:"), "{log}");
    assert!(log.contains("ALTER ROLE \"api_consent\" WITH PASSWORD 'SCRAM-SHA-256$4096:"), "{log}");
    assert!(!log.contains(CANARY), "{log}");
    assert!(!log.contains(CANARY_NEW), "{log}");
}

#[tokio::test]
async fn preflight_reports_a_supported_server_version() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let version = platform::postgres::preflight(&admin(&server)).await.unwrap();
    assert!(version >= platform::postgres::MIN_SERVER_VERSION_NUM, "{version}");
}

#[tokio::test]
async fn connection_errors_name_host_and_user_but_not_the_password() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let mut admin = admin(&server);
    admin.password = SecretString::new(CANARY);
    let error = postgres::provision(&admin, &provisioning(CANARY_NEW)).await.unwrap_err();
    assert!(matches!(error, PostgresError::Connect { .. }), "{error}");
    let message = error.to_string();
    assert_eq!(
        message,
        format!(
            "could not connect to PostgreSQL at 127.0.0.1:{} as `{}` (database `postgres`)",
            server.port(),
            pg::ADMIN_USER
        )
    );
    let chain = format!("{error:?}");
    assert!(!chain.contains(CANARY) && !chain.contains(CANARY_NEW), "{chain}");
}

#[tokio::test]
async fn our_verify_accepts_verifiers_made_by_postgresql() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let mut connection = platform::postgres::connect(&admin(&server)).await.unwrap();
    // ASCII, and non-ASCII needing SASLprep (NFKC folds the ligature, maps the no-break space).
    let passwords = ["plain-Passw0rd!", "ﬁle\u{00a0}pässwörd"];
    for (index, password) in passwords.into_iter().enumerate() {
        let role = format!("vector_{index}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} PASSWORD '{password}'"
        )))
        .execute(&mut connection)
        .await
        .unwrap();
        let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        let verifier = ScramVerifier::parse(&stored).expect("a SCRAM-SHA-256 verifier");
        assert!(verifier.verifies(&SecretString::new(password)), "{password}");
        assert!(!verifier.verifies(&SecretString::new(format!("{password}x"))));
    }
}

/// Runs a script with psql as the admin, the script on stdin.
fn run_psql(server: &PgServer, script: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(server.program("psql"))
        .args(["--no-psqlrc", "--quiet", "--dbname", &server.admin_url()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "psql failed: {stderr}");
    stderr
}

#[tokio::test]
async fn provisioning_sql_runs_twice_in_psql_and_matches_the_driver() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let wanted = provisioning(CANARY);
    let script = postgres::provisioning_sql(
        &wanted.role,
        &wanted.database,
        &postgres::scram_verifier(&wanted.password),
    );
    assert!(!script.contains(CANARY));
    for _ in 0..2 {
        let stderr = run_psql(&server, &script);
        assert!(!stderr.contains("ERROR"), "{stderr}");
    }
    log_in(&server, "api_consent", CANARY, "api_consent_db").await.unwrap().close().await.unwrap();
    // The driver finds everything in place.
    let outcome = postgres::provision(&admin(&server), &wanted).await.unwrap();
    assert!(outcome.is_unchanged(), "{outcome:?}");
}

#[tokio::test]
async fn connection_limit_is_applied_once_and_then_left_alone() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let admin = admin(&server);
    let provisioning = provisioning(CANARY);
    postgres::provision(&admin, &provisioning).await.unwrap();
    assert!(
        postgres::set_connection_limit(&admin, &provisioning.role, 20).await.unwrap(),
        "the limit is set"
    );
    assert!(
        !postgres::set_connection_limit(&admin, &provisioning.role, 20).await.unwrap(),
        "a rerun changes nothing"
    );

    let mut connection = log_in(&server, pg::ADMIN_USER, pg::ADMIN_PASSWORD, "postgres").await.unwrap();
    let limit: i32 = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'api_consent'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(limit, 20);
    assert!(
        postgres::set_connection_limit(&admin, &provisioning.role, -1).await.unwrap(),
        "back to no limit"
    );
}

#[tokio::test]
async fn the_refresh_finds_dropped_roles_and_databases_changed_owners_and_limits() {
    let Some(server) = PgServer::try_start() else {
        return;
    };
    let admin = admin(&server);
    let provisioning = provisioning(CANARY);
    postgres::provision(&admin, &provisioning).await.unwrap();
    postgres::set_connection_limit(&admin, &provisioning.role, 20).await.unwrap();
    let wanted = |limit: i32| postgres::Provisioned {
        role: "api_consent".to_owned(),
        database: "api_consent_db".to_owned(),
        connection_limit: limit,
    };
    assert_eq!(postgres::observe_provisioned(&admin, &[wanted(20)]).await.unwrap(), []);
    assert_eq!(
        postgres::observe_provisioned(&admin, &[wanted(-1)]).await.unwrap(),
        [(0, "role api_consent has connection limit 20, planned -1".to_owned())]
    );

    let mut connection = log_in(&server, pg::ADMIN_USER, pg::ADMIN_PASSWORD, "postgres").await.unwrap();
    sqlx::raw_sql("ALTER DATABASE api_consent_db OWNER TO opus_admin")
        .execute(&mut connection)
        .await
        .unwrap();
    let found = postgres::observe_provisioned(&admin, &[wanted(20)]).await.unwrap();
    assert_eq!(
        found,
        [(0, format!("database api_consent_db is owned by {}, not api_consent", pg::ADMIN_USER))]
    );
    sqlx::raw_sql("DROP DATABASE api_consent_db").execute(&mut connection).await.unwrap();
    let found = postgres::observe_provisioned(&admin, &[wanted(20)]).await.unwrap();
    assert_eq!(found, [(0, "database api_consent_db not found".to_owned())]);
    sqlx::raw_sql("DROP ROLE api_consent").execute(&mut connection).await.unwrap();
    let found = postgres::observe_provisioned(&admin, &[wanted(20)]).await.unwrap();
    assert_eq!(found, [(0, "role api_consent not found".to_owned())]);
    // Provisioning repairs it, and then nothing has drifted.
    postgres::provision(&admin, &provisioning).await.unwrap();
    postgres::set_connection_limit(&admin, &provisioning.role, 20).await.unwrap();
    assert_eq!(postgres::observe_provisioned(&admin, &[wanted(20)]).await.unwrap(), []);

    // `--prune-databases`: both go, even with a session open on the database; twice is fine.
    let _session = log_in(&server, "api_consent", CANARY, "api_consent_db").await.unwrap();
    postgres::drop_provisioned(&admin, &provisioning.role, &provisioning.database).await.unwrap();
    postgres::drop_provisioned(&admin, &provisioning.role, &provisioning.database).await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'api_consent') + (SELECT count(*) FROM pg_database WHERE datname = 'api_consent_db')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(left, 0);
}
