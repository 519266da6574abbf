# Shared helpers for the scripts: installing peers and starting a private redis-server.
# Sourced, not run.

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
     || ! command -v redis-sentinel >/dev/null 2>&1; then
    step "installing redis-server (Debian package)"
    apt_install redis-server redis-sentinel || apt_install redis-server redis-tools
  fi
}

ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    step "installing chromium (Debian package) for the Flower browser test"
    apt_install chromium chromium-driver
  fi
}

# make_venv DIR REQUIREMENTS: a virtualenv in DIR with REQUIREMENTS installed, made again
# only when the requirements file changed (a stamp of its hash sits in DIR).
make_venv() {
  local dir=$1 reqs=$2 want
  want=$(sha256sum "$reqs" | cut -c1-16)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$want" ]; then
    step "creating $dir with $reqs"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip >/dev/null
    "$dir/bin/pip" install -q -r "$reqs"
    echo "$want" > "$dir/.stamp"
  fi
}

# The Python venv with the pinned peers (celery, redis-py, flower) in .venv/.
ensure_venv() {
  make_venv .venv scripts/requirements.txt
  .venv/bin/python -c 'import celery, redis, flower' \
    || { echo "the venv lacks celery/redis/flower; delete .venv and rerun" >&2; exit 1; }
}

# A second venv with Celery 5.5 in .venv-celery55/, for the cross-version test.
ensure_venv_celery55() {
  make_venv .venv-celery55 scripts/requirements-celery55.txt
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_private_redis DIR -> prints the port; the server's pid is in DIR/redis.pid
start_private_redis() {
  local dir=$1 port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && { echo "$port"; return 0; }
    sleep 0.05
  done
  echo "redis-server did not start on port $port" >&2
  return 1
}

# stop_private_redis DIR: stop the redis-server started by start_private_redis DIR and wait
# for it to exit (so its files are closed before DIR is removed).
stop_private_redis() {
  local dir=$1 pid
  [ -f "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}
