"""The (ε, δ) of a run with client-level DP, from Google's ``dp-accounting`` RDP accountant.

Each round is one Poisson-subsampled Gaussian mechanism (sampling fraction ``q = m/N``, the rate the engines sample
at: ``m = max(1, round(fed.fraction·N))`` of the ``N`` clients; noise multiplier ``z = privacy.noise_multiplier``),
composed over ``fed.rounds``, add-or-remove-one neighbouring clients. The engine samples a fixed number ``m`` of
clients rather than each with probability ``q``: Poisson accounting is the
usual approximation for that (McMahan et al. 2018 account the same way), and exact at ``q = 1``. Flower's own
fixed-clipping accountant allows no amplification by sampling at all; with ``q < 1`` our ε is the smaller, Poisson one.
"""

from __future__ import annotations

from typing import Any

ACCOUNTING = "rdp (dp-accounting), poisson-subsampled gaussian, add-or-remove-one client"
DEFAULT_DELTA = 1e-5  # the usual δ (Abadi et al. 2016), lowered to 1/N² for N > 316 clients: δ well below 1/N


def default_delta(num_clients: int) -> float:
    """δ when ``privacy.delta`` is unset: min(1e-5, 1/N²). At δ ≥ 1/N a mechanism that publishes one random client's
    data outright would qualify, so δ must sit well below 1/N."""
    return min(DEFAULT_DELTA, 1 / num_clients**2)


def epsilon(noise_multiplier: float, fraction: float, rounds: int, delta: float) -> float:
    """The ε spent by ``rounds`` rounds of the subsampled Gaussian mechanism at ``delta`` (inf without noise)."""
    if noise_multiplier <= 0:
        return float("inf")
    import dp_accounting  # only runs with DP need the accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(fraction, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


def privacy_summary(config: dict[str, Any]) -> dict[str, Any] | None:
    """``summary.json``'s ``privacy`` block of a run's config dict; None when DP is off (no ``privacy`` section)."""
    p = config.get("privacy")
    if not p or p["noise_multiplier"] <= 0:
        return None
    fed, clients = config["fed"], config["data"]["num_clients"]
    delta = p["delta"] if p["delta"] is not None else default_delta(clients)
    rate = sampling_rate(fed["fraction"], clients)
    return {
        "epsilon": epsilon(p["noise_multiplier"], rate, fed["rounds"], delta), "delta": delta,
        "noise_multiplier": p["noise_multiplier"], "clip_norm": p["clip_norm"], "adaptive": p["adaptive"],
        "sampling_fraction": rate, "rounds": fed["rounds"], "accounting": ACCOUNTING,
    }


def sampling_rate(fraction: float, clients: int) -> float:
    """The share of the clients a round samples: ``max(1, round(fraction·N)) / N``, not ``fraction`` itself (6
    clients at ``fed.fraction = 0.1`` sample one a round: 1/6)."""
    return max(1, round(fraction * clients)) / clients


def privacy_line(block: dict[str, Any]) -> str:
    """One line under the run's table: the guarantee and how it was accounted."""
    clip = "adaptive from " if block["adaptive"] else ""
    return (
        f"client-level DP: ε = {block['epsilon']:.3g} at δ = {block['delta']:.3g} (noise multiplier "
        f"{block['noise_multiplier']:g}, clip {clip}{block['clip_norm']:g}, q = {block['sampling_fraction']:g}, "
        f"{block['rounds']} rounds; {block['accounting']})"
    )
