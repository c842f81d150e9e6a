//! A throwaway PostgreSQL server for tests: `initdb` into a temp dir, listening on 127.0.0.1 on
//! a free port, with SCRAM-SHA-256 passwords, every statement logged to a file the test can
//! read, and a superuser with a password. Stopped and removed on drop.
//!
//! Include it with `#[path = "support/pg.rs"] mod pg;`. Needs the Debian `postgresql` package
//! (`scripts/install-tools.sh` installs it); as root, the server runs as the `postgres` user.

#![allow(dead_code)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The superuser of every test server.
pub const ADMIN_USER: &str = "opus_admin";
/// Its password: a test value, not a secret.
pub const ADMIN_PASSWORD: &str = "admin-test-password";

pub struct PgServer {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as_postgres: bool,
    // Last: removed after the server is stopped.
    _temp: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> (libc::uid_t, libc::gid_t) {
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once, before any other
    // call that could overwrite the static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "no `postgres` system user to run the server as");
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

fn chown(path: &Path, (uid, gid): (libc::uid_t, libc::gid_t)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

impl PgServer {
    /// Starts a server, or returns `None` after printing a notice when the PostgreSQL binaries
    /// are missing. Panics on any other failure.
    pub fn try_start() -> Option<PgServer> {
        match find_bin_dir() {
            Some(bin_dir) => Some(PgServer::start_with(bin_dir)),
            None => {
                eprintln!(
                    "notice: skipping test: no PostgreSQL in /usr/lib/postgresql/*/bin \
                     (run scripts/install-tools.sh as root)"
                );
                None
            }
        }
    }

    /// Starts a server; panics when PostgreSQL is missing.
    pub fn start() -> PgServer {
        let bin_dir = find_bin_dir().expect("PostgreSQL binaries in /usr/lib/postgresql/*/bin");
        PgServer::start_with(bin_dir)
    }

    fn start_with(bin_dir: PathBuf) -> PgServer {
        // SAFETY: geteuid has no preconditions.
        let run_as_postgres = unsafe { libc::geteuid() } == 0;
        let temp = tempfile::tempdir().unwrap();
        if run_as_postgres {
            chown(temp.path(), postgres_user());
        }
        let data_dir = temp.path().join("data");
        let log_file = temp.path().join("server.log");
        let password_file = temp.path().join("admin-password");
        std::fs::write(&password_file, ADMIN_PASSWORD).unwrap();
        if run_as_postgres {
            chown(&password_file, postgres_user());
        }
        let mut server = PgServer { bin_dir, data_dir, log_file, port: 0, run_as_postgres, _temp: temp };
        server.run(
            "initdb",
            &[
                "--pgdata".as_ref(),
                server.data_dir.as_os_str(),
                "--username".as_ref(),
                ADMIN_USER.as_ref(),
                "--pwfile".as_ref(),
                password_file.as_os_str(),
                "--auth".as_ref(),
                "scram-sha-256".as_ref(),
                "--encoding".as_ref(),
                "UTF8".as_ref(),
                "--locale".as_ref(),
                "C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        std::fs::remove_file(&password_file).unwrap();

        // A free port can be taken between our probe and the server's bind: try a few.
        for attempt in 1..=3 {
            server.port = free_port();
            let settings = format!(
                "listen_addresses = '127.0.0.1'\n\
                 port = {port}\n\
                 unix_socket_directories = '{socket_dir}'\n\
                 password_encryption = 'scram-sha-256'\n\
                 log_statement = 'all'\n\
                 log_min_error_statement = 'debug5'\n\
                 log_line_prefix = '%m [%p] %u@%d '\n\
                 fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n",
                port = server.port,
                socket_dir = server._temp.path().display(),
            );
            let auto_conf = server.data_dir.join("postgresql.auto.conf");
            std::fs::write(&auto_conf, settings).unwrap();
            if server.run_as_postgres {
                chown(&auto_conf, postgres_user());
            }
            let started = server.try_run(
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "--wait".as_ref(),
                    "--pgdata".as_ref(),
                    server.data_dir.as_os_str(),
                    "--log".as_ref(),
                    server.log_file.as_os_str(),
                ],
            );
            match started {
                Ok(()) => return server,
                Err(message) if attempt == 3 => {
                    panic!("could not start PostgreSQL: {message}\n{}", server.log_contents())
                }
                Err(_) => continue,
            }
        }
        unreachable!()
    }

    fn command(&self, program: &str, args: &[&std::ffi::OsStr]) -> Command {
        let binary = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        command.args(args).current_dir(self._temp.path());
        command
    }

    fn try_run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let output =
            self.command(program, args).output().map_err(|e| format!("could not run {program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        if let Err(message) = self.try_run(program, args) {
            panic!("{message}");
        }
    }

    /// `postgres://ADMIN_USER:ADMIN_PASSWORD@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        format!("postgres://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    /// A PostgreSQL client program of the server's version (`psql`, `pg_dump`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server logged so far (every statement, with `log_statement = 'all'`).
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate: the data is thrown away anyway. Errors are ignored: nothing to do in drop.
        let _ = self.try_run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "--wait".as_ref(),
                "--mode".as_ref(),
                "immediate".as_ref(),
                "--pgdata".as_ref(),
                self.data_dir.as_os_str(),
            ],
        );
    }
}
