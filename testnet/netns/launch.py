"""Start a testnet in a namespace lab: one node per lab slot, public nodes first (bootstrap).

Like testnet/launch.py, but each node runs inside its own namespace (``ip netns exec``), listens
on its slot's address at port 4001 (every home node may be 192.168.1.10:4001), and its local API
(127.0.0.1:8600 inside the namespace) is forwarded to this namespace (forward.py). ``testnet.json``
records the lab's id, so ``down`` stops the nodes and removes the lab, and a crashed run is
cleaned by the next ``up`` (lab.cleanup_stale). I/O: processes, files, the lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from hearth.node import lifeline
from hearth.node.client import API_FORWARD_FILE
from hearth.testnet import launch
from hearth.testnet.launch import LaunchedNode, TestnetError
from hearth.testnet.netns import forward
from hearth.testnet.netns.lab import Lab, LabError, Slot, cleanup_stale
from hearth.testnet.netns.topology import LabPlan

NODE_PORT: Final = 4001
API_PORT: Final = 8600
FORWARDER_READY_TIMEOUT_S: Final = 20.0


def no_jobs(config_text: str) -> str:
    """A node's config that takes no jobs: available in no hour (it relays and bootstraps)."""
    return re.sub(r"(?m)^hours = \[.*\]$", "hours = []", config_text, count=1)


def start_in_lab(
    lab: Lab, slot: Slot, home: Path, bootstrap: str | None, *, tied: bool
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "hearth.node",
        "node",
        "start",
        "--host",
        slot.address,
        "--port",
        str(NODE_PORT),
        "--api-port",
        str(API_PORT),
    ]
    if bootstrap:
        argv += ["--bootstrap", bootstrap]
    env = {**os.environ, "HEARTH_HOME": str(home)}
    if tied:
        env[lifeline.PARENT_ENV] = str(os.getpid())
    with (home / "node.out").open("ab") as log_file:
        return lab.popen(
            slot.ns, argv, env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )


def up(
    root: Path,
    lab_plan: LabPlan,
    *,
    configs: Sequence[str | None] | None = None,
    psk: bytes,
    tied: bool = False,
    timeout_s: float = launch.START_TIMEOUT_S,
) -> tuple[Lab, list[LaunchedNode]]:
    """Build the lab and start a node in every slot; on any failure or Ctrl-C, remove it all.

    ``tied`` (testnet run): nodes die with this process and the API is forwarded by threads of
    this process. Otherwise (testnet up) the lab is detached and a forwarder process is started."""
    if (root / launch.STATE_FILE).exists() and launch.running(root):
        raise TestnetError(f"a testnet is already running in {root}; run `hearth testnet down`")
    if (root / launch.STATE_FILE).exists():
        down(root)  # what a crashed run left in this folder
    cleanup_stale()
    root.mkdir(parents=True, exist_ok=True)
    try:
        lab = Lab.create(lab_plan.spec, owner_pid=os.getpid() if tied else None)
    except LabError as exc:
        raise TestnetError(str(exc)) from None
    configs = configs or [None] * lab_plan.node_count
    nodes: list[LaunchedNode] = []
    try:
        for index, name in enumerate(lab_plan.slot_names()):
            slot = lab.slot(name)
            home = launch.node_home(root, index)
            config = configs[index] or launch.default_config()
            if slot.kind == "public" and not lab_plan.public_jobs:
                config = no_jobs(config)
            launch.prepare_home(home, psk, config)
            (home / API_FORWARD_FILE).unlink(missing_ok=True)
            bootstrap = nodes[0].info["multiaddrs"][0] if nodes else None
            with lifeline.held():
                process = start_in_lab(lab, slot, home, bootstrap, tied=tied)
                nodes.append(LaunchedNode(index, home, slot.address, process.pid, {}))
                save_state(root, lab, lab_plan, nodes)
            nodes[-1].info = launch.wait_until_listening(home, process, timeout_s)
            if tied:
                forward.forward(home, slot.ns, process.pid, API_PORT)
        if not tied:
            start_forwarder(root, lab, lab_plan, nodes)
        save_state(root, lab, lab_plan, nodes)
    except BaseException:
        with lifeline.held():
            launch.stop(nodes)
            lab.destroy()
        raise
    return lab, nodes


def restart(
    root: Path, lab: Lab, lab_plan: LabPlan, node: LaunchedNode, bootstrap: str | None
) -> subprocess.Popen[bytes]:
    """Start ``node`` again in its slot (testnet run: tied, API forwarded by this process)."""
    slot = lab.slot(lab_plan.slot_names()[node.index])
    with lifeline.held():
        process = start_in_lab(lab, slot, node.home, bootstrap, tied=True)
        node.pid = process.pid
    forward.forward(node.home, slot.ns, process.pid, API_PORT)
    return process


def start_forwarder(root: Path, lab: Lab, lab_plan: LabPlan, nodes: list[LaunchedNode]) -> None:
    save_state(root, lab, lab_plan, nodes)
    argv = [sys.executable, "-m", "hearth.testnet.netns.forward", str(root)]
    with (root / "forwarder.out").open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    assert process.stdout is not None
    if not process.stdout.readline().startswith(b"ready"):
        raise TestnetError(f"the API forwarder for {root} did not start")
    state = json.loads((root / launch.STATE_FILE).read_text())
    state["forwarder_pid"] = process.pid
    (root / launch.STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def save_state(root: Path, lab: Lab, lab_plan: LabPlan, nodes: list[LaunchedNode]) -> None:
    names = lab_plan.slot_names()
    previous: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        previous = json.loads((root / launch.STATE_FILE).read_text())
    state = {
        "lab": lab.id,
        "forwarder_pid": previous.get("forwarder_pid"),
        "nodes": [
            {
                "index": n.index,
                "home": str(n.home),
                "host": n.host,
                "pid": n.pid,
                "slot": names[n.index],
                "ns": lab.slot(names[n.index]).ns,
                "api_port": API_PORT,
            }
            for n in nodes
        ],
    }
    (root / launch.STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def lab_of(root: Path) -> str | None:
    """The id of the lab a testnet folder's nodes run in, if they run in one."""
    try:
        return json.loads((root / launch.STATE_FILE).read_text()).get("lab")  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def down(root: Path) -> int:
    """Stop the nodes of ``root``, its API forwarder and remove its lab; how many nodes."""
    state = json.loads((root / launch.STATE_FILE).read_text())
    count = launch.down(root)
    forwarder = state.get("forwarder_pid")
    if forwarder and _is_forwarder(int(forwarder)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(forwarder), signal.SIGTERM)
    if state.get("lab"):
        with contextlib.suppress(LabError):
            Lab.load(state["lab"]).destroy()
    for node in state["nodes"]:
        (Path(node["home"]) / API_FORWARD_FILE).unlink(missing_ok=True)
    return count


def _is_forwarder(pid: int) -> bool:
    try:
        return b"hearth.testnet.netns.forward" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
