#!/usr/bin/env bash
# Stop what scripts/start_all_services.sh started (SIGTERM: the supervisor stops every
# service cleanly, then exits).
set -euo pipefail
DATA_DIR="${NOCTISPRO_DATA_DIR:-./noctispro-data}"
PIDFILE="$DATA_DIR/serve.pid"
if [ ! -f "$PIDFILE" ] || ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "NoctisPro is not running"; rm -f "$PIDFILE"; exit 0
fi
PID="$(cat "$PIDFILE")"
kill -TERM "$PID"
for _ in $(seq 40); do
  kill -0 "$PID" 2>/dev/null || { rm -f "$PIDFILE"; echo "NoctisPro stopped"; exit 0; }
  sleep 0.5
done
echo "NoctisPro (pid $PID) did not stop within 20 s"; exit 1
