"""What a run produced, per method and per round: the engine fills it in, the outputs describe it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MethodResult:
    per_client: list[dict] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    rounds: int = 0
    compute: dict[str, float] = field(default_factory=dict)  # mean per client: example passes and seconds
    federation: str = ""  # the federation it personalizes from, by name ("": none; its rounds are that name's)

    def mean_acc(self) -> float:
        return sum(c["acc"] for c in self.per_client) / max(1, len(self.per_client))

    def worst_acc(self) -> float:
        return min((c["acc"] for c in self.per_client), default=0.0)


@dataclass
class RunResult:
    methods: dict[str, MethodResult]
    rounds: list[dict]
    timing: dict[str, float | dict[str, float]]
    lambdas_at: dict[int, dict[str, float]] = field(default_factory=dict)
    federation: dict = field(default_factory=dict)  # the data's profile before training (``data.profile``)
