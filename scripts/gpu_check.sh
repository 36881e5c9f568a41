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
# A real run through the runner, eager and with the CUDA graph: the same numbers, bit for bit
# (MNIST gzipped in .gpudata, carried; FID off: the TF-FID weights are not on the machine).
if [ -d .gpudata ]; then
  for mode in false true; do
    FGM_DATA_DIR=.gpudata timeout 150 python3 -m experiments.run vae_flow mnist --device cuda --epochs 2 \
      --set cuda_graph=$mode --fid-samples 0 --set classifier_metrics=false --nll-samples 100 \
      --out /tmp/run-graph-$mode --no-progress 2>&1 | grep -v "^E1204\|Warning\|warn" | tail -4
  done
  python3 - <<'PY' 2>&1 | tee -a "$OUT/gpu-check.log"
import json
rows = {m: [json.loads(l) for l in open(f"/tmp/run-graph-{m}/metrics.jsonl")] for m in ("false", "true")}
strip = lambda r: {k: v for k, v in r.items() if "second" not in k and "time" not in k}
print("runner metrics equal, eager vs cuda_graph:", [strip(r) for r in rows["false"]] == [strip(r) for r in rows["true"]])
for m in rows:
    print("cuda_graph", m, [(r["epoch"], r["epoch_seconds"], r["mean"]["val_neg_elbo"]) for r in rows[m]])
res = {m: json.load(open(f"/tmp/run-graph-{m}/results.json"))["mean"] for m in ("false", "true")}
print("test results equal:", res["false"] == res["true"], res["true"])
PY
fi
