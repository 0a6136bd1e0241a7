"""Client-level DP in the Flower app through Flower's own strategy wrappers (``flwr.serverapp.strategy``).

With ``privacy.noise_multiplier`` > 0 the :class:`PotaraFedAvg` (aggregating with equal weights, as the wrappers
require) is wrapped in ``DifferentialPrivacyServerSideFixedClipping`` (``...AdaptiveClipping`` with
``privacy.adaptive``), or, when the clients clip (under SecAgg+, whose server never sees one update),
``DifferentialPrivacyClientSideFixedClipping``, whose clipping norm reaches the clients' ``fixedclipping_mod``.
The math is that of the embedded engine's ``potara.federation.privacy.DPFedAvg`` (see its docstring for the two
deliberate differences in adaptive clipping); Flower draws the noise with NumPy, so the two engines' noise is
equal in distribution (std ``z·C/m``), not bitwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from ..config import sampled_clients
from ..federation.privacy import COUNT_STD_PER_CLIENT
from .settings import FlowerSettings


class _ScreenedFirst:
    """A server-side DP wrapper whose replies are screened by the strategy's per-upload checks before it clips them
    (it clips each reply against the global adapter: a wrong shape would raise there, not be rejected)."""

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[Any, Any]:
        return super().aggregate_train(server_round, self.strategy.screen_train(server_round, replies))


class ScreenedFixedClipping(_ScreenedFirst, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping, its replies screened first."""


class ScreenedAdaptiveClipping(_ScreenedFirst, DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping, its replies screened first."""


def privatized(strategy: Strategy, settings: FlowerSettings) -> Strategy:
    """``strategy`` itself with DP off, else in the Flower DP wrapper that the settings call for."""
    p, m = settings.run.privacy, sampled_clients(settings.run)
    if p.noise_multiplier <= 0:
        return strategy
    if settings.client_clipping:
        return DifferentialPrivacyClientSideFixedClipping(strategy, p.noise_multiplier, p.clip_norm, m)
    if p.adaptive:
        return ScreenedAdaptiveClipping(
            strategy, p.noise_multiplier, m, initial_clipping_norm=p.clip_norm, target_clipped_quantile=p.target_quantile,
            clip_norm_lr=p.clip_lr, clipped_count_stddev=m * COUNT_STD_PER_CLIENT,
        )
    return ScreenedFixedClipping(strategy, p.noise_multiplier, p.clip_norm, m)
