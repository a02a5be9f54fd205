"""An MQTT energy source: one topic per quantity, paho-mqtt's network loop in its own thread.

Theory of operation
-------------------
paho-mqtt runs its network loop in a thread (``loop_start``) and reconnects by itself with a
backoff from 1 s to ``RECONNECT_S_MAX`` when the broker goes away. Its callbacks run in that
thread: they only parse the payload and hand the value to trio through ``trio.from_thread``
(the trio token of the node's loop), where ``values`` is updated and the service woken, so a new
battery level reaches the engine at once rather than at the next poll.

A payload is a number (``87.5``) or JSON: read at the quantity's dotted path (``"Dc.Battery.Soc"``,
list indexes as numbers), else at ``value`` (Victron's and many bridges' shape). Brokers publish on
change, so a quantity stays current while the connection is up; once it drops, readings age from
that moment and go stale after ``stale_s`` (protocol/energy.py). What must never happen: a
hostile payload raises into the node; the thread blocks trio.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
import trio
from paho.mqtt.enums import CallbackAPIVersion

from hearth.node.clock import Clock
from hearth.node.energy.config import SensorConfig
from hearth.node.energy.sources import SourceError
from hearth.node.logs import LogLimiter, log

PAYLOAD_BYTES_MAX = 16 * 1024
RECONNECT_S_MAX = 30


def payload_value(payload: bytes, path: str) -> Any:
    """The value a payload holds for a quantity; raises ``ValueError`` with one line."""
    if len(payload) > PAYLOAD_BYTES_MAX:
        raise ValueError(f"payload of {len(payload)} bytes is too large")
    text = payload.decode("utf-8", "replace").strip()
    try:
        value: Any = json.loads(text)
    except ValueError:
        return text  # a bare word: protocol/energy.py says it is not a number
    if not isinstance(value, dict | list):
        return value
    parts = path.split(".") if path else ["value"]
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ValueError(f"no {'.'.join(parts)!r} in the payload")
    return value


class MqttSource:
    def __init__(self, config: SensorConfig, clock: Clock, notify: Callable[[], None]) -> None:
        self.name = "mqtt"
        self._config = config
        self._clock = clock
        self._notify = notify
        self._topics = dict(config.mqtt_topics)  # quantity -> topic
        self._paths = dict(config.mqtt_paths)
        self.values: dict[str, Any] = {}
        self.connected = False
        self._since_ms = clock.now_ms()  # last message while connected, or when it dropped
        self.problem = ""  # the latest bad payload, one line
        self._limiter = LogLimiter()  # a topic flooding garbage is a few lines and a count
        self._token: trio.lowlevel.TrioToken | None = None
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if self._config.mqtt_username:
            client.username_pw_set(self._config.mqtt_username, self._config.mqtt_password or None)
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_S_MAX)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(self._config.mqtt_host, self._config.mqtt_port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    async def read(self) -> tuple[Mapping[str, Any], int]:
        if not self.values:
            state = "connected" if self.connected else "not connected"
            raise SourceError(f"no value from mqtt://{self._config.mqtt_host}:"
                              f"{self._config.mqtt_port} yet ({state})")  # fmt: skip
        at_ms = self._clock.now_ms() if self.connected else self._since_ms
        return dict(self.values), at_ms

    def _to_trio(self, function: Callable[..., None], *args: Any) -> None:
        if self._token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):  # the node is stopping
            trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._to_trio(self._connection, False, f"refused: {reason}")
            return
        for topic in sorted(set(self._topics.values())):
            client.subscribe(topic)
        self._to_trio(self._connection, True, "")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._to_trio(self._connection, False, str(reason))

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        for quantity, topic in self._topics.items():
            if mqtt.topic_matches_sub(topic, message.topic):
                try:
                    value = payload_value(message.payload, self._paths.get(quantity, ""))
                except ValueError as exc:
                    self._to_trio(self._problem, f"{message.topic}: {exc}")
                    continue
                self._to_trio(self._value, quantity, value)

    def _connection(self, connected: bool, why: str) -> None:
        if connected != self.connected:
            level = "info" if connected else "warning"
            where = f"{self._config.mqtt_host}:{self._config.mqtt_port}"
            log(level, "energy-mqtt-" + ("connected" if connected else "lost"), broker=where,
                reason=why)  # fmt: skip
        self.connected = connected
        self._since_ms = self._clock.now_ms()
        self._notify()

    def _value(self, quantity: str, value: Any) -> None:
        self.values[quantity] = value
        self._since_ms = self._clock.now_ms()
        self._notify()

    def _problem(self, why: str) -> None:
        self.problem = why
        now_s = self._clock.now_ms() / 1000
        self._limiter.log("mqtt-payload", now_s, "warning", "energy-reading-ignored",
                          source="mqtt", reason=why)  # fmt: skip
        self._limiter.flush(now_s)
