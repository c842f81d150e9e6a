//! `cargo xtask secrets updatekeys` end to end on a copy of the `example` environment: a
//! second recipient added (a small diff, every file and the bundle's readable by the new key
//! alone, `check` green with two recipients), a recipient removed (fresh data keys), a file
//! nobody here can open named while the others are updated, and SIGKILL at every phase
//! boundary and inside each batch, then a rerun that finishes.

mod keys_support;

use std::path::{Path, PathBuf};

use keys_support::{DEMO_KEY, KeysRepo, git};
use platform::keys::secrets_files;
use platform::secrets::format::inspect_file;
use platform::secrets::{Identities, decrypt_file, generate_identity};

const DEMO_RECIPIENT: &str = "age1r4mc8zq2d963s67v43vzzpadce3wgxd8253gke6lm9a3udr87syssxgqkr";

/// A second operator's key, in a key file of their own.
fn second_operator(repo: &KeysRepo) -> (String, PathBuf, Identities) {
    let generated = generate_identity();
    let file = repo.home().join("bob.txt");
    std::fs::write(&file, generated.key_file_entry().expose()).unwrap();
    (generated.recipient.to_string(), file.clone(), repo.identities(&file))
}

fn list_recipients(repo: &KeysRepo, recipients: &[&str]) {
    let path = repo.root().join("environments/example/env.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let list = recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    let updated = text
        .replace(&format!("age_recipients = [\"{DEMO_RECIPIENT}\"]"), &format!("age_recipients = [{list}]"));
    assert_ne!(updated, text, "env.toml lists the demo recipient");
    std::fs::write(&path, updated).unwrap();
}

/// Every encrypted file: the environment's secrets files and the bundle's.
fn encrypted_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        secrets_files(root, "example").unwrap().into_iter().map(|p| root.join(p)).collect();
    let mut pending = vec![root.join("bundle/example")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(".enc.yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn sorted(mut recipients: Vec<String>) -> Vec<String> {
    recipients.sort();
    recipients
}

#[test]
fn adding_a_recipient_rewraps_every_file_with_a_small_diff_and_check_accepts_two_recipients() {
    let repo = KeysRepo::new();
    let root = repo.root();
    repo.xtask(&[], &["deploy", "example"]).assert_code(Some(0));
    let demo = repo.identities(&root.join(DEMO_KEY));
    let files = encrypted_files(&root);
    assert!(files.len() >= 10, "secrets files and bundle files: {files:?}");
    let before: Vec<String> =
        files.iter().map(|f| decrypt_file(f, &demo).unwrap().to_yaml().expose().to_owned()).collect();
    let (bob, bob_file, bob_ids) = second_operator(&repo);
    list_recipients(&repo, &[DEMO_RECIPIENT, &bob]);

    let check = repo.xtask(&[], &["check", "example"]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(check.stderr.contains("updatekeys example` encrypts every file"), "{}", check.stderr);

    let run = repo.xtask(&[], &["secrets", "updatekeys", "example"]);
    run.assert_code(Some(0)).assert_no_private_key(false);
    assert!(run.stderr.contains("not verified with"), "bob's key is not here:\n{}", run.stderr);
    for (file, content) in files.iter().zip(&before) {
        let alone = decrypt_file(file, &bob_ids).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(alone.to_yaml().expose(), content, "{}", file.display());
        assert_eq!(
            sorted(inspect_file(file).unwrap().recipients),
            sorted(vec![DEMO_RECIPIENT.to_owned(), bob.clone()])
        );
    }
    // Only the new stanzas were added to the committed files: no line removed or changed.
    let diff = git(&root, &["diff", "--numstat", "--", "environments/example"]);
    for line in diff.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields[2].ends_with("secrets.enc.yaml") {
            assert_eq!(fields[1], "0", "lines removed from {}:\n{diff}", fields[2]);
        }
    }
    // Both operators pass the gate; a second run has nothing to do.
    repo.xtask(&[], &["check", "example"]).assert_code(Some(0));
    let bob_only = repo.xtask(&[("SOPS_AGE_KEY_FILE", bob_file.to_str().unwrap())], &["check", "example"]);
    bob_only.assert_code(Some(0));
    let again = repo.xtask(&[], &["secrets", "updatekeys", "example"]);
    again.assert_code(Some(0));
    assert!(again.stderr.contains("0 updated"), "{}", again.stderr);
}

#[test]
fn removing_a_recipient_gives_fresh_data_keys_and_unreadable_files_are_named() {
    let repo = KeysRepo::new();
    let root = repo.root();
    let (bob, bob_file, bob_ids) = second_operator(&repo);
    list_recipients(&repo, &[DEMO_RECIPIENT, &bob]);
    repo.xtask(&[], &["secrets", "updatekeys", "example"]).assert_code(Some(0));
    git(&root, &["commit", "-qam", "bob joins"]);

    // A file only a stranger can open: named, and the others are still updated.
    let stranger = generate_identity();
    let foreign = root.join("environments/example/opus/oob-consent/secrets.enc.yaml");
    let tree = decrypt_file(&foreign, &bob_ids).unwrap();
    std::fs::remove_file(&foreign).unwrap();
    platform::secrets::create_file(&foreign, std::slice::from_ref(&stranger.recipient), &tree).unwrap();

    // Bob leaves; the demo key (the key store) stays.
    list_recipients_from(&repo, &[DEMO_RECIPIENT, &bob], &[DEMO_RECIPIENT]);
    let run = repo.xtask(&[], &["secrets", "updatekeys", "example"]);
    run.assert_code(Some(1)).assert_no_private_key(false);
    assert!(
        run.stderr.contains("could not update environments/example/opus/oob-consent/secrets.enc.yaml")
            && run.stderr.contains("no key at hand opens it"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("fresh data key"), "{}", run.stderr);
    let demo = repo.identities(&root.join(DEMO_KEY));
    for file in encrypted_files(&root).into_iter().filter(|f| *f != foreign) {
        decrypt_file(&file, &demo).unwrap();
        assert!(decrypt_file(&file, &bob_ids).is_err(), "{} still opens with bob's key", file.display());
        assert_eq!(inspect_file(&file).unwrap().recipients, [DEMO_RECIPIENT]);
    }
    let _ = bob_file;
}

fn list_recipients_from(repo: &KeysRepo, from: &[&str], to: &[&str]) {
    let path = repo.root().join("environments/example/env.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let list = |items: &[&str]| items.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    let updated = text
        .replace(&format!("age_recipients = [{}]", list(from)), &format!("age_recipients = [{}]", list(to)));
    assert_ne!(updated, text);
    std::fs::write(&path, updated).unwrap();
}

/// A point inside a batch of `size` files: `written:k`, `flushed`, `renamed:k` or `done`.
fn batch_point(seed: &mut u64, size: usize) -> String {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    match (*seed >> 33) as usize % (2 * size + 2) {
        k if k < size => format!("written:{}", k + 1),
        k if k == size => "flushed".to_owned(),
        k if k <= 2 * size => format!("renamed:{}", k - size),
        _ => "done".to_owned(),
    }
}

#[test]
fn updatekeys_killed_at_every_phase_boundary_and_inside_each_batch_finishes_on_rerun() {
    let repo = KeysRepo::new();
    let root = repo.root();
    repo.xtask(&[], &["deploy", "example"]).assert_code(Some(0));
    let demo = repo.identities(&root.join(DEMO_KEY));
    let files = encrypted_files(&root);
    let before: Vec<String> =
        files.iter().map(|f| decrypt_file(f, &demo).unwrap().to_yaml().expose().to_owned()).collect();
    let (bob, _, bob_ids) = second_operator(&repo);
    list_recipients(&repo, &[DEMO_RECIPIENT, &bob]);

    // Batches of 4, of the files still to update in that run: every point of the first batch,
    // then `kill-batch:2:` at a random point of the second batch, which finishes one whole
    // batch per run, until one batch is left.
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let old = vec![DEMO_RECIPIENT.to_owned()];
    let new = sorted(vec![DEMO_RECIPIENT.to_owned(), bob.clone()]);
    let pending = || files.iter().filter(|f| sorted(inspect_file(f).unwrap().recipients) != new).count();
    let mut kills: Vec<String> = vec!["kill-at:planned".to_owned()];
    kills.extend(
        ["written:1", "written:4", "flushed", "renamed:1", "renamed:3", "done"]
            .map(|p| format!("kill-batch:1:{p}")),
    );
    let mut done = Vec::new();
    loop {
        let kill = match kills.get(done.len()) {
            Some(kill) => kill.clone(),
            None if pending() > 4 => {
                format!("kill-batch:2:{}", batch_point(&mut seed, (pending() - 4).min(4)))
            }
            None => break,
        };
        let failpoint = format!("batch-size:4,{kill}");
        let run = repo.xtask(&[("OPUS_FAILPOINT", &failpoint)], &["secrets", "updatekeys", "example"]);
        run.assert_code(None).assert_no_private_key(false);
        for (file, content) in files.iter().zip(&before) {
            let opened = decrypt_file(file, &demo).unwrap_or_else(|e| panic!("after {kill}: {e}"));
            assert_eq!(opened.to_yaml().expose(), content, "after {kill}: {}", file.display());
            let recipients = sorted(inspect_file(file).unwrap().recipients);
            assert!(
                recipients == old || recipients == new,
                "after {kill}: {} lists {recipients:?}",
                file.display()
            );
        }
        done.push(kill);
    }
    assert!(done.len() >= 8, "files.len() = {}: {done:?}", files.len());
    let kills = done;
    let run = repo.xtask(&[], &["secrets", "updatekeys", "example"]);
    run.assert_code(Some(0)).assert_no_private_key(false);
    for (file, content) in files.iter().zip(&before) {
        assert_eq!(decrypt_file(file, &bob_ids).unwrap().to_yaml().expose(), content, "{}", file.display());
        let leftover = platform::secrets::batch::batch_temp_path(file);
        assert!(!leftover.exists(), "{} is left (kills: {kills:?})", leftover.display());
    }
    repo.xtask(&[], &["check", "example"]).assert_code(Some(0));
}
