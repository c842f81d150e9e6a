//! The PostgreSQL driver: as the environment's admin (connected through [`crate::postgres`]),
//! provisions one role and one database per component, idempotently.
//!
//! Passwords never reach the server in clear text: we compute the SCRAM-SHA-256 verifier on our
//! side, as libpq's `PQencryptPasswordConn` (psql's `\password`) does, and send only that, so
//! the cleartext cannot land in the server's statement log (`log_statement = 'all'`). A rerun
//! changes nothing: the stored verifier (`pg_authid.rolpassword`) is checked against the wanted
//! password and the role is altered only when they differ.
//!
//! The same provisioning is also rendered as SQL text for the `directory` target
//! ([`provisioning_sql`]), again with the verifier only.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::postgres::{AdminOptions, Identifier, PostgresError, connect, connect_to, query_error};
use crate::sensitive::SecretString;

/// PBKDF2 iterations of the verifiers we compute, PostgreSQL's default (`scram_iterations`).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// What to provision for one component.
#[derive(Debug, Clone)]
pub struct Provisioning {
    pub role: Identifier,
    pub database: Identifier,
    pub password: SecretString,
}

/// One change that provisioning made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionChange {
    CreatedRole,
    ChangedPassword,
    EnabledLogin,
    CreatedDatabase,
    ChangedDatabaseOwner,
    GrantedConnect,
    ChangedPublicSchemaOwner,
}

/// What provisioning changed; empty when everything was already in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionOutcome {
    pub changes: Vec<ProvisionChange>,
}

impl ProvisionOutcome {
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A SCRAM-SHA-256 password verifier, as stored in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64). It does not reveal the
/// password, but it is enough to attempt an offline guess, so it is kept out of `Debug` too.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier(String);

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// Parses and checks a stored verifier; `None` if it is not SCRAM-SHA-256 (md5, none).
    pub fn parse(text: &str) -> Option<ScramVerifier> {
        parse_verifier(text).map(|_| ScramVerifier(text.to_owned()))
    }

    /// The verifier's text, for SQL. It contains only base64 characters, `$` and `:`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the password this verifier was made from.
    pub fn verifies(&self, password: &SecretString) -> bool {
        let Some(parts) = parse_verifier(&self.0) else {
            return false;
        };
        let (stored_key, server_key) = scram_keys(password, &parts.salt, parts.iterations);
        // Constant-time comparison: no early exit on the first differing byte.
        let difference = stored_key
            .iter()
            .chain(server_key.iter())
            .zip(parts.stored_key.iter().chain(parts.server_key.iter()))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }
}

struct VerifierParts {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn parse_verifier(text: &str) -> Option<VerifierParts> {
    let rest = text.strip_prefix("SCRAM-SHA-256$")?;
    let (iterations_and_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iterations_and_salt.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let parts = VerifierParts {
        iterations: iterations.parse().ok().filter(|i| *i > 0)?,
        salt: BASE64.decode(salt).ok()?,
        stored_key: BASE64.decode(stored_key).ok()?,
        server_key: BASE64.decode(server_key).ok()?,
    };
    let is_key = |key: &[u8]| key.len() == 32;
    (is_key(&parts.stored_key) && is_key(&parts.server_key) && !parts.salt.is_empty()).then_some(parts)
}

/// StoredKey and ServerKey of RFC 5802 for a password, salt and iteration count.
fn scram_keys(password: &SecretString, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    // PostgreSQL applies SASLprep and, when the password is not valid for it, uses it as is.
    let prepared = stringprep::saslprep(password.expose())
        .map(|p| zeroize::Zeroizing::new(p.into_owned()))
        .unwrap_or_else(|_| zeroize::Zeroizing::new(password.expose().to_owned()));
    let mut salted_password = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, salted_password.as_mut());
    let hmac = |message: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salted_password.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    };
    let client_key = zeroize::Zeroizing::new(hmac(b"Client Key"));
    let stored_key: [u8; 32] = Sha256::digest(client_key.as_slice()).into();
    let server_key = hmac(b"Server Key");
    (stored_key, server_key)
}

/// A verifier with a given salt; [`scram_verifier`] picks a random one.
pub fn scram_verifier_with_salt(password: &SecretString, salt: &[u8], iterations: u32) -> ScramVerifier {
    let (stored_key, server_key) = scram_keys(password, salt, iterations);
    ScramVerifier(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    ))
}

/// A verifier for `password` with a random 16-byte salt and 4096 iterations, as libpq makes.
pub fn scram_verifier(password: &SecretString) -> ScramVerifier {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    scram_verifier_with_salt(password, &salt, SCRAM_ITERATIONS)
}

