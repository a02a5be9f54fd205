"""Streamed text generation on the network: each few tokens are one job, verified by replicas.

The model program (examples/inference/generate.py or one like it) reads one JSON line, then the
model's weights, on stdin, and writes the next `tokens` characters. `generate` publishes one such
job per chunk, waits for its replicas to agree, and yields the chunk before publishing the next,
so text appears as it is verified. Sampling is seeded by the position in the whole text, so the
chunking does not change the result.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hearth.client import Client, JobResult

CHUNK_TOKENS_DEFAULT = 8


@dataclasses.dataclass(frozen=True)
class GeneratedChunk:
    """Text that independent replicas agreed on, and the job that made it."""

    text: str
    result: JobResult

    @property
    def verified_by(self) -> int:
        """How many replicas returned exactly this chunk (and the same fuel)."""
        return sum(1 for r in self.result.summary["replicas_detail"] if r["verdict"] == "match")


def chunk_input(weights: bytes, text: str, tokens: int, seed: int, temperature_milli: int) -> bytes:
    """The job's stdin: a JSON line saying what to generate, then the weights."""
    request = {"seed": seed, "temperature_milli": temperature_milli, "text": text, "tokens": tokens}
    return json.dumps(request, sort_keys=True).encode() + b"\n" + weights


def generate(
    client: Client,
    program: str | Path,
    weights: bytes,
    prompt: str,
    *,
    tokens: int,
    chunk_tokens: int = CHUNK_TOKENS_DEFAULT,
    seed: int = 0,
    temperature_milli: int = 800,
    **options: Any,
) -> Iterator[GeneratedChunk]:
    from hearth.client import HearthError

    if tokens < 0 or chunk_tokens < 1:
        raise HearthError(f"need tokens >= 0 and chunk_tokens >= 1; got {tokens}, {chunk_tokens}")
    text = prompt
    while len(text) - len(prompt) < tokens:
        count = min(chunk_tokens, tokens - (len(text) - len(prompt)))
        job_input = chunk_input(weights, text, count, seed, temperature_milli)
        result = client.run(program, job_input, **options)
        if not result.ok:
            raise HearthError(f"generating after {len(text)} characters failed: {result.reason}")
        try:
            piece = result.output.decode("utf-8")
        except UnicodeDecodeError:
            raise HearthError("the model program wrote text that is not UTF-8") from None
        if len(piece) != count:
            raise HearthError(f"the model program wrote {len(piece)} characters, not {count}")
        text += piece
        yield GeneratedChunk(piece, result)
