#!/usr/bin/env bash
# The workbench over a terminal: CPU use of `vcell ui` while idle and while following a live training run, and
# its frame draw times (VCELL_UI_FRAME_STATS). Runs the release binary in a private tmux server, 120×36.
# usage: benches/ui_live.sh [WORKDIR]   (default /tmp/vcell-ui-bench); needs tmux (scripts/setup.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/vcell-ui-bench}"
SECS="${SECS:-30}"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
(cd "$ROOT" && cargo build --release --quiet)
V="$ROOT/target/release/vcell"
TMUX_="tmux -L vcell-ui-bench-$$ -f /dev/null"
trap '$TMUX_ kill-server 2>/dev/null || true; "$V" runs stop --runs-dir "$WORK/runs" live >/dev/null 2>&1 || true' EXIT
"$V" synth -o synth.h5ad --n-genes 2000 --n-perts 24 --n-cell-types 2 --cells-per-pert 64 --ctrl-per-cell-type 256 --quiet
printf '[datasets]\nsynth = "synth.h5ad"\n[training]\nsynth = "train"\n[zeroshot]\n"synth.celltype_1" = "test"\n' > data.toml
printf 'max_steps = 1000000\ncheckpoint_every = 200\nval_every = 50\n' > st.toml

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, clock ticks
hz=$(getconf CLK_TCK)
measure() { # label pid seconds -> percent of one core
  local a b; a=$(ticks "$2"); sleep "$3"; b=$(ticks "$2")
  awk -v l="$1" -v a="$a" -v b="$b" -v s="$3" -v hz="$hz" 'BEGIN { printf "| %s | %.2f %% of one core |\n", l, 100*(b-a)/hz/s }'
}
ui_pid() { pgrep -n -f "$V ui" ; }

echo "| state (${SECS} s each, 120×36, release) | vcell ui CPU |" > table.md
echo "|---|---|" >> table.md
$TMUX_ new-session -d -s ui -x 120 -y 36 "env TERM=xterm-256color VCELL_UI_FRAME_STATS=$WORK/frames_idle.json $V ui $WORK/runs"
sleep 3; measure "idle (no runs)" "$(ui_pid)" "$SECS" >> table.md
$TMUX_ send-keys -t ui q; sleep 1
"$V" runs start --runs-dir "$WORK/runs" --name live -- train st --data-config data.toml --config st.toml >/dev/null
$TMUX_ new-session -d -s ui2 -x 120 -y 36 "env TERM=xterm-256color VCELL_UI_FRAME_STATS=$WORK/frames_live.json $V ui $WORK/runs"
sleep 3
$TMUX_ send-keys -t ui2 2; sleep 1   # the loss pane of the selected (live) run
measure "following a live ST run (loss pane)" "$(ui_pid)" "$SECS" >> table.md
$TMUX_ capture-pane -p -t ui2 > pane_live.txt
$TMUX_ send-keys -t ui2 q; sleep 1
echo >> table.md
echo "frame draw times: idle $(cat frames_idle.json 2>/dev/null); live $(cat frames_live.json 2>/dev/null)" >> table.md
cat table.md
