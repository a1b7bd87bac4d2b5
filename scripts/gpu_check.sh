#!/usr/bin/env bash
# The one device run of issue 20: everything minissd.cuda still has to show on a real GPU.
#
#   OUT=/some/folder bash scripts/gpu_check.sh      (from the repository root, on a GPU machine)
#
# Needs: an NVIDIA GPU and its driver; numba-cuda with NVVM/NVRTC (pip install -e ".[test,cuda]"
# "numba-cuda[cu12]" beforehand: the device machine may have no network). Writes under $OUT:
#   env.txt       GPU, driver, Python and library versions
#   tests.txt     NUMBA_ENABLE_CUDASIM=0 pytest tests/test_cuda_*.py (the simulator's tests, on the GPU)
#   bench.txt     python -m minissd.bench cuda at batch 32, the CPU side pinned to 2 cores
#   bench.md      the same tables as Markdown, for docs/cuda.md
#   train.txt     the default tiny-voc run with --device cuda (wall time at the end), and
#   run/          its folder (metrics.json: val mAP, to compare with the CPU run's >= 0.80)
# Each stage has its own time limit, so that one slow stage still leaves the others their turn;
# the exit status is the number of stages that failed.
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
export NUMBA_ENABLE_CUDASIM=0
failed=0

{
  date -u; nvidia-smi 2>&1 | head -15
  python3 -c "import sys, numpy, numba; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__)"
  python3 -c "import numba.cuda as c; print('numba-cuda', getattr(c, '__version__', '?'))" 2>&1
  nproc
} > "$OUT/env.txt" 2>&1

# numba-cuda 0.30 refers to numpy.row_stack, which NumPy 2.5 removed (docs/cuda.md): a shim if so
if ! python3 -c "import minissd.cuda as mc; mc.require()" > "$OUT/require.txt" 2>&1; then
  if grep -q row_stack "$OUT/require.txt"; then
    mkdir -p "$OUT/shim"
    echo "import numpy; numpy.row_stack = getattr(numpy, 'row_stack', numpy.vstack)" > "$OUT/shim/sitecustomize.py"
    export PYTHONPATH="$OUT/shim${PYTHONPATH:+:$PYTHONPATH}"
    echo "numpy.row_stack shim in use" >> "$OUT/env.txt"
  fi
fi
python3 -c "import minissd.cuda as mc; mc.require(); print('minissd.cuda: ready')" >> "$OUT/env.txt" 2>&1 \
  || { echo "minissd.cuda cannot run here: see $OUT/env.txt"; exit 1; }

# 1. the CUDA tests on the real GPU (conftest.py patches nothing there): ~1-2 min
timeout 240 python3 -m pytest -q -rs tests/test_cuda_*.py > "$OUT/tests.txt" 2>&1 || failed=$((failed + 1))
tail -3 "$OUT/tests.txt"

# 2. the benchmark: every kernel vs its CPU twin, the whole step vs the 2-core CPU step (2 processes)
timeout 300 taskset -c 0,1 env NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \
  python3 -m minissd.bench cuda --batch 32 --cpu-processes 2 --markdown "$OUT/bench.md" > "$OUT/bench.txt" 2>&1 \
  || failed=$((failed + 1))
grep -A1 "whole training step at batch" "$OUT/bench.txt"

# 3. the default tiny-voc run on the GPU (the goal: under 2 minutes, the CPU run's mAP)
start=$(date +%s)
timeout 420 python3 -m minissd.train --tiny-voc --device cuda --out "$OUT/run" > "$OUT/train.txt" 2>&1 \
  || failed=$((failed + 1))
echo "wall: $(( $(date +%s) - start )) s" >> "$OUT/train.txt"
tail -2 "$OUT/train.txt"
exit $failed
