"""Client-level differential privacy on the federated adapter: DP-FedAvg (McMahan et al., "Learning Differentially
Private Recurrent Language Models", ICLR 2018), with fixed or adaptive clipping (Andrew et al., "Differentially
Private Learning with Adaptive Clipping", NeurIPS 2021).

The math is that of Flower 1.42's server-side wrappers (``flwr.serverapp.strategy``):
``DifferentialPrivacyServerSideFixedClipping`` and ``DifferentialPrivacyServerSideAdaptiveClipping``:

- each accepted upload's *update* (its travelling tensors minus the global adapter the client received) is clipped
  to L2 norm ``C`` over all its tensors together (FlatClip, ``min(1, C / ‖Δ‖)``);
- the clipped updates are summed with *equal* weights and divided by ``m``, the number of clients sampled, not by
  the number accepted (McMahan et al.'s fixed-denominator estimator: a rejected or missing upload adds 0, so one
  client moves the mean by at most ``C / m`` whoever else is rejected; the example counts ``n_k`` never enter, as
  Flower requires equal weights to account). Upload validation relative to the round's other uploads
  (``validation.max_norm_ratio``) is off: one client could change which others are dropped. Clipping bounds
  every update instead;
- Gaussian noise of std ``z · C / m`` is added to every element of the mean, ``m`` the number of sampled clients;
- adaptive: ``C ← C · exp(−η (b̃ − γ))`` after each round, ``b̃`` the count of updates *within* ``C`` (left
  unclipped) plus Gaussian noise of std ``σ_b = m / 20``, over ``m``; ``γ`` = ``privacy.target_quantile`` (0.5)
  and ``η`` = ``privacy.clip_lr`` (0.2), Flower's and Andrew et al.'s defaults; the mean's noise multiplier is raised to
  ``(z⁻² − (2σ_b)⁻²)^(−1/2)`` so that both releases together spend what ``z`` alone would.

Two deliberate differences from Flower's adaptive wrapper, both to follow Andrew et al. (Algorithm 1): Flower counts
the *clipped* updates in ``b̃``, so a norm below most updates shrinks further (the median is an unstable fixed point);
Andrew et al. count those within ``C``, so ``C`` converges to the ``γ`` quantile of the update norms. And Flower draws the mean's noise with the clipping norm *after* that round's
geometric update; here it is drawn with the norm the round's updates were clipped to, since noise below ``z · C_clip / m`` would not cover the round's sensitivity.

Noise comes from a generator of its own per release, seeded by the run's seed and the release's index, so a run is
reproducible and a resumed run (its checkpoint keeps the index and the adaptive norm) draws what the uninterrupted
one drew; the global RNG would not do: torch keeps a cached normal sample that its saved state does not restore.
Whoever knows the seed can subtract the noise: that is the server, which adds it anyway (central DP trusts the
server to add it; SecAgg+ hides the individual updates from it, not the aggregate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..config import PrivacyConfig
from ..merge.taskvec import AdapterState
from .strategies import FedAvg, RunningSum

COUNT_STD_PER_CLIENT = 1 / 20  # σ_b = m / 20: Flower's default clipped_count_stddev


def clipped(update: AdapterState, clip_norm: float) -> tuple[AdapterState, bool]:
    """``update`` scaled to L2 norm at most ``clip_norm`` over all its tensors; whether it was scaled down."""
    norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in update.values()))
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: v * factor for k, v in update.items()}, factor < 1.0


def adaptive_noise_multiplier(noise_multiplier: float, count_std: float) -> float:
    """The mean's noise multiplier when the clipped count is released too (Andrew et al., Theorem 1)."""
    return (noise_multiplier**-2 - (2 * count_std) ** -2) ** -0.5


class ClippedMean(RunningSum):
    """The equal-weight mean of the clipped updates added so far; noised by its strategy at the end."""

    def __init__(self, current: AdapterState, strategy: DPFedAvg) -> None:
        super().__init__(current, total=1)
        self.strategy, self.clip_norm, self.unclipped = strategy, strategy.clip_norm, 0

    def add(self, state: AdapterState, n: int) -> None:
        """Fold in one upload's clipped update with weight 1 (``n`` is ignored: weights must not depend on data)."""
        update, was_clipped = clipped({k: state[k] - self.current[k] for k in self.sums}, self.clip_norm)
        for k, acc in self.sums.items():
            acc.add_(update[k])
        self.folded += 1
        self.unclipped += int(not was_clipped)

    def result(self) -> AdapterState:
        """``current`` + the noised sum of the clipped updates over the ``m`` sampled clients; ``current`` when
        nothing was folded in."""
        if self.folded <= 0:
            return self.current
        mean = {k: v / self.strategy.sampled for k, v in self.sums.items()}
        return self.strategy.release(self.current, mean, self.unclipped)


