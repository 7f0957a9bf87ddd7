#!/usr/bin/env bash
# Stops the LocalStack started by start.sh (and any DynamoDB Local JVM left from this checkout).
# Idempotent: does nothing when nothing runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$HERE/.state"
PIDFILE="$STATE/localstack.pid"

# Alive = exists and not a zombie (a dead child nobody reaped yet still answers kill -0).
alive() {
  local st
  st="$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "$st" != " Z "* ]]
}
cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# Waits up to $2 tenths of a second for pid $1 to die.
wait_dead() {
  local i
  for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done
  ! alive "$1"
}

stopped=0
PID="$(cat "$PIDFILE" 2>/dev/null || true)"
if [[ "$PID" =~ ^[0-9]+$ ]] && alive "$PID" && [[ "$(cmdline "$PID")" == *localstack.runtime.main* ]]; then
  # SIGTERM lets LocalStack shut its services (and the DynamoDB JVM) down cleanly.
  kill -TERM "$PID" 2>/dev/null || true
  if ! wait_dead "$PID" 100; then
    echo "stop.sh: pid $PID ignored SIGTERM for 10 s; killing its process group" >&2
    kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null || true
    wait_dead "$PID" 20 || true
  fi
  # start.sh made it a process-group leader: anything still in the group is a leftover child.
  if group_alive "$PID"; then
    kill -TERM -- "-$PID" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$PID" 2>/dev/null || true
  fi
  echo "localstack: stopped pid $PID"
  stopped=1
fi
rm -f "$PIDFILE" "$STATE/localstack.port"

# A DynamoDB Local JVM that outlived its parent: only java processes whose command line points
# into this checkout's .state folder (its -javaagent and -jar paths do).
for dir in /proc/[0-9]*; do
  pid="${dir#/proc/}"
  args="$(cmdline "$pid")"
  [[ "$args" == *"$STATE/"* ]] || continue
  argv0="${args%% *}"
  [[ "${argv0##*/}" == java ]] || continue
  alive "$pid" || continue
  kill -TERM "$pid" 2>/dev/null || true
  wait_dead "$pid" 50 || kill -KILL "$pid" 2>/dev/null || true
  echo "localstack: stopped leftover DynamoDB Local java pid $pid"
  stopped=1
done

if [ "$stopped" = 0 ]; then echo "localstack: not running"; fi
