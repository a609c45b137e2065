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

{
  echo "| model (config) | device | cells/s | step time | peak GPU memory |"
  echo "|---|---|---|---|---|"
  echo "| ST state_sm (2,000 genes, 16 × 128 cells/step) | $(head -1 "$OUT/gpu.txt" | cut -d, -f1) | $CUDA_CPS | ${CUDA_STEP} s | $((MEM - IDLE)) MiB (above idle) |"
  echo "| ST state_sm (same) | CPU, $(nproc) cores | $CPU_CPS | ${CPU_STEP} s | – |"
  echo
  echo "CPU vs CUDA agreement (vcell gpu-check):"
  echo '```'
  cat "$OUT/gpu_check.txt"
  echo '```'
} | tee "$OUT/gpu_bench.md"
