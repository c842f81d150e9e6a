//! `plan --out FILE` and `deploy ENV --plan FILE` on the `example` environment: the reviewed
//! plan deploys; a changed input, a moved journal or a tampered file is refused, naming what
//! differs; a plan made without keys (a pull request's CI) can be deployed with them; the file
//! holds no secret.

mod util;

use util::Repo;

const PLAN: &str = "reviewed.plan.json";

fn plan_out(repo: &Repo) -> String {
    let path = repo.root().join(PLAN);
    let run = repo.xtask(&["plan", "example", "--out", path.to_str().unwrap()]);
    run.assert_code(0);
    assert!(run.stderr.contains("wrote the plan to"), "{}", run.stderr);
    std::fs::read_to_string(&path).unwrap()
}

fn deploy_plan(repo: &Repo) -> util::Run {
    let path = repo.root().join(PLAN);
    repo.xtask(&["deploy", "example", "--plan", path.to_str().unwrap()])
}

#[test]
fn the_reviewed_plan_deploys_and_a_changed_input_or_a_moved_journal_is_refused() {
    let repo = Repo::shipped();
    let text = plan_out(&repo);
    // No secret: the example's admin password is in its secrets file, never in the plan file.
    let secrets = repo.root().join("environments/example/secrets.enc.yaml");
    let shown = repo.xtask(&["secrets", "show", secrets.to_str().unwrap()]);
    shown.assert_code(0);
    let password =
        shown.stdout.lines().find_map(|l| l.trim().strip_prefix("admin_password:")).expect("a password");
    let password = password.trim().trim_matches('"');
    assert!(password.len() >= 8, "{password}");
    assert!(!text.contains(password), "the plan file holds the admin password");
    assert!(text.contains("\"environments/example/opus/oob-consent/component.toml\": \"sha256:"), "{text}");
    assert!(text.contains("\"core:components/"), "the core's sources are digested");

    let run = deploy_plan(&repo);
    run.assert_code(0);
    assert!(run.stderr.contains("is the plan in"), "{}", run.stderr);
    // Made before the first deploy: no journal to pin, and the deploy says so.
    assert!(run.stderr.contains("the plan was made without the journal"), "{}", run.stderr);

    // A plan made with the journal, then a deploy without it: the file is now stale.
    plan_out(&repo);
    repo.replace(
        "environments/example/opus/oob-consent/component.toml",
        "demo = \"somestring\"",
        "demo = \"other\"",
    );
    repo.xtask(&["deploy", "example"]).assert_code(0);
    repo.replace(
        "environments/example/opus/oob-consent/component.toml",
        "demo = \"other\"",
        "demo = \"somestring\"",
    );
    let stale = deploy_plan(&repo);
    stale.assert_code(2);
    assert!(stale.stderr.contains("the journal moved since the plan was made"), "{}", stale.stderr);

    // Deployed as planned, then a new plan and a change of one input before its deploy.
    repo.xtask(&["deploy", "example"]).assert_code(0);
    plan_out(&repo);
    deploy_plan(&repo).assert_code(0);
    plan_out(&repo);
    repo.replace(
        "environments/example/opus/oob-consent/component.toml",
        "demo = \"somestring\"",
        "demo = \"changed-after-review\"",
    );
    let changed = deploy_plan(&repo);
    changed.assert_code(2);
    assert!(
        changed.stderr.contains("changed: environments/example/opus/oob-consent/component.toml"),
        "{}",
        changed.stderr
    );
    assert!(changed.stderr.contains("refusing to deploy it"), "{}", changed.stderr);
    // Nothing was deployed: the bundle still has the reviewed value.
    let values = repo.read("bundle/example/releases/opus/oob-consent/values.yaml");
    assert!(values.contains("somestring") && !values.contains("changed-after-review"), "{values}");

    // A component added after review is named too.
    repo.replace(
        "environments/example/opus/oob-consent/component.toml",
        "demo = \"changed-after-review\"",
        "demo = \"somestring\"",
    );
    repo.write("environments/example/opus/oob-status-b/component.toml", "template = \"oob-status\"\n");
    let added = deploy_plan(&repo);
    added.assert_code(2);
    assert!(
        added.stderr.contains("environments/example/opus/oob-status-b/component.toml"),
        "{}",
        added.stderr
    );
}

