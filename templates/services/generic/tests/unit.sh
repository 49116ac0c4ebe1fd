#!/bin/sh
# Unit level of the __NAME__ service: the script parses and answers --version.
set -eu
bash -n main.sh
out=$(bash main.sh --version)
[ "$out" = "__NAME__ 0.1.0" ] || { echo "unexpected --version output: $out" >&2; exit 1; }
echo "unit: ok"
