"""Train the tiny character-level language model that `generate.py` runs as a Hearth job.

Runs on the host with numpy (no download): a Bengio-style MLP reads the last CONTEXT characters
and predicts the next one. The corpus is the project's own documentation. Writes model.npz
(float32 weights, about 300 KB); the committed model.npz was made by

    python examples/inference/train.py
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ("README.md", "docs/architecture.md", "docs/testing.md", "docs/testnet.md")
CONTEXT = 12
EMBED = 24
HIDDEN = 192
PAD = "\0"


def corpus_text(root: Path = ROOT) -> str:
    return "\n".join((root / name).read_text("utf-8") for name in CORPUS)


def train(text: str, *, steps: int, seed: int = 0, batch: int = 128) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = PAD + "".join(sorted(set(text) - {PAD}))
    index = {char: i for i, char in enumerate(vocab)}
    ids = np.array([0] * CONTEXT + [index[c] for c in text], dtype=np.int64)
    size = len(vocab)
    params = {
        "embed": rng.normal(0, 0.3, (size, EMBED)),
        "w1": rng.normal(0, (CONTEXT * EMBED) ** -0.5, (CONTEXT * EMBED, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0, HIDDEN**-0.5, (HIDDEN, size)),
        "b2": np.zeros(size),
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    windows = np.arange(CONTEXT)[None, :]
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(ids) - CONTEXT, batch)
        context, target = ids[starts[:, None] + windows], ids[starts + CONTEXT]
        grads, loss = _gradients(params, context, target)
        rate = 3e-3 * min(1.0, 2 * (1 - step / steps))
        for key, grad in grads.items():
            m, v = moments[key]
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad * grad
            m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
            params[key] -= rate * m_hat / (np.sqrt(v_hat) + 1e-8)
        if step % 500 == 0 or step == steps:
            print(f"step {step} loss {loss:.3f}")
    weights = {k: v.astype(np.float32) for k, v in params.items()}
    weights["vocab"] = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32).copy()
    weights["context"] = np.array(CONTEXT, dtype=np.int64)
    weights["corpus_sha256"] = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    weights["loss"] = np.array(loss, dtype=np.float64)
    return weights


def _gradients(
    p: dict[str, np.ndarray], context: np.ndarray, target: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    batch = len(target)
    x = p["embed"][context].reshape(batch, -1)
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(batch), target] + 1e-12).mean())
    d_logits = probs
    d_logits[np.arange(batch), target] -= 1
    d_logits /= batch
    d_h = (d_logits @ p["w2"].T) * (1 - h * h)
    d_x = (d_h @ p["w1"].T).reshape(batch, CONTEXT, EMBED)
    d_embed = np.zeros_like(p["embed"])
    np.add.at(d_embed, context, d_x)
    grads = {
        "embed": d_embed,
        "w1": x.T @ d_h,
        "b1": d_h.sum(axis=0),
        "w2": h.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }
    return grads, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("model.npz"))
    args = parser.parse_args()
    weights = train(corpus_text(), steps=args.steps, seed=args.seed)
    np.savez(args.out, **weights)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
