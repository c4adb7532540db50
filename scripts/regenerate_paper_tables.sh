#!/usr/bin/env bash
# Run one experiment preset as a sweep and write its tables and figures into one folder.
#
#   scripts/regenerate_paper_tables.sh PRESET OUT [OVERRIDES...]
#
#   PRESET     an experiment config: paper_diffusion, paper_purification, ... (bench ls experiment)
#   OUT        the folder: OUT/runs (the sweeps), OUT/tables, OUT/figures
#   OVERRIDES  passed to every `bench run`, e.g. hydra/launcher=slurm, dataset.limit=50
#
# Environment:
#   SWEEP     extra overrides of the main sweep only, e.g. "defense=none,noise transform=jpeg,resize"
#             (the preset's own hydra.sweeper.params otherwise)
#   PAIR      the pair of the main tables (default: edit; fidelity for the image-purification
#             tables and for presets without a generator)
#   METRICS   comma-separated metrics of the tables (default: ssim,psnr)
#   CURVES    1 (default): also sweep JPEG quality and rescaling factor for the robustness
#             curves; 0: only the preset's own sweep
#   REPORTED  the study's numbers for `--vs` (default: results/paper_reported.csv next to
#             this script)
#
# Re-running the same command resumes: finished jobs are skipped, failed ones retried.
# Example on CPU with tiny random models (minutes):
#   SWEEP="transform=identity,jpeg,resize,quantize" scripts/regenerate_paper_tables.sh tiny \
#       /tmp/paper defense=none,noise,photoguard_encoder "metric=[psnr,ssim]"
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
preset=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
pair=${PAIR:-edit}
metrics=${METRICS:-ssim,psnr}
curves=${CURVES:-1}
reported=${REPORTED:-$here/results/paper_reported.csv}
first_metric=${metrics%%,*}
mkdir -p "$out/runs" "$out/tables" "$out/figures"

echo "== sweep: experiment=$preset -> $out/runs/main"
# shellcheck disable=SC2086  # SWEEP holds several overrides
bench run -m "experiment=$preset" "hydra.sweep.dir=$out/runs/main" progress=false "$@" ${SWEEP:-}
if [[ $curves == 1 ]]; then
    echo "== robustness curves: JPEG quality and rescaling factor"
    bench run -m "experiment=$preset" transform=jpeg transform.quality=95,75,50,30,10 \
        "hydra.sweep.dir=$out/runs/curve_jpeg" progress=false "$@"
    bench run -m "experiment=$preset" transform=resize transform.factor=0.9,0.75,0.5,0.25 \
        "hydra.sweep.dir=$out/runs/curve_resize" progress=false "$@"
    bench run -m "experiment=$preset" transform=identity \
        "hydra.sweep.dir=$out/runs/curve_identity" progress=false "$@"
fi

main="$out/runs/main"
echo "== tables"
for fmt in md tex csv; do
    format=${fmt/tex/latex}
    bench table "$main" --metric "$metrics" --pair "$pair" --format "$format" \
        -o "$out/tables/${pair}.$fmt"
    bench table "$main" --metric "$metrics" --pair "$pair" --agg ci --format "$format" \
        -o "$out/tables/${pair}_ci.$fmt"
done
bench table "$main" --metric "$metrics" --pair "$pair" --agg worst \
    --where 'transform!=identity' -o "$out/tables/${pair}_worst.md" \
    || echo "(no worst-case table: a metric without a direction)"
if bench table "$main" --metric "$metrics" --pair drop -o "$out/tables/drop.md" 2>/dev/null; then
    :
else
    echo "(no drop table: the preset does not compute both protection and edit)"
fi
bench table "$main" --metric "$metrics" --pair "$pair" --vs "$reported" \
    -o "$out/tables/vs_paper.md" || echo "(the study reports nothing for $metrics on $pair)"
cp "$main/sweep_summary.csv" "$out/tables/" 2>/dev/null || true

echo "== figures"
if [[ $curves == 1 ]]; then
    bench plot curves "$out/runs" --metric "$first_metric" --pair "$pair" \
        -o "$out/figures/curves_${first_metric}_${pair}"
fi
bench plot cost "$main" --metric "$first_metric" -o "$out/figures/purifier_cost_${first_metric}"
bench grid "$main" --rows defense --n 3 -o "$out/figures/grid_defenses.png"
bench grid "$main" --rows transform --n 2 -o "$out/figures/grid_transforms.png"

echo "== done: $out/tables, $out/figures"
ls "$out/tables" "$out/figures"