#[test]
fn a_tampered_or_foreign_plan_file_is_refused() {
    let repo = Repo::shipped();
    let text = plan_out(&repo);
    let path = repo.root().join(PLAN);
    // An input digest edited.
    let tampered = text.replacen("\"sha256:", "\"sha256:00", 1);
    std::fs::write(&path, &tampered).unwrap();
    let run = deploy_plan(&repo);
    run.assert_code(2);
    assert!(run.stderr.contains("changed: "), "{}", run.stderr);
    // The plan document edited (a step's fingerprint): the same inputs give another plan.
    let mut document: serde_json::Value = serde_json::from_str(&text).unwrap();
    document["plan"]["steps"][0]["fingerprint"] = serde_json::json!("2:00");
    std::fs::write(&path, serde_json::to_string(&document).unwrap()).unwrap();
    let run = deploy_plan(&repo);
    run.assert_code(2);
    assert!(run.stderr.contains("the same inputs give another plan"), "{}", run.stderr);
    // Not a plan file at all.
    std::fs::write(&path, "{\"kind\": \"something\"}").unwrap();
    let run = deploy_plan(&repo);
    run.assert_code(2);
    assert!(run.stderr.contains("not a plan file of `plan --out`"), "{}", run.stderr);
    // Nothing ran in all of that.
    assert!(!repo.root().join("bundle/example/index.json").exists());
}

#[test]
fn a_plan_made_without_keys_deploys_with_them() {
    let repo = Repo::shipped();
    // A pull request's CI: no key at all.
    let key = repo.root().join("environments/example/demo.agekey");
    let aside = repo.root().join("demo.agekey.aside");
    std::fs::rename(&key, &aside).unwrap();
    let text = plan_out(&repo);
    assert!(text.contains("\"secrets\": \"encrypted\""), "{text}");
    std::fs::rename(&aside, &key).unwrap();
    let run = deploy_plan(&repo);
    run.assert_code(0);
    assert!(run.stderr.contains("is the plan in"), "{}", run.stderr);
}

#[test]
fn every_deploy_records_who_deployed_which_commit_plan_and_ticket_and_status_shows_it() {
    let repo = Repo::shipped();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(repo.root())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "configuration"]);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo.root())
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();

    plan_out(&repo);
    let path = repo.root().join(PLAN);
    let digest = platform::load::tree::sha256_digest(&std::fs::read(&path).unwrap());
    repo.xtask(&["deploy", "example", "--plan", path.to_str().unwrap(), "--change-ref", "CHG-1234"])
        .assert_code(0);
    let status = repo.xtask(&["status", "example", "--format", "json"]);
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let last = &report["last_deploy"];
    assert_eq!(last["commit"], serde_json::json!(head), "{last}");
    assert_eq!(last["change_ref"], "CHG-1234", "{last}");
    assert_eq!(last["plan_file"], serde_json::json!(digest), "{last}");
    assert!(last["operator"].as_str().unwrap().contains('@'), "{last}");
    assert_eq!(last["steps"]["succeeded"], 38, "{last}");
    let text = repo.xtask(&["status", "example"]);
    assert!(text.stdout.contains("last deploy: by "), "{}", text.stdout);
    assert!(
        text.stdout.contains(&format!("commit {head}, change CHG-1234, plan file {digest}")),
        "{}",
        text.stdout
    );

    // An uncommitted change of the configuration is named as such; a no-op deploy is recorded.
    repo.write("environments/example/opus/oob-consent/NOTES.md", "why we changed it\n");
    repo.xtask(&["deploy", "example"]).assert_code(0);
    let report: serde_json::Value =
        serde_json::from_str(&repo.xtask(&["status", "example", "--format", "json"]).stdout).unwrap();
    assert_eq!(report["last_deploy"]["commit"], serde_json::json!(format!("{head}+dirty")));
    assert_eq!(report["last_deploy"]["change_ref"], serde_json::Value::Null);
    assert_eq!(report["last_deploy"]["steps"]["unchanged"], 38);
    // Both deploys are listed, newest first.
    let deploys = report["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 2, "{report}");
    assert_eq!(deploys[1]["change_ref"], "CHG-1234");
    let text = repo.xtask(&["status", "example"]).stdout;
    assert!(text.contains("last deploy: by ") && text.contains("     before: by "), "{text}");

    // The bundle's index keeps the last deploy that changed it; the no-op deploy left it.
    let index: serde_json::Value = serde_json::from_str(&repo.read("bundle/example/index.json")).unwrap();
    let change = &index["last_change"];
    assert_eq!(change["change_ref"], "CHG-1234", "{index}");
    assert_eq!(change["commit"], serde_json::json!(head), "{change}");
    assert_eq!(change["plan_file"], serde_json::json!(digest), "{change}");
    assert!(change["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{change}");
    assert_eq!(change["steps"]["create"], 38, "what it set out to do: {change}");
    let change = change.clone();
    // A deploy that changes something replaces it.
    repo.xtask(&[
        "deploy",
        "example",
        "--force-step",
        "opus/oob-consent/release",
        "--change-ref",
        "CHG-5678",
    ])
    .assert_code(0);
    let index: serde_json::Value = serde_json::from_str(&repo.read("bundle/example/index.json")).unwrap();
    assert_eq!(index["last_change"]["change_ref"], "CHG-5678", "{index}");
    assert_ne!(index["last_change"]["at"], change["at"], "{index}");

    // A ticket is one printable line.
    repo.xtask(&["deploy", "example", "--change-ref", "CHG-1\nrm -rf /"]).assert_code(2);
}
