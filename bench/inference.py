"""Verified AI inference: tokens per second on a loopback network against the local sandbox.

Runs examples/inference/generate.py (a tiny character-level model, numpy in the python runtime)
to continue a prompt, in chunks of a few tokens. Locally: each chunk in a warm sandbox pool, one
after another. On the network: three real nodes on 127.0.0.x, the SDK's `Client.generate`, each
chunk a job verified by two replicas. Both must produce the same text. Last line: one JSON
object with both rates and their ratio.

Run: .venv/bin/python bench/inference.py [--tokens 32] [--chunk-tokens 8]
(CPython is compiled once per machine into the shared runtime cache; the first time takes minutes.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import trio

from hearth import Client
from hearth.inference import chunk_input
from hearth.node.sandbox import JobRequest, SandboxConfig, SandboxPool
from hearth.testnet import launch, python_net

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inference"
PROMPT = "Hearth is "
FUEL_MAX = 50_000_000_000
DEADLINE_S = 600
LEASE_S = 240  # a worker's first Python job loads the compiled CPython first (tens of seconds)
SEED = 1


def chunk_sizes(tokens: int, chunk_tokens: int) -> list[int]:
    return [min(chunk_tokens, tokens - done) for done in range(0, tokens, chunk_tokens)]


def local_run(home: Path, weights: bytes, tokens: int, chunk_tokens: int) -> tuple[str, float]:
    """The generated text and the seconds it took, chunk by chunk in a warm local pool."""
    source = (EXAMPLE / "generate.py").read_bytes()

    def request(text: str, count: int) -> JobRequest:
        job_input = chunk_input(weights, text, count, SEED, temperature_milli=800)
        return JobRequest(
            "python", source, job_input, FUEL_MAX, 512 << 20, DEADLINE_S * 1000, 1 << 20
        )

    async def measure() -> tuple[str, float]:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            assert (await pool.run(request(PROMPT, 1))).ok  # warm: worker up, CPython loaded
            text, started = PROMPT, time.perf_counter()
            for count in chunk_sizes(tokens, chunk_tokens):
                result = await pool.run(request(text, count))
                assert result.ok, result.error_message
                text += result.output.decode()
            return text[len(PROMPT) :], time.perf_counter() - started

    return trio.run(measure)


def network_run(
    root: Path, weights: bytes, tokens: int, chunk_tokens: int
) -> tuple[str, float, int]:
    """The text, the seconds it took and the fewest replicas that verified any chunk."""
    nodes = python_net.up(root, 3)
    try:
        with Client(nodes[0].home, timeout_s=120) as client:
            started = time.perf_counter()
            chunks = list(
                client.generate(EXAMPLE / "generate.py", weights, PROMPT, tokens=tokens,
                                chunk_tokens=chunk_tokens, seed=SEED, replicas=2,
                                fuel_max=FUEL_MAX, deadline_s=DEADLINE_S, lease_s=LEASE_S)
            )  # fmt: skip
            elapsed_s = time.perf_counter() - started
    finally:
        launch.stop(nodes)
    return "".join(c.text for c in chunks), elapsed_s, min(c.verified_by for c in chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--chunk-tokens", type=int, default=8)
    args = parser.parse_args()
    weights = (EXAMPLE / "model.npz").read_bytes()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-inference-") as tmp:
        python_net.warm()
        home = Path(tmp) / "local"
        local_text, local_s = local_run(home, weights, args.tokens, args.chunk_tokens)
        print(f"local sandbox: {args.tokens} tokens in {local_s:.1f} s: {local_text!r}")
        net_text, net_s, verified_by = network_run(
            Path(tmp) / "net", weights, args.tokens, args.chunk_tokens
        )
        print(f"network (2 replicas): {args.tokens} tokens in {net_s:.1f} s: {net_text!r}")
    local_rate, net_rate = args.tokens / local_s, args.tokens / net_s
    report = {
        "tokens": args.tokens,
        "chunk_tokens": args.chunk_tokens,
        "replicas": 2,
        "verified_by_min": verified_by,
        "same_text": net_text == local_text,
        "local_tokens_per_s": round(local_rate, 3),
        "network_tokens_per_s": round(net_rate, 3),
        "network_over_local": round(net_rate / local_rate, 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