class DPFedAvg(FedAvg):
    """FedAvg of clipped updates with equal weights and Gaussian noise on the mean (client-level DP)."""

    name = "dp_fedavg"
    releases_spread = False  # the accountant covers the noised mean alone, not statistics of single updates
    relative_bound = False  # sensitivity C/m needs each upload's fate to depend on itself alone

    def __init__(self, settings: PrivacyConfig, sampled: int, seed: int = 0) -> None:
        self.settings, self.sampled, self.clip_norm = settings, sampled, settings.clip_norm
        self.seed, self.releases = seed, 0
        self.count_std = sampled * COUNT_STD_PER_CLIENT if settings.adaptive else 0.0
        z = settings.noise_multiplier
        self.noise_multiplier = adaptive_noise_multiplier(z, self.count_std) if settings.adaptive else z

    def start(self, current: AdapterState, total: int) -> ClippedMean:
        return ClippedMean(current, self)

    def state(self) -> dict[str, float]:
        """The clipping norm, which the adaptive rule moves after every round, and the releases so far."""
        return {"clip_norm": self.clip_norm, "releases": self.releases}

    def restore(self, state: dict[str, float]) -> None:
        self.clip_norm = float(state.get("clip_norm", self.settings.clip_norm))
        self.releases = int(state.get("releases", 0))

    def noise_std(self) -> float:
        """The std of the noise on each element of the mean update: ``z · C / m``."""
        return self.noise_multiplier * self.clip_norm / self.sampled

    def release(self, current: AdapterState, mean: AdapterState, unclipped: int) -> AdapterState:
        """``current + mean`` with the round's noise; then, adaptive, the clipping norm's update."""
        std, noise = self.noise_std(), self.next_generator()
        out = {
            k: current[k] + mean[k] + std * torch.randn(mean[k].shape, dtype=mean[k].dtype, generator=noise)
            for k in sorted(mean)  # a fixed order: a resumed state's keys come back sorted from safetensors
        }
        if self.settings.adaptive:
            self.adapt(unclipped, noise)
        return out

    def next_generator(self) -> torch.Generator:
        """The noise generator of the next release: seeded by the run's seed and the release's index."""
        self.releases += 1
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.releases) % 2**63)

    def adapt(self, unclipped: int, noise: torch.Generator) -> None:
        """Andrew et al.'s geometric update of the clipping norm toward the target quantile, from a noised count
        over the ``m`` sampled clients (a rejected upload counts as clipped)."""
        noisy = (unclipped + self.count_std * float(torch.randn((), generator=noise))) / self.sampled
        self.clip_norm *= math.exp(-self.settings.clip_lr * (noisy - self.settings.target_quantile))


def privatized(strategy: FedAvg, settings: PrivacyConfig, sampled: int, seed: int = 0) -> FedAvg:
    """``strategy`` itself with DP off (``noise_multiplier`` 0), else DP-FedAvg over ``sampled`` clients a round,
    its noise seeded by ``seed``."""
    return DPFedAvg(settings, sampled, seed) if settings.noise_multiplier > 0 else strategy


class EqualWeightFedAvg(FedAvg):
    """What Flower's DP wrappers need beneath them: ``current`` plus the accepted updates summed with weight 1 and
    divided by the ``sampled`` clients (the fixed-denominator mean :class:`ClippedMean` takes), the clipping and
    noise left to the wrapper. Under SecAgg+ every surviving reply carries the survivors' mean: the same sum."""

    name = "fedavg_equal"
    releases_spread = False  # beneath a DP wrapper, as DPFedAvg
    relative_bound = False  # as DPFedAvg

    def __init__(self, sampled: int) -> None:
        self.sampled = sampled

    def aggregate(self, updates: Sequence[tuple[AdapterState, int]], current: AdapterState) -> AdapterState:
        if not updates:
            return current
        return {k: v + sum(state[k] - v for state, _ in updates) / self.sampled for k, v in current.items()}
