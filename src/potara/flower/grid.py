"""A Grid that meters and audits every Message the ServerApp sends and receives."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from .wire import array_bytes, origin, payload_bytes, record_keys


class DelegatingGrid(Grid):
    """A Grid that hands every call to ``inner``; subclasses override what they add."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


class MeteredGrid(DelegatingGrid):
    """Delegates to a real Grid; logs, per Message, its phase, node, type, record keys and its arrays' bytes:
    ``bytes`` in the core's wire format (what every count here sums, as the embedded engine counts) and
    ``array_bytes`` as Flower counts them (``ArrayRecord.count_bytes``: NumPy-serialized data + key names)."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.phase: tuple[str, int] = ("setup", 0)
        self.log: list[dict[str, Any]] = []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._meter(messages, "down")
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._meter(replies, "up")
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._meter(messages, "down")
        self._meter(replies, "up", messages)
        return replies

    def _meter(
        self, messages: list[Message], direction: str, sent: Sequence[Message] = ()
    ) -> None:
        kind, round_ = self.phase
        for msg in messages:
            meta = msg.metadata
            self.log.append(
                {
                    "phase": kind,
                    "round": round_,
                    "direction": direction,
                    "type": meta.message_type,
                    "node": meta.dst_node_id
                    if direction == "down"
                    else origin(msg, sent),
                    "bytes": payload_bytes(msg),
                    "array_bytes": array_bytes(msg),
                    "error": msg.error.reason if msg.has_error() else None,
                    "records": record_keys(msg),
                }
            )

    def bytes(
        self,
        direction: str,
        phases: Iterable[str] | None = None,
        round_: int | None = None,
    ) -> int:
        """Payload bytes logged in one direction, optionally for some phases and one round."""
        wanted = set(phases) if phases is not None else None
        return sum(
            e["bytes"]
            for e in self.log
            if e["direction"] == direction
            and (wanted is None or e["phase"] in wanted)
            and (round_ is None or e["round"] == round_)
        )
