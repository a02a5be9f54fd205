"""Configuration of the job components (worker and publisher) inside the engine. I/O: none."""

from __future__ import annotations

import dataclasses

from hearth.protocol.bidding import WorkerConfig
from hearth.protocol.publisher_state import PublisherConfig


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    worker: WorkerConfig = dataclasses.field(default_factory=WorkerConfig)
    publisher: PublisherConfig = dataclasses.field(default_factory=PublisherConfig)