/// A SQL string literal for a verifier. [`ScramVerifier`] only ever holds base64, `$`, `:` and
/// the digits of the iteration count, none of which needs escaping; checked again here because
/// this string goes into SQL text.
fn verifier_literal(verifier: &ScramVerifier) -> String {
    let text = verifier.as_str();
    assert!(
        text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=$:-".contains(&b)),
        "a SCRAM verifier holds only base64, `$`, `:` and `-`"
    );
    format!("'{text}'")
}

/// Provisions the role and database of one component, connecting as the admin. Idempotent:
/// a rerun with the same password changes nothing and says so.
pub async fn provision(
    admin: &AdminOptions,
    provisioning: &Provisioning,
) -> Result<ProvisionOutcome, PostgresError> {
    let host = admin.host.as_str();
    let role = &provisioning.role;
    let database = &provisioning.database;
    let mut outcome = ProvisionOutcome::default();
    let mut connection = connect(admin).await?;

    // pg_authid is readable by superusers only; managed services (RDS, Cloud SQL) do not grant
    // it, so without it we cannot compare and set the password every time.
    let authid: Result<Option<(Option<String>, bool)>, sqlx::Error> =
        sqlx::query_as("SELECT rolpassword, rolcanlogin FROM pg_authid WHERE rolname = $1")
            .bind(role.name())
            .fetch_optional(&mut connection)
            .await;
    let existing = match authid {
        Ok(row) => row.map(|(password, can_login)| (Some(password), can_login)),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
            sqlx::query_scalar::<_, bool>("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
                .bind(role.name())
                .fetch_optional(&mut connection)
                .await
                .map_err(query_error(host, format!("look up role `{}`", role.name())))?
                .map(|can_login| (None, can_login))
        }
        Err(source) => {
            return Err(query_error(host, format!("look up role `{}`", role.name()))(source));
        }
    };

    match existing {
        None => {
            let verifier = scram_verifier(&provisioning.password);
            let sql = format!("CREATE ROLE {role} LOGIN PASSWORD {}", verifier_literal(&verifier));
            execute(&mut connection, host, &sql, format!("create role `{}`", role.name())).await?;
            outcome.changes.push(ProvisionChange::CreatedRole);
        }
        Some((stored, can_login)) => {
            // `stored`: None when pg_authid is not readable, Some(None) when no password is set.
            let up_to_date = match stored {
                Some(Some(text)) => ScramVerifier::parse(&text)
                    .is_some_and(|verifier| verifier.verifies(&provisioning.password)),
                _ => false,
            };
            if !up_to_date {
                let verifier = scram_verifier(&provisioning.password);
                let sql = format!("ALTER ROLE {role} WITH PASSWORD {}", verifier_literal(&verifier));
                let step = format!("set the password of role `{}`", role.name());
                execute(&mut connection, host, &sql, step).await?;
                outcome.changes.push(ProvisionChange::ChangedPassword);
            }
            if !can_login {
                let sql = format!("ALTER ROLE {role} WITH LOGIN");
                let step = format!("allow role `{}` to log in", role.name());
                execute(&mut connection, host, &sql, step).await?;
                outcome.changes.push(ProvisionChange::EnabledLogin);
            }
        }
    }

    let owner: Option<String> =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
            .bind(database.name())
            .fetch_optional(&mut connection)
            .await
            .map_err(query_error(host, format!("look up database `{}`", database.name())))?;
    match owner {
        // CREATE DATABASE cannot run inside a transaction: each statement here is its own.
        None => {
            let sql = format!("CREATE DATABASE {database} OWNER {role}");
            let step = format!("create database `{}`", database.name());
            execute(&mut connection, host, &sql, step).await?;
            outcome.changes.push(ProvisionChange::CreatedDatabase);
        }
        Some(owner) if owner != role.name() => {
            let sql = format!("ALTER DATABASE {database} OWNER TO {role}");
            let step = format!("give database `{}` to role `{}`", database.name(), role.name());
            execute(&mut connection, host, &sql, step).await?;
            outcome.changes.push(ProvisionChange::ChangedDatabaseOwner);
        }
        Some(_) => {}
    }

    let can_connect: bool = sqlx::query_scalar("SELECT has_database_privilege($1, $2, 'CONNECT')")
        .bind(role.name())
        .bind(database.name())
        .fetch_one(&mut connection)
        .await
        .map_err(query_error(host, format!("check CONNECT on `{}`", database.name())))?;
    if !can_connect {
        let sql = format!("GRANT CONNECT ON DATABASE {database} TO {role}");
        let step = format!("grant CONNECT on `{}` to `{}`", database.name(), role.name());
        execute(&mut connection, host, &sql, step).await?;
        outcome.changes.push(ProvisionChange::GrantedConnect);
    }
    let _ = connection.close().await;

    // The schema `public` belongs to the database: look at it from inside. On PostgreSQL 15+ it
    // is owned by `pg_database_owner` (our role, as the database's owner) and CREATE is no
    // longer granted to PUBLIC; on 14 it belongs to the bootstrap superuser. Owning it gives
    // the application (its migrations) what it needs on both.
    let mut connection = connect_to(admin, database.name()).await?;
    let schema_owner: Option<String> = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public'",
    )
    .fetch_optional(&mut connection)
    .await
    .map_err(query_error(host, format!("look up schema public of `{}`", database.name())))?;
    if let Some(schema_owner) = schema_owner
        && schema_owner != role.name()
        && schema_owner != "pg_database_owner"
    {
        let sql = format!("ALTER SCHEMA public OWNER TO {role}");
        let step = format!("give schema public of `{}` to `{}`", database.name(), role.name());
        execute(&mut connection, host, &sql, step).await?;
        outcome.changes.push(ProvisionChange::ChangedPublicSchemaOwner);
    }
    let _ = connection.close().await;
    Ok(outcome)
}

