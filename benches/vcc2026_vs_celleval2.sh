#!/usr/bin/env bash
# Time cell-eval2 0.20.0 (`run --preset vcc2026`, with pdex installed beside it, its faster CPU DE) and
# `vcell eval --preset vcc2026` on the same counts pair, same machine, one after the other; then time vcell's
# whole real bundle (baseline arm + five half-split anchors) and the final score.
# usage: benches/vcc2026_vs_celleval2.sh DATA_DIR OUT_DIR   (DATA_DIR holds real.h5ad/pred.h5ad made by
#        tools/make_fixture.py --seed 7 --n-perts 150 --cells-per-pert 200 --n-ctrl 2000 --n-genes 18000 --counts)
# env:   REPEAT=N vcell eval runs (default 3, the median is reported)
#        CE2=path/to/cell-eval2 (a venv with `pip install cell-eval2==0.20.0 pdex`); SKIP_CE2=1 skips it
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$1"; OUT="$2"; mkdir -p "$OUT"
CE2="${CE2:-cell-eval2}"
VCELL="$ROOT/target/release/vcell"
(cd "$ROOT" && cargo build --release --quiet)
# vcell eval REPEAT times (default 3); the run with the median wall time is reported
REPEAT="${REPEAT:-3}"
cat "$DATA/real.h5ad" "$DATA/pred.h5ad" > /dev/null
walls=()
for i in $(seq "$REPEAT"); do
  rm -rf "$OUT/vcell" "$OUT/bundle" "$OUT/score.csv"
  /usr/bin/time -v -o "$OUT/time_vcell.txt.$i" "$VCELL" eval --preset vcc2026 \
    --real "$DATA/real.h5ad" --pred "$DATA/pred.h5ad" -o "$OUT/vcell" --quiet > "$OUT/vcell.log" 2>&1
  walls+=("$(awk -F': ' '/Elapsed/ { n = split($2, a, ":"); print (n == 3) ? a[1] * 3600 + a[2] * 60 + a[3] : a[1] * 60 + a[2] }' "$OUT/time_vcell.txt.$i") $i")
done
median="$(printf '%s\n' "${walls[@]}" | sort -n | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) { print $2 }')"
echo "vcell eval walls: $(printf '%s\n' "${walls[@]}" | cut -d' ' -f1 | xargs) (median: run $median)"
cp "$OUT/time_vcell.txt.$median" "$OUT/time_vcell.txt"
# cell-eval2 after vcell's runs, so that each tool starts on an idle machine with the files in the page cache:
# run right after cell-eval2 (~2 min at full load, 5.7 GB), vcell took 2.69-2.82 s where it took 2.47-2.59 s a
# minute later (session of 2026-12-06, 16:33 UTC)
if [[ "${SKIP_CE2:-0}" != 1 ]]; then
  rm -rf "$OUT/celleval2"
  cat "$DATA/real.h5ad" "$DATA/pred.h5ad" > /dev/null
  /usr/bin/time -v -o "$OUT/time_celleval2.txt" "$CE2" run -ap "$DATA/pred.h5ad" -ar "$DATA/real.h5ad" \
    --preset vcc2026 --pert-col target_gene -o "$OUT/celleval2" > "$OUT/celleval2.log" 2>&1
fi
/usr/bin/time -v -o "$OUT/time_vcell_bundle.txt" "$VCELL" real-bundle --real "$DATA/real.h5ad" -o "$OUT/bundle" \
  --quiet > "$OUT/vcell_bundle.log" 2>&1
/usr/bin/time -v -o "$OUT/time_vcell_score.txt" "$VCELL" score --real-bundle "$OUT/bundle" \
  -i "$OUT/vcell/agg_results.csv" -o "$OUT/score.csv" > "$OUT/vcell_score.log" 2>&1 || true
for t in celleval2 vcell vcell_bundle vcell_score; do
  [[ -f "$OUT/time_$t.txt" ]] || continue
  printf '%s: ' "$t"; grep -E "Elapsed|Maximum resident|User time|System time" "$OUT/time_$t.txt" | tr '\n' ' '; echo
done
if [[ -d "$OUT/celleval2" ]]; then
  python3 - "$OUT/celleval2/agg_results.csv" "$OUT/vcell/agg_results.csv" <<'PY'
import csv, sys
a = {r[0]: r[1:] for r in csv.reader(open(sys.argv[1]))}
b = {r[0]: r[1:] for r in csv.reader(open(sys.argv[2]))}
worst = 0.0
where = "-"
header = a.get("statistic", [])
for k in a:
    for h, x, y in zip(header, a[k], b.get(k, [])):
        try:
            x, y = float(x), float(y)
        except ValueError:
            continue
        # relative to |x|, with a 1e-12 floor: a std of values that are all ~1 (expr_real_mass_ratio) is ~5e-17
        # in both tools, rounding noise whose relative difference means nothing
        rel = abs(x - y) / max(abs(x), 1e-12)
        if rel > worst:
            worst, where = rel, f"{k} {h}"
print(f"agg_results: worst relative difference vcell vs cell-eval2: {worst:.3e} ({where})")
PY
fi
