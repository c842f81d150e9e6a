//! The Helm driver: installs, upgrades and renders Helm releases by running the `helm` binary
//! through `duct`.
//!
//! Values reach helm only on its standard input (`--values -`), never in a file or a `--set`
//! argument, because they may hold secrets: a process's arguments are readable by every user of
//! the machine (`/proc/<pid>/cmdline`). Helm's stdout and stderr are always captured, never
//! inherited, and shown only inside a [`HelmError`], scrubbed by a [`Redactor`].
//!
//! Before an upgrade the driver reads the release's status: a release left in a `pending-*`
//! state by an interrupted helm refuses every further upgrade, so we stop early and name the
//! exact recovery command instead of letting helm fail with "another operation is in progress".
//!
//! Interruption: helm runs in our process group with its own stdin pipe (never the terminal's),
//! so a Ctrl-C on the terminal reaches helm directly as SIGINT; helm cancels its operation and,
//! thanks to `--atomic`, rolls the release back. Our side only waits. If helm is killed hard
//! (SIGKILL, power loss) the release may stay `pending-*`, which the status check of the next run
//! reports with its recovery command. A helm that outlives its own `--timeout` by
//! [`KILL_GRACE`] is killed by us.
//!
//! These functions block; call them from `tokio::task::spawn_blocking` in async code.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::program::Program;
use crate::sensitive::{Redactor, SecretString};

/// Environment variable naming the helm binary to use, ahead of `.tools/bin/helm` and `PATH`.
pub const HELM_ENV_VAR: &str = "OPUS_HELM";

/// How long past its own `--timeout` we let helm run before killing it.
pub const KILL_GRACE: Duration = Duration::from_secs(120);

/// How much of helm's output (the end of it) an error keeps.
const MAX_OUTPUT_IN_ERROR: usize = 8 * 1024;

/// Errors of the Helm driver. Captured output in them is already redacted.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error(
        "could not run helm ({binary}) for {action} of release `{release}`{}",
        not_found_hint(binary, source)
    )]
    Spawn {
        binary: Program,
        action: &'static str,
        release: String,
        #[source]
        source: io::Error,
    },
    #[error("helm {action} of release `{release}` in namespace `{namespace}` failed ({status})\n{output}")]
    Failed { action: &'static str, release: String, namespace: String, status: String, output: String },
    #[error(
        "helm {action} of release `{release}` in namespace `{namespace}` did not finish within {waited_secs}s and was killed; the release may be left pending"
    )]
    TimedOut { action: &'static str, release: String, namespace: String, waited_secs: u64 },
    #[error(
        "release `{release}` in namespace `{namespace}` is stuck in {state} (revision {revision}); recover with `{recovery}`"
    )]
    PendingRelease { release: String, namespace: String, state: String, revision: u64, recovery: String },
    #[error("could not read the output of helm {action} for release `{release}`")]
    Parse {
        action: &'static str,
        release: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where to find helm and which cluster it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmContext {
    pub binary: Program,
    /// `--kube-context`; helm's default context when `None`.
    pub kube_context: Option<String>,
    /// `--kubeconfig`; helm's default (`$KUBECONFIG`, `~/.kube/config`) when `None`.
    pub kubeconfig: Option<PathBuf>,
}

impl HelmContext {
    /// A context with helm's default cluster settings.
    pub fn new(binary: impl Into<Program>) -> HelmContext {
        HelmContext { binary: binary.into(), kube_context: None, kubeconfig: None }
    }
}

/// Finds the helm binary: `$OPUS_HELM` if set (a bare name is looked up on `PATH`, anything
/// else is a path), else `<repo_root>/.tools/bin/helm` if it exists, else `helm` on `PATH`.
pub fn find_helm(repo_root: Option<&Path>) -> Program {
    choose_helm(std::env::var_os(HELM_ENV_VAR).as_deref(), repo_root)
}

/// [`find_helm`] with the value of `$OPUS_HELM` passed in.
pub fn choose_helm(opus_helm: Option<&OsStr>, repo_root: Option<&Path>) -> Program {
    if let Some(setting) = opus_helm.filter(|p| !p.is_empty()) {
        return Program::from_setting(setting);
    }
    if let Some(root) = repo_root {
        let local = root.join(".tools").join("bin").join("helm");
        if local.is_file() {
            return Program::At(local);
        }
    }
    Program::OnPath("helm".into())
}

/// The hint a failed spawn gets when the program does not exist.
fn not_found_hint(binary: &Program, source: &io::Error) -> &'static str {
    match (binary, source.kind()) {
        (Program::OnPath(_), io::ErrorKind::NotFound) => {
            ": no helm on PATH (install helm v3, run scripts/install-tools.sh, or set OPUS_HELM to its path)"
        }
        (Program::At(_), io::ErrorKind::NotFound) => ": that file does not exist (check OPUS_HELM)",
        _ => "",
    }
}

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSource {
    /// A chart in a classic chart repository: `--repo URL` and the chart's name.
    Repository { url: String, chart: String },
    /// A chart in an OCI registry: `oci://registry/path/chart`.
    Oci { reference: String },
    /// A chart directory or packaged `.tgz` on disk.
    Local { path: PathBuf },
}

