#!/usr/bin/env bash
# Front-end weight: builds the release site (WASM through wasm-opt) and prints each file
# the browser downloads, raw and gzipped (-9), with the total.
#   scripts/size.sh            build, then measure
#   SKIP_BUILD=1 scripts/size.sh   measure the last build
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
[ -n "${SKIP_BUILD:-}" ] || cargo leptos build --release >&2
printf '| file | raw | gzipped |\n|---|---|---|\n'
total_raw=0; total_gz=0
for f in target/site/pkg/*.wasm target/site/pkg/*.js target/site/pkg/*.css; do
  raw=$(stat -c %s "$f"); gz=$(gzip -9 -c "$f" | wc -c)
  total_raw=$((total_raw + raw)); total_gz=$((total_gz + gz))
  awk -v f="$(basename "$f")" -v r="$raw" -v g="$gz" 'BEGIN { printf "| `%s` | %.1f KB | %.1f KB |\n", f, r / 1000, g / 1000 }'
done
awk -v r="$total_raw" -v g="$total_gz" 'BEGIN { printf "| total | %.1f KB | **%.1f KB** |\n", r / 1000, g / 1000 }'
