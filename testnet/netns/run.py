"""`hearth testnet run` of a scenario whose [network] describes a lab: nodes in namespaces.

The plan, jobs, checks and report are the loopback runner's (testnet/run.py); this runner builds
the lab (public nodes, NAT homes, shaped links), starts each node in its slot, carries out the
scenario's network faults (partition/heal of the internet between groups, relay loss by killing
a public node), samples every node's peers (connection kind and ping round trip) into
``network.jsonl``, and adds the plots of connection kinds over time and round trips per pair of
link classes. A partition still open at the end is healed and killed public nodes restarted
before the runner waits for jobs and receipts. I/O: the lab, processes, files.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import threading
import time
from typing import IO, Any

from hearth.node.client import API_FORWARD_FILE
from hearth.node.commands.common import CommandError
from hearth.testnet import launch, report
from hearth.testnet.launch import TestnetError
from hearth.testnet.netns import launch as netns_launch
from hearth.testnet.netns.lab import Lab, LabError, unavailable_reason
from hearth.testnet.netns.topology import Fault, LabPlan
from hearth.testnet.observe import ask, connection_kind
from hearth.testnet.run import SAMPLE_INTERVAL_S, Managed, Runner, RunOptions

NETWORK_FILE = "network.jsonl"


class NetnsRunner(Runner):
    def __init__(self, options: RunOptions) -> None:
        why = unavailable_reason()
        if why:
            raise TestnetError(f"this scenario runs in a network-namespace lab: {why}")
        super().__init__(options)
        lab_plan = self.plan.scenario.lab
        assert lab_plan is not None
        self.lab_plan: LabPlan = lab_plan
        self.slot_names = lab_plan.slot_names()
        self.lab: Lab | None = None
        self.samples: list[dict[str, Any]] = []
        self._network_file: IO[str] = (options.out / NETWORK_FILE).open("w", encoding="utf-8")

    # building and restarting -----------------------------------------------------------------
    def _launch(self, configs: list[str]) -> list[launch.LaunchedNode]:
        self.lab, nodes = netns_launch.up(
            self.root, self.lab_plan, configs=configs, psk=secrets.token_bytes(32), tied=True
        )
        self.events.add("lab_built", lab=self.lab.id, slots=self._slots_json())
        return nodes

    def _prepare(self) -> None:
        super()._prepare()
        threading.Thread(target=self._network_loop, name="network", daemon=True).start()

    def _start_again(self, node: Managed) -> subprocess.Popen[bytes]:
        assert self.lab is not None
        bootstrap = next(
            (
                m.launched.info["multiaddrs"][0]
                for m in self.nodes
                if m is not node and m.up and m.launched.info and self._is_public(m)
            ),
            None,
        )
        process = netns_launch.restart(self.root, self.lab, self.lab_plan, node.launched, bootstrap)
        netns_launch.save_state(
            self.root, self.lab, self.lab_plan, [m.launched for m in self.nodes]
        )
        return process

    def _is_public(self, node: Managed) -> bool:
        return self.slot_names[node.plan.index].startswith("p")

    # faults ----------------------------------------------------------------------------------
    def _fault_actions(self) -> list[tuple[float, int, str, Any]]:
        actions: list[tuple[float, int, str, Any]] = []
        for fault in self.lab_plan.faults:
            if fault.kind == "partition":
                actions.append((fault.at_s, 0, "partition", fault))
                actions.append((fault.heal_s or fault.at_s, 0, "heal", fault))
            else:
                actions.append((fault.at_s, 0, "relay_loss", fault))
                if fault.heal_s is not None:
                    actions.append((fault.heal_s, 0, "relay_back", fault))
        return actions

    def _fault(self, kind: str, item: Any) -> None:
        assert self.lab is not None and isinstance(item, Fault)
        try:
            if kind == "partition":
                side = [self._slot_of(name) for name in item.side]
                faces = {self.lab.slot(s).public_address for s in side}
                rest = [
                    s
                    for s in self._one_slot_per_face()
                    if self.lab.slot(s).public_address not in faces
                ]
                self.lab.partition([side, rest])
                self.events.add("partition", side=list(item.side), heal_at_s=item.heal_s)
            elif kind == "heal":
                self.lab.heal()
                self.events.add("partition_healed")
            elif kind == "relay_loss":
                self._kill(self.nodes[int(item.node[1:])], "relay-loss")
            elif kind == "relay_back":
                self._restart(self.nodes[int(item.node[1:])])
        except LabError as exc:
            self.events.add("fault_failed", fault=kind, error=str(exc))

    def _slot_of(self, name: str) -> str:
        """p<i> is a public node's slot; h<i> stands for home i (its first node's slot)."""
        return name if name.startswith("p") else f"{name}n0"

    def _one_slot_per_face(self) -> list[str]:
        seen: dict[str, str] = {}
        assert self.lab is not None
        for slot in self.lab.slots:
            seen.setdefault(slot.public_address, slot.name)
        return list(seen.values())

    def _finish_jobs(self) -> None:
        if self.lab is not None and self.lab.partitioned:
            self.lab.heal()
            self.events.add("partition_healed", at_end=True)
        for fault in self.lab_plan.faults:
            if fault.kind == "kill":
                self._restart(self.nodes[int(fault.node[1:])])
        super()._finish_jobs()

    # observing -------------------------------------------------------------------------------
    def _network_loop(self) -> None:
        while not self.stop_event.wait(SAMPLE_INTERVAL_S):
            self._sample_network()

    def _sample_network(self) -> None:
        t_s = round(time.monotonic() - self.started_s, 2)
        for m in self.nodes:
            if not m.up:
                continue
            try:
                peers = ask(m.launched, "/v1/peers")["peers"]
            except (CommandError, OSError, KeyError):
                continue
            for peer in peers:
                if not peer.get("connected"):
                    continue
                name = self._name(peer["peer_id"])
                if not name.startswith("node"):
                    continue
                sample = {
                    "t_s": t_s,
                    "node": m.plan.name,
                    "peer": name,
                    "connection": connection_kind(peer),
                    "rtt_ms": peer.get("rtt_ms"),
                    "link_pair": self._link_pair(m.plan.name, name),
                }
                self.samples.append(sample)
                self._network_file.write(json.dumps(sample, sort_keys=True) + "\n")
        self._network_file.flush()

    def _link_label(self, node_name: str) -> str:
        assert self.lab is not None
        slot = self.lab.slot(self.slot_names[int(node_name.removeprefix("node"))])
        return "public" if slot.kind == "public" else f"home:{slot.link.name}"

    def _link_pair(self, a: str, b: str) -> str:
        return " - ".join(sorted((self._link_label(a), self._link_label(b))))

    def _configured_rtt_ms(self) -> dict[str, float]:
        """Per pair of link labels, the round trip the lab adds: each packet crosses both
        nodes' access links once each way."""
        assert self.lab is not None
        delay = {}
        for index in range(len(self.slot_names)):
            name = f"node{index}"
            delay[self._link_label(name)] = self.lab.slot(self.slot_names[index]).link.delay_ms
        return {
            " - ".join(sorted((a, b))): 2.0 * (delay[a] + delay[b]) for a in delay for b in delay
        }

    def _slots_json(self) -> dict[str, dict[str, Any]]:
        assert self.lab is not None
        out = {}
        for index, name in enumerate(self.slot_names):
            slot = self.lab.slot(name)
            out[f"node{index}"] = {
                "slot": slot.name,
                "kind": slot.kind,
                "address": slot.address,
                "public_address": slot.public_address,
                "router": slot.router,
                "link": slot.link.name,
            }
        return out

    # ending ----------------------------------------------------------------------------------
    def _teardown(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._network_file.close()
        if self.lab is not None:
            self.lab.destroy()
        for m in self.nodes:
            (m.launched.home / API_FORWARD_FILE).unlink(missing_ok=True)

    def _network_report(self, plots: list[str]) -> dict[str, Any]:
        if self.lab is None:
            return {}
        configured = self._configured_rtt_ms()
        plots += report.plot_network(self.options.out, self.samples, self.events.events, configured)
        rtts = report.rtt_by_link_pair(self.samples)
        for pair, figures in rtts.items():
            figures["configured_ms"] = configured.get(pair)
        return {
            "lab": {
                "id": self.lab.id,
                "nodes": self._slots_json(),
                "links": [vars(link) for link in self.lab.spec.links],
                "faults": [vars(fault) for fault in self.lab_plan.faults],
            },
            "connections": report.connection_counts(self.samples),
            "rtt_ms_by_link_pair": rtts,
        }
