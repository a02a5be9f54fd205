"""Talk to the local daemon's API: find it through node.json, authenticate with the token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from hearth.node import paths
from hearth.node.commands.common import CommandError
from hearth.node.home import load_token

REQUEST_TIMEOUT_S = 30.0


API_FORWARD_FILE = "api-forward.json"


def forwarded_api(home: Path, info: dict[str, Any]) -> str | None:
    """The API's address as seen from outside the node's network namespace, if a netns testnet
    forwards it (testnet/netns/forward.py), for the process named in node.json only."""
    try:
        forward = json.loads((home / API_FORWARD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(forward["api"]) if forward.get("pid") == info.get("pid") else None


class NodeClient:
    def __init__(self, home: Path | None = None, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.home = home or paths.data_dir()
        info_path = paths.node_info_path(self.home)
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise CommandError(
                f"no running node for {self.home}; start one with `hearth node start`"
            ) from None
        except ValueError:
            raise CommandError(f"{info_path} is damaged; restart the node") from None
        self._http = httpx.Client(
            base_url=forwarded_api(self.home, self.info) or self.info["api"],
            headers={"Authorization": f"Bearer {load_token(self.home)}"},
            timeout=timeout_s,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CommandError(f"the node at {self.info['api']} did not answer: {exc}") from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise CommandError(f"the node refused: {reason}")
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self._http.close()
