#!/usr/bin/env bash
# Start NoctisPro in the background: a thin wrapper around `noctispro serve` for people
# used to start/stop scripts. Output goes to <data dir>/logs/serve.log; the supervisor's
# pid to <data dir>/serve.pid. Stop with scripts/stop_all_services.sh.
set -euo pipefail
NOCTISPRO="${NOCTISPRO:-$(command -v noctispro || echo "$(dirname "$0")/../.venv/bin/noctispro")}"
DATA_DIR="${NOCTISPRO_DATA_DIR:-./noctispro-data}"
mkdir -p "$DATA_DIR/logs"
PIDFILE="$DATA_DIR/serve.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "NoctisPro is already running (pid $(cat "$PIDFILE"))"; exit 0
fi
nohup "$NOCTISPRO" serve >>"$DATA_DIR/logs/serve.log" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 60); do
  if grep -q "Press Ctrl-C to stop." "$DATA_DIR/logs/serve.log" 2>/dev/null; then
    sed -n '/NoctisPro is running:/,/Press Ctrl-C/p' "$DATA_DIR/logs/serve.log" | tail -n 9
    exit 0
  fi
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "NoctisPro exited; see $DATA_DIR/logs/serve.log"; exit 1; }
  sleep 0.5
done
echo "NoctisPro started (pid $(cat "$PIDFILE")) but is not answering yet; see $DATA_DIR/logs/"
