//! Every command and flag of `cargo xtask`, in one place. The `///` comments are the `--help`
//! text, written for operators.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 the command ran and the work failed (check found errors, a step
failed); 2 the command could not start (bad usage, unknown environment, unreadable file);
130 interrupted (Ctrl-C).

Run `cargo xtask <COMMAND> --help` for a command's flags and examples.";

/// Opus Deploy: install and operate the Opus Open Finance Platform.
///
/// Environments live in `environments/` (client.toml, <env>/env.toml, <env>/<namespace>/
/// namespace.toml, <env>/<namespace>/<component>/component.toml); component templates live
/// in the core catalog (`components/`).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, after_help = AFTER_HELP)]
#[command(arg_required_else_help = true, disable_help_subcommand = true)]
pub struct Flags {
    /// The repository root (default: found from the current directory, or the one this
    /// binary was built in).
    #[arg(long, global = true, env = "OPUS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(CheckCmd),
    Plan(PlanCmd),
    Deploy(DeployCmd),
    Status(StatusCmd),
    Graph(GraphCmd),
    Schema(SchemaCmd),
    Secrets(SecretsCmd),
    Core(CoreCmd),
    Keys(KeysCmd),
    RotateKeys(RotateKeysCmd),
}

/// Verify environments (the pull-request gate; needs no keys).
///
/// Checks every file against its schema, every component against the catalog, dependencies,
/// cycles, the platform's rules and the secrets files' structure, and renders every template.
/// Every secrets file must be encrypted for exactly the recipients env.toml lists: after you
/// add or remove one, `cargo xtask secrets updatekeys ENV` re-encrypts the files for them.
/// Needs no network, except to fetch once the core of an environment pinned to a version that
/// is not cached yet (`cargo xtask core fetch` does that ahead of time).
///
/// Examples:
///   cargo xtask check              # every environment
///   cargo xtask check prod staging
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CheckCmd {
    /// Environments to check (default: all of them).
    #[arg(value_name = "ENV")]
    pub environments: Vec<String>,
}

/// Read and change SOPS-encrypted secrets files.
///
/// Works on `secrets.enc.yaml` files. Identities come from
/// `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, `~/.config/sops/age/keys.txt` (as with sops) and, for a
/// `directory` environment, its local key store; recipients come from the environment's
/// env.toml. Files stay readable by `sops`.
///
/// Examples:
///   cargo xtask secrets new environments/staging/opus/oob-consent/secrets.enc.yaml
///   cargo xtask secrets edit environments/staging/secrets.enc.yaml
///   cargo xtask secrets set environments/prod/secrets.enc.yaml database.admin_password   # asks for it
///   cargo xtask secrets show environments/example/secrets.enc.yaml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SecretsCmd {
    #[command(subcommand)]
    pub action: SecretsAction,
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Decrypt into a private temporary file, run `$EDITOR`, and re-encrypt when the content
    /// changed and is valid YAML; values left as they were keep their ciphertext, so the diff
    /// shows only what changed. Refused text (invalid YAML, a secret left in clear) is shown
    /// with its line and column and, on a terminal, the editor reopens on it. The original is
    /// kept on any failure; the temporary file (in `$XDG_RUNTIME_DIR` or `/dev/shm` when
    /// there is one) is removed on every path, Ctrl-C included, and what a killed edit left
    /// is removed by the next `secrets` command on the file.
    Edit {
        /// The secrets file.
        path: PathBuf,
    },
    /// Print the decrypted file to stdout.
    Show {
        /// The secrets file.
        path: PathBuf,
    },
    /// Set one value (a dotted key path) and re-encrypt; the other values keep their
    /// ciphertext. Without VALUE, asks for it twice on the terminal without echoing it, or
    /// reads it from stdin when that is not a terminal (as with `-`). An empty value is refused.
    ///
    /// Examples:
    ///   cargo xtask secrets set environments/prod/secrets.enc.yaml database.admin_password
    ///   printf %s "$PASSWORD" | cargo xtask secrets set environments/prod/secrets.enc.yaml database.admin_password
    #[command(verbatim_doc_comment)]
    Set {
        /// The secrets file.
        path: PathBuf,
        /// Dotted key path, e.g. `db.password`.
        key: String,
        /// The value; leave it out (or give `-` to read stdin), which keeps it out of shell
        /// history and process lists.
        value: Option<String>,
    },
    /// Encrypt every secrets file of an environment (and its directory bundle's encrypted
    /// files) for exactly the recipients env.toml lists, after you added one (a second
    /// operator, a break-glass key) or removed one. Adding keeps each file's data key (only
    /// stanzas are added: a small diff); removing gives the file a fresh data key. Each file is
    /// verified in memory with every listed recipient whose key you hold, then written in
    /// crash-safe batches; a rerun after a crash finishes the work. Files no key of yours opens
    /// are named (exit 1) and the others still updated. Takes the deploy lock.
    ///
    /// Examples:
    ///   # add a break-glass key: list it in age_recipients, then
    ///   cargo xtask secrets updatekeys prod
    ///   git add -A environments/prod && git commit -m "prod: add the break-glass key"
    #[command(verbatim_doc_comment)]
    Updatekeys {
        /// The environment.
        environment: String,
        /// Do not ask for confirmation on a protected environment (required without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Create a secrets file for a component (or the environment) with every key its template
    /// requires, each set to a freshly generated random value; replace the ones that must match
    /// the outside world (e.g. `database.admin_password`) with `secrets set`.
    New {
        /// Where to create it: `environments/<env>/secrets.enc.yaml` or
        /// `environments/<env>/<namespace>/<component>/secrets.enc.yaml`.
        path: PathBuf,
    },
}

