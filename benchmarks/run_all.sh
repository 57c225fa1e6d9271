#!/usr/bin/env bash
# Produce every recorded benchmark artefact for one machine, into benchmarks/results/:
#   <machine>-<date>.json/.md/.png     `unet-fast bench` over the workloads below, all contenders side by side
#                                      (interleaved rounds), parity on every row, roofline model appended
#                                      (fp32: PyTorch eager, torch.compile, ONNX Runtime, OpenVINO f32, MNN at
#                                      precision high and normal, ncnn, and every usable unet_fast backend)
#   <machine>-<date>-suite.json/.md/.png + <machine>-<date>-pytest-benchmark.json
#                                      the pytest-benchmark suite (only with --suite: it repeats the work)
#   --dtype bfloat16 (or bf16): the bf16 comparison of issue 17 instead, as <machine>-<date>-bf16.json/.md/.png
#                                      (unet64-256 and unet64-512 unless --workloads: unet_fast cpu bf16, eager and
#                                      torch.compile bf16 channels_last, OpenVINO at its default precision, with
#                                      ONNX Runtime and OpenVINO pinned f32 as fp32 reference rows), and with
#                                      --suite the suite's bf16 cases as <machine>-<date>-bf16-suite.*
# Usage: benchmarks/run_all.sh MACHINE_NAME [--note "taken while 3 other jobs ran"] [--suite] [--quick]
#        [--threads N] [--workloads a,b,c] [--repeats N] [--dtype float32|bfloat16]
# Run from a checkout with the venv active (pip install -e ".[bench]": OpenVINO, MNN, ncnn + pnnx included);
# it never installs anything. A peer that is not installed is listed as not run, with the install command.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '2,17p' "$0"; exit 2
fi
machine="$1"; shift
note=""; suite=0; quick=0; threads=""; repeats=5; dtype=float32; workloads=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --note) note="$2"; shift 2 ;;
    --suite) suite=1; shift ;;
    --quick) quick=1; shift ;;
    --threads) threads="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    *) echo "run_all.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$dtype" in
  float32|fp32) dtype=float32; tag=""; default_workloads="unet-small,unet64-256,unet64-512,unet-bilinear,unet-original" ;;
  bfloat16|bf16) dtype=bfloat16; tag="-bf16"; default_workloads="unet64-256,unet64-512" ;;
  *) echo "run_all.sh: --dtype must be float32 or bfloat16, got $dtype" >&2; exit 2 ;;
esac
workloads="${workloads:-$default_workloads}"
out=benchmarks/results
mkdir -p "$out"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
# processes running right now outside this script's process group (its own pipeline is not competition)
me="$(ps -o pgid= $$ | tr -d ' ')"
busy="$(ps -eo stat=,pgid= 2>/dev/null | awk -v me="$me" '$1 ~ /^R/ && $2 != me' | wc -l || echo '?')"
auto_note="taken while ${busy} other runnable processes competed for $(nproc) cores (1-min load average ${load} at start)"
note="${note:+$note; }${auto_note}"
echo "== run_all: machine ${machine}; ${dtype}; ${note}"
common=(--machine-name "$machine" --out "$out" --note "$note" --dtype "$dtype")
[[ -n "$threads" ]] && common+=(--threads "$threads")
if [[ $quick -eq 1 ]]; then
  unet-fast bench --quick "${common[@]}"
else
  # exit code 3 (a parity FAIL) or 1 (a contender failed) still leaves the files: report, don't stop
  unet-fast bench --workload "$workloads" --repeats "$repeats" --roofline "${common[@]}" || echo "== unet-fast bench exited $?"
fi
if [[ $suite -eq 1 ]]; then
  date="$(date -u +%F)"
  # bf16: the suite's bf16 cases only (benchmarks/test_unet64.py *_bf16); the fp32 suite is the default run
  if [[ "$dtype" == bfloat16 ]]; then select=(benchmarks/test_unet64.py -k bf16); else select=(benchmarks/); fi
  python -m pytest "${select[@]}" --benchmark-only -q -rs -p no:cacheprovider \
    --bench-results "$out" --bench-machine "$machine" --bench-note "$note" ${threads:+--bench-threads "$threads"} \
    --benchmark-json "$out/${machine}-${date}${tag}-pytest-benchmark.json" || echo "== pytest benchmarks exited $?"
fi
ls -l "$out"/"${machine}"-*
