//! `cargo xtask rotate-keys` end to end on a copy of the `example` environment (directory
//! target, its key store file `demo.agekey`), killed with SIGKILL at every phase boundary and
//! inside each batch of file writes, and resumed: no file is ever unreadable, the rerun completes the same rotation, content is
//! unchanged, the old key opens nothing, and `--commit` commits exactly the changed files.

mod keys_support;

use std::path::PathBuf;

use keys_support::{DEMO_KEY, KeysRepo, git};
use platform::keys::secrets_files;
use platform::secrets::decrypt_file;

/// Adds copies of the environment's secrets file in extra folders, so the rotation has many
/// files, and commits them.
fn add_secrets_files(repo: &KeysRepo, count: usize) {
    let source = repo.root().join("environments/example/secrets.enc.yaml");
    for index in 0..count {
        let dir = repo.root().join(format!("environments/example/extra/part-{index:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&source, dir.join("secrets.enc.yaml")).unwrap();
    }
    git(&repo.root(), &["add", "."]);
    git(&repo.root(), &["commit", "-qm", "more secrets files"]);
}

/// A point inside a batch of `size` files, picked by `seed`: `written:k`, `flushed`,
/// `renamed:k` or `done`.
fn batch_point(seed: &mut u64, size: usize) -> String {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let choice = (*seed >> 33) as usize % (2 * size + 2);
    match choice {
        k if k < size => format!("written:{}", k + 1),
        k if k == size => "flushed".to_owned(),
        k if k <= 2 * size => format!("renamed:{}", k - size),
        _ => "done".to_owned(),
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn rotation_killed_at_every_phase_boundary_and_inside_each_batch_resumes_and_completes() {
    let repo = KeysRepo::new();
    add_secrets_files(&repo, 7);
    let root = repo.root();
    let old = repo.identities(&root.join(DEMO_KEY));
    let before = repo.decrypted(&old);
    let total = before.len();
    assert_eq!(total, 12);
    let key_file = repo.home().join("keys.txt");
    let key_file_var = ("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap());

    // Batches of 5: 5, 5 and 2 files. Every point of the first batch; a random point inside
    // each later one (the batch numbers count the batches still to do in that run, so
    // `kill-batch:2:` finishes one batch and dies inside the next).
    let mut seed = seed();
    let mut kills: Vec<String> = ["generated", "key-stored"].iter().map(|p| format!("kill-at:{p}")).collect();
    for point in ["written:1", "written:5", "flushed", "renamed:1", "renamed:4", "renamed:5", "done"] {
        kills.push(format!("kill-batch:1:{point}"));
    }
    kills.push(format!("kill-batch:2:{}", batch_point(&mut seed, 5)));
    kills.push(format!("kill-batch:2:{}", batch_point(&mut seed, 2)));
    for point in ["files-reencrypted", "recipients-updated", "verified", "retired"] {
        kills.push(format!("kill-at:{point}"));
    }

    let mut new_recipient: Option<String> = None;
    for kill in &kills {
        let failpoint = format!("batch-size:5,{kill}");
        let run = repo.xtask(&[key_file_var, ("OPUS_FAILPOINT", &failpoint)], &["rotate-keys", "example"]);
        run.assert_code(None).assert_no_private_key(false);
        let new = repo.identities(&key_file);
        if kill != "kill-at:generated" {
            // Durable from `key-stored` on: the same new key all along, once in the key file.
            assert_eq!(new.len(), 1, "after {kill}");
            let recipient = new.recipients()[0].clone();
            assert_eq!(new_recipient.get_or_insert(recipient.clone()), &recipient, "after {kill}");
        }
        for path in secrets_files(&root, "example").unwrap() {
            let full = root.join(&path);
            assert!(std::fs::metadata(&full).unwrap().len() > 0, "{} is empty", path.display());
            let with_old = decrypt_file(&full, &old).is_ok();
            let with_new = decrypt_file(&full, &new).is_ok();
            assert!(
                with_old ^ with_new,
                "after {kill}: {} opens with old={with_old} new={with_new}",
                path.display()
            );
        }
    }

    let run = repo.xtask(&[key_file_var], &["rotate-keys", "example"]);
    run.assert_code(Some(0)).assert_no_private_key(false);
    assert!(run.stderr.contains("Resuming"), "the rotation after `retired` resumes:\n{}", run.stderr);
    assert!(run.stderr.contains("cargo xtask keys get example"), "no backup reminder:\n{}", run.stderr);
    let new = repo.identities(&key_file);
    assert_eq!(new.recipients(), [new_recipient.clone().unwrap()]);
    assert_eq!(repo.decrypted(&new), before, "content changed (kills: {kills:?})");
    for path in before.keys() {
        assert!(
            decrypt_file(&root.join(path), &old).is_err(),
            "{} still opens with the old key",
            path.display()
        );
        let leftover = platform::secrets::batch::batch_temp_path(&root.join(path));
        assert!(!leftover.exists(), "{} is left", leftover.display());
    }
    let demo = repo.identities(&root.join(DEMO_KEY));
    assert_eq!(demo.recipients(), new.recipients(), "the key store holds only the new key");
    let env_toml = std::fs::read_to_string(root.join("environments/example/env.toml")).unwrap();
    assert!(env_toml.contains(&format!("age_recipients = [\"{}\"]", new_recipient.unwrap())), "{env_toml}");
    assert!(!root.join("environments/example/.opus/rotation.json").exists());
}

#[test]
fn commit_flag_commits_exactly_the_rotated_files() {
    let repo = KeysRepo::new();
    let root = repo.root();
    // An unrelated change that must stay out of the commit.
    std::fs::write(root.join("environments/example/notes.txt"), "unrelated\n").unwrap();
    let key_file = repo.home().join("keys.txt");
    let run = repo
        .xtask(&[("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())], &["rotate-keys", "example", "--commit"]);
    run.assert_code(Some(0)).assert_no_private_key(false);

    assert_eq!(git(&root, &["log", "-1", "--format=%s"]).trim(), "Encryption keys rotation");
    let mut committed: Vec<PathBuf> =
        git(&root, &["show", "--name-only", "--format=", "HEAD"]).lines().map(PathBuf::from).collect();
    committed.sort();
    let mut expected = secrets_files(&root, "example").unwrap();
    expected.push(PathBuf::from("environments/example/env.toml"));
    expected.push(PathBuf::from(DEMO_KEY));
    expected.sort();
    assert_eq!(committed, expected);
    assert_eq!(git(&root, &["status", "--porcelain"]).trim(), "?? environments/example/notes.txt");
}

#[test]
fn rotation_refuses_uncommitted_or_undecryptable_secrets_files_and_lists_them() {
    let repo = KeysRepo::new();
    let root = repo.root();
    let key_file = repo.home().join("keys.txt");
    let vars = [("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())];
    let path = "environments/example/opus/oob-consent/secrets.enc.yaml";
    let original = std::fs::read_to_string(root.join(path)).unwrap();

    std::fs::write(
        root.join(path),
        original.replace("sops:", "extra: ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]\nsops:"),
    )
    .unwrap();
    let run = repo.xtask(&vars, &["rotate-keys", "example"]);
    run.assert_code(Some(2)).assert_no_private_key(false);
    assert!(run.stderr.contains("uncommitted") && run.stderr.contains(path), "{}", run.stderr);

    git(&root, &["commit", "-qam", "broken file"]);
    let run = repo.xtask(&vars, &["rotate-keys", "example"]);
    run.assert_code(Some(2)).assert_no_private_key(false);
    assert!(run.stderr.contains("cannot be decrypted") && run.stderr.contains(path), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "", "no key was generated");
    assert!(!root.join("environments/example/.opus/rotation.json").exists());
}

/// The bundle's encrypted files, relative to the bundle.
fn bundle_secrets(bundle: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![bundle.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(".enc.yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_deploy_after_a_rotation_re_encrypts_every_bundle_secret_for_the_new_key() {
    let repo = KeysRepo::new();
    let root = repo.root();
    let key_file = repo.home().join("keys.txt");
    let vars = [("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap())];
    repo.xtask(&[], &["deploy", "example"]).assert_code(Some(0));
    let bundle = root.join("bundle/example");
    let secrets = bundle_secrets(&bundle);
    assert!(secrets.len() >= 5, "the bundle has encrypted files: {secrets:?}");
    let old = repo.identities(&root.join(DEMO_KEY));

    repo.xtask(&vars, &["rotate-keys", "example"]).assert_code(Some(0));
    let new = repo.identities(&key_file);
    let deploy = repo.xtask(&vars, &["deploy", "example"]);
    deploy.assert_code(Some(0)).assert_no_private_key(false);
    // The steps that encrypt ran, the key store's recipients file, and the readiness wait of
    // each release that ran (a wait follows its release); nothing else.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("index.json")).unwrap()).unwrap();
    let step_ids: Vec<&str> =
        index["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    let waits = secrets
        .iter()
        .filter_map(|path| {
            path.strip_prefix(&bundle)
                .ok()?
                .to_str()?
                .strip_prefix("releases/")?
                .strip_suffix("/values.secrets.enc.yaml")
                .map(str::to_owned)
        })
        .filter(|release| step_ids.contains(&format!("{release}/ready").as_str()))
        .count();
    assert!(waits > 0, "releases with secret values have readiness waits: {secrets:?}");
    let expected = secrets.len() + 1 + waits;
    assert!(deploy.stderr.contains(&format!(": {expected} succeeded, 0 failed")), "{}", deploy.stderr);
    for path in bundle_secrets(&bundle) {
        assert!(decrypt_file(&path, &new).is_ok(), "{} does not open with the new key", path.display());
        assert!(decrypt_file(&path, &old).is_err(), "{} still opens with the retired key", path.display());
        let summary = platform::secrets::format::inspect_file(&path).unwrap();
        assert_eq!(summary.recipients, new.recipients(), "{}", path.display());
    }
    assert_eq!(bundle_secrets(&bundle), secrets, "the same files");
    // And nothing more to do afterwards.
    let again = repo.xtask(&vars, &["deploy", "example"]);
    again.assert_code(Some(0));
    assert!(again.stderr.contains(" 0 succeeded"), "{}", again.stderr);
}

#[test]
fn an_interrupted_rotation_is_named_by_check_and_deploy_until_it_is_finished() {
    let repo = KeysRepo::new();
    let key_file = repo.home().join("keys.txt");
    let key_file_var = ("SOPS_AGE_KEY_FILE", key_file.to_str().unwrap());
    let run = repo
        .xtask(&[key_file_var, ("OPUS_FAILPOINT", "kill-batch:1:renamed:1")], &["rotate-keys", "example"]);
    run.assert_code(None);
    let named = "a rotation of `example` is in progress: run `cargo xtask rotate-keys example` to finish it";
    let check = repo.xtask(&[key_file_var], &["check", "example"]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(check.stderr.contains(named), "{}", check.stderr);
    let deploy = repo.xtask(&[key_file_var], &["deploy", "example"]);
    assert_eq!(deploy.code, Some(2), "{}", deploy.stderr);
    assert!(deploy.stderr.contains(named), "{}", deploy.stderr);
    // Finished, both are quiet about it again.
    repo.xtask(&[key_file_var], &["rotate-keys", "example"]).assert_code(Some(0));
    let check = repo.xtask(&[key_file_var], &["check", "example"]);
    assert!(!check.stderr.contains("rotation of `example` is in progress"), "{}", check.stderr);
}
