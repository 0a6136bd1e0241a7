"""One finished (setting, seed) of a bench."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One finished (setting, seed) of a bench: its ``summary.json`` and its round records."""

    seed: int
    summary: dict
    rounds: list[dict]

    @property
    def methods(self) -> dict[str, dict]:
        return self.summary["methods"]
