#!/usr/bin/env bash
# GPU checks and throughput for vcell, in two phases because the GPU box has no Rust toolchain and no network:
#
#   benches/gpu.sh build          # here: CUDA 13 toolkit from PyPI, `cargo build --release --features cuda`,
#                                 # packs the stripped binary + the non-system shared libraries into .gpu/
#   benches/gpu.sh run [OUTDIR]   # on the GPU machine (from the repo root, with .gpu/ present): CPU-vs-CUDA
#                                 # agreement (`vcell gpu-check`), then ST training throughput on CUDA and CPU
#                                 # (cells/s, step time, peak GPU memory); writes OUTDIR/gpu_bench.md
#
# With the `device` tool: run `build` here, then `run` there with `carry: [".gpu"]` (one call, ~5 minutes).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PHASE="${1:-run}"
PKG="$ROOT/.gpu"

if [[ $PHASE == build ]]; then
  TK="${CUDA_TOOLKIT_DIR:-$ROOT/.cuda-toolkit}"
  eval "$("$ROOT/scripts/cuda-toolkit.sh" "$TK")"
  (cd "$ROOT" && CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$ROOT/target-cuda}" cargo build --release --features cuda --bin vcell)
  BIN="${CUDA_TARGET_DIR:-$ROOT/target-cuda}/release/vcell"
  rm -rf "$PKG"; mkdir -p "$PKG/lib"
  strip -o "$PKG/vcell" "$BIN"
  gzip -9 "$PKG/vcell"
  # Shared libraries that a CUDA image may lack (HDF5 and its codecs); CUDA and glibc come from the GPU machine.
  ldd "$BIN" | awk '/=> \// {print $3}' | grep -E 'hdf5|libsz|libaec' | xargs -r -I{} cp -L {} "$PKG/lib/"
  du -sh "$PKG"
  exit 0
fi

OUT="${2:-${OUT:-/tmp/vcell-gpu}}"; mkdir -p "$OUT"
WORK="$(mktemp -d)"
gunzip -c "$PKG/vcell.gz" > "$WORK/vcell"; chmod +x "$WORK/vcell"
V="$WORK/vcell"
# CUDA user-space libraries: the driver's libcuda plus cublas/curand/cudart from the image's Python wheels.
CULIBS=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$PKG/lib:$CULIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$V" | grep "not found"; then echo "missing shared libraries (above)" >&2; exit 1; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$V" --version

echo "== CPU vs CUDA agreement"
"$V" gpu-check --device cuda 2>&1 | tee "$OUT/gpu_check.txt"

cd "$WORK"
"$V" synth -o synth.h5ad --n-genes 2000 --n-perts 48 --cells-per-pert 200 --ctrl-per-cell-type 1000 --quiet
cat > data.toml <<'TOML'
[datasets]
synth = "synth.h5ad"
[training]
synth = "train"
[zeroshot]
"synth.celltype_2" = "test"
TOML
# Arc's state_sm architecture (hidden 672, 4 layers, 8×84 heads, 128-cell sets) at 16 sets per step = 2,048 cells.
cat > st_sm.toml <<'TOML'
preset = "state_sm"
head = "arc"
batch_size = 16
max_steps = 60
lr = 1e-4
val_every = 0
checkpoint_every = 0
TOML

peak_mem() { # run a command while sampling GPU memory; prints the peak in MiB
  local log="$1"; shift
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > "$log" &
  local sampler=$!
  "$@"; local rc=$?
  kill $sampler 2>/dev/null || true
  sort -n "$log" | tail -1
  return $rc
}

throughput() { # median cells/s and step seconds of train events after warm-up
  python3 - "$1" <<'PY'
import json, statistics, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ev = ev[5:] or ev
print(f'{statistics.median(e["throughput"] for e in ev):.0f} {statistics.median(e["step_seconds"] for e in ev):.4f} {len(ev)}')
PY
}

echo "== ST state_sm training on CUDA"
MEM=$(peak_mem "$OUT/mem_st.txt" "$V" train st --data-config data.toml --config st_sm.toml --run-dir runs/cuda --device cuda --quiet)
read -r CUDA_CPS CUDA_STEP N1 <<<"$(throughput runs/cuda/events.jsonl)"
echo "== ST state_sm training on CPU ($(nproc) cores), 8 steps"
"$V" train st --data-config data.toml --config st_sm.toml --run-dir runs/cpu --device cpu --max-steps 8 --quiet
read -r CPU_CPS CPU_STEP N2 <<<"$(throughput runs/cpu/events.jsonl)"
IDLE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)

