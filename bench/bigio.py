"""A 1 GB input job on a three-node loopback network: time, throughput, bytes per worker.

Usage: python bench/bigio.py [--mb 1024]. Starts three real nodes, publishes files_sum.wat over
a random input of that size with two replicas, and checks the verified output. Last line: one
JSON object (seconds, MB/s, bytes and chunks each worker downloaded, progress updates seen).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from hearth.testnet import bigio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="input size in MiB")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bigio-") as root:
        figures = bigio.run(
            Path(root), options.mb * bigio.MIB, lambda line: print(line, file=sys.stderr)
        )
    print(json.dumps(figures))
    return 0 if figures["output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
