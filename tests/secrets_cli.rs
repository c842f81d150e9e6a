//! `cargo xtask secrets` end to end: `set` without a value reads a piped value, asks twice on a
//! terminal without echo (a pseudo-terminal here), and refuses an empty one; refused edited
//! text reopens the editor when the operator says so; the plaintext a SIGKILLed `edit` left is
//! removed by the next command. Values are canaries that must never reach the output.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use platform::secrets::{Identities, decrypt_file};
use platform::sensitive::SecretString;
use util::{Repo, Run, RunOptions};

const KEY_FILE: &str = "environments/example/demo.agekey";
const SECRETS: &str = "environments/example/opus/oob-consent/secrets.enc.yaml";
const CANARY: &str = "canary-cli-set-7a2c";

fn key_options(repo: &Repo) -> RunOptions {
    RunOptions::default().env("SOPS_AGE_KEY_FILE", repo.root().join(KEY_FILE).display().to_string())
}

fn secrets_file(repo: &Repo) -> String {
    repo.root().join(SECRETS).display().to_string()
}

fn password(repo: &Repo) -> String {
    let key = std::fs::read_to_string(repo.root().join(KEY_FILE)).unwrap();
    let identities = Identities::from_key_text("demo", &SecretString::new(key)).unwrap();
    let tree = decrypt_file(&repo.root().join(SECRETS), &identities).unwrap();
    tree.get("db.password").unwrap().text().expose().to_owned()
}

fn assert_no_canary(run: &Run) {
    assert!(!run.stdout.contains(CANARY), "the value reached stdout:\n{}", run.stdout);
    assert!(!run.stderr.contains(CANARY), "the value reached stderr:\n{}", run.stderr);
}

#[test]
fn set_without_a_value_reads_it_from_stdin_when_that_is_not_a_terminal() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let run = repo.xtask_with(
        &["secrets", "set", &file, "db.password"],
        &key_options(&repo).stdin(format!("{CANARY}\n")),
    );
    run.assert_code(0).assert_stderr_contains("Updated");
    assert_no_canary(&run);
    assert_eq!(password(&repo), CANARY);
    // `-` keeps working.
    let other = format!("{CANARY}-2");
    let run = repo
        .xtask_with(&["secrets", "set", &file, "db.password", "-"], &key_options(&repo).stdin(other.clone()));
    run.assert_code(0);
    assert_no_canary(&run);
    assert_eq!(password(&repo), other);
}

#[test]
fn set_refuses_an_empty_value_in_every_mode() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let before = repo.read(SECRETS);
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["secrets", "set", &file, "db.password"], Some("")),
        (&["secrets", "set", &file, "db.password"], Some("\n")),
        (&["secrets", "set", &file, "db.password", "-"], Some("")),
        // No stdin at all (closed): not a terminal, read as empty.
        (&["secrets", "set", &file, "db.password"], None),
    ];
    for (args, stdin) in cases {
        let options = match stdin {
            Some(text) => key_options(&repo).stdin(text),
            None => key_options(&repo),
        };
        let run = repo.xtask_with(args, &options);
        run.assert_code(2)
            .assert_stderr_contains("the value for `db.password` is empty; nothing was changed");
        assert_eq!(repo.read(SECRETS), before, "{args:?} {stdin:?}: the file is unchanged");
    }
}

#[test]
fn the_plaintext_of_a_sigkilled_edit_is_removed_by_the_next_command() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let scratch = tempfile::tempdir().unwrap();
    let runtime_dir = scratch.path().join("runtime");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The editor leaves a swap file beside the plaintext, as vim does, notes the pid of
    // `xtask` and kills it.
    let pid_file = scratch.path().join("pid");
    let editor = scratch.path().join("killer.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\ncp \"$1\" \"$(dirname \"$1\")/.secrets.yaml.swp\"\necho $PPID > {}\nkill -9 $PPID\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = key_options(&repo).env("XDG_RUNTIME_DIR", runtime_dir.display().to_string());
    let run = repo.xtask_with(
        &["secrets", "edit", &file],
        &options.clone().env("EDITOR", editor.display().to_string()),
    );
    assert_eq!(run.code, None, "xtask was killed\n{}", run.stderr);
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let left = entries(&runtime_dir);
    assert_eq!(left.len(), 2, "a lock and a plaintext directory: {left:?}");
    let directory = left.iter().find(|path| path.is_dir()).expect("a plaintext directory").clone();
    assert!(directory.join("secrets.yaml").exists() && directory.join(".secrets.yaml.swp").exists());

    let run = repo.xtask_with(&["secrets", "show", &file], &options);
    run.assert_code(0).assert_stderr_contains(&format!(
        "notice: removed the plaintext a killed edit (pid {pid}) left in {}",
        directory.display()
    ));
    assert!(entries(&runtime_dir).is_empty(), "left behind: {:?}", entries(&runtime_dir));
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect()
}

/// What to type on the terminal: each answer once the output ends with its prompt (and, when
/// `hidden`, once the terminal no longer echoes, so a value typed too early cannot show).
struct Typing<'a> {
    prompts: &'a [&'a str],
    answers: &'a [&'a str],
    hidden: bool,
}

