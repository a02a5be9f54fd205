"""Forward each lab node's local API (127.0.0.1 inside its namespace) to this namespace.

A node's API listens on 127.0.0.1 only, which inside a network namespace is that namespace's own
loopback. This process listens on 127.0.0.1 here for each node, opens the matching connection
inside the node's namespace (lab.connect_in: setns on one thread) and copies bytes both ways. It
writes ``api-forward.json`` into the node's home, naming the node's pid, so that NodeClient and
the SDK (node/client.py ``forwarded_api``) use it for that process only. Run as
``python -m hearth.testnet.netns.forward ROOT`` with ROOT's ``testnet.json`` listing the nodes;
prints ``ready``. I/O: sockets, threads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from pathlib import Path

from hearth.node.client import API_FORWARD_FILE
from hearth.testnet.netns.lab import LabError, connect_in

CHUNK_BYTES = 65536


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK_BYTES):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, ns: str, port: int) -> None:
    try:
        inner = connect_in(ns, "127.0.0.1", port)
    except LabError:
        client.close()
        return
    back = threading.Thread(target=_pipe, args=(inner, client), daemon=True)
    back.start()
    _pipe(client, inner)
    back.join()
    client.close()
    inner.close()


def _listen(ns: str, port: int) -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))

    def accept_loop() -> None:
        while True:
            client, _ = server.accept()
            threading.Thread(target=_serve_one, args=(client, ns, port), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return server


def forward(home: Path, ns: str, pid: int, api_port: int) -> str:
    """Start forwarding one node's API; write and return the address to use from here."""
    server = _listen(ns, api_port)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    path = home / API_FORWARD_FILE
    path.with_suffix(".tmp").write_text(json.dumps({"api": url, "pid": pid, "ns": ns}) + "\n")
    path.with_suffix(".tmp").replace(path)
    return url


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m hearth.testnet.netns.forward ROOT", file=sys.stderr)
        return 2
    state = json.loads((Path(args[0]) / "testnet.json").read_text())
    for node in state["nodes"]:
        forward(Path(node["home"]), node["ns"], node["pid"], node["api_port"])
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
