"""A Hearth job: continue a text with the tiny character-level model of train.py (numpy only).

Input (stdin): one JSON line {"text", "tokens", "seed", "temperature_milli"}, then the bytes of
model.npz. Output (stdout): the `tokens` characters that follow `text`, UTF-8.

Replicas agree bit for bit: the forward pass is float32 numpy in the same WebAssembly build on
every host, and each character is drawn with a uniform number made by splitmix64 from the seed and
the character's position in the whole text (no clock, no OS randomness). So generating 40
characters at once or in five jobs of 8 gives the same text.
"""

import io
import json
import sys

import numpy as np

MASK64 = (1 << 64) - 1


def uniform(seed, position):
    """A number in [0, 1) from splitmix64 of (seed, position)."""
    z = (seed * 0x9E3779B97F4A7C15 + position * 0xBF58476D1CE4E5B9 + 1) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def main():
    raw = sys.stdin.buffer.read()
    header, _, weights = raw.partition(b"\n")
    request = json.loads(header)
    model = np.load(io.BytesIO(weights))
    vocab = model["vocab"].tobytes().decode("utf-32-le")
    context = int(model["context"])
    embed, w1, b1, w2, b2 = (model[k] for k in ("embed", "w1", "b1", "w2", "b2"))
    index = {char: i for i, char in enumerate(vocab)}
    text = request["text"]
    ids = [0] * context + [index.get(char, 0) for char in text]
    temperature = request.get("temperature_milli", 800) / 1000
    out = []
    for step in range(request["tokens"]):
        x = embed[ids[-context:]].reshape(-1)
        logits = (np.tanh(x @ w1 + b1) @ w2 + b2).astype(np.float64)
        logits[0] = -np.inf  # never emit the padding character
        if temperature <= 0:
            choice = int(np.argmax(logits))
        else:
            scaled = (logits - logits.max()) / temperature
            cumulative = np.cumsum(np.exp(scaled))
            target = uniform(request["seed"], len(text) + step) * cumulative[-1]
            choice = min(int(np.searchsorted(cumulative, target, side="right")), len(vocab) - 1)
        ids.append(choice)
        out.append(vocab[choice])
    sys.stdout.write("".join(out))


main()
