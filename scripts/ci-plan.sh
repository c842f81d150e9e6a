#!/usr/bin/env bash
# The pull-request recipe: `check`, then `plan --base BASE --format markdown` of every
# environment the change touches, written as ONE Markdown comment body that fits GitHub's
# 65,536-character limit (each environment's summary table is kept; details are cut first).
# CI has no cluster and no keys: the plans compare revisions, not the live state, and say so.
#
# An environment is touched when a file under environments/<env>/ changed; a change to
# environments/client.toml touches every environment; a change under catalog/, components/, engine/,
# platform/, xtask/ or charts/ touches every environment on `core = "example"` (this checkout).
#
# Usage: scripts/ci-plan.sh [BASE]        (default: origin/main)
# Environment:
#   XTASK        how to run the tool (default: `cargo xtask`), e.g. a built binary
#   CI_PLAN_OUT  where to write the comment (default: plan-comment.md)
#   CI_PLAN_LIMIT  the size limit in characters (default: 65000, under GitHub's 65,536)
# Exit: 0 planned (the comment says whether there are changes), 1 check or a plan failed (the
# comment says which).
set -uo pipefail
base="${1:-origin/main}"
out="${CI_PLAN_OUT:-plan-comment.md}"
limit="${CI_PLAN_LIMIT:-65000}"
read -r -a xtask <<<"${XTASK:-cargo xtask}"
cd "$(git rev-parse --show-toplevel)" || exit 1

merge_base="$(git merge-base "$base" HEAD)" || { echo "ci-plan: cannot find the merge base of $base and HEAD" >&2; exit 1; }
changed="$(git diff --name-only "$merge_base" HEAD)"

# The environments of the head revision and of the base (a removed environment is not planned).
mapfile -t all_envs < <(for d in environments/*/; do [[ -f "$d/env.toml" ]] && basename "$d"; done)
declare -A touched=()
on_this_core() { grep -Eq '^core[[:space:]]*=[[:space:]]*"example"' "environments/$1/env.toml"; }
while IFS= read -r path; do
    [[ -z "$path" ]] && continue
    case "$path" in
        environments/client.toml) for env in "${all_envs[@]}"; do touched[$env]=1; done ;;
        environments/*/*)
            env="${path#environments/}"; env="${env%%/*}"
            [[ -f "environments/$env/env.toml" ]] && touched[$env]=1 ;;
        catalog/* | components/* | engine/* | platform/* | xtask/* | charts/*)
            for env in "${all_envs[@]}"; do on_this_core "$env" && touched[$env]=1; done ;;
    esac
done <<<"$changed"
mapfile -t envs < <(printf '%s\n' "${!touched[@]}" | sort)

status=0
body="$(mktemp)"; trap 'rm -f "$body" "$body".*' EXIT
{
    echo "## Opus Deploy plan"
    echo
    echo "Planned against \`$base\` (merge base \`${merge_base:0:12}\`) without access to any cluster or key: the plans compare revisions, not the live state."
    echo
} >"$body"

if ! "${xtask[@]}" check >"$body.check" 2>&1; then
    status=1
    { echo "### \`check\` failed"; echo; echo '```'; head -c 20000 "$body.check"; echo '```'; echo; } >>"$body"
fi

if [[ ${#envs[@]} -eq 0 ]]; then
    echo "No environment is touched by this change." >>"$body"
fi
for env in "${envs[@]}"; do
    if "${xtask[@]}" plan "$env" --base "$base" --format markdown >"$body.$env" 2>"$body.$env.err"; then
        :
    else
        status=1
        { echo "### \`plan $env\` failed"; echo; echo '```'; head -c 20000 "$body.$env.err"; echo '```'; } >"$body.$env"
    fi
done

# Fit the limit: first everything; else every environment's summary (up to its first
# component section) and a note.
assemble() {
    cat "$body"
    for env in "${envs[@]}"; do
        if [[ "$1" == full ]]; then cat "$body.$env"; else awk '/^#### /{exit} {print}' "$body.$env"; fi
        echo
    done
}
assemble full >"$out"
if (( $(wc -m <"$out") > limit )); then
    assemble summary >"$out"
    echo "_The details of the plans are cut to fit a comment; run \`cargo xtask plan ENV --base $base --format markdown\` for all of them._" >>"$out"
    if (( $(wc -m <"$out") > limit )); then
        head -c "$((limit - 200))" "$out" >"$out.cut" && mv "$out.cut" "$out"
        printf '\n\n_Cut at %s characters._\n' "$limit" >>"$out"
    fi
fi
echo "ci-plan: wrote $out ($(wc -m <"$out") characters; environments: ${envs[*]:-none})" >&2
exit "$status"