/// Show what a deploy would do, step by step.
///
/// Compiles the environment into its plan and prints every step in execution order with
/// what will happen to it (create, update or unchanged, against the journal of the last
/// deploy; drifted when the target no longer holds what the journal recorded) and, for
/// updates, the changed values by YAML path, then what left the configuration (deleted, or
/// retained and why). Secrets show as `(sensitive)` or `(sensitive, changed)`, never in clear.
/// Works without keys (sensitive values are then compared by their ciphertexts) and without
/// access to the target (the plan then says the live state was not observed).
///
/// Examples:
///   cargo xtask plan staging
///   cargo xtask plan staging --no-refresh       # the journal only, without looking
///   cargo xtask plan prod --format json > plan.json
///   cargo xtask plan prod --base origin/main --format markdown   # a PR comment
///   cargo xtask plan prod --detailed-exitcode   # exit 0: no changes, 2: changes, 1: error
///   cargo xtask plan prod --out prod.plan.json  # then: cargo xtask deploy prod --plan prod.plan.json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlanCmd {
    /// The environment.
    pub environment: String,
    /// Do not observe the target: compare with the journal only.
    #[arg(long)]
    pub no_refresh: bool,
    /// Exit 0 when the plan has no changes, 2 when it has some, 1 on any error (for CI).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also write the plan to FILE with a digest of every input it was compiled from (never a
    /// secret), for `deploy ENV --plan FILE` to deploy exactly it.
    #[arg(long, value_name = "FILE", conflicts_with = "base")]
    pub out: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Compare with the same environment at this git revision (a branch, tag or commit),
    /// read from git without touching the working tree.
    #[arg(long, value_name = "GITREV")]
    pub base: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// Draw an environment's component and step graph.
///
/// Examples:
///   cargo xtask graph staging                  # Mermaid, for Markdown viewers
///   cargo xtask graph prod --format dot | dot -Tsvg > prod.svg
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GraphCmd {
    /// The environment.
    pub environment: String,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
    /// Draw components only (one node per component) instead of every step.
    #[arg(long)]
    pub components: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// Write JSON Schemas and a .taplo.toml for editors.
///
/// One schema per kind of TOML file (client.toml, env.toml, namespace.toml, component.toml, and
/// one per component template with its typed inputs) plus a `.taplo.toml` that maps them, so
/// editors complete and validate the files as you type.
///
/// Examples:
///   cargo xtask schema            # writes schemas/ and .taplo.toml
///   cargo xtask schema --check    # fails when they are out of date (for CI)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SchemaCmd {
    /// Only check that the written files are up to date.
    #[arg(long)]
    pub check: bool,
}