# The rest is best effort: a failure leaves blanks in the table instead of losing the numbers above.
set +eu
echo "== SE training on CUDA (tiny preset and Arc's preset) and embed throughput"
"$V" synth -o se_data.h5ad --n-genes 2000 --gene-embeddings genes.safetensors --quiet
printf 'preset = "tiny"\nbatch_size = 32\nmax_steps = 40\nval_every = 0\ncheckpoint_every = 0\n' > se_tiny.toml
printf 'preset = "state"\nbatch_size = 4\nmax_steps = 20\nval_every = 0\ncheckpoint_every = 0\n' > se_state.toml
"$V" train se --input se_data.h5ad --gene-embeddings genes.safetensors --config se_tiny.toml --run-dir runs/se_tiny --device cuda --quiet
read -r SE_T_CPS SE_T_STEP N3 <<<"$(throughput runs/se_tiny/events.jsonl)"
MEM_SE=$(peak_mem "$OUT/mem_se.txt" "$V" train se --input se_data.h5ad --gene-embeddings genes.safetensors --config se_state.toml --run-dir runs/se_state --device cuda --quiet)
read -r SE_S_CPS SE_S_STEP N4 <<<"$(throughput runs/se_state/events.jsonl)"
N_CELLS=$(python3 -c "import h5py; print(h5py.File('se_data.h5ad')['obs/_index'].shape[0])" 2>/dev/null || echo 0)
T0=$(date +%s.%N); "$V" embed --run-dir runs/se_tiny --input se_data.h5ad -o emb_tiny.h5ad --device cuda --quiet; T1=$(date +%s.%N)
T2=$(date +%s.%N); "$V" embed --run-dir runs/se_state --input se_data.h5ad -o emb_state.h5ad --device cuda --quiet; T3=$(date +%s.%N)
EMB_T=$(python3 -c "print(f'{$N_CELLS/($T1-$T0):.0f}')"); EMB_S=$(python3 -c "print(f'{$N_CELLS/($T3-$T2):.0f}')")

echo "== vcell demo on CUDA, 4000 steps"
"$V" demo --workspace demo --headless --device cuda --steps 4000 --quiet || true
python3 - demo > "$OUT/demo_scores.md" <<'PY' || true
import csv, glob, os, sys
out = glob.glob(os.path.join(sys.argv[1], 'runs', '*', 'outputs'))[0]
print('| model | DES (overlap_at_N) | PDS (discrimination_score_l1) | MAE | VCC score vs cell-mean |')
print('|---|---|---|---|---|')
for m in ['st', 'perturbation_mean', 'cell_mean', 'control_mean']:
    agg = {r['statistic']: r for r in csv.DictReader(open(f'{out}/eval-{m}/agg_results.csv'))}['mean']
    score = {r['metric']: r['from_baseline'] for r in csv.DictReader(open(f'{out}/eval-{m}/score.csv'))}
    print(f"| {m} | {float(agg['overlap_at_N']):.4f} | {float(agg['discrimination_score_l1']):.4f} | {float(agg['mae']):.4f} | {float(score['avg_score']):.4f} |")
PY

{
  echo "| model (config) | device | cells/s | step time | peak GPU memory |"
  echo "|---|---|---|---|---|"
  echo "| ST state_sm (2,000 genes, 16 × 128 cells/step) | $(head -1 "$OUT/gpu.txt" | cut -d, -f1) | $CUDA_CPS | ${CUDA_STEP} s | $((MEM - IDLE)) MiB (above idle) |"
  echo "| ST state_sm (same) | CPU, $(nproc) cores | $CPU_CPS | ${CPU_STEP} s | – |"
  echo "| SE tiny (2,000 genes, 32 cells/step) | GPU | $SE_T_CPS | ${SE_T_STEP} s | – |"
  echo "| SE Arc preset (2,000 genes, 4 cells/step) | GPU | $SE_S_CPS | ${SE_S_STEP} s | $((MEM_SE - IDLE)) MiB (above idle) |"
  echo "| \`vcell embed\` tiny / Arc preset, $N_CELLS cells | GPU | $EMB_T / $EMB_S cells/s (end to end, incl. h5ad I/O) | – | – |"
  echo
  echo "\`vcell demo --device cuda --steps 4000\` (held-out cell type of the synthetic data):"
  echo
  cat "$OUT/demo_scores.md"
  echo
  echo "CPU vs CUDA agreement (vcell gpu-check):"
  echo '```'
  cat "$OUT/gpu_check.txt"
  echo '```'
} | tee "$OUT/gpu_bench.md"
