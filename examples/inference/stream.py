"""Stream text from the tiny language model, each chunk a job verified by two replicas.

HEARTH_HOME=... python examples/inference/stream.py "Hearth is " 48
"""

from __future__ import annotations

import sys
from pathlib import Path

from hearth import Client

HERE = Path(__file__).resolve().parent
prompt = sys.argv[1] if len(sys.argv) > 1 else "Hearth is "
tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 48
weights = (HERE / "model.npz").read_bytes()

with Client(timeout_s=120) as client:
    print(prompt, end="", flush=True)
    options = {"replicas": 2, "fuel_max": 50_000_000_000, "deadline_s": 300, "lease_s": 150}
    chunks = client.generate(HERE / "generate.py", weights, prompt, tokens=tokens, **options)
    for chunk in chunks:
        print(chunk.text, end="", flush=True)
    print()
