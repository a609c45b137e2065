#!/usr/bin/env bash
# A/B timing of `vcell eval --preset vcc2026` builds on one pair, for changes worth a few percent on a machine
# whose speed drifts (the 2-core VMs of this project drifted by ±10–20 % within an hour, so builds timed one
# after the other cannot be compared). Each round runs every binary once, back to back, in the order given; the
# report gives each binary's median wall time and the median over rounds of its wall and CPU time divided by the
# first binary's in the same round.
# usage: benches/ab_vcc2026.sh ROUNDS DATA_DIR BASE_BIN OTHER_BIN...   (DATA_DIR holds real.h5ad and pred.h5ad)
# e.g.   cp target/release/vcell /tmp/base; (change, build); benches/ab_vcc2026.sh 10 data /tmp/base target/release/vcell
# Two series of 10–12 rounds of the same pair of builds gave ratios of 0.969 and 1.011 there: trust only a
# difference that repeats, in the same direction, in a second series.
set -euo pipefail
ROUNDS="$1"; DATA="$2"; shift 2
[[ $# -ge 2 ]] || { echo "usage: $0 ROUNDS DATA_DIR BASE_BIN OTHER_BIN..." >&2; exit 2; }
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# the files in the page cache before the first run
cat "$DATA/real.h5ad" "$DATA/pred.h5ad" > /dev/null
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$OUT/run"
    /usr/bin/time -f "$round $bin %e %U %S" -a -o "$OUT/times" "$bin" eval --preset vcc2026 \
      --real "$DATA/real.h5ad" --pred "$DATA/pred.h5ad" -o "$OUT/run" --quiet > /dev/null
  done
done
python3 - "$OUT/times" "$@" <<'PY'
import statistics, sys
times, bins = sys.argv[1], sys.argv[2:]
rounds = {}
for line in open(times):
    r, b, wall, user, sys_ = line.split()
    rounds.setdefault(r, {})[b] = (float(wall), float(user) + float(sys_))
base = bins[0]
for b in bins:
    walls = [t[b][0] for t in rounds.values() if b in t]
    paired = [t for t in rounds.values() if b in t and base in t]
    wall_ratio = statistics.median(t[b][0] / t[base][0] for t in paired)
    cpu_ratio = statistics.median(t[b][1] / t[base][1] for t in paired)
    print(f"{b}: wall median {statistics.median(walls):.3f} s | vs {base}: wall {wall_ratio:.3f}, cpu {cpu_ratio:.3f}"
          f" (medians of {len(paired)} rounds)")
PY
