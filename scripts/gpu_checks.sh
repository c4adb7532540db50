#!/usr/bin/env bash
# The GPU figures of the issues in one run: gpu-marked tests, metric, editor and defense speed.
#
#   scripts/gpu_checks.sh [OUTDIR]        # default results/gpu; needs a CUDA device
#   SMOKE=1 scripts/gpu_checks.sh /tmp/x  # the same steps on tiny models on the CPU (plumbing)
#
# Every step has its own time limit and writes OUTDIR/<step>.txt, so one slow or failing
# step leaves the others' figures. Models are the built-in random full-size SD 1.5
# architectures (benchmark/models/tiny.py): no weights needed, timings as with real ones.
set -u
out=${1:-results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python}

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.txt"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  $py -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$out/gpu.txt"

if [ "${SMOKE:-0}" = 1 ]; then
    step pytest_gpu 120 $py -m pytest -q -p no:cacheprovider -m gpu tests/test_metrics.py \
        tests/test_generators.py
    step metrics 120 $py scripts/bench_metrics.py --n 16 --fid-n 0 --skip-float64
    step generators 300 $py scripts/bench_generators.py --tiny --json "$out/generators.json"
    step defenses 300 $py scripts/bench_defenses.py --tiny --defenses advdm,photoguard_diffusion \
        --out "$out/defenses.csv"
else
    step pytest_gpu 120 $py -m pytest -q -p no:cacheprovider -rs -m gpu tests/test_metrics.py \
        tests/test_generators.py
    step metrics 80 $py scripts/bench_metrics.py --device cuda --n 256 --fid-n 32
    step generators 150 $py scripts/bench_generators.py --strength 1.0 \
        --json "$out/generators.json"
    step defenses 150 $py scripts/bench_defenses.py --iterations 3 --threads 8 \
        --out "$out/defenses.csv"
fi
