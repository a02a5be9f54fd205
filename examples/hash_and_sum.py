"""A Python job: read numbers on stdin, print their SHA-256 and their sum.

Here, in the sandbox:
    hearth job run --local examples/hash_and_sum.py --input numbers.txt --output out.txt
On the network (hosts offering the python runtime):
    hearth job run examples/hash_and_sum.py --input numbers.txt --output out.txt
"""

import hashlib
import sys

data = sys.stdin.buffer.read()
total = sum(int(token) for token in data.split())
print(hashlib.sha256(data).hexdigest(), total)