/// A chart and the version to install (ignored for local charts, which have exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartRef {
    pub source: ChartSource,
    pub version: Option<String>,
}

/// A release: its name and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
}

/// The merged values of a release, as YAML. Kept as a [`SecretString`] because it may hold
/// secrets (`values_sensitive_custom`, passwords), so it never shows in `Debug` output.
#[derive(Debug, Clone)]
pub struct HelmValues {
    yaml: SecretString,
}

impl HelmValues {
    pub fn from_yaml(yaml: SecretString) -> HelmValues {
        HelmValues { yaml }
    }

    /// The YAML text; it goes only to helm's stdin.
    pub fn expose_yaml(&self) -> &str {
        self.yaml.expose()
    }
}

/// Options of `helm upgrade --install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeOptions {
    /// `--timeout`: how long helm waits for the release's resources (and a rollback).
    pub timeout: Duration,
    /// `--create-namespace`.
    pub create_namespace: bool,
}

impl Default for UpgradeOptions {
    fn default() -> UpgradeOptions {
        UpgradeOptions { timeout: Duration::from_secs(300), create_namespace: false }
    }
}

/// The state of a release as `helm status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStatus {
    pub name: String,
    pub namespace: String,
    /// The revision the status describes (helm's `version`).
    pub revision: u64,
    /// `deployed`, `failed`, `pending-install`, `pending-upgrade`, `pending-rollback`, ...
    pub state: String,
}

impl ReleaseStatus {
    pub fn is_pending(&self) -> bool {
        self.state.starts_with("pending-")
    }
}

/// One line of `helm history -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    pub status: String,
}

#[derive(Deserialize)]
struct StatusJson {
    name: String,
    namespace: String,
    version: u64,
    info: StatusInfoJson,
}

#[derive(Deserialize)]
struct StatusInfoJson {
    status: String,
}

/// Parses the output of `helm status RELEASE -o json`.
pub fn parse_release_status(json: &str) -> Result<ReleaseStatus, serde_json::Error> {
    let status: StatusJson = serde_json::from_str(json)?;
    Ok(ReleaseStatus {
        name: status.name,
        namespace: status.namespace,
        revision: status.version,
        state: status.info.status,
    })
}

/// Parses the output of `helm history RELEASE -o json`.
pub fn parse_history(json: &str) -> Result<Vec<HistoryEntry>, serde_json::Error> {
    serde_json::from_str(json)
}

/// The command that unblocks a release stuck in a pending state, or `None` when it is not
/// pending. A pending install has nothing to go back to, so it is uninstalled; a pending
/// upgrade or rollback goes back to the last revision that was deployed (from `history`, else
/// the one before the pending revision).
pub fn recovery_command(status: &ReleaseStatus, history: &[HistoryEntry]) -> Option<String> {
    let release = &status.name;
    let namespace = &status.namespace;
    match status.state.as_str() {
        "pending-install" => Some(format!("helm uninstall {release} -n {namespace}")),
        "pending-upgrade" | "pending-rollback" => {
            let target = history
                .iter()
                .filter(|h| h.revision < status.revision)
                .filter(|h| h.status == "deployed" || h.status == "superseded")
                .map(|h| h.revision)
                .max()
                .unwrap_or(status.revision.saturating_sub(1).max(1));
            Some(format!("helm rollback {release} {target} -n {namespace}"))
        }
        _ => None,
    }
}

