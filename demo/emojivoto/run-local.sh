#!/usr/bin/env bash
# Runs the emojivoto demo app on this machine for development: emoji, voting, web and
# vote-bot as plain processes on 127.0.0.1 (no network namespaces, no mesh), until Ctrl-C
# or SIGTERM, which stops all four cleanly. Exits 1 if a service fails to start or dies.
#
#   demo/emojivoto/run-local.sh                 # then open http://127.0.0.1:18080/
#   WEB_PORT=9080 VOTE_RATE=1 demo/emojivoto/run-local.sh
#
# Environment (defaults in brackets):
#   WEB_PORT [18080]  EMOJI_PORT [18081]  VOTING_PORT [18082]
#   VOTE_RATE   votes per second of vote-bot [5]; VOTE_BOT=0 starts no vote-bot
#   VOTE_SEED   vote-bot's random seed [1]
#   LOG_DIR     where the services' logs go [a new /tmp/emojivoto-local.XXXXXX, kept]
#   LOG_LEVEL   debug, info, warning or error [info]
#
# Startup order and readiness are the ones a cluster script needs too: emoji and voting
# first, web once both have written their --ready-file, vote-bot once web has.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
app=$here/app
python=/usr/bin/python3  # Debian's, with python3-grpcio; not whatever python3 is on PATH
host=127.0.0.1
web_port=${WEB_PORT:-18080}
emoji_port=${EMOJI_PORT:-18081}
voting_port=${VOTING_PORT:-18082}
vote_rate=${VOTE_RATE:-5}
vote_seed=${VOTE_SEED:-1}
export LOG_LEVEL=${LOG_LEVEL:-info}
log_dir=${LOG_DIR:-$(mktemp -d /tmp/emojivoto-local.XXXXXX)}
mkdir -p "$log_dir"
run_dir=$(mktemp -d /tmp/emojivoto-ready.XXXXXX)  # the ready files

[[ -x $python ]] || { echo "run-local: $python not found (Debian's python3)" >&2; exit 1; }
"$python" -c 'import grpc, google.protobuf' 2>/dev/null || {
  echo "run-local: $python lacks grpc: apt-get install python3-grpcio" >&2
  exit 1
}
command -v protoc >/dev/null || {
  echo "run-local: protoc missing: apt-get install protobuf-compiler" >&2
  exit 1
}

pids=()
names=()

# True while process $1 runs (a zombie, exited but not yet waited for, does not count).
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the fields after "(comm)"
  [[ ${stat%% *} != Z ]]
}

# SIGTERM to every service, newest first; SIGKILL to any still running 10 s later.
stop_all() {
  trap - EXIT INT TERM
  local i pid deadline=$((SECONDS + 10))
  ((${#pids[@]})) || { rm -rf "$run_dir"; return; }
  echo "run-local: stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if running "$pid"; then
      echo "run-local: pid $pid did not stop in time, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$run_dir"
  echo "run-local: stopped; logs in $log_dir"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME SCRIPT ARGS...: runs app/SCRIPT in the background, output to $log_dir/NAME.log.
start() {
  local name=$1 script=$2
  shift 2
  "$python" "$app/$script" "$@" >"$log_dir/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# wait_ready NAME: waits up to 20 s for the ready file of the service started last.
wait_ready() {
  local name=$1 pid=${pids[-1]} deadline=$((SECONDS + 20))
  until [[ -s $run_dir/$name.ready ]]; do
    if ! running "$pid" || ((SECONDS >= deadline)); then
      echo "run-local: $name did not start; the end of $log_dir/$name.log:" >&2
      tail -n 20 "$log_dir/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "run-local: $name ready on $(cat "$run_dir/$name.ready")"
}

start emoji emoji.py --listen "$host:$emoji_port" --ready-file "$run_dir/emoji.ready"
wait_ready emoji
start voting voting.py --listen "$host:$voting_port" --ready-file "$run_dir/voting.ready"
wait_ready voting
start web web.py --listen "$host:$web_port" --ready-file "$run_dir/web.ready" \
  --emoji-addr "$host:$emoji_port" --voting-addr "$host:$voting_port"
wait_ready web
if [[ ${VOTE_BOT:-1} != 0 ]]; then
  start vote-bot vote_bot.py --web-addr "$host:$web_port" --rate "$vote_rate" --seed "$vote_seed"
  echo "run-local: vote-bot voting $vote_rate times a second"
fi

cat <<EOF
run-local: emojivoto is up: http://$host:$web_port/   (Ctrl-C stops it)
  curl http://$host:$web_port/api/leaderboard
  curl "http://$host:$web_port/api/vote?choice=:doughnut:"    # answers 500, always
  tail -f $log_dir/*.log
EOF

# Until Ctrl-C/SIGTERM (the traps), or until a service dies on its own.
while true; do
  wait -n || true
  for i in "${!pids[@]}"; do
    if ! running "${pids[i]}"; then
      echo "run-local: ${names[i]} exited unexpectedly; the end of $log_dir/${names[i]}.log:" >&2
      tail -n 20 "$log_dir/${names[i]}.log" >&2
      exit 1
    fi
  done
done
