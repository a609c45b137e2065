#!/usr/bin/env bash
# Benchmark `vcell eval` / `vcell baseline` against cell-eval 0.8.2 on the same data, same machine, same threads.
#
# usage: benches/eval_vs_celleval.sh [WORKDIR]   (default WORKDIR=/tmp/vcell-bench)
# env:   VENV=DIR     venv with cell-eval 0.8.2 (created here if missing: python3 -m venv + pip install)
#        THREADS=N    threads for both tools (default: nproc)
#        PROFILES="vcc full"   profiles to run (full takes cell-eval ~8 min on the big pair)
#        SIZE=big|small        big = 150 perts × 200 cells + 2000 ctrl × 18,000 genes (the issue's pair)
#        REPEAT=N     vcell runs per profile (default 3); the table shows the run with the median wall time
# Prints a markdown table (wall s, CPU s, peak RSS) with ratios; paste it into BENCHMARKS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/vcell-bench}"
VENV="${VENV:-$ROOT/.venv-celleval}"
THREADS="${THREADS:-$(nproc)}"
PROFILES="${PROFILES:-vcc}"
SIZE="${SIZE:-big}"
REPEAT="${REPEAT:-3}"
mkdir -p "$WORK"

if [[ ! -x "$VENV/bin/cell-eval" ]]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q cell-eval==0.8.2
fi
(cd "$ROOT" && cargo build --release --quiet)
VCELL="$ROOT/target/release/vcell"

DATA="$WORK/$SIZE"
if [[ ! -f "$DATA/real.h5ad" ]]; then
  if [[ $SIZE == big ]]; then
    ARGS="--seed 7 --n-perts 150 --cells-per-pert 200 --n-ctrl 2000 --n-genes 18000"
  else
    ARGS="--seed 21 --n-perts 20 --cells-per-pert 100 --n-ctrl 200 --n-genes 2000"
  fi
  "$VENV/bin/python" "$ROOT/tools/make_fixture.py" $ARGS --pred-mode noise --outdir "$DATA"
fi

# wall seconds, cpu seconds, peak RSS MB from a /usr/bin/time -v file
measure() {
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n=split($2,a,":"); w=(n==3)? a[1]*3600+a[2]*60+a[3] : a[1]*60+a[2] }
    /User time/ { u=$2 } /System time/ { s=$2 } /Maximum resident/ { r=$2/1024 }
    END { printf "%.1f %.1f %.0f", w, u+s, r }' "$1"
}

# of the time files $1.1 … $1.REPEAT, copy the one with the median wall time to $1
pick_median() {
  local runs
  runs="$(for i in $(seq "$REPEAT"); do echo "$(measure "$1.$i" | cut -d' ' -f1) $1.$i"; done | sort -n)"
  echo "[bench] $(basename "$1") walls: $(echo "$runs" | cut -d' ' -f1 | xargs)"
  cp "$(echo "$runs" | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) { print $2 }')" "$1"
}

row() { # name, celleval-time-file, vcell-time-file
  read -r cw cc cr <<<"$(measure "$2")"; read -r vw vc vr <<<"$(measure "$3")"
  awk -v n="$1" -v cw="$cw" -v cc="$cc" -v cr="$cr" -v vw="$vw" -v vc="$vc" -v vr="$vr" 'BEGIN {
    printf "| %s | %.1f s / %.1f s / %.0f MB | %.1f s / %.1f s / %.0f MB | %.1f× | %.1f× | %.1f× |\n",
      n, cw, cc, cr, vw, vc, vr, cw/vw, cc/vc, cr/vr }'
}

echo "| run ($SIZE, $THREADS threads) | cell-eval 0.8.2 wall / CPU / peak RSS | vcell wall / CPU / peak RSS | wall ratio | CPU ratio | memory ratio |" > "$WORK/table.md"
echo "|---|---|---|---|---|---|" >> "$WORK/table.md"
for P in $PROFILES; do
  CE="$WORK/celleval_$P"; VC="$WORK/vcell_$P"; rm -rf "$CE" "$VC"; mkdir -p "$CE"
  echo "[bench] cell-eval run --profile $P"
  /usr/bin/time -v -o "$WORK/time_celleval_$P.txt" "$VENV/bin/cell-eval" run -ar "$DATA/real.h5ad" -ap "$DATA/pred.h5ad" \
    -o "$CE" --profile "$P" --num-threads "$THREADS" > "$WORK/celleval_$P.log" 2>&1
  echo "[bench] vcell eval --profile $P (x$REPEAT)"
  for i in $(seq "$REPEAT"); do
    rm -rf "$VC"
    /usr/bin/time -v -o "$WORK/time_vcell_$P.txt.$i" "$VCELL" eval --real "$DATA/real.h5ad" --pred "$DATA/pred.h5ad" \
      -o "$VC" --profile "$P" --threads "$THREADS" --quiet > "$WORK/vcell_$P.log" 2>&1
  done
  pick_median "$WORK/time_vcell_$P.txt"
  "$VENV/bin/python" "$ROOT/benches/compare_outputs.py" "$CE" "$VC" || echo "[bench] outputs differ beyond the tolerances above"
  row "eval --profile $P" "$WORK/time_celleval_$P.txt" "$WORK/time_vcell_$P.txt" >> "$WORK/table.md"
done

echo "[bench] baseline"
mkdir -p "$WORK/celleval_baseline" "$WORK/vcell_baseline"
/usr/bin/time -v -o "$WORK/time_celleval_baseline.txt" "$VENV/bin/cell-eval" baseline -a "$DATA/real.h5ad" \
  -o "$WORK/celleval_baseline/baseline.h5ad" -O "$WORK/celleval_baseline/baseline_de.csv" -t "$THREADS" \
  > "$WORK/celleval_baseline.log" 2>&1
/usr/bin/time -v -o "$WORK/time_vcell_baseline.txt" "$VCELL" baseline --adata "$DATA/real.h5ad" \
  -o "$WORK/vcell_baseline/baseline.h5ad" --de-output "$WORK/vcell_baseline/baseline_de.csv" --threads "$THREADS" --quiet \
  > "$WORK/vcell_baseline.log" 2>&1
row "baseline" "$WORK/time_celleval_baseline.txt" "$WORK/time_vcell_baseline.txt" >> "$WORK/table.md"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >> "$WORK/table.md"
cat "$WORK/table.md"