/// Runs the binary on a fresh pseudo-terminal (its stdin, stdout, stderr and controlling
/// terminal) with extra environment variables, typing as `typing` says. Returns the exit code
/// and everything the terminal showed.
fn run_on_terminal(
    repo: &Repo,
    args: &[&str],
    env: &[(&str, String)],
    typing: &Typing,
) -> (Option<i32>, String) {
    let Typing { prompts, answers, hidden } = *typing;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors we then own.
    let opened = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let home = tempfile::tempdir().unwrap();
    let root = repo.root().display().to_string();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .arg("--root")
        .arg(&root)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env("SOPS_AGE_KEY_FILE", repo.root().join(KEY_FILE))
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .current_dir(home.path())
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start the xtask binary");
    // The terminal reports the end (EIO) only once no descriptor of its other side is open.
    drop(command);
    drop(slave);
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let shown = shown.clone();
        let mut master = std::fs::File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once the binary exits and the terminal has no other user.
            while let Ok(n @ 1..) = master.read(&mut buffer) {
                shown.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut keyboard = std::fs::File::from(master.try_clone().unwrap());
    for (typed, answer) in answers.iter().enumerate() {
        let prompt = prompts[typed.min(prompts.len() - 1)];
        loop {
            let text = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
            let asked = prompts.iter().map(|p| text.matches(p).count()).sum::<usize>() > typed;
            // SAFETY: tcgetattr fills the termios we own.
            let echo = unsafe {
                let mut termios: libc::termios = std::mem::zeroed();
                libc::tcgetattr(master.as_raw_fd(), &mut termios);
                termios.c_lflag & libc::ECHO != 0
            };
            if asked && text.ends_with(prompt) && !(hidden && echo) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no prompt `{prompt}` without echo; the terminal showed:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        keyboard.write_all(format!("{answer}\r").as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "xtask {args:?} did not finish; the terminal showed:\n{}",
                String::from_utf8_lossy(&shown.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(keyboard);
    drop(master);
    reader.join().unwrap();
    let text = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    (status.code(), text)
}

#[test]
fn set_without_a_value_asks_twice_on_a_terminal_without_echo() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let prompts = ["New value for `db.password`: ", "Repeat it: "];
    let args = ["secrets", "set", file.as_str(), "db.password"];
    let typed =
        |answers| run_on_terminal(&repo, &args, &[], &Typing { prompts: &prompts, answers, hidden: true });
    let (code, shown) = typed(&[CANARY, CANARY]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains(CANARY), "the value was echoed:\n{shown}");
    assert_eq!(password(&repo), CANARY);

    let before = repo.read(SECRETS);
    let (code, shown) = typed(&[CANARY, "canary-typo"]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("the two values for `db.password` differ; nothing was changed"), "{shown}");
    assert!(!shown.contains(CANARY) && !shown.contains("canary-typo"), "{shown}");
    assert_eq!(repo.read(SECRETS), before);

    let (code, shown) = typed(&[""]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("the value for `db.password` is empty; nothing was changed"), "{shown}");
    assert_eq!(repo.read(SECRETS), before);
}

#[test]
fn refused_edited_text_reopens_the_editor_when_the_operator_says_so() {
    let repo = Repo::shipped();
    let file = secrets_file(&repo);
    let scratch = tempfile::tempdir().unwrap();
    let runs = scratch.path().join("runs");
    // Run 1 leaves a mistake on line 3 (after `db:` and `password:`); run 2 fixes it.
    let editor = scratch.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\necho run >> {runs}\nif [ \"$(wc -l < {runs})\" -eq 1 ]; then\n\
             sed -i '3s/^/    broken: a: b\\n/' \"$1\"\nelse\n  sed -i '3d' \"$1\"\n\
             sed -i 's/^\\(    password:\\).*/\\1 {CANARY}/' \"$1\"\nfi\n",
            runs = runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env =
        [("EDITOR", editor.display().to_string()), ("XDG_RUNTIME_DIR", scratch.path().display().to_string())];
    let args = ["secrets", "edit", file.as_str()];
    let prompts = ["reopen the editor? [Y/n] "];
    let before = repo.read(SECRETS);

    let (code, shown) =
        run_on_terminal(&repo, &args, &env, &Typing { prompts: &prompts, answers: &["n"], hidden: false });
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("is not valid YAML (line 3, column 14)"), "{shown}");
    assert_eq!(repo.read(SECRETS), before, "declined: the file is unchanged");

    std::fs::remove_file(&runs).unwrap();
    let (code, shown) =
        run_on_terminal(&repo, &args, &env, &Typing { prompts: &prompts, answers: &[""], hidden: false });
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("is not valid YAML (line 3, column 14)"), "{shown}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    assert_eq!(password(&repo), CANARY);
    assert!(!shown.contains(CANARY), "{shown}");
    let left: Vec<_> =
        entries(scratch.path()).into_iter().filter(|path| path != &runs && path != &editor).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
