#!/usr/bin/env bash
# A real Foundry Local runtime to load-test, offline: Microsoft's own runtime (the native
# library inside foundry-local-sdk 2.2.1 from PyPI) serving a tiny generated model through
# its own OpenAI-compatible web service on 127.0.0.1.
#
#   bash scripts/foundry_local.sh install        # once: a venv of ~350 MB, ~1-4 min
#   bash scripts/foundry_local.sh start [--port 0]   # in the background; prints the URL
#   bash scripts/foundry_local.sh run [--port 0]     # in the foreground (exec)
#   bash scripts/foundry_local.sh url | status | stop | path | supported
#
# The URL printed (and written to the url file) is the base its models answer under,
# http://127.0.0.1:PORT/catalogs/local/v1, by full id only:
#   qwen2.5-0.5b-instruct-generic-cpu:4  and  phi-4-mini-instruct-generic-cpu:5
# (the Foundry Local workshop's ids; both are the same tiny random model, whose answers are
# gibberish and always exactly max_tokens long). See scripts/foundry_tiny.py.
#
# On Linux there is no `foundry` CLI or service: the runtime is SDK-only, so this script is
# what plays the service. Nothing is downloaded but the pip install; at run time nothing
# leaves 127.0.0.0/8: the cloud catalog is pointed at a closed loopback port, non-essential
# telemetry is off, and the proxy variables send the rest (the runtime's minimal telemetry
# event to mobile.events.data.microsoft.com) to that closed port, so not even a DNS query
# goes out (checked with strace -f -e trace=connect,sendto,sendmsg).
#
# Cache: ${LOADBENCH_CACHE:-~/.cache/loadbench}/foundry-local/ holds venv/, models/tiny/,
# and by default server.pid, server.log, url and the runtime's work/ folder. Set
# FOUNDRY_LOCAL_RUN_DIR to keep those elsewhere (the test tier does, to run beside a
# runtime you started).
set -euo pipefail

SDK="foundry-local-sdk==2.2.1"
# What foundry_tiny.py make needs, pinned to the versions measured.
MODEL_DEPS=("onnx==1.23.2" "tokenizers==0.23.3" "numpy==2.4.6")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LOADBENCH_CACHE:-$HOME/.cache/loadbench}/foundry-local"
RUN_DIR="${FOUNDRY_LOCAL_RUN_DIR:-$CACHE}"
VENV="$CACHE/venv"
DONE="$VENV/.loadbench-complete"
MODEL="$CACHE/models/tiny"
TINY="$ROOT/scripts/foundry_tiny.py"
PID_FILE="$RUN_DIR/server.pid"
LOG_FILE="$RUN_DIR/server.log"
URL_FILE="$RUN_DIR/url"
# Port 9 (discard) on loopback: closed, so whatever the runtime sends through a proxy is
# refused at once, on this machine.
DEAD_END="http://127.0.0.1:9"

say() { printf 'foundry_local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
now_ns() { python3 -c 'import time; print(time.time_ns())' 2>/dev/null || date +%s%N; }

venv_python() {
    if [[ -x "$VENV/bin/python" ]]; then echo "$VENV/bin/python"; else echo "$VENV/Scripts/python.exe"; fi
}

# The SDK ships native wheels for Linux x86-64, macOS and Windows, for CPython 3.11+.
supported() {
    local os arch
    os="$(uname -s)" arch="$(uname -m)"
    case "$os/$arch" in
        Linux/x86_64 | Darwin/* | MINGW*/* | MSYS*/* | CYGWIN*/*) ;;
        *) echo "no foundry-local-sdk wheel for $os $arch (Linux x86-64, macOS, Windows only)"; return 3 ;;
    esac
    base_python >/dev/null || { echo "foundry-local-sdk needs Python 3.11-3.14; none found"; return 3; }
}

# The first interpreter that runs and is 3.11-3.14 (the SDK's range).
base_python() {
    local p
    for p in python3 python3.14 python3.13 python3.12 python3.11 python; do
        if "$p" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 14))' 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    return 1
}

