//! Connecting to an environment's PostgreSQL server as its admin: the connection options
//! (`AdminOptions`, `SslMode`), the errors (none carries a password), validated identifiers and
//! the server version check. The PostgreSQL journal, the deploy lock and the provisioning
//! driver share them.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use crate::sensitive::SecretString;

/// The oldest PostgreSQL the platform supports (14), as `server_version_num`.
pub const MIN_SERVER_VERSION_NUM: u32 = 140_000;

/// How long we wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the PostgreSQL driver. None of them carries a password.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("could not connect to PostgreSQL at {host}:{port} as `{user}` (database `{database}`)")]
    Connect {
        host: String,
        port: u16,
        user: String,
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "timed out after {}s connecting to PostgreSQL at {host}:{port}",
        CONNECT_TIMEOUT.as_secs()
    )]
    ConnectTimeout { host: String, port: u16 },
    #[error("PostgreSQL at {host} failed to {step}")]
    Query {
        host: String,
        step: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("PostgreSQL at {host} is version {found}; the platform needs PostgreSQL 14 or newer")]
    ServerTooOld { host: String, found: String },
    #[error("invalid {what} `{name}`: {reason}")]
    InvalidIdentifier { what: &'static str, name: String, reason: &'static str },
    #[error("malformed SCRAM-SHA-256 verifier stored for role `{role}`")]
    MalformedVerifier { role: String },
}

/// `sslmode`, as libpq names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn to_sqlx(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// How to reach the server as the environment's admin.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub sslmode: SslMode,
    /// The database the admin connects to; `postgres` by default.
    pub database: String,
}

impl AdminOptions {
    pub fn new(host: impl Into<String>, user: impl Into<String>, password: SecretString) -> Self {
        AdminOptions {
            host: host.into(),
            port: 5432,
            user: user.into(),
            password,
            sslmode: SslMode::default(),
            database: "postgres".into(),
        }
    }
}

/// Connects as the admin to `options.database`.
pub async fn connect(options: &AdminOptions) -> Result<PgConnection, PostgresError> {
    connect_to(options, &options.database).await
}

pub(crate) async fn connect_to(
    options: &AdminOptions,
    database: &str,
) -> Result<PgConnection, PostgresError> {
    let connect_options = PgConnectOptions::new()
        .host(&options.host)
        .port(options.port)
        .username(&options.user)
        .password(options.password.expose())
        .database(database)
        .ssl_mode(options.sslmode.to_sqlx())
        .application_name("opus-deploy")
        // Our statements hold no secret, but they are the server's business, not our logs'.
        .disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&connect_options)).await {
        Err(_elapsed) => {
            Err(PostgresError::ConnectTimeout { host: options.host.clone(), port: options.port })
        }
        Ok(Err(source)) => Err(PostgresError::Connect {
            host: options.host.clone(),
            port: options.port,
            user: options.user.clone(),
            database: database.to_owned(),
            source,
        }),
        Ok(Ok(connection)) => Ok(connection),
    }
}

/// Checks a `server_version_num` against [`MIN_SERVER_VERSION_NUM`].
pub fn check_server_version(host: &str, server_version_num: u32) -> Result<(), PostgresError> {
    if server_version_num >= MIN_SERVER_VERSION_NUM {
        return Ok(());
    }
    // 10 and newer: major * 10000 + minor; older: major * 10000 + minor * 100 + patch.
    let found = if server_version_num >= 100_000 {
        format!("{}.{}", server_version_num / 10_000, server_version_num % 10_000)
    } else {
        format!(
            "{}.{}.{}",
            server_version_num / 10_000,
            server_version_num / 100 % 100,
            server_version_num % 100
        )
    };
    Err(PostgresError::ServerTooOld { host: host.to_owned(), found })
}

/// Preflight: the server answers and is PostgreSQL 14 or newer. Returns `server_version_num`.
pub async fn preflight(options: &AdminOptions) -> Result<u32, PostgresError> {
    let mut connection = connect(options).await?;
    let version: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut connection)
        .await
        .map_err(query_error(&options.host, "read its version"))?;
    let _ = connection.close().await;
    let version_num = version
        .trim()
        .parse::<u32>()
        .map_err(|_| PostgresError::ServerTooOld { host: options.host.clone(), found: version.clone() })?;
    check_server_version(&options.host, version_num)?;
    Ok(version_num)
}

pub(crate) fn query_error(host: &str, step: impl Into<String>) -> impl FnOnce(sqlx::Error) -> PostgresError {
    let host = host.to_owned();
    let step = step.into();
    move |source| PostgresError::Query { host, step, source }
}

/// A role or database name of ours: lowercase ASCII letters, digits and underscores, starting
/// with a letter or underscore, at most 63 bytes (PostgreSQL's `NAMEDATALEN - 1`), not in the
/// reserved `pg_` namespace. Displayed double-quoted, ready for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

impl Identifier {
    /// Validates `name`; `what` ("role", "database") names it in the error.
    pub fn new(what: &'static str, name: &str) -> Result<Identifier, PostgresError> {
        let invalid = |reason| PostgresError::InvalidIdentifier { what, name: name.to_owned(), reason };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > 63 {
            return Err(invalid("it is longer than 63 bytes"));
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(invalid("use only lowercase letters, digits and underscores"));
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid("it must start with a letter or an underscore"));
        }
        if name.starts_with("pg_") {
            return Err(invalid("names starting with `pg_` are reserved"));
        }
        Ok(Identifier(name.to_owned()))
    }

    /// The bare name, for bind parameters and messages.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    /// The quoted identifier. Validation leaves nothing to escape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_below_14_is_refused() {
        assert!(check_server_version("db", 140_000).is_ok());
        assert!(check_server_version("db", 170_002).is_ok());
        assert_eq!(
            check_server_version("db.internal", 130_011).unwrap_err().to_string(),
            "PostgreSQL at db.internal is version 13.11; the platform needs PostgreSQL 14 or newer"
        );
        assert_eq!(
            check_server_version("db", 90_624).unwrap_err().to_string(),
            "PostgreSQL at db is version 9.6.24; the platform needs PostgreSQL 14 or newer"
        );
    }
}