fn cluster_args(context: &HelmContext, args: &mut Vec<OsString>) {
    if let Some(kube_context) = &context.kube_context {
        args.push("--kube-context".into());
        args.push(kube_context.into());
    }
    if let Some(kubeconfig) = &context.kubeconfig {
        args.push("--kubeconfig".into());
        args.push(kubeconfig.into());
    }
}

fn chart_args(chart: &ChartRef, args: &mut Vec<OsString>) {
    match &chart.source {
        ChartSource::Repository { url, chart: name } => {
            args.push(name.into());
            args.push("--repo".into());
            args.push(url.into());
        }
        ChartSource::Oci { reference } => args.push(reference.into()),
        ChartSource::Local { path } => args.push(path.into()),
    }
    if let (false, Some(version)) = (matches!(chart.source, ChartSource::Local { .. }), &chart.version) {
        args.push("--version".into());
        args.push(version.into());
    }
}

/// The arguments of `helm upgrade --install` (without the binary). Values are not among them:
/// they go on stdin.
pub fn upgrade_install_args(
    context: &HelmContext,
    release: &Release,
    chart: &ChartRef,
    options: &UpgradeOptions,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["upgrade".into(), "--install".into(), (&release.name).into()];
    chart_args(chart, &mut args);
    args.extend(
        [
            "--namespace",
            &release.namespace,
            "--values",
            "-",
            "--atomic",
            "--timeout",
            &format!("{}s", options.timeout.as_secs().max(1)),
        ]
        .map(OsString::from),
    );
    if options.create_namespace {
        args.push("--create-namespace".into());
    }
    cluster_args(context, &mut args);
    args
}

/// The arguments of `helm template` (without the binary). Values go on stdin.
pub fn template_args(release: &Release, chart: &ChartRef) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["template".into(), (&release.name).into()];
    chart_args(chart, &mut args);
    args.extend(["--namespace", &release.namespace, "--values", "-"].map(OsString::from));
    args
}

/// The arguments of `helm uninstall RELEASE -n NS --wait --timeout Ns`.
pub fn uninstall_args(context: &HelmContext, release: &Release, timeout: Duration) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["uninstall", &release.name, "--namespace", &release.namespace, "--wait"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(["--timeout".into(), format!("{}s", timeout.as_secs().max(1)).into()]);
    cluster_args(context, &mut args);
    args
}

/// The arguments of `helm status RELEASE -n NS -o json`.
pub fn status_args(context: &HelmContext, release: &Release) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["status", &release.name, "--namespace", &release.namespace]
        .into_iter()
        .chain(["--output", "json"])
        .map(OsString::from)
        .collect();
    cluster_args(context, &mut args);
    args
}

fn history_args(context: &HelmContext, release: &Release) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["history", &release.name, "--namespace", &release.namespace]
        .into_iter()
        .chain(["--output", "json", "--max", "20"])
        .map(OsString::from)
        .collect();
    cluster_args(context, &mut args);
    args
}

/// The captured result of a helm run.
struct Captured {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// What one helm invocation is, for running it and for naming it in errors.
struct Invocation<'a> {
    context: &'a HelmContext,
    action: &'static str,
    release: &'a Release,
    args: Vec<OsString>,
    stdin: Option<&'a HelmValues>,
    wait_limit: Option<Duration>,
}

