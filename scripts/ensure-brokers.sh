#!/usr/bin/env bash
# Make sure the brokers the integration tests need are reachable.
#
#   scripts/ensure-brokers.sh [nats] [redis] [rabbitmq]
#
# For each broker named: connect to its URL (WATCHTOWER_NATS_URL, WATCHTOWER_REDIS_URL,
# WATCHTOWER_AMQP_URL, defaults below). One that is down is started, with the same command
# the development machines use, but only when its URL is the local default (127.0.0.1 or
# localhost on the standard port) and the server binary is installed; then the script waits
# up to 60 s for its port. A broker still unreachable after that fails the script with a
# message saying how to start it. This script never stops or kills anything.
set -euo pipefail

readonly WAIT_SECONDS=60
readonly CONNECT_TIMEOUT_MS=1500

readonly NATS_URL="${WATCHTOWER_NATS_URL:-nats://127.0.0.1:4222}"
readonly REDIS_URL="${WATCHTOWER_REDIS_URL:-redis://127.0.0.1:6379}"
readonly AMQP_URL="${WATCHTOWER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}"

readonly REDIS_START='redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
readonly RABBITMQ_START='rabbitmq-server -detached && rabbitmqctl await_startup'
readonly NATS_START='start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log'

log() { printf 'ensure-brokers: %s\n' "$*" >&2; }

usage() {
  printf 'usage: %s [nats] [redis] [rabbitmq]\n' "${0##*/}" >&2
  exit 2
}

# The URL without its password, for messages.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

# Prints "host port" for a URL such as nats://host:4222, amqp://u:p@host, redis://[::1]:6379/0.
host_port() {
  local url="$1" default_port="$2" rest host port
  rest="${url#*://}"
  rest="${rest%%/*}"
  rest="${rest%%\?*}"
  rest="${rest##*@}"
  if [[ "$rest" == \[* ]]; then
    host="${rest%%]*}"
    host="${host#[}"
    rest="${rest#*]}"
    port="${rest#:}"
  elif [[ "$rest" == *:* ]]; then
    host="${rest%%:*}"
    port="${rest#*:}"
  else
    host="$rest"
    port=""
  fi
  printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$default_port}"
}

# True when a TCP connection to host:port opens within the timeout. Node is used (not bash's
# /dev/tcp) because it is always here and has a real connect timeout on every platform.
reachable() {
  node -e '
    const socket = require("node:net").connect({ host: process.argv[1], port: Number(process.argv[2]) });
    socket.setTimeout(Number(process.argv[3]));
    socket.once("connect", () => { socket.destroy(); process.exit(0); });
    socket.once("timeout", () => { socket.destroy(); process.exit(1); });
    socket.once("error", () => process.exit(1));
  ' "$1" "$2" "$CONNECT_TIMEOUT_MS" 2>/dev/null
}

# Looks a server binary up on PATH, then in the sbin folders a non-root PATH may lack.
find_binary() {
  local name="$1" dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for dir in /usr/sbin /usr/local/sbin /sbin; do
    if [[ -x "$dir/$name" ]]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  return 1
}

is_local_default() {
  local host="$1" port="$2" default_port="$3"
  [[ ("$host" == 127.0.0.1 || "$host" == localhost) && "$port" == "$default_port" ]]
}

# Starts one broker with the machines' own command; returns non-zero when it cannot.
start_broker() {
  local name="$1" bin ctl ssd
  case "$name" in
    redis)
      bin="$(find_binary redis-server)" || { log "redis-server is not installed"; return 1; }
      log "starting Redis: $REDIS_START"
      "$bin" --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
      ;;
    rabbitmq)
      bin="$(find_binary rabbitmq-server)" || { log "rabbitmq-server is not installed"; return 1; }
      ctl="$(find_binary rabbitmqctl)" || { log "rabbitmqctl is not installed"; return 1; }
      log "starting RabbitMQ: $RABBITMQ_START"
      "$bin" -detached >&2
      # await_startup waits for the node itself; `timeout` only bounds a node that never boots.
      if command -v timeout >/dev/null 2>&1; then
        timeout "$WAIT_SECONDS" "$ctl" await_startup >&2
      else
        "$ctl" await_startup >&2
      fi
      ;;
    nats)
      [[ -x /usr/sbin/nats-server ]] || { log "/usr/sbin/nats-server is not installed"; return 1; }
      ssd="$(find_binary start-stop-daemon)" || { log "start-stop-daemon is not installed"; return 1; }
      log "starting NATS: $NATS_START"
      "$ssd" --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log >&2
      ;;
  esac
}

wait_for() {
  local host="$1" port="$2" deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    reachable "$host" "$port" && return 0
    sleep 0.5
  done
  reachable "$host" "$port"
}

(($# > 0)) || usage

declare -a failed=()
for broker in "$@"; do
  case "$broker" in
    nats) url="$NATS_URL" env_name=WATCHTOWER_NATS_URL default_port=4222 label=NATS start_cmd="$NATS_START" ;;
    redis) url="$REDIS_URL" env_name=WATCHTOWER_REDIS_URL default_port=6379 label=Redis start_cmd="$REDIS_START" ;;
    rabbitmq) url="$AMQP_URL" env_name=WATCHTOWER_AMQP_URL default_port=5672 label=RabbitMQ start_cmd="$RABBITMQ_START" ;;
    -h | --help) usage ;;
    *)
      log "unknown broker '$broker' (expected nats, redis or rabbitmq)"
      exit 2
      ;;
  esac
  read -r host port < <(host_port "$url" "$default_port")
  shown_url="$(redact "$url")"

  if reachable "$host" "$port"; then
    log "$label is up at $shown_url"
    continue
  fi

  log "$label is not reachable at $shown_url"
  if is_local_default "$host" "$port" "$default_port"; then
    if start_broker "$broker" && wait_for "$host" "$port"; then
      log "$label is up at $shown_url"
      continue
    fi
  else
    log "$env_name points away from the local default: not starting anything for it"
  fi
  failed+=("$label|$shown_url|$env_name|$start_cmd")
done

if ((${#failed[@]} > 0)); then
  {
    printf '\nThe integration tests need these brokers, and they are not reachable:\n'
    for entry in "${failed[@]}"; do
      IFS='|' read -r label shown_url env_name start_cmd <<<"$entry"
      printf '  - %s at %s (set by %s)\n' "$label" "$shown_url" "$env_name"
    done
    printf '\nStart them with Docker:   make services-up   (docker compose up -d --wait)\n'
    printf 'or with local servers (as root):\n'
    for entry in "${failed[@]}"; do
      IFS='|' read -r label shown_url env_name start_cmd <<<"$entry"
      printf '  %-9s %s\n' "$label:" "$start_cmd"
    done
    printf 'or point the WATCHTOWER_*_URL variables at running servers.\n'
  } >&2
  exit 1
fi
