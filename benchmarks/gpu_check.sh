#!/usr/bin/env bash
# The GPU check, for the day a GPU is lent: CUDA tests, one full-profile meta-step of each algorithm with its
# peak memory, the MAML speed table on CUDA; one markdown table (see benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh [OUT.md]                 # on a CUDA machine; at most 8 minutes; default gpu_check.md
#   benchmarks/gpu_check.sh --cpu-dry-run [OUT.md]   # the same steps at tiny sizes on the CPU (tests/test_gpu_check.py)
#
# Without a GPU (and without --cpu-dry-run) it stops at once with one sentence and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" COURSE_PROGRESS=0
exec timeout --signal=INT --kill-after=20 480 python benchmarks/gpu_check.py "$@"
