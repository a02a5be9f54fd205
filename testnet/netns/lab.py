"""Build, use and remove a lab of Linux network namespaces: an internet, NAT homes, shaped links.

Topology (ADR 0037)::

    hth-<id>-inet: bridge br0 ("the internet", 203.0.113.0/24 and 198.51.100.0/24 on one wire)
      ├─ p<i> ── hth-<id>-p<i>    public node, eth0 203.0.113.(10+i)
      └─ r<i> ── hth-<id>-r<i>    home router: wan 198.51.100.(10+i), nftables NAT,
                   bridge lan 192.168.1.1/24
                     └─ n<j> ── hth-<id>-h<i>n<j>   home node, eth0 192.168.1.(10+j)

Every veth is created inside its namespaces, and every nftables table, qdisc and helper process
lives in one of them, so deleting the lab's namespaces (and killing what runs in them) removes
everything. Names start with ``hth-<id>-``; ``cleanup_stale`` finds what a crashed run left by
that prefix and the lab's record in /run/hearth-netns. Only this package runs ``ip``/``nft``/``tc``.
I/O: runs ip, nft, tc and processes inside namespaces; needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from hearth.testnet.netns import spec as S
from hearth.testnet.netns.spec import HomeSpec, LabSpec, LinkClass

PREFIX: Final = "hth-"
RECORD_DIR: Final = Path("/run/hearth-netns")
NETNS_DIR: Final = Path("/run/netns")
COMMAND_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 5.0
HELPER_READY_TIMEOUT_S: Final = 20.0
DELAY_QUEUE: Final = 0
CLONE_NEWNET: Final = 0x40000000


class LabError(Exception):
    """The lab could not be built or used; the message says why in one line."""


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (one line), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or use the loopback testnet)"
    programs = (
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tc", "iproute2"),
        ("iptables", "iptables"),
    )
    for program, package in programs:
        if shutil.which(program) is None:
            return f"`{program}` is not installed (Debian package {package})"
    probe = f"{PREFIX}probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {_last_line(made.stderr)}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@dataclasses.dataclass(frozen=True)
class Slot:
    """One place a node can run: its namespace, its address, and how it meets the internet."""

    name: str  # p0, h1n0, ...
    ns: str
    address: str  # the address the node binds
    public_address: str  # the address others on the internet see (the router's WAN for homes)
    kind: str  # "public" or "home"
    link: LinkClass
    home: int | None = None
    router: str | None = None  # "port-restricted" | "symmetric" for homes


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except FileNotFoundError:
        raise LabError(f"`{argv[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv[:4])}` took more than {COMMAND_TIMEOUT_S:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv[:6])}` failed: {_last_line(done.stderr)}")
    return done.stdout


def _ip_batch(ns: str | None, commands: Iterable[str]) -> None:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    _run(argv, stdin="\n".join(commands) + "\n")


def _nft(ns: str, script: str) -> None:
    _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=script)


def _tbf(ns: str, dev: str, rate_kbit: int) -> None:
    burst_bytes = max(16_000, rate_kbit * 1000 // 8 // 50)  # 20 ms of traffic, at least 16 kB
    _run(
        [
            "tc",
            "-n",
            ns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            f"{rate_kbit}kbit",
            "burst",
            str(burst_bytes),
            "latency",
            "400ms",
        ]
    )


def list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _kill_all(pids: Iterable[int]) -> None:
    """SIGTERM ``pids``, then SIGKILL whatever outlives STOP_TIMEOUT_S."""
    alive = [pid for pid in pids if pid != os.getpid()]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive and time.monotonic() < deadline:
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        alive = [pid for pid in alive if _pid_alive(pid)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _destroy_namespaces(names: Iterable[str]) -> None:
    names = list(names)
    _kill_all(pid for ns in names for pid in namespace_pids(ns))
    for ns in names:
        _run(["ip", "netns", "del", ns], check=False)


class Lab:
    """A built lab: make one with ``Lab.create(spec)``, always ``destroy()`` it (or ``with``)."""

    def __init__(self, lab_id: str, spec: LabSpec, owner_pid: int | None) -> None:
        self.id = lab_id
        self.spec = spec
        self.owner_pid = owner_pid
        self.slots: list[Slot] = []
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.partitioned = False

    # names -----------------------------------------------------------------------------------
    def ns(self, suffix: str) -> str:
        return f"{PREFIX}{self.id}-{suffix}"

    @property
    def inet(self) -> str:
        return self.ns("inet")

    def namespaces(self) -> list[str]:
        names = [self.inet] + [self.ns(f"p{i}") for i in range(len(self.spec.public))]
        for i, home in enumerate(self.spec.homes):
            names.append(self.ns(f"r{i}"))
            names += [self.ns(f"h{i}n{j}") for j in range(home.nodes)]
        return names

    def slot(self, name: str) -> Slot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise LabError(f"no node slot {name!r} in lab {self.id}")

    # building --------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: LabSpec, *, lab_id: str | None = None, owner_pid: int | None = -1) -> Lab:
        """Build the lab. ``owner_pid`` (default: this process) marks whose death makes the lab
        stale; None means a detached lab (``testnet up``), stale once no node runs in it."""
        spec.check()
        why = unavailable_reason()
        if why:
            raise LabError(why)
        lab = cls(
            lab_id or secrets.token_hex(3), spec, os.getpid() if owner_pid == -1 else owner_pid
        )
        lab._save_record()
        try:
            lab._build()
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _build(self) -> None:
        for ns in self.namespaces():
            _run(["ip", "netns", "add", ns])
        _ip_batch(self.inet, ["link set lo up", "link add br0 type bridge", "link set br0 up"])
        _nft(
            self.inet,
            "table bridge hth {\n chain forward {\n"
            "  type filter hook forward priority 0; policy accept;\n }\n}\n",
        )
        for i, link_name in enumerate(self.spec.public):
            self._build_public(i, self.spec.link(link_name))
        for i, home in enumerate(self.spec.homes):
            self._build_home(i, home, self.spec.link(home.link))
        self._save_record()

    def _build_public(self, i: int, link: LinkClass) -> None:
        ns, address = self.ns(f"p{i}"), S.public_address(i)
        _ip_batch(
            self.inet,
            [
                f"link add p{i} type veth peer name eth0 netns {ns}",
                f"link set p{i} master br0",
                f"link set p{i} up",
            ],
        )
        _ip_batch(
            ns,
            [
                "link set lo up",
                f"addr add {address}/24 dev eth0",
                "link set eth0 up",
                f"route add {S.WAN_NET} dev eth0",
            ],
        )
        self.slots.append(Slot(f"p{i}", ns, address, address, "public", link))
        self._shape(ns, link, edge_dev="eth0", inet_dev=f"p{i}", hooks=("input", "output"))

    def _build_home(self, i: int, home: HomeSpec, link: LinkClass) -> None:
        router, wan = self.ns(f"r{i}"), S.wan_address(i)
        gateway, prefix = S.lan_gateway(home), S.lan_prefix(home)
        _ip_batch(
            self.inet,
            [
                f"link add r{i} type veth peer name wan netns {router}",
                f"link set r{i} master br0",
                f"link set r{i} up",
            ],
        )
        commands = [
            "link set lo up",
            f"addr add {wan}/24 dev wan",
            "link set wan up",
            f"route add {S.PUBLIC_NET} dev wan",
            "link add lan type bridge",
            f"addr add {gateway}/{prefix} dev lan",
            "link set lan up",
        ]
        for j in range(home.nodes):
            node_ns = self.ns(f"h{i}n{j}")
            commands += [
                f"link add n{j} type veth peer name eth0 netns {node_ns}",
                f"link set n{j} master lan",
                f"link set n{j} up",
            ]
        _ip_batch(router, commands)
        _run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _nft(router, router_rules(home.router))
        for j in range(home.nodes):
            node_ns, address = self.ns(f"h{i}n{j}"), S.lan_address(home, j)
            _ip_batch(
                node_ns,
                [
                    "link set lo up",
                    f"addr add {address}/{prefix} dev eth0",
                    "link set eth0 up",
                    f"route add default via {gateway}",
                ],
            )
            self.slots.append(
                Slot(f"h{i}n{j}", node_ns, address, wan, "home", link, home=i, router=home.router)
            )
        self._shape(router, link, edge_dev="wan", inet_dev=f"r{i}", hooks=("forward",))

    def _shape(
        self, ns: str, link: LinkClass, *, edge_dev: str, inet_dev: str, hooks: tuple[str, ...]
    ) -> None:
        """Loss and delay in ``ns`` (nftables, delay stage), rate on both ends of the link."""
        if link.rate_kbit:
            _tbf(ns, edge_dev, link.rate_kbit)
            _tbf(self.inet, inet_dev, link.rate_kbit)
        if link.loss_pct:
            _nft(ns, loss_rules(link, edge_dev, hooks))
        if link.delay_ms:
            for argv in queue_rules(edge_dev, hooks):
                _run(["ip", "netns", "exec", ns, *argv])
            self._start_delay_stage(ns, link)

    def _start_delay_stage(self, ns: str, link: LinkClass) -> None:
        argv = [
            sys.executable,
            "-m",
            "hearth.testnet.netns.delay",
            "--queue",
            str(DELAY_QUEUE),
            "--delay-ms",
            str(link.delay_ms),
            "--jitter-ms",
            str(link.jitter_ms),
        ]
        process = self.popen(  # its own session: a Ctrl-C at the terminal is the runner's
            ns,
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            helper=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        ready: list[bytes] = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(HELPER_READY_TIMEOUT_S)
        if not ready or not ready[0].startswith(b"ready"):
            said = ready[0].decode(errors="replace").strip() if ready else "nothing"
            raise LabError(f"the delay stage in {ns} did not start: {said}")
        self._save_record()

    # using -----------------------------------------------------------------------------------
    def _exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        if ns not in self.namespaces():
            raise LabError(f"{ns} is not a namespace of lab {self.id}")
        return ["ip", "netns", "exec", ns, *argv]

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in namespace ``ns`` to completion; stdout and stderr are captured."""
        return subprocess.run(
            self._exec_argv(ns, argv),
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=check,
        )

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        helper: bool = False,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in namespace ``ns`` (``ip netns exec`` execs it: the pid is argv's)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(
            self._exec_argv(ns, argv), env=dict(env) if env is not None else None, **kwargs
        )
        (self.helpers if helper else self.processes).append(process)
        return process

    def connect(self, ns: str, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
        """A TCP connection opened inside ``ns`` (e.g. to a node's API on its 127.0.0.1).

        A thread enters the namespace with setns(2), which moves that thread only; the socket
        keeps the namespace it was made in after the thread ends."""
        if ns not in self.namespaces():
            raise LabError(f"{ns} is not a namespace of lab {self.id}")
        return connect_in(ns, host, port, timeout_s)

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut the internet between the groups of slot names (each node's public address, so a
        home is cut with its router); traffic within a group and within a home flows on."""
        faces = [sorted({self.slot(name).public_address for name in group}) for group in groups]
        rules = []
        for a, side_a in enumerate(faces):
            for side_b in faces[a + 1 :]:
                set_a, set_b = ", ".join(side_a), ", ".join(side_b)
                rules.append(
                    f"add rule bridge hth forward ip saddr {{ {set_a} }} "
                    f"ip daddr {{ {set_b} }} drop"
                )
                rules.append(
                    f"add rule bridge hth forward ip saddr {{ {set_b} }} "
                    f"ip daddr {{ {set_a} }} drop"
                )
        _nft(self.inet, "flush chain bridge hth forward\n" + "\n".join(rules) + "\n")
        self.partitioned = True

    def heal(self) -> None:
        _nft(self.inet, "flush chain bridge hth forward\n")
        self.partitioned = False

    # removing --------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop every process in the lab and delete its namespaces (and with them every veth,
        bridge, nftables table and qdisc). Safe to call twice."""
        _kill_all(p.pid for p in self.processes if p.poll() is None)
        _destroy_namespaces(self.namespaces())
        _kill_all(p.pid for p in self.helpers if p.poll() is None)
        for process in self.processes + self.helpers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            (RECORD_DIR / f"{self.id}.json").unlink()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # records ---------------------------------------------------------------------------------
    def _save_record(self) -> None:
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "id": self.id,
            "owner_pid": self.owner_pid,
            "namespaces": self.namespaces(),
            "helper_pids": [p.pid for p in self.helpers],
            "spec": spec_to_json(self.spec),
        }
        path = RECORD_DIR / f"{self.id}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record, indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)

    @classmethod
    def load(cls, lab_id: str) -> Lab:
        """Rebuild the handle of a lab made by another process (``testnet down``)."""
        try:
            record = json.loads((RECORD_DIR / f"{lab_id}.json").read_text())
        except (FileNotFoundError, ValueError):
            raise LabError(f"no record of lab {lab_id} in {RECORD_DIR}") from None
        lab = cls(lab_id, spec_from_json(record["spec"]), record.get("owner_pid"))
        lab._fill_slots()
        return lab

    def _fill_slots(self) -> None:
        for i, link_name in enumerate(self.spec.public):
            address = S.public_address(i)
            link = self.spec.link(link_name)
            self.slots.append(Slot(f"p{i}", self.ns(f"p{i}"), address, address, "public", link))
        for i, home in enumerate(self.spec.homes):
            for j in range(home.nodes):
                self.slots.append(
                    Slot(
                        f"h{i}n{j}",
                        self.ns(f"h{i}n{j}"),
                        S.lan_address(home, j),
                        S.wan_address(i),
                        "home",
                        self.spec.link(home.link),
                        home=i,
                        router=home.router,
                    )
                )