/// Sets a role's `CONNECTION LIMIT` (-1: none) when it differs; returns whether it changed.
pub async fn set_connection_limit(
    admin: &AdminOptions,
    role: &Identifier,
    limit: i32,
) -> Result<bool, PostgresError> {
    let host = admin.host.as_str();
    let mut connection = connect(admin).await?;
    let current: Option<i32> = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(role.name())
        .fetch_optional(&mut connection)
        .await
        .map_err(query_error(host, format!("look up the connection limit of `{}`", role.name())))?;
    let changed = current != Some(limit);
    if changed {
        // `limit` is an integer: formatting it cannot inject anything.
        let sql = format!("ALTER ROLE {role} CONNECTION LIMIT {limit}");
        execute(&mut connection, host, &sql, format!("set the connection limit of `{}`", role.name()))
            .await?;
    }
    let _ = connection.close().await;
    Ok(changed)
}

/// What a provisioning step set, as the refresh compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub role: String,
    pub database: String,
    pub connection_limit: i32,
}

/// One row of the refresh's query: kind (`role` or `database`), name, a database's owner, a
/// role's `rolcanlogin` and `rolconnlimit`.
type CatalogRow = (String, String, Option<String>, Option<bool>, Option<i32>);

/// The refresh of provisioned databases: one query over `pg_roles` and `pg_database` for all
/// of them. Returns, for each wanted item that no longer holds, why (the role is gone or can no
/// longer log in, its connection limit changed, the database is gone or has another owner).
/// Passwords are not compared: that would need the verifier, which provisioning checks itself.
pub async fn observe_provisioned(
    admin: &AdminOptions,
    wanted: &[Provisioned],
) -> Result<Vec<(usize, String)>, PostgresError> {
    let host = admin.host.as_str();
    let mut connection = connect(admin).await?;
    let roles: Vec<String> = wanted.iter().map(|w| w.role.clone()).collect();
    let databases: Vec<String> = wanted.iter().map(|w| w.database.clone()).collect();
    let rows: Vec<CatalogRow> = sqlx::query_as(
        "SELECT 'role', rolname::text, NULL::text, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = ANY($1) \
         UNION ALL \
         SELECT 'database', datname::text, pg_get_userbyid(datdba)::text, NULL, NULL FROM pg_database WHERE datname = ANY($2)",
    )
    .bind(&roles)
    .bind(&databases)
    .fetch_all(&mut connection)
    .await
    .map_err(query_error(host, "read the roles and databases".to_owned()))?;
    let _ = connection.close().await;
    let role_of = |name: &str| rows.iter().find(|r| r.0 == "role" && r.1 == name);
    let database_of = |name: &str| rows.iter().find(|r| r.0 == "database" && r.1 == name);
    let mut out = Vec::new();
    for (index, item) in wanted.iter().enumerate() {
        let reason = match (role_of(&item.role), database_of(&item.database)) {
            (None, _) => Some(format!("role {} not found", item.role)),
            (Some((_, _, _, Some(false), _)), _) => Some(format!("role {} can no longer log in", item.role)),
            (Some((_, _, _, _, Some(limit))), _) if *limit != item.connection_limit => Some(format!(
                "role {} has connection limit {limit}, planned {}",
                item.role, item.connection_limit
            )),
            (_, None) => Some(format!("database {} not found", item.database)),
            (_, Some((_, _, Some(owner), _, _))) if *owner != item.role => {
                Some(format!("database {} is owned by {owner}, not {}", item.database, item.role))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            out.push((index, reason));
        }
    }
    Ok(out)
}

/// Drops a database and its role (`deploy --prune-databases` for a component that left the
/// configuration): the database first (its connections are terminated: `WITH (FORCE)`), then
/// the role. Either already gone is not an error.
pub async fn drop_provisioned(
    admin: &AdminOptions,
    role: &Identifier,
    database: &Identifier,
) -> Result<(), PostgresError> {
    let host = admin.host.as_str();
    let mut connection = connect(admin).await?;
    let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
    execute(&mut connection, host, &sql, format!("drop database `{}`", database.name())).await?;
    let sql = format!("DROP ROLE IF EXISTS {role}");
    execute(&mut connection, host, &sql, format!("drop role `{}`", role.name())).await?;
    let _ = connection.close().await;
    Ok(())
}

async fn execute(
    connection: &mut PgConnection,
    host: &str,
    sql: &str,
    step: String,
) -> Result<(), PostgresError> {
    // Every statement here is built from validated `Identifier`s and SCRAM verifier literals.
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(connection).await.map(|_| ()).map_err(query_error(host, step))
}

/// The provisioning of one component as a psql script, for the `directory` target. It carries
/// the verifier, never the password, and is idempotent like [`provision`] (it always resets the
/// password to the same one, which is harmless).
pub fn provisioning_sql(role: &Identifier, database: &Identifier, verifier: &ScramVerifier) -> String {
    let role_name = role.name();
    let database_name = database.name();
    let password = verifier_literal(verifier);
    format!(
        "-- Role {role} and database {database}; run with psql as a superuser.\n\
         -- The password is a SCRAM-SHA-256 verifier: the cleartext is not in this file.\n\
         \\set ON_ERROR_STOP on\n\
         SELECT 'CREATE ROLE {role} LOGIN'\n\
         \x20 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role_name}')\\gexec\n\
         ALTER ROLE {role} WITH LOGIN PASSWORD {password};\n\
         SELECT 'CREATE DATABASE {database} OWNER {role}'\n\
         \x20 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database_name}')\\gexec\n\
         ALTER DATABASE {database} OWNER TO {role};\n\
         GRANT CONNECT ON DATABASE {database} TO {role};\n\
         \\connect {database}\n\
         ALTER SCHEMA public OWNER TO {role};\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_our_naming_rules() {
        assert_eq!(Identifier::new("role", "api_consent").unwrap().to_string(), "\"api_consent\"");
        assert!(Identifier::new("role", "_x9").is_ok());
        assert!(Identifier::new("role", &"a".repeat(63)).is_ok());
        for bad in ["", "Api", "a-b", "9a", "pg_admin", "a\"b", "a b", "é"] {
            let error = Identifier::new("role", bad).unwrap_err();
            assert!(matches!(error, PostgresError::InvalidIdentifier { what: "role", .. }), "{bad}: {error}");
        }
        let error = Identifier::new("database", &"a".repeat(64)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("invalid database `{}`: it is longer than 63 bytes", "a".repeat(64))
        );
    }

    #[test]
    fn verifier_verifies_its_password_only() {
        let password = SecretString::new("canary-3a9d");
        let verifier = scram_verifier(&password);
        assert!(verifier.as_str().starts_with("SCRAM-SHA-256$4096:"));
        assert!(verifier.verifies(&password));
        assert!(!verifier.verifies(&SecretString::new("canary-3a9e")));
        assert!(!format!("{verifier:?}").contains("SCRAM"));
        // Random salt: two verifiers of one password differ.
        assert_ne!(verifier, scram_verifier(&password));
    }

    #[test]
    fn malformed_verifiers_are_rejected() {
        for text in [
            "md5abcdef",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:BBBB",
            "SCRAM-SHA-256$4096:c2FsdA==",
        ] {
            assert_eq!(ScramVerifier::parse(text), None, "{text}");
        }
    }

    #[test]
    fn provisioning_sql_carries_the_verifier_not_the_password() {
        let password = SecretString::new("canary-77e1");
        let verifier = scram_verifier_with_salt(&password, b"0123456789abcdef", 4096);
        let sql = provisioning_sql(
            &Identifier::new("role", "api_consent").unwrap(),
            &Identifier::new("database", "api_consent_db").unwrap(),
            &verifier,
        );
        assert!(!sql.contains("canary-77e1"));
        assert!(
            sql.contains(&format!("ALTER ROLE \"api_consent\" WITH LOGIN PASSWORD '{}';", verifier.as_str()))
        );
        assert!(sql.contains("CREATE DATABASE \"api_consent_db\" OWNER \"api_consent\""));
        assert!(sql.contains("\\connect \"api_consent_db\"\n"));
    }
}
