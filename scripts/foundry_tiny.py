"""A tiny model served by the real Foundry Local runtime, offline, for loadbench's tests.

    python foundry_tiny.py make MODEL_DIR
    python foundry_tiny.py serve --model-dir MODEL_DIR --work DIR --url-file FILE
                                 [--port 0] [--id ID ...]

Run by scripts/foundry_local.sh with the interpreter of its own venv (foundry-local-sdk
2.2.1, onnx, tokenizers, numpy), never loadbench's: the runtime's 275 MB stay out of the
project's environment.

``make`` writes a random-weight decoder in ONNX Runtime GenAI's layout (about 110 KB, one
second, nothing downloaded). Its output bias masks the end-of-sequence token and every
token that is not printable ASCII, so an answer is always exactly ``max_tokens`` tokens and
each token is one SSE chunk: what a load test needs to check its counts against.

``serve`` registers the model in the runtime's LOCAL catalog under workshop-style ids,
loads each, starts the runtime's own OpenAI-compatible web service on 127.0.0.1 and writes
the base URL its models are served under (``<url>/catalogs/local/v1``) to the URL file,
then waits for SIGTERM or SIGINT and takes everything down again. Local-catalog models
answer only there and only by full id; ``/v1`` at the root answers 404 for them.

What would reach out is pointed at 127.0.0.1 or switched off: the cloud catalog URL is a
closed loopback port, non-essential telemetry is disabled, and the shell script sets the
proxy variables to that closed port for the rest (the runtime's HTTP client honours them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

# Workshop-style ids (the Foundry Local workshop's models); loadbench resolves the alias
# (qwen2.5-0.5b) to the id the way the SDK does. All of them serve the same tiny model.
DEFAULT_IDS = ("qwen2.5-0.5b-instruct-generic-cpu:4", "phi-4-mini-instruct-generic-cpu:5")
# A catalog that answers nothing: port 9 (discard) on loopback, closed here, so a catalog
# refresh fails at once on 127.0.0.1 instead of retrying api.catalog.azureml.ms. The
# runtime accepts only URLs ending in this path.
OFFLINE_CATALOG = "http://127.0.0.1:9/asset-gallery/v1.0/models"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog. " * 4,
    "load testing local language model servers with streaming responses.",
    "system user assistant hello world benchmark latency throughput tokens per second",
] * 20


def say(message: str) -> None:
    print(f"foundry_tiny: {message}", file=sys.stderr, flush=True)


def make(out: Path) -> None:
    """The tokenizer, the ONNX graph and genai_config.json, written into ``out``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True, exist_ok=True)
    # A byte-level BPE (Qwen2's kind) trained on a few local sentences: 320 tokens.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    eos, bos = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    added = {
        str(tok.token_to_id(s)): {
            "content": s,
            "special": True,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
        }
        for s in SPECIALS
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "model_max_length": 2048,
            "add_prefix_space": False,
            "errors": "replace",
            "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": added,
        },
    )
    _write_json(
        out / "special_tokens_map.json", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    )

    # The decoder: logits = embedding(ids) @ W + B; the KV cache grows by the embedding,
    # which is all GenAI's loop needs (one layer, two KV heads of 16).
    layers, heads, head_size = 1, 2, 16
    hidden = heads * head_size
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((vocab, hidden)).astype(np.float32)
    weights = rng.standard_normal((hidden, vocab)).astype(np.float32)
    bias = np.zeros((vocab,), dtype=np.float32)
    for t in range(vocab):
        text = tok.decode([t])
        # Never EOS or a special (the answer is max_tokens long), and never a token that
        # decodes to nothing printable (each token is one SSE chunk).
        if (
            t == eos
            or tok.id_to_token(t) in SPECIALS
            or not (text and text.isascii() and text.isprintable())
        ):
            bias[t] = -1e4
    inits = [
        numpy_helper.from_array(embedding, "E"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.array([0, 0, heads, head_size], dtype=np.int64), "kvshape"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"], axis=0),
        helper.make_node("MatMul", ["emb", "W"], ["proj"]),
        helper.make_node("Add", ["proj", "B"], ["logits"]),
        helper.make_node("Reshape", ["emb", "kvshape"], ["emb4"]),
        helper.make_node("Transpose", ["emb4"], ["knew"], perm=[0, 2, 1, 3]),
        # GenAI feeds attention_mask; an input no node reads is dropped by ORT, so use it.
        helper.make_node("Shape", ["attention_mask"], ["am_shape"]),
    ]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", f32, ["batch", "seq", vocab]),
        helper.make_tensor_value_info("am_shape", i64, [2]),
    ]
    for i in range(layers):
        for kv in ("key", "value"):
            past, present = f"past_key_values.{i}.{kv}", f"present.{i}.{kv}"
            inputs.append(
                helper.make_tensor_value_info(past, f32, ["batch", heads, "past", head_size])
            )
            outputs.append(
                helper.make_tensor_value_info(present, f32, ["batch", heads, "total", head_size])
            )
            nodes.append(helper.make_node("Concat", [past, "knew"], [present], axis=2))
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    _write_json(
        out / "genai_config.json",
        {
            "model": {
                "bos_token_id": bos,
                "context_length": 2048,
                "eos_token_id": eos,
                "pad_token_id": bos,
                "type": "qwen2",
                "vocab_size": vocab,
                "decoder": {
                    "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                    "filename": "model.onnx",
                    "head_size": head_size,
                    "hidden_size": hidden,
                    "inputs": {
                        "input_ids": "input_ids",
                        "attention_mask": "attention_mask",
                        "past_key_names": "past_key_values.%d.key",
                        "past_value_names": "past_key_values.%d.value",
                    },
                    "outputs": {
                        "logits": "logits",
                        "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value",
                    },
                    "num_attention_heads": heads,
                    "num_hidden_layers": layers,
                    "num_key_value_heads": heads,
                },
            },
            "search": {
                "do_sample": False,
                "early_stopping": True,
                "max_length": 2048,
                "min_length": 0,
                "num_beams": 1,
                "num_return_sequences": 1,
                "past_present_share_buffer": False,
                "repetition_penalty": 1.0,
                "temperature": 1.0,
                "top_k": 1,
                "top_p": 1.0,
            },
        },
    )
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    say(f"tiny model in {out}: vocabulary {vocab}, eos {eos}, files {sizes}")


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def serve(model_dir: Path, work: Path, url_file: Path, port: int, ids: list[str]) -> None:
    """Serves until SIGTERM or SIGINT; the URL file exists exactly while it answers."""
    from foundry_local_sdk import (
        CatalogType,
        Configuration,
        FoundryLocalManager,
        LogLevel,
        ModelInfoBuilder,
    )

    if not (model_dir / "genai_config.json").is_file():
        sys.exit(f"foundry_tiny: no model in {model_dir}; run: foundry_tiny.py make {model_dir}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.perf_counter()
    FoundryLocalManager.initialize(
        Configuration(
            app_name="loadbench",
            app_data_dir=str(work / "data"),
            model_cache_dir=str(work / "cache"),
            logs_dir=str(work / "logs"),
            log_level=LogLevel.WARNING,
            web=Configuration.WebService(urls=f"http://127.0.0.1:{port}"),
            catalog_urls=[(OFFLINE_CATALOG, None)],
            disable_nonessential_telemetry=True,
        )
    )
    manager = FoundryLocalManager.instance
    catalog = manager.get_catalog(CatalogType.LOCAL)
    loaded = []
    try:
        for model_id in ids:
            with ModelInfoBuilder() as info:
                info.set_string_property("task", "chat-completion")
                model = catalog.register_model(
                    model_path=model_dir, model_id=model_id, metadata=info
                )
            model.load()
            loaded.append(model)
        manager.start_web_service()
        base = manager.urls[0].rstrip("/") + "/catalogs/local/v1"
        part = url_file.with_name(url_file.name + ".part")
        part.write_text(base + "\n", encoding="utf-8")
        os.replace(part, url_file)  # readers never see half a URL
        say(
            f"serving {', '.join(m.id for m in loaded)} at {base} "
            f"(up in {time.perf_counter() - t0:.2f} s, pid {os.getpid()})"
        )
        print(base, flush=True)
        stop.wait()
    finally:
        url_file.unlink(missing_ok=True)
        if manager.urls:
            manager.stop_web_service()
        for model in loaded:
            model.unload()
            catalog.unregister_model(model.id)
        manager.close()
        say("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make_p = sub.add_parser("make", help="write the tiny model")
    make_p.add_argument("model_dir", type=Path)
    serve_p = sub.add_parser("serve", help="serve it until SIGTERM")
    serve_p.add_argument("--model-dir", type=Path, required=True)
    serve_p.add_argument("--work", type=Path, required=True)
    serve_p.add_argument("--url-file", type=Path, required=True)
    serve_p.add_argument("--port", type=int, default=0)
    serve_p.add_argument("--id", dest="ids", action="append")
    args = parser.parse_args()
    if args.command == "make":
        make(args.model_dir)
    else:
        serve(args.model_dir, args.work, args.url_file, args.port, args.ids or list(DEFAULT_IDS))


if __name__ == "__main__":
    main()
