"""Publish a job from Python through the local node and follow its progress.

HEARTH_HOME=... python examples/publish.py
"""

from __future__ import annotations

import os

from hearth import Client, JobOptions

with Client() as client:
    job_id = client.submit(
        "node/sandbox/modules/echo.wat", os.urandom(1024), JobOptions(replicas=2)
    )
    for event in client.events(job_id):
        print(event["phase"], event["detail"])
    result = client.wait(job_id)
    print("verified" if result.ok else result.message)  # a failure: its kind, code and cause
    print(f"{len(result.output)} bytes, fuel {result.fuel_used}, paid {result.paid_mc} mc")
    print(f"this node's balance: {client.balance_mc()} mc")
