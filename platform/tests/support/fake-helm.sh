#!/bin/sh
# Test stand-in for helm, reached through a symlink named `helm` in a test's temp dir (a symlink,
# not a copy, so no test ever executes a file it has just written: ETXTBSY). For a call
# `helm CMD ...` it records its own command line (/proc/$$/cmdline) in $dir/CMD.cmdline and the
# SHA-256 of its stdin in $dir/CMD.stdin-sha256, then answers with $dir/CMD.stdout,
# $dir/CMD.stderr and the exit code in $dir/CMD.exit, each optional.
set -eu
dir=$(dirname "$0")
cmd=$1
tr '\0' '\n' < /proc/$$/cmdline > "$dir/$cmd.cmdline"
sha256sum | cut -d' ' -f1 > "$dir/$cmd.stdin-sha256"
if [ -f "$dir/$cmd.stdout" ]; then cat "$dir/$cmd.stdout"; fi
if [ -f "$dir/$cmd.stderr" ]; then cat "$dir/$cmd.stderr" >&2; fi
if [ -f "$dir/$cmd.exit" ]; then exit "$(cat "$dir/$cmd.exit")"; fi
exit 0
