#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another, on
# stable Rust without sanitizers. Figures go to fuzz/logs/<target>.log; the
# last "DONE" line of each holds the executions and coverage.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
mkdir -p logs corpus
for target in csv_manifest yaml_manifest config smarterpay_webhook payroc_webhook held_rows; do
  mkdir -p "corpus/$target"
  cargo fuzz run --sanitizer none -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    > "logs/$target.log" 2>&1 || echo "$target: found a failure, see fuzz/logs/$target.log and fuzz/artifacts/$target/"
done