/// Deploy an environment, resuming where the last deploy stopped.
///
/// Compiles and verifies the plan, observes the target (a bulk, read-only refresh), shows
/// the summary, asks for confirmation on a protected environment, then runs every step in
/// dependency order with a journal. Steps whose fingerprint equals a recorded success are
/// skipped unless the target no longer holds what they did (drifted: a release uninstalled,
/// a file edited); a release's readiness wait runs whenever the release ran. So a rerun
/// after a failure or a crash resumes where it stopped, a drifted target is repaired, and an
/// unchanged deploy does nothing. After a complete run, what the
/// target's inventory lists and the configuration no longer has is removed.
///
/// Examples:
///   cargo xtask deploy example
///   cargo xtask deploy staging --only oob-consent       # and what it depends on
///   cargo xtask deploy prod --yes --jobs 8 --output json
///   cargo xtask deploy staging --force-step opus/oob-consent/release
///   cargo xtask deploy staging --force                  # rerun every step
///   cargo xtask deploy prod --plan prod.plan.json --change-ref CHG-1234
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DeployCmd {
    /// The environment.
    pub environment: String,
    /// Steps to run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Deploy only these components (`component` or `namespace/component`) and what they
    /// depend on.
    #[arg(long, value_name = "COMPONENT", num_args = 1..)]
    pub only: Vec<String>,
    /// Run this step even if the journal says it is unchanged (repeatable).
    #[arg(long, value_name = "STEP_ID")]
    pub force_step: Vec<String>,
    /// Run every step, whatever the journal and the target say.
    #[arg(long, conflicts_with = "force_step")]
    pub force: bool,
    /// Do not observe the target before deploying: trust the journal (drift is not repaired).
    #[arg(long)]
    pub no_refresh: bool,
    /// Deploy only if the environment still compiles to this reviewed plan (`plan --out`):
    /// every input file unchanged and the journal where it stood; otherwise refuse, naming
    /// what differs.
    #[arg(long, value_name = "FILE", conflicts_with = "only")]
    pub plan: Option<std::path::PathBuf>,
    /// The change ticket this deploy belongs to (recorded in the journal; `status` shows it).
    #[arg(long, value_name = "TICKET", value_parser = parse_change_ref)]
    pub change_ref: Option<String>,
    /// Drop the databases and roles of components that left the configuration (by default
    /// they are retained, with their data).
    #[arg(long)]
    pub prune_databases: bool,
    /// Take over a target last deployed from another journal (its lineage is replaced by this
    /// journal's; without it such a deploy is refused, naming both).
    #[arg(long)]
    pub adopt: bool,
    /// Do not ask for confirmation on a protected environment (required without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Progress format: `auto` (bars on a terminal, lines otherwise), `plain` or `json`
    /// (one JSON object per line on stdout; on a kube target the final summary counts the API
    /// requests sent, by HTTP verb, as `api_requests`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
    /// Drop a torn last record from the journal (left by a crash while writing it) and go on.
    #[arg(long)]
    pub repair_journal: bool,
}

