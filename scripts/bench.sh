#!/usr/bin/env bash
# Benchmarks the release xtask binary and prints ONE Markdown table: each figure beside its
# anchor (measured in the same run, or a target) and their ratio, with the peak memory of the
# commands. Figures only: nothing passes or fails. Not part of the test suite.
#
# It builds `xtask` in release mode, generates synthetic repository roots in a temporary
# directory with scripts/bench/gen.py (copies of the shipped environments plus extra
# `oob-open-data` components, 1,000 secrets files) and runs the binary on them with `--root`, a
# fresh HOME, NO_COLOR=1 and nothing else in its environment.
#
# Each time is the median of BENCH_RUNS runs (default 5; BENCH_RUNS_10K, default 5, with 10,000
# components), wall clock from `date +%s%N`; a command whose run takes longer than
# BENCH_SLOW_SECONDS (default 60) is not run again. Max RSS is GNU time's %M, the largest of
# the runs (n/a without GNU time, which is installed from Debian when run as root).
#
# Usage: scripts/bench.sh
# Environment:
#   BENCH_RUNS, BENCH_RUNS_10K, BENCH_SLOW_SECONDS   see above
#   BENCH_KEEP=1                 keep the temporary directory (its path is printed)
#   OPUS_E2E_KUBECONFIG          also time the no-op redeploy on that cluster (the `e2e`
#                                environment of tests/e2e, plus BENCH_CLUSTER_EXTRA components,
#                                default 20) beside a `helm upgrade --install` loop over the same
#                                releases; needs OPUS_E2E_DATABASE_URL, helm and kubectl
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

runs=${BENCH_RUNS:-5}
runs_10k=${BENCH_RUNS_10K:-5}
slow_ns=$(( ${BENCH_SLOW_SECONDS:-60} * 1000000000 ))
cluster_extra=${BENCH_CLUSTER_EXTRA:-20}
export PATH="$repo/.tools/bin:$PATH"

log() { echo "bench: $*" >&2; }

# --- the binary -------------------------------------------------------------------------------
log "building xtask (release)"
cargo build --release -p xtask --locked >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release/xtask"
[[ -x "$bin" ]] || { log "error: no binary at $bin"; exit 1; }
# What `cargo xtask` runs: the dev build (its crypto and YAML crates optimized, see Cargo.toml).
log "building xtask (dev, as cargo xtask does)"
cargo build -p xtask --locked >&2
dev_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/xtask"
[[ -x "$dev_bin" ]] || { log "error: no binary at $dev_bin"; exit 1; }

# --- GNU time for max RSS ---------------------------------------------------------------------
gnu_time=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
    gnu_time=/usr/bin/time
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing the Debian package time (GNU time, for max RSS)"
    if apt-get update -qq >&2; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2 || true; fi
    if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then gnu_time=/usr/bin/time; fi
fi
[[ -n "$gnu_time" ]] || log "no GNU time: max RSS is n/a"