def connect_in(ns: str, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict[str, Any] = {}

    def enter_and_connect() -> None:
        try:
            with (NETNS_DIR / ns).open("rb") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
            result["socket"] = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=enter_and_connect, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise LabError(f"cannot connect to {host}:{port} in {ns}: {result['error']}")
    sock: socket.socket = result["socket"]
    return sock


def router_rules(kind: str) -> str:
    """nftables for a home router: masquerade out of ``wan``; unsolicited packets from the
    internet are dropped ("port-restricted") or answered with a TCP reset ("symmetric", which
    also maps every new connection to a random port, so each destination sees another port)."""
    refuse = 'iifname "wan" drop'
    if kind == "symmetric":
        refuse = 'iifname "wan" meta l4proto tcp reject with tcp reset\n  ' + refuse
    masquerade = "masquerade" if kind == "port-restricted" else "masquerade fully-random"
    return f"""table inet hth_nat {{
 chain input {{
  type filter hook input priority 0; policy accept;
  iifname "wan" ct state established,related accept
  iifname "wan" icmp type echo-request accept
  {refuse}
 }}
 chain forward {{
  type filter hook forward priority 0; policy accept;
  iifname "wan" ct state established,related accept
  {refuse}
 }}
 chain postrouting {{
  type nat hook postrouting priority 100; policy accept;
  oifname "wan" {masquerade}
 }}
}}
"""


def _edge_match(hook: str, edge_dev: str) -> str:
    return {"input": f'iifname "{edge_dev}" ', "output": f'oifname "{edge_dev}" '}.get(hook, "")


def loss_rules(link: LinkClass, edge_dev: str, hooks: tuple[str, ...]) -> str:
    """nftables that drop ``loss_pct`` of the packets crossing the link, before they queue."""
    chains = []
    for hook in hooks:
        per_10000 = round(link.loss_pct * 100)
        rule = f"{_edge_match(hook, edge_dev)}numgen random mod 10000 < {per_10000} drop"
        chains.append(
            f" chain loss_{hook} {{\n  type filter hook {hook} priority -200;"
            f" policy accept;\n  {rule}\n }}"
        )
    return "table inet hth_loss {\n" + "\n".join(chains) + "\n}\n"


def queue_rules(edge_dev: str, hooks: tuple[str, ...]) -> list[list[str]]:
    """iptables (nft backend) rules that queue the packets crossing the link to the delay stage.

    This kernel has nft's xtables compatibility and the NFQUEUE target but not nft's own
    ``queue`` expression, hence iptables here. ``--queue-bypass``: if the stage is gone,
    packets pass undelayed instead of being dropped."""
    rules = []
    for hook in hooks:
        chain = hook.upper()
        device = {"input": ["-i", edge_dev], "output": ["-o", edge_dev]}.get(hook, [])
        rules.append(
            [
                "iptables",
                "-t",
                "mangle",
                "-A",
                chain,
                *device,
                "-j",
                "NFQUEUE",
                "--queue-num",
                str(DELAY_QUEUE),
                "--queue-bypass",
            ]
        )
    return rules


def spec_to_json(spec: LabSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_json(data: Mapping[str, Any]) -> LabSpec:
    return LabSpec(
        public=tuple(data["public"]),
        homes=tuple(HomeSpec(**home) for home in data["homes"]),
        links=tuple(LinkClass(**link) for link in data["links"]),
    )


def _lab_is_stale(record: Mapping[str, Any]) -> bool:
    owner = record.get("owner_pid")
    if owner is not None:
        return not _pid_alive(int(owner))
    helpers = set(record.get("helper_pids", []))
    for ns in record.get("namespaces", []):
        if any(pid not in helpers for pid in namespace_pids(ns)):
            return False
    return True


def cleanup_stale() -> list[str]:
    """Remove what crashed runs left: every ``hth-`` namespace (its processes, veths, nftables,
    qdiscs) whose lab's owner is dead, or that no record accounts for. Returns the lab ids."""
    records: dict[str, dict[str, Any]] = {}
    if RECORD_DIR.is_dir():
        for path in RECORD_DIR.glob("*.json"):
            with contextlib.suppress(ValueError, OSError):
                records[path.stem] = json.loads(path.read_text())
    by_lab: dict[str, list[str]] = {}
    for ns in list_namespaces():
        if ns.startswith(PREFIX):
            by_lab.setdefault(ns[len(PREFIX) :].split("-")[0], []).append(ns)
    removed = []
    for lab_id in sorted(set(by_lab) | set(records)):
        record = records.get(lab_id)
        if record is not None and not _lab_is_stale(record):
            continue
        names = by_lab.get(lab_id, []) + list(record.get("namespaces", []) if record else [])
        _destroy_namespaces(sorted(set(names) & set(list_namespaces())))
        with contextlib.suppress(FileNotFoundError):
            (RECORD_DIR / f"{lab_id}.json").unlink()
        removed.append(lab_id)
    return removed
