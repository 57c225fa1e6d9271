#!/usr/bin/env bash
# Produce every recorded benchmark artefact for one machine, into benchmarks/results/:
#   <machine>-<date>.json/.md/.png     `unet-fast bench` over the workloads below, all contenders side by side
#                                      (interleaved rounds), parity on every row, roofline model appended
#   <machine>-<date>-suite.json/.md/.png + <machine>-<date>-pytest-benchmark.json
#                                      the pytest-benchmark suite (only with --suite: it repeats the work)
# Usage: benchmarks/run_all.sh MACHINE_NAME [--note "taken while 3 other jobs ran"] [--suite] [--quick]
#        [--threads N] [--workloads a,b,c] [--repeats N]
# Run from a checkout with the venv active (pip install -e ".[bench]"); it never installs anything.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '2,9p' "$0"; exit 2
fi
machine="$1"; shift
note=""; suite=0; quick=0; threads=""; repeats=5
workloads="unet-small,unet64-256,unet64-512,unet-bilinear,unet-original"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --note) note="$2"; shift 2 ;;
    --suite) suite=1; shift ;;
    --quick) quick=1; shift ;;
    --threads) threads="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    *) echo "run_all.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
out=benchmarks/results
mkdir -p "$out"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
# processes running right now outside this script's process group (its own pipeline is not competition)
me="$(ps -o pgid= $$ | tr -d ' ')"
busy="$(ps -eo stat=,pgid= 2>/dev/null | awk -v me="$me" '$1 ~ /^R/ && $2 != me' | wc -l || echo '?')"
auto_note="taken while ${busy} other runnable processes competed for $(nproc) cores (1-min load average ${load} at start)"
note="${note:+$note; }${auto_note}"
echo "== run_all: machine ${machine}; ${note}"
common=(--machine-name "$machine" --out "$out" --note "$note")
[[ -n "$threads" ]] && common+=(--threads "$threads")
if [[ $quick -eq 1 ]]; then
  unet-fast bench --quick "${common[@]}"
else
  # exit code 3 (a parity FAIL) or 1 (a contender failed) still leaves the files: report, don't stop
  unet-fast bench --workload "$workloads" --repeats "$repeats" --roofline "${common[@]}" || echo "== unet-fast bench exited $?"
fi
if [[ $suite -eq 1 ]]; then
  date="$(date -u +%F)"
  python -m pytest benchmarks/ --benchmark-only -q -rs -p no:cacheprovider \
    --bench-results "$out" --bench-machine "$machine" --bench-note "$note" ${threads:+--bench-threads "$threads"} \
    --benchmark-json "$out/${machine}-${date}-pytest-benchmark.json" || echo "== pytest benchmarks exited $?"
fi
ls -l "$out"/"${machine}"-*
