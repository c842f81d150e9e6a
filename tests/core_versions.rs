//! End to end: environments pinned to two tagged versions of a core run with that core's own
//! catalog and engine, a second run works offline, and a moved tag is refused.
//!
//! The core repository is a copy of this workspace committed twice: `v1.0.0` as is, `v2.0.0`
//! with the `oob-status` template renamed `oob-status-v2`. Both cores build into one shared
//! target folder seeded with hard links to this workspace's compiled dependencies, so only the
//! three workspace crates compile, once per core.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Commands that take one environment and must run with its pinned core. `plan` joins here
/// once it exists.
const COMMANDS_ON_ONE_ENVIRONMENT: &[&str] = &["check"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn set_core(env_dir: &Path, version: &str) {
    let path = env_dir.join("env.toml");
    let text =
        fs::read_to_string(&path).unwrap().replace("core = \"example\"", &format!("core = \"{version}\""));
    assert!(text.contains(&format!("core = \"{version}\"")));
    fs::write(path, text).unwrap();
}

struct World {
    _dir: tempfile::TempDir,
    source: PathBuf,
    bare: PathBuf,
    client: PathBuf,
    cache: PathBuf,
    v1: String,
    v2: String,
}

/// The core repository (two tags), its bare clone, a client repository and a seeded cache.
fn world() -> World {
    let root = workspace_root();
    // Inside the target folder: on the same file system as the compiled dependencies.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let source = dir.path().join("core-source");
    let files = git(&root, &["ls-files", "--cached", "--others", "--exclude-standard"]);
    for file in files.lines().filter(|file| root.join(file).is_file()) {
        let to = source.join(file);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(root.join(file), to).unwrap();
    }
    git(&source, &["init", "--quiet"]);
    git(&source, &["add", "--all"]);
    git(&source, &["commit", "--quiet", "-m", "core 1.0.0"]);
    git(&source, &["tag", "v1.0.0"]);
    let module = source.join("components/src/oob_status/mod.rs");
    let text = fs::read_to_string(&module).unwrap();
    let renamed = text.replace(
        "const NAME: &'static str = \"oob-status\";",
        "const NAME: &'static str = \"oob-status-v2\";",
    );
    assert_ne!(text, renamed, "the v2 change applies");
    fs::write(&module, renamed).unwrap();
    git(&source, &["commit", "--quiet", "--all", "-m", "core 2.0.0: oob-status is now oob-status-v2"]);
    git(&source, &["tag", "v2.0.0"]);
    let v1 = git(&source, &["rev-parse", "v1.0.0^{commit}"]);
    let v2 = git(&source, &["rev-parse", "v2.0.0^{commit}"]);
    let bare = dir.path().join("core.git");
    git(dir.path(), &["clone", "--quiet", "--bare", source.to_str().unwrap(), bare.to_str().unwrap()]);

    let client = dir.path().join("client");
    let environments = client.join("environments");
    fs::create_dir_all(&environments).unwrap();
    let client_toml = fs::read_to_string(root.join("environments/client.toml")).unwrap();
    let client_toml =
        client_toml.replace("https://git.acme.example/platform/opus-core.git", bare.to_str().unwrap());
    fs::write(environments.join("client.toml"), client_toml).unwrap();
    let example = root.join("environments/example");
    for (name, core, files_for) in [
        ("old", "1.0.0", "v1"),
        ("new", "2.0.0", "v2"),
        ("v2-files-on-core-1", "1.0.0", "v2"),
        ("v1-files-on-core-2", "2.0.0", "v1"),
    ] {
        let env_dir = environments.join(name);
        copy_dir(&example, &env_dir);
        set_core(&env_dir, core);
        if files_for == "v2" {
            fs::rename(env_dir.join("opus/oob-status"), env_dir.join("opus/oob-status-v2")).unwrap();
        }
    }

    // The shared target folder starts with this workspace's compiled dependencies. Their
    // artifacts in `deps` are hard-linked; build script outputs and fingerprints, which cargo
    // rewrites in place, are copied; the workspace's own crates are left out, since the cores'
    // crates have the same file names and must never write through a link into our target.
    let cache = dir.path().join("cache");
    let ours = Path::new(env!("CARGO_BIN_EXE_xtask")).parent().unwrap().to_owned();
    let seeded = cache.join("target/debug");
    fs::create_dir_all(&seeded).unwrap();
    for (part, mode) in [("deps", "-al"), ("build", "-a"), (".fingerprint", "-a")] {
        let status =
            Command::new("cp").arg(mode).arg(ours.join(part)).arg(seeded.join(part)).status().unwrap();
        assert!(status.success(), "seeding {part}");
    }
    for entry in fs::read_dir(seeded.join("deps")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let crate_name = name.strip_prefix("lib").unwrap_or(&name);
        if ["platform-", "components-", "xtask-", "core_versions-"]
            .iter()
            .any(|own| crate_name.starts_with(own))
        {
            fs::remove_file(&path).unwrap();
        }
    }
    World { _dir: dir, source, bare, client, cache, v1, v2 }
}

fn xtask(world: &World, args: &[&str]) -> Output {
    // The client repository has no Cargo.toml of its own here, so it is named with --root.
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--root")
        .arg(&world.client)
        .args(args)
        .current_dir(&world.client)
        .env("OPUS_CORE_CACHE", &world.cache)
        .env("NO_COLOR", "1")
        .env_remove("OPUS_CORE_ACTIVE")
        .env_remove("OPUS_ROOT")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("xtask runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

#[test]
fn pinned_environments_run_with_their_own_core_offline_and_refuse_a_moved_tag() {
    let world = world();
    let short = |commit: &str| commit[..12].to_owned();

    // Each environment runs with the catalog of its own core.
    for command in COMMANDS_ON_ONE_ENVIRONMENT {
        for (env, version, commit) in [("old", "1.0.0", &world.v1), ("new", "2.0.0", &world.v2)] {
            let output = xtask(&world, &[command, env]);
            assert_exit(&output, 0);
            let err = stderr(&output);
            assert!(
                err.contains(&format!("`{env}` with core {version} (commit {})", short(commit))),
                "{err}"
            );
        }
    }
    let output = xtask(&world, &["check", "v2-files-on-core-1"]);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("unknown component template `oob-status-v2`"), "{err}");
    assert!(err.contains(&format!("ran with core 1.0.0 (commit {})", short(&world.v1))), "{err}");
    let output = xtask(&world, &["check", "v1-files-on-core-2"]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("unknown component template `oob-status`"), "{}", stderr(&output));

    // `check` of every environment runs each group with its core.
    let output = xtask(&world, &["check"]);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("`old`, `v2-files-on-core-1` with core 1.0.0"), "{err}");
    assert!(err.contains("`new`, `v1-files-on-core-2` with core 2.0.0"), "{err}");
    assert!(err.contains("Checked `old`") && err.contains("Checked `new`"), "{err}");

    // A second run needs neither the repository nor a build.
    let away = world.bare.with_file_name("core-away.git");
    fs::rename(&world.bare, &away).unwrap();
    let output = xtask(&world, &["check", "old", "new"]);
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(!err.contains("Fetched") && !err.contains("Building"), "{err}");
    let output = xtask(&world, &["core", "list"]);
    assert_exit(&output, 0);
    let listing = stdout(&output);
    for (commit, tag, users) in
        [(&world.v1, "v1.0.0", "old, v2-files-on-core-1"), (&world.v2, "v2.0.0", "new, v1-files-on-core-2")]
    {
        let line = listing
            .lines()
            .find(|line| line.starts_with(&short(commit)))
            .unwrap_or_else(|| panic!("{listing}"));
        assert!(line.contains(tag) && line.contains("yes") && line.ends_with(users), "{line}");
    }
    let output = xtask(&world, &["core", "fetch", "old"]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("cannot reach the core repository"), "{}", stderr(&output));
    fs::rename(&away, &world.bare).unwrap();

    // A tag moved in the repository is refused by `core fetch`, naming both commits.
    fs::write(world.source.join("MOVED"), "moved").unwrap();
    git(&world.source, &["add", "MOVED"]);
    git(&world.source, &["commit", "--quiet", "-m", "moved"]);
    git(&world.source, &["tag", "--force", "v1.0.0"]);
    let moved = git(&world.source, &["rev-parse", "HEAD"]);
    git(&world.source, &["push", "--quiet", "--force", world.bare.to_str().unwrap(), "refs/tags/v1.0.0"]);
    let output = xtask(&world, &["core", "fetch", "old"]);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("moved") && err.contains(&world.v1) && err.contains(&moved), "{err}");
    assert!(err.contains("cargo xtask core fetch old --accept-moved-tag"), "{err}");
    // Commands keep running the pinned commit, not the moved tag.
    let output = xtask(&world, &["check", "old"]);
    assert_exit(&output, 0);
    assert!(stderr(&output).contains(&format!("commit {}", short(&world.v1))), "{}", stderr(&output));
}