/// A change ticket: one line of printable text, at most 200 characters.
fn parse_change_ref(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 200 || text.chars().any(char::is_control) {
        return Err(
            "a change reference is one line of 1 to 200 printable characters (e.g. CHG-1234)".to_owned()
        );
    }
    Ok(text.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Auto,
    Plain,
    Json,
}

/// Show what the journal says, step by step, and what would change.
///
/// Reads the journal of the environment's last deploys, observes the target, and compares
/// both with the current configuration: drifted steps are named with the reason.
///
/// Examples:
///   cargo xtask status staging
///   cargo xtask status staging --no-refresh
///   cargo xtask status prod --format json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusCmd {
    /// The environment.
    pub environment: String,
    /// Do not observe the target: compare with the journal only.
    #[arg(long)]
    pub no_refresh: bool,
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}
/// Fetch and list the cores environments are pinned to.
///
/// `core` in env.toml is `example` (this checkout) or a version such as `1.4.0`: tag `v1.4.0` of `[core] repository` in client.toml, fetched
/// once into a cache outside the repository ($OPUS_CORE_CACHE, else
/// $XDG_CACHE_HOME/opus-deploy/cores, else ~/.cache/opus-deploy/cores) and pinned to the commit
/// the tag had then: a tag that moves later is refused, never followed. Every command on such an
/// environment runs that core's own xtask (built once, then reused), so staging can run a newer
/// core than prod from the same repository. Once fetched, nothing needs the network.
///
/// Examples:
///   cargo xtask core fetch prod     # pre-fetch before going offline; verify the tag did not move
///   cargo xtask core list
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CoreCmd {
    #[command(subcommand)]
    pub command: CoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum CoreCommand {
    Fetch(CoreFetchCmd),
    List(CoreListCmd),
}

/// Fetch, pin and check out the core of environments and print its commit. Always contacts the
/// core repository, so it also verifies that a pinned tag has not moved.
///
/// Examples:
///   cargo xtask core fetch              # every environment that pins a version
///   cargo xtask core fetch staging
///   cargo xtask core fetch prod --accept-moved-tag
#[derive(Debug, Args)]
pub struct CoreFetchCmd {
    /// Environments whose core to fetch (default: every environment that pins a version).
    #[arg(value_name = "ENV")]
    pub environments: Vec<String>,
    /// Re-pin a tag that moved to the commit it points at now. Review the change first: the
    /// environment will run different code under the same version.
    #[arg(long)]
    pub accept_moved_tag: bool,
}

/// List the cached cores: commit, tags, size on disk, whether built, and the environments of
/// this repository that use each.
///
/// Example:
///   cargo xtask core list
#[derive(Debug, Args)]
pub struct CoreListCmd {}

/// Create, save, back up or restore an environment's age key.
///
/// Creates a new environment's first key, copies the key from the key store (the cluster's
/// Secret, a `flux` environment's decryption Secret when its target names a `context`, or a
/// local key store file) into your local key file, prints it as JSON for a backup, restores
/// it from that backup, or retires the previous key a `flux` rotation kept. The local key file
/// is `SOPS_AGE_KEY_FILE`, else `~/.config/sops/age/keys.txt`.
///
/// Examples:
///   cargo xtask keys new sandbox
///   cargo xtask keys save staging
///   cargo xtask keys get prod > /secure/backup/prod-age-key.json
///   cargo xtask keys restore prod < /secure/backup/prod-age-key.json
///   cargo xtask keys retire prod-flux
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KeysCmd {
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a new environment's first key pair: the private key goes into your local key
    /// file (created 0600) and into the key store: a `key_store` file, or a `flux` target's
    /// decryption Secret in its cluster (`context`); the public key becomes `age_recipients`
    /// in env.toml (the only line changed). Refuses an environment that already has
    /// recipients (`rotate-keys` replaces a key; add a recipient to `age_recipients` and run
    /// `secrets updatekeys` to add one) and a key store that already holds a key. A `kube`
    /// target's deploy stores the key in the cluster. Back the key up afterwards with `keys
    /// get`.
    ///
    /// Examples:
    ///   cargo xtask keys new staging
    #[command(verbatim_doc_comment)]
    New {
        /// The environment.
        environment: String,
    },
    /// Restore a key from a backup that `keys get` printed, read from stdin: into your local
    /// key file and the environment's key store. Refuses a key that does not decrypt every
    /// secrets file of the environment, one env.toml does not list, and a key store that holds
    /// another key.
    ///
    /// Examples:
    ///   cargo xtask keys restore prod < /secure/backup/prod-age-key.json
    #[command(verbatim_doc_comment)]
    Restore {
        /// The environment.
        environment: String,
    },
    /// Add the environment's private key to the local key file (created with mode 0600; the
    /// keys already there are kept as they are; a key already there is not added again).
    Save {
        /// The environment.
        environment: String,
    },
    /// Print a JSON document for backup (environment, cluster, public key, private key,
    /// creation time) to stdout. Refuses to print to a terminal unless `--force`, so the
    /// private key does not land in scrollback by accident.
    Get {
        /// The environment.
        environment: String,
        /// Print even when stdout is a terminal.
        #[arg(long)]
        force: bool,
    },
    /// Remove the previous key that `rotate-keys` kept in a `flux` target's decryption Secret,
    /// once Flux no longer needs it. Refuses while a rotation is unfinished, while a file of
    /// the environment or its tree is still encrypted for the previous key, while the tree has
    /// uncommitted changes, and until every Kustomization of the tree is Ready at a revision
    /// that contains the last commit of the tree (`git fetch` first if that revision is not
    /// in your clone).
    ///
    /// Examples:
    ///   cargo xtask keys retire prod-flux
    ///   cargo xtask keys retire prod-flux --force   # skip the tree and cluster checks
    #[command(verbatim_doc_comment)]
    Retire {
        /// The environment.
        environment: String,
        /// Retire without checking the tree and its Kustomizations (Flux then cannot decrypt
        /// what is still encrypted for the previous key).
        #[arg(long)]
        force: bool,
    },
}

/// Rotate an environment's age key, crash-safe and resumable.
///
/// Generates a new identity, store it in the key store (the
/// previous key is kept until the end) and in your local key file, re-encrypt every secrets
/// file of the environment for it, update `age_recipients` in env.toml, verify every file,
/// then retire the old key (a `flux` target's decryption Secret keeps it, for Flux to decrypt
/// the committed tree, until `keys retire`; the next `deploy` re-encrypts the tree). Takes the environment's deploy lock. Crash-safe: an interrupted
/// rotation is completed by running the command again. Refuses to start when a secrets file
/// cannot be decrypted or has uncommitted changes. Back up the new key afterwards
/// (`cargo xtask keys get ENV`).
///
/// Examples:
///   cargo xtask rotate-keys staging
///   cargo xtask rotate-keys prod --commit    # commits the changed files, then `git push`
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RotateKeysCmd {
    /// The environment.
    pub environment: String,
    /// Commit exactly the changed files with the message "Encryption keys rotation".
    #[arg(long)]
    pub commit: bool,
    /// Do not ask for confirmation on a protected environment (required without a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// What a command acts on, for routing it to the environment's pinned core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One environment, by name.
    Environment(String),
    /// A secrets file: its environment decides.
    SecretsFile(PathBuf),
    /// `check`: the environments named (all of them when empty).
    Environments(Vec<String>),
    /// Nothing environment-specific (`core`, `schema`).
    Repository,
}

impl Command {
    /// What the command acts on.
    pub fn subject(&self) -> Subject {
        match self {
            Command::Check(cmd) => Subject::Environments(cmd.environments.clone()),
            Command::Plan(PlanCmd { environment, .. })
            | Command::Deploy(DeployCmd { environment, .. })
            | Command::Status(StatusCmd { environment, .. })
            | Command::Graph(GraphCmd { environment, .. })
            | Command::RotateKeys(RotateKeysCmd { environment, .. }) => {
                Subject::Environment(environment.clone())
            }
            Command::Keys(cmd) => Subject::Environment(cmd.action.environment().to_owned()),
            Command::Secrets(SecretsCmd { action: SecretsAction::Updatekeys { environment, .. } }) => {
                Subject::Environment(environment.clone())
            }
            Command::Secrets(cmd) => {
                Subject::SecretsFile(cmd.action.path().unwrap_or(std::path::Path::new("")).to_owned())
            }
            Command::Core(_) | Command::Schema(_) => Subject::Repository,
        }
    }

    /// Whether the command loads and verifies its environment before doing anything with it
    /// (so it reports an invalid `core` with its place).
    pub fn verifies_environment(&self) -> bool {
        matches!(
            self,
            Command::Check(_)
                | Command::Plan(_)
                | Command::Deploy(_)
                | Command::Status(_)
                | Command::Graph(_)
        )
    }
}

impl CheckCmd {
    /// The arguments that run this `check` on `environments` (its only flags).
    pub fn args_for(environments: &[String]) -> Vec<std::ffi::OsString> {
        std::iter::once("check".into()).chain(environments.iter().map(Into::into)).collect()
    }
}

impl SecretsAction {
    /// The secrets file the action works on (`updatekeys` works on an environment).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SecretsAction::Edit { path }
            | SecretsAction::Show { path }
            | SecretsAction::Set { path, .. }
            | SecretsAction::New { path } => Some(path),
            SecretsAction::Updatekeys { .. } => None,
        }
    }
}

impl KeysAction {
    /// The environment whose key the action handles.
    pub fn environment(&self) -> &str {
        match self {
            KeysAction::Save { environment }
            | KeysAction::Get { environment, .. }
            | KeysAction::New { environment }
            | KeysAction::Restore { environment }
            | KeysAction::Retire { environment, .. } => environment,
        }
    }
}
