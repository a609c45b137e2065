#!/usr/bin/env bash
# Time cell-eval2 0.20.0 (`run --preset vcc2026`, with pdex installed beside it, its faster CPU DE) and
# `vcell eval --preset vcc2026` on the same counts pair, same machine, one after the other.
# usage: benches/vcc2026_vs_celleval2.sh DATA_DIR OUT_DIR   (DATA_DIR holds real.h5ad/pred.h5ad made by
#        tools/make_fixture.py --seed 7 --n-perts 150 --cells-per-pert 200 --n-ctrl 2000 --n-genes 18000 --counts)
# env:   CE2=path/to/cell-eval2 (a venv with `pip install cell-eval2==0.20.0 pdex`)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$1"; OUT="$2"; mkdir -p "$OUT"
CE2="${CE2:-cell-eval2}"
(cd "$ROOT" && cargo build --release --quiet)
/usr/bin/time -v -o "$OUT/time_celleval2.txt" "$CE2" run -ap "$DATA/pred.h5ad" -ar "$DATA/real.h5ad" \
  --preset vcc2026 --pert-col target_gene -o "$OUT/celleval2" > "$OUT/celleval2.log" 2>&1
/usr/bin/time -v -o "$OUT/time_vcell.txt" "$ROOT/target/release/vcell" eval --preset vcc2026 \
  --real "$DATA/real.h5ad" --pred "$DATA/pred.h5ad" -o "$OUT/vcell" --quiet > "$OUT/vcell.log" 2>&1
for t in celleval2 vcell; do
  printf '%s: ' "$t"; grep -E "Elapsed|Maximum resident|User time|System time" "$OUT/time_$t.txt" | tr '\n' ' '; echo
done
