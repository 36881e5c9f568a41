#!/usr/bin/env bash
# The GPU checks of one session with a GPU machine (issue 31), as one script:
# bench_devices with and without the CUDA graph and the fused Philox kernel, then the CUDA tests.
# Usage (on the GPU machine, repository root): OUT=/some/dir bash scripts/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "== bench_devices, fused Philox, eager and CUDA graph"
  timeout 300 python3 -m benchmarks.bench_devices --device cuda --graph --launches --steps 200 --cpu-steps 2 \
    --iwae-images 100 --models vae_std,vae_flow,gan --datasets mnist,svhn --inception-images 10000 2>&1 | grep -v "^E1204\|_warn_once\|Profiler clears"
  echo "== the same, torch-op Philox (FGM_NATIVE=0), MNIST"
  FGM_NATIVE=0 timeout 120 python3 -m benchmarks.bench_devices --device cuda --graph --launches --steps 200 \
    --cpu-steps 0 --iwae-images 0 --inception-images 0 --models vae_std,vae_flow,gan --datasets mnist 2>&1 | grep -v "_warn_once\|Profiler clears"
  echo "== CUDA tests"
  timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore tests/test_cuda_graph.py 2>&1 | grep -v "^E1204" | tail -60
} 2>&1 | tee "$OUT/gpu-check.log"