work="$(mktemp -d "${TMPDIR:-/tmp}/opus-bench.XXXXXX")"
cleanup() {
    local status=$?
    if [[ -n "${cluster_cleanup:-}" ]]; then "$cluster_cleanup" || true; fi
    if [[ "${BENCH_KEEP:-}" == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
mkdir -p "$work/out" "$work/home"
gen() { python3 "$repo/scripts/bench/gen.py" "$@"; }
# The binary as the tests run it: a scrubbed environment, a fresh HOME, no terminal.
xt=(env -i "PATH=$PATH" "HOME=$work/home" NO_COLOR=1 "$bin")

# --- measuring --------------------------------------------------------------------------------
declare -A MED RSS FAIL NRUNS

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# measure KEY RUNS SETUP COMMAND...: runs SETUP (untimed, a function or `:`) then COMMAND,
# RUNS times, stdin closed. MED[KEY]: median nanoseconds; RSS[KEY]: largest max RSS (KB);
# FAIL[KEY]: why it stopped, when a run failed. The last run's output stays in $work/out.
measure() {
    local key=$1 n=$2 setup=$3 i rc start end rss=0 r
    shift 3
    local times=()
    log "measuring $key ($n runs)"
    for ((i = 0; i < n; i++)); do
        "$setup"
        rc=0
        start=$(date +%s%N)
        if [[ -n "$gnu_time" ]]; then
            "$gnu_time" -f %M -o "$work/rss" "$@" </dev/null >"$work/out/$key.out" 2>"$work/out/$key.err" || rc=$?
        else
            "$@" </dev/null >"$work/out/$key.out" 2>"$work/out/$key.err" || rc=$?
        fi
        end=$(date +%s%N)
        if ((rc != 0)); then
            FAIL[$key]="exit $rc"
            log "$key failed (exit $rc); its stderr ends with:"
            tail -n 5 "$work/out/$key.err" >&2
            break
        fi
        times+=($((end - start)))
        if [[ -n "$gnu_time" ]]; then
            r=$(tail -n 1 "$work/rss")
            if ((r > rss)); then rss=$r; fi
        fi
        if ((end - start > slow_ns && i + 1 < n)); then
            log "$key took $(fmt_ns $((end - start))): not run again"
            break
        fi
    done
    NRUNS[$key]=${#times[@]}
    if ((${#times[@]} > 0)); then MED[$key]=$(median "${times[@]}"); fi
    if [[ -n "$gnu_time" ]] && ((${#times[@]} > 0)); then RSS[$key]=$rss; fi
}

fmt_ns() { awk -v t="$1" 'BEGIN {
    if (t >= 1e9) printf "%.2f s", t / 1e9; else if (t >= 1e6) printf "%.1f ms", t / 1e6;
    else printf "%.1f µs", t / 1e3 }'; }
fmt_kb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f×", a / b }'; }

# The median time of KEY, or why there is none.
t() {
    if [[ -n "${FAIL[$1]:-}" ]]; then echo "FAILED ($1: ${FAIL[$1]})"; else fmt_ns "${MED[$1]}"; fi
}
ok() { [[ -z "${FAIL[$1]:-}" && -n "${MED[$1]:-}" ]]; }
rss() { if [[ -n "${RSS[$1]:-}" ]]; then fmt_kb "${RSS[$1]}"; else echo n/a; fi; }
runs_of() { echo "${NRUNS[$1]:-0}"; }

# --- 1, 2. check and plan on generated environments -------------------------------------------
log "generating environments"
envs=example,staging,prod
gen repo "$work/base" "$envs" 0
gen repo "$work/x200" "$envs" 200
for n in 100 1000 10000; do gen repo "$work/x$n-example" example "$n"; done

measure check_base "$runs" : "${xt[@]}" --root "$work/base" check example staging prod
measure check_x200 "$runs" : "${xt[@]}" --root "$work/x200" check example staging prod
measure check_100 "$runs" : "${xt[@]}" --root "$work/x100-example" check example
measure check_1k "$runs" : "${xt[@]}" --root "$work/x1000-example" check example
measure check_10k "$runs_10k" : "${xt[@]}" --root "$work/x10000-example" check example
for env in example staging prod; do
    measure "plan_$env" "$runs" : "${xt[@]}" --root "$work/x200" plan "$env"
done
measure plan_10k "$runs_10k" : "${xt[@]}" --root "$work/x10000-example" plan example

# --- 3. no-op redeploy on the directory target ------------------------------------------------
fresh_deploy_state() { rm -rf "$work/x200/bundle" "$work/x200/environments/example/.opus"; }
measure deploy_first "$runs" fresh_deploy_state "${xt[@]}" --root "$work/x200" deploy example --output json
measure deploy_noop "$runs" : "${xt[@]}" --root "$work/x200" deploy example --output json
measure deploy_noop_norefresh "$runs" : "${xt[@]}" --root "$work/x200" deploy example --output json --no-refresh
noop_note="stdout: $(tail -n 1 "$work/out/deploy_noop.out" 2>/dev/null | tr -d '\n' | cut -c1-120)"
log "last no-op redeploy, $noop_note"

# --- 3b. no-op redeploy on a real cluster (OPUS_E2E_KUBECONFIG) ------------------------------
cluster_row_note="OPUS_E2E_KUBECONFIG not set"
# try COMMAND...: runs it; on failure, the cluster row says which command failed (set -e does not
# apply inside `cluster_bench || ...`, so every step is checked).
try() { "$@" || { cluster_row_note="failed: ${*:1:4}"; log "cluster: $cluster_row_note"; return 1; }; }
cluster_bench() {
    local kubeconfig=$OPUS_E2E_KUBECONFIG context run root rel ns ref repourl version
    if [[ -z "${OPUS_E2E_DATABASE_URL:-}" ]]; then cluster_row_note="OPUS_E2E_DATABASE_URL not set"; return 0; fi
    for tool in helm kubectl age-keygen; do
        command -v "$tool" >/dev/null || { cluster_row_note="no $tool on PATH"; return 0; }
    done
    context="$(kubectl config current-context --kubeconfig "$kubeconfig")" || { cluster_row_note="no current context"; return 0; }
    run="e2e$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
    root="$work/cluster"
    mkdir -p "$work/cluster-home"
    try age-keygen -o "$work/cluster-home/keys.txt" 2>/dev/null || return 0
    BENCH_CONTEXT="$context" BENCH_KUBECONFIG="$kubeconfig" \
        BENCH_RECIPIENT="$(age-keygen -y "$work/cluster-home/keys.txt")" try gen e2e "$root" "$run" "$cluster_extra" \
        || return 0
    local cx=(env -i "PATH=$PATH" "HOME=$work/cluster-home" NO_COLOR=1
        "SOPS_AGE_KEY_FILE=$work/cluster-home/keys.txt" ${OPUS_HELM:+"OPUS_HELM=$OPUS_HELM"} "$bin" --root "$root")
    try "${cx[@]}" secrets new "$root/environments/e2e/secrets.enc.yaml" >&2 || return 0
    try "${cx[@]}" secrets set "$root/environments/e2e/secrets.enc.yaml" database.admin_password - \
        <"$root/.dbpassword" >&2 || return 0
    try "${cx[@]}" secrets new "$root/environments/e2e/$run-opus/oob-authorization-server/secrets.enc.yaml" >&2 \
        || return 0
    cluster_namespaces=("$run-system" "$run-opus")
    cluster_cleanup=cluster_delete
    try kubectl --kubeconfig "$kubeconfig" --context "$context" apply --server-side --field-manager opus-e2e \
        -f "$repo/tests/e2e/cluster/storage-class.yaml" >&2 || return 0
    log "first deploy to $context ($run)"
    try "${cx[@]}" deploy e2e --yes --output plain </dev/null >&2 || return 0
    measure cluster_noop "$runs" : "${cx[@]}" deploy e2e --yes --output json
    measure cluster_noop_norefresh "$runs" : "${cx[@]}" deploy e2e --yes --output json --no-refresh
    # The API requests of the last no-op redeploy with refresh, by verb (the binary's own count).
    cluster_requests="$(tail -n 1 "$work/out/cluster_noop.out" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("api_requests"))' 2>/dev/null || echo n/a)"
    # The anchor: what a script would do, `helm upgrade --install` of every release with the
    # values the release has now, one after the other.
    try "${cx[@]}" plan e2e --format json </dev/null >"$work/cluster-plan.json" || return 0
    try python3 -c '
import json, sys
for step in json.load(sys.stdin)["steps"]:
    a = step["action"]
    if a["kind"] == "helm-release":
        c = a["chart"]
        print("\t".join([a["release"], a["namespace"], c["reference"], c.get("repository") or "-", c["version"]]))
' <"$work/cluster-plan.json" >"$work/releases.tsv" || return 0
    mkdir -p "$work/values"
    local loop="$work/helm-loop.sh"
    {
        echo "set -euo pipefail"
        echo "cd $(printf %q "$root")"
        while IFS=$'\t' read -r rel ns ref repourl version; do
            try helm get values "$rel" -n "$ns" --kube-context "$context" --kubeconfig "$kubeconfig" -o yaml </dev/null \
                >"$work/values/$ns.$rel.yaml" || return 0
            local args=(helm upgrade --install "$rel" "$ref" -n "$ns" -f "$work/values/$ns.$rel.yaml" --atomic
                --timeout 600s --kube-context "$context" --kubeconfig "$kubeconfig")
            [[ "$repourl" == - ]] || args+=(--repo "$repourl")
            [[ -d "$root/$ref" ]] || args+=(--version "$version")
            printf '%q ' "${args[@]}"
            echo ">/dev/null"
        done <"$work/releases.tsv"
    } >"$loop"
    cluster_releases=$(wc -l <"$work/releases.tsv")
    measure cluster_helm "$runs" : bash "$loop"
    cluster_row_note="e2e environment +$cluster_extra components, $cluster_releases releases, context $context"
}
cluster_delete() {
    log "deleting the benchmark's namespaces ${cluster_namespaces[*]} (its database and role stay)"
    kubectl --kubeconfig "$OPUS_E2E_KUBECONFIG" delete namespace "${cluster_namespaces[@]}" --wait=false >&2
}
if [[ -n "${OPUS_E2E_KUBECONFIG:-}" ]]; then cluster_bench || true; fi

# --- 4. rotate-keys of 1,000 secrets files, and the age CLI loop ------------------------------
log "generating 1,000 secrets files"
gen repo "$work/rotate-template" example 0
gen secrets "$work/rotate-template" example 1000
gen stanzas "$work/rotate-template" example "$work/stanzas"
git -C "$work/rotate-template" init -q
git -C "$work/rotate-template" add -A
git -C "$work/rotate-template" -c user.name=bench -c user.email=bench@example.invalid commit -qm "bench"
fresh_rotation() {
    rm -rf "$work/rotate" "$work/rotate-home"
    cp -a "$work/rotate-template" "$work/rotate"
    mkdir -p "$work/rotate-home"
    # A copy has new inode times, so git would re-hash every file once; a working checkout
    # has a fresh index. Refresh it here, untimed.
    git -C "$work/rotate" update-index -q --refresh >/dev/null || true
}
measure rotate "$runs" fresh_rotation env -i "PATH=$PATH" "HOME=$work/rotate-home" NO_COLOR=1 \
    "SOPS_AGE_KEY_FILE=$work/rotate-home/keys.txt" "$bin" --root "$work/rotate" rotate-keys example --yes

# The rotation's own split: how long it spent making the files durable (flushes, renames,
# journal), on a thread of its own while the next batch is re-encrypted, so not all of it is
# wall-clock time.
rotate_durable="$(grep -o '[0-9.]* s making the files durable' "$work/out/rotate.err" | cut -d' ' -f1 || true)"

# The same rotation as an operator runs it, `cargo xtask rotate-keys` (a dev build).
measure rotate_dev "$runs" fresh_rotation env -i "PATH=$PATH" "HOME=$work/rotate-home" NO_COLOR=1 \
    "SOPS_AGE_KEY_FILE=$work/rotate-home/keys.txt" "$dev_bin" --root "$work/rotate" rotate-keys example --yes

# updatekeys: the same 1,000 files, a second recipient listed in env.toml.
second_recipient="age1se8qy7jt56dxh5scssszwuuk302jn5740pd06m9egdsykt52fa9slgsawg"
fresh_updatekeys() {
    rm -rf "$work/update" "$work/update-home"
    cp -a "$work/rotate-template" "$work/update"
    mkdir -p "$work/update-home"
    sed -i "s/^age_recipients = \[\(\"[^\"]*\"\)\]/age_recipients = [\1, \"$second_recipient\"]/" \
        "$work/update/environments/example/env.toml"
}
measure updatekeys "$runs" fresh_updatekeys env -i "PATH=$PATH" "HOME=$work/update-home" NO_COLOR=1 \
    "$bin" --root "$work/update" secrets updatekeys example --yes

age_row_note="age not installed"
if command -v age >/dev/null && command -v age-keygen >/dev/null; then
    age-keygen -o "$work/new.agekey" 2>/dev/null
    new_recipient="$(age-keygen -y "$work/new.agekey")"
    fresh_age_out() { rm -rf "$work/age-out"; mkdir -p "$work/age-out"; }
    # shellcheck disable=SC2016 # expanded by the inner bash
    measure age_loop "$runs" fresh_age_out bash -c 'set -euo pipefail
        for f in "$1"/*.age; do age -d -i "$2" "$f" | age -e -a -r "$3" -o "$4/${f##*/}"; done' \
        age-loop "$work/stanzas" "$repo/environments/example/demo.agekey" "$new_recipient" "$work/age-out"
    age_row_note="$(find "$work/stanzas" -name '*.age' | wc -l) files"
fi

# --- the table --------------------------------------------------------------------------------
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

per_component="n/a"
per_ratio="n/a"
if ok check_base && ok check_x200; then
    per_ns=$(( (MED[check_x200] - MED[check_base]) / 600 ))
    per_component=$(fmt_ns "$per_ns")
    per_ratio=$(ratio "$per_ns" 50000)
fi
row "check: marginal cost per component instance" "$per_component" "target 50 µs" "$per_ratio" \
    "$(rss check_x200) / $(rss check_base)" \
    "(t(check example staging prod, +200 components each) − t(same, +0)) / 600; $(t check_x200) vs $(t check_base); median of $(runs_of check_x200)"

slope() { # slope KEY_SMALL KEY_BIG
    if ok "$1" && ok "$2"; then awk -v a="${MED[$2]}" -v b="${MED[$1]}" 'BEGIN { printf "%.1f", a / b }'; else echo n/a; fi
}
s1=$(slope check_100 check_1k)
s2=$(slope check_1k check_10k)
r1=n/a; [[ "$s1" == n/a ]] || r1=$(ratio "$s1" 10)
r2=n/a; [[ "$s2" == n/a ]] || r2=$(ratio "$s2" 10)
row "check slope t(+1k)/t(+100), example" "$s1" "linear 10 (8–12)" "$r1" "$(rss check_1k) / $(rss check_100)" \
    "t(+100) $(t check_100), t(+1k) $(t check_1k) (each includes the fixed start-up); median of $(runs_of check_1k)"
row "check slope t(+10k)/t(+1k), example" "$s2" "linear 10 (8–12)" "$r2" "$(rss check_10k) / $(rss check_1k)" \
    "t(+10k) $(t check_10k), median of $(runs_of check_10k)"

for env in example staging prod; do
    v=$(t "plan_$env"); r=n/a; ok "plan_$env" && r=$(ratio "${MED[plan_$env]}" 1000000000)
    row "plan $env (+200 components)" "$v" "target 1 s" "$r" "$(rss "plan_$env")" "median of $(runs_of "plan_$env")"
done
v=$(t plan_10k); r=n/a; ok plan_10k && r=$(ratio "${MED[plan_10k]}" 1000000000)
row "plan example (+10,000 components)" "$v" "target 1 s" "$r" "$(rss plan_10k)" "median of $(runs_of plan_10k)"

r=n/a; ok deploy_noop && ok plan_example && r=$(ratio "${MED[deploy_noop]}" "${MED[plan_example]}")
row "no-op redeploy, directory (example +200)" "$(t deploy_noop)" "plan example +200: $(t plan_example)" "$r" \
    "$(rss deploy_noop) / $(rss plan_example)" "2nd+ \`deploy --output json\` after a first one; median of $(runs_of deploy_noop)"
r=n/a; ok deploy_noop && ok deploy_noop_norefresh && r=$(ratio "${MED[deploy_noop]}" "${MED[deploy_noop_norefresh]}")
row "no-op redeploy with refresh, directory (example +200)" "$(t deploy_noop)" "same with --no-refresh: $(t deploy_noop_norefresh)" "$r" \
    "$(rss deploy_noop) / $(rss deploy_noop_norefresh)" "refresh hashes every bundle file a step wrote; target ≤ 0.15 s"
r=n/a; ok deploy_noop && ok deploy_first && r=$(ratio "${MED[deploy_noop]}" "${MED[deploy_first]}")
row "no-op redeploy, directory (example +200)" "$(t deploy_noop)" "first deploy (fresh bundle+journal): $(t deploy_first)" "$r" \
    "$(rss deploy_noop) / $(rss deploy_first)" "first deploy: median of $(runs_of deploy_first)"
if [[ -n "${MED[cluster_noop]:-}${FAIL[cluster_noop]:-}" ]]; then
    r=n/a; ok cluster_noop && ok cluster_helm && r=$(ratio "${MED[cluster_noop]}" "${MED[cluster_helm]}")
    row "no-op redeploy, cluster" "$(t cluster_noop)" "\`helm upgrade --install\` loop: $(t cluster_helm)" "$r" \
        "$(rss cluster_noop) / $(rss cluster_helm)" "$cluster_row_note; median of $(runs_of cluster_noop); API requests with refresh: ${cluster_requests:-n/a}"
    r=n/a; ok cluster_noop && ok cluster_noop_norefresh && r=$(ratio "${MED[cluster_noop]}" "${MED[cluster_noop_norefresh]}")
    row "no-op redeploy with refresh, cluster" "$(t cluster_noop)" "same with --no-refresh: $(t cluster_noop_norefresh)" "$r" \
        "$(rss cluster_noop) / $(rss cluster_noop_norefresh)" "target ≤ 0.1 s, 0 helm processes, 0 mutating requests"
else
    row "no-op redeploy, cluster" "n/a" "\`helm upgrade --install\` loop: n/a" "n/a" "n/a" "$cluster_row_note"
fi

r=n/a; ok rotate && ok age_loop && r=$(ratio "${MED[rotate]}" "${MED[age_loop]}")
age_t="n/a"; [[ -z "${MED[age_loop]:-}${FAIL[age_loop]:-}" ]] || age_t=$(t age_loop)
row "rotate-keys example, 1,000 secrets files" "$(t rotate)" "\`age -d \\| age -e\` loop: $age_t" "$r" \
    "$(rss rotate) / $(rss age_loop)" "fresh git checkout per run; of the last run, ${rotate_durable:-n/a} s made the files durable, overlapped with re-encrypting the next batch (two syncfs per batch of 256, renames, one journal record per batch); age loop re-wraps each file's sops data key ($age_row_note); median of $(runs_of rotate); target ≥ 20× faster than the loop"
r=n/a; ok rotate_dev && ok age_loop && r=$(ratio "${MED[rotate_dev]}" "${MED[age_loop]}")
row "rotate-keys example, 1,000 secrets files, dev build (\`cargo xtask\`)" "$(t rotate_dev)" "\`age -d \\| age -e\` loop: $age_t" "$r" \
    "$(rss rotate_dev) / $(rss age_loop)" "what an operator's \`cargo xtask rotate-keys\` runs: our crates unoptimized, the crypto and YAML crates at opt-level 3; median of $(runs_of rotate_dev)"
r=n/a; ok updatekeys && ok age_loop && r=$(ratio "${MED[updatekeys]}" "${MED[age_loop]}")
row "secrets updatekeys example (+1 recipient), 1,000 secrets files" "$(t updatekeys)" "\`age -d \\| age -e\` loop: $age_t" "$r" \
    "$(rss updatekeys) / $(rss age_loop)" "fresh copy per run; same data keys, one stanza added per file; median of $(runs_of updatekeys)"

echo
echo "Opus Deploy benchmark — $(git -C "$repo" rev-parse --short HEAD) — $(nproc) CPUs — release build"
echo
echo "| Figure | Value | Anchor | Ratio | Max RSS (figure / anchor) | How |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