fn run_helm(invocation: Invocation<'_>) -> Result<Captured, HelmError> {
    let Invocation { context, action, release, args, stdin, wait_limit } = invocation;
    let spawn_error = |source: io::Error| HelmError::Spawn {
        binary: context.binary.clone(),
        action,
        release: release.name.clone(),
        source,
    };
    let expression =
        duct::cmd(context.binary.executable(), args).stdout_capture().stderr_capture().unchecked();
    // Always a pipe of our own: helm never reads the terminal, and the values never touch
    // the disk or the argument list.
    let expression = match stdin {
        Some(values) => expression.stdin_bytes(values.expose_yaml().as_bytes().to_vec()),
        None => expression.stdin_null(),
    };
    let handle = expression.start().map_err(spawn_error)?;
    let output = match wait_limit {
        None => handle.wait().map_err(spawn_error)?,
        Some(limit) => match handle.wait_timeout(limit).map_err(spawn_error)? {
            Some(output) => output,
            None => {
                // Best effort: the error we return matters more than a failed kill.
                let _ = handle.kill();
                let _ = handle.wait();
                return Err(HelmError::TimedOut {
                    action,
                    release: release.name.clone(),
                    namespace: release.namespace.clone(),
                    waited_secs: limit.as_secs(),
                });
            }
        },
    };
    Ok(Captured {
        success: output.status.success(),
        status: output.status.to_string(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Helm's output for an error message: stdout then stderr, redacted, the end kept.
fn output_for_error(captured: &Captured, redactor: &Redactor) -> String {
    let mut text = String::new();
    for part in [&captured.stdout, &captured.stderr] {
        let part = part.trim_end();
        if !part.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(part);
        }
    }
    let text = redactor.redact(&text);
    if text.len() <= MAX_OUTPUT_IN_ERROR {
        return text;
    }
    let mut start = text.len() - MAX_OUTPUT_IN_ERROR;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... output cut ...]\n{}", &text[start..])
}

fn failed(action: &'static str, release: &Release, captured: &Captured, redactor: &Redactor) -> HelmError {
    HelmError::Failed {
        action,
        release: release.name.clone(),
        namespace: release.namespace.clone(),
        status: captured.status.clone(),
        output: output_for_error(captured, redactor),
    }
}

/// Reads the release's status; `None` when the release does not exist.
pub fn release_status(
    context: &HelmContext,
    release: &Release,
    redactor: &Redactor,
) -> Result<Option<ReleaseStatus>, HelmError> {
    let action = "status";
    let captured = run_helm(Invocation {
        context,
        action,
        release,
        args: status_args(context, release),
        stdin: None,
        wait_limit: None,
    })?;
    if !captured.success {
        if captured.stderr.contains("release: not found") {
            return Ok(None);
        }
        return Err(failed(action, release, &captured, redactor));
    }
    parse_release_status(&captured.stdout).map(Some).map_err(|source| HelmError::Parse {
        action,
        release: release.name.clone(),
        source,
    })
}

/// Fails with [`HelmError::PendingRelease`] when the release is stuck in a pending state.
pub fn ensure_not_pending(
    context: &HelmContext,
    release: &Release,
    redactor: &Redactor,
) -> Result<(), HelmError> {
    let Some(status) = release_status(context, release, redactor)? else {
        return Ok(());
    };
    if !status.is_pending() {
        return Ok(());
    }
    let history = if status.state == "pending-install" {
        Vec::new()
    } else {
        let action = "history";
        let captured = run_helm(Invocation {
            context,
            action,
            release,
            args: history_args(context, release),
            stdin: None,
            wait_limit: None,
        })?;
        if !captured.success {
            return Err(failed(action, release, &captured, redactor));
        }
        parse_history(&captured.stdout).map_err(|source| HelmError::Parse {
            action,
            release: release.name.clone(),
            source,
        })?
    };
    let recovery = recovery_command(&status, &history).unwrap_or_default();
    Err(HelmError::PendingRelease {
        release: release.name.clone(),
        namespace: release.namespace.clone(),
        state: status.state,
        revision: status.revision,
        recovery,
    })
}

/// Installs or upgrades a release (`helm upgrade --install --atomic`), values on stdin, after
/// checking that the release is not stuck in a pending state. Returns helm's stdout, redacted.
pub fn upgrade_install(
    context: &HelmContext,
    release: &Release,
    chart: &ChartRef,
    values: &HelmValues,
    options: &UpgradeOptions,
    redactor: &Redactor,
) -> Result<String, HelmError> {
    ensure_not_pending(context, release, redactor)?;
    let action = "upgrade --install";
    let captured = run_helm(Invocation {
        context,
        action,
        release,
        args: upgrade_install_args(context, release, chart, options),
        stdin: Some(values),
        wait_limit: Some(options.timeout + KILL_GRACE),
    })?;
    if !captured.success {
        return Err(failed(action, release, &captured, redactor));
    }
    Ok(redactor.redact(&captured.stdout))
}

/// Uninstalls a release (`helm uninstall --wait`); a release that is already gone is not an
/// error.
pub fn uninstall(context: &HelmContext, release: &Release, timeout: Duration) -> Result<(), HelmError> {
    let action = "uninstall";
    let captured = run_helm(Invocation {
        context,
        action,
        release,
        args: uninstall_args(context, release, timeout),
        stdin: None,
        wait_limit: Some(timeout + KILL_GRACE),
    })?;
    if !captured.success && !captured.stderr.contains("not found") {
        return Err(failed(action, release, &captured, &Redactor::new()));
    }
    Ok(())
}

/// Renders a release's manifests locally (`helm template`), values on stdin. The result holds
/// whatever secrets the values put into the manifests: it is not redacted.
pub fn template(
    context: &HelmContext,
    release: &Release,
    chart: &ChartRef,
    values: &HelmValues,
    redactor: &Redactor,
) -> Result<String, HelmError> {
    let action = "template";
    let captured = run_helm(Invocation {
        context,
        action,
        release,
        args: template_args(release, chart),
        stdin: Some(values),
        wait_limit: None,
    })?;
    if !captured.success {
        return Err(failed(action, release, &captured, redactor));
    }
    Ok(captured.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release { name: "oob-consent".into(), namespace: "oob".into() }
    }

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn upgrade_args_use_repo_flag_for_repository_charts() {
        let mut context = HelmContext::new("helm");
        context.kube_context = Some("prod".into());
        context.kubeconfig = Some("/k/config".into());
        let chart = ChartRef {
            source: ChartSource::Repository {
                url: "https://charts.example.invalid".into(),
                chart: "oob-consent".into(),
            },
            version: Some("1.2.3".into()),
        };
        let options = UpgradeOptions { timeout: Duration::from_secs(600), create_namespace: true };
        let args = upgrade_install_args(&context, &release(), &chart, &options);
        assert_eq!(
            strings(&args),
            [
                "upgrade",
                "--install",
                "oob-consent",
                "oob-consent",
                "--repo",
                "https://charts.example.invalid",
                "--version",
                "1.2.3",
                "--namespace",
                "oob",
                "--values",
                "-",
                "--atomic",
                "--timeout",
                "600s",
                "--create-namespace",
                "--kube-context",
                "prod",
                "--kubeconfig",
                "/k/config",
            ]
        );
    }

    #[test]
    fn oci_charts_are_passed_as_references_and_local_charts_ignore_version() {
        let oci = ChartRef {
            source: ChartSource::Oci { reference: "oci://registry.example.invalid/opus/oob-consent".into() },
            version: Some("2.0.0".into()),
        };
        assert_eq!(
            strings(&template_args(&release(), &oci)),
            [
                "template",
                "oob-consent",
                "oci://registry.example.invalid/opus/oob-consent",
                "--version",
                "2.0.0",
                "--namespace",
                "oob",
                "--values",
                "-",
            ]
        );
        let local = ChartRef {
            source: ChartSource::Local { path: "charts/opus-service".into() },
            version: Some("9.9.9".into()),
        };
        let args =
            upgrade_install_args(&HelmContext::new("helm"), &release(), &local, &UpgradeOptions::default());
        assert!(!strings(&args).contains(&"--version"));
        assert_eq!(strings(&args)[3], "charts/opus-service");
    }

    #[test]
    fn opus_helm_wins_over_tools_dir_and_path() {
        let root = tempfile::tempdir().unwrap();
        let on_path = Program::OnPath("helm".into());
        assert_eq!(choose_helm(None, Some(root.path())), on_path);
        let local = root.path().join(".tools/bin/helm");
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "").unwrap();
        assert_eq!(choose_helm(None, Some(root.path())), Program::At(local));
        assert_eq!(
            choose_helm(Some(OsStr::new("/opt/helm")), Some(root.path())),
            Program::At("/opt/helm".into())
        );
        // A bare name in OPUS_HELM is a PATH lookup, as in a shell.
        assert_eq!(choose_helm(Some(OsStr::new("helm")), Some(root.path())), on_path);
        assert_eq!(choose_helm(Some(OsStr::new("")), None), on_path);
    }

    #[test]
    fn values_never_show_in_debug_output() {
        let values = HelmValues::from_yaml(SecretString::new("db:\n  password: canary-5d1e\n"));
        assert!(!format!("{values:?}").contains("canary-5d1e"));
    }
}
