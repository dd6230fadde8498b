#!/usr/bin/env bash
# Fuzzing: runs every fuzz target under libFuzzer for a CPU budget, keeps
# (and minimizes) the corpus it grows in fuzz/corpus/<target>, and prints
# what it spent and found. Not a test: the unit tests replay the kept
# corpus (switchd/src/fuzzing.rs, cni/src/lib.rs), which is what CI runs.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET]      default 600
#   TARGETS="pipeline api" bench/fuzz.sh 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). It runs on the
# stable toolchain with --sanitizer none: coverage-guided, without
# AddressSanitizer (the code under test is safe Rust; a panic is a finding).
# A crash leaves its input in fuzz/artifacts/<target>/ and stops that target.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
targets=${TARGETS:-"pipeline api state cni_config mcast"}
command -v cargo-fuzz >/dev/null || { echo "fuzz: install cargo-fuzz first: cargo install cargo-fuzz --locked" >&2; exit 1; }
cargo fuzz build --sanitizer none >&2 || exit 1
printf '| target | seconds | runs | corpus before → after (minimized) | crashes |\n|---|---|---|---|---|\n' > /tmp/fuzz-report.$$
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(ls "corpus/$t" | wc -l)
  crashes_before=$(ls "artifacts/$t" | wc -l)
  log=$(mktemp)
  cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cargo fuzz cmin --sanitizer none "$t" "corpus/$t" >/dev/null 2>&1
  after=$(ls "corpus/$t" | wc -l)
  crashes=$(( $(ls "artifacts/$t" | wc -l) - crashes_before ))
  if (( rc != 0 && crashes == 0 )); then
    echo "fuzz: $t exited $rc without an artifact; log: $log" >&2
  elif (( crashes > 0 )); then
    echo "fuzz: $t found $crashes crash(es); inputs in fuzz/artifacts/$t, log: $log" >&2
    tail -40 "$log" >&2
  else
    rm -f "$log"
  fi
  printf '| %s | %s | %s | %s → %s | %s |\n' "$t" "$secs" "${runs:-?}" "$before" "$after" "$crashes" >> /tmp/fuzz-report.$$
done
echo
echo "fuzzing on $(nproc) CPU(s), $(date -u +%FT%TZ), podswitch $(git rev-parse --short HEAD)"
echo
cat /tmp/fuzz-report.$$
rm -f /tmp/fuzz-report.$$