# The venv is complete only once the marker is written after the model is built; anything
# less (an interrupted pip) is removed and redone.
install_runtime() {
    if [[ -f "$DONE" && -f "$MODEL/genai_config.json" ]]; then
        say "already installed: $VENV"
        return
    fi
    local why py t0
    why="$(supported)" || die "$why"
    py="$(base_python)"
    t0="$(now_ns)"
    rm -rf "$VENV" "$MODEL"
    mkdir -p "$CACHE/models"
    say "installing $SDK ${MODEL_DEPS[*]} into $VENV with pip (~350 MB)"
    "$py" -m venv "$VENV"
    "$(venv_python)" -m pip install --quiet --disable-pip-version-check "$SDK" "${MODEL_DEPS[@]}"
    rm -rf "$MODEL.part"
    "$(venv_python)" "$TINY" make "$MODEL.part"
    mv "$MODEL.part" "$MODEL"
    touch "$DONE"
    say "installed in $(( ($(now_ns) - t0) / 1000000000 )) s"
}

# The pid in the pid file, when that process is alive and is our server (a stale pid file
# may name a pid the system has since given to something else).
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(ps -p "$pid" -o args= 2>/dev/null)" == *foundry_tiny.py* ]] || return 1
    echo "$pid"
}

parse_options() {
    port=0
    while (($#)); do
        case "$1" in
            --port) port="${2:?--port needs a value}"; shift 2 ;;
            *) die "unknown option $1 (--port)" ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got $port"
    [[ -f "$DONE" ]] || die "not installed; run: bash scripts/foundry_local.sh install"
    if ((port != 0)) && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is in use; pick another with --port (0: any free one)"
    fi
}

# The runtime's own HTTP client honours the proxy variables: everything not for loopback
# goes to the closed port, so no name is even looked up.
serve_command() {
    serve=(env HTTPS_PROXY="$DEAD_END" HTTP_PROXY="$DEAD_END" ALL_PROXY="$DEAD_END"
        https_proxy="$DEAD_END" http_proxy="$DEAD_END" all_proxy="$DEAD_END"
        NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost ORT_TELEMETRY_DISABLED=1
        "$(venv_python)" "$TINY" serve --model-dir "$MODEL" --work "$RUN_DIR/work"
        --url-file "$URL_FILE" --port "$port")
}

run_server() {
    local port serve
    parse_options "$@"
    serve_command
    mkdir -p "$RUN_DIR"
    exec "${serve[@]}" </dev/null
}

start_server() {
    local port serve pid
    parse_options "$@"
    if pid="$(running_pid)"; then
        die "already running (pid $pid) at $(cat "$URL_FILE" 2>/dev/null); run: bash scripts/foundry_local.sh stop"
    fi
    serve_command
    mkdir -p "$RUN_DIR"
    rm -f "$URL_FILE"
    local t0
    t0="$(now_ns)"
    # setsid: the server outlives this script and the terminal's Ctrl-C; stop ends it.
    if command -v setsid >/dev/null; then
        setsid "${serve[@]}" </dev/null >"$LOG_FILE" 2>&1 &
    else
        nohup "${serve[@]}" </dev/null >"$LOG_FILE" 2>&1 &
    fi
    pid=$!
    echo "$pid" >"$PID_FILE"
    local deadline=$((SECONDS + 60)) url=""
    until [[ -s "$URL_FILE" ]] && url="$(cat "$URL_FILE")" && curl -sf "$url/models" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 20 "$LOG_FILE" >&2
            die "the runtime exited before it answered (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_FILE" >&2
            stop_server
            die "the runtime did not answer within 60 s (log: $LOG_FILE)"
        fi
        sleep 0.1
    done
    say "answering after $(( ($(now_ns) - t0) / 1000000 )) ms: pid $pid, log $LOG_FILE, url in $URL_FILE"
    echo "$url"
}

stop_server() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE" "$URL_FILE"
        say "not running"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE" "$URL_FILE"
    say "stopped pid $pid"
}

status_server() {
    local pid
    if pid="$(running_pid)"; then
        echo "running: pid $pid at $(cat "$URL_FILE" 2>/dev/null || echo '(no url yet)')"
    else
        echo "not running"
        return 3
    fi
}

# The URL of a running runtime, for scripts and tests; exit 3 when none runs.
print_url() {
    running_pid >/dev/null && [[ -s "$URL_FILE" ]] || { say "not running"; return 3; }
    cat "$URL_FILE"
}

cmd="${1:-}"
(($#)) && shift
case "$cmd" in
    install | build) install_runtime ;;
    start) start_server "$@" ;;
    run) run_server "$@" ;;
    stop) stop_server ;;
    status) status_server ;;
    url) print_url ;;
    path) echo "$CACHE" ;;
    supported) supported ;;
    *) die "usage: foundry_local.sh install | start|run [--port P] | stop | status | url | path | supported" ;;
esac
