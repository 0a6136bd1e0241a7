"""How a method looks: one colour and one marker, the same in every plot of every run; a bound is hollow and
dashed, and labelled ``(bound)``."""

from __future__ import annotations

import zlib
from typing import Any

# λ picked by the grid on held-out or test data: bounds, never methods
BOUNDS = ("oracle_val", "oracle_test", "oracle_split")
# one adapter for every client: baselines Potara is shown against, never counted as a personalized peer it beats
NON_PERSONALIZED = ("fedit", "ffa_lora")
# (colour, marker) of every shipped method: baselines in blues, greens and greys, Potara in reds, oranges and
# purples, peers in the remaining hues, bounds in black and olive (hollow). No two share a colour.
STYLES: dict[str, tuple[str, str]] = {
    "local": ("#2ca02c", "v"),
    "fedit": ("#7f7f7f", "o"),
    "fedit_ft": ("#1f77b4", "s"),
    "fedit_ft_matched": ("#17becf", "D"),
    "fedit_ft_es": ("#aec7e8", "s"),
    "fixed": ("#8c564b", "P"),
    "oracle_val": ("#000000", "^"),
    "oracle_test": ("#bcbd22", "v"),
    "oracle_split": ("#dbdb8d", "^"),
    "potara": ("#d62728", "*"),
    "potara_module": ("#ff7f0e", "X"),
    "potara_heldout": ("#e377c2", "p"),
    "potara_crossfit": ("#9467bd", "h"),
    "potara_fisher": ("#8c6d31", "d"),
    "potara_folds": ("#7b4173", "<"),
    "potara_cautious": ("#e6550d", ">"),
    "potara_paper": ("#ce6dbd", "8"),
    "potara_spread": ("#ad494a", "h"),
    "ffa_lora": ("#393b79", "H"),
    "fedsa_lora": ("#637939", "d"),
    "ditto": ("#6baed6", "o"),
    "ditto_posthoc": ("#9c9ede", "s"),
    "apfl": ("#e7ba52", "D"),
    "apfl_posthoc": ("#bd9e39", "d"),
    "feddpa": ("#74c476", "^"),
}
# for any other name (a variant ``name@key=value``), picked by a hash of the name: stable across runs
SPARE_COLOURS = ("#843c39", "#3182bd", "#756bb1", "#636363", "#e7969c", "#a55194", "#cedb9c", "#fd8d3c")
SPARE_MARKERS = ("o", "s", "D", "^", "v", "<", ">", "p", "h", "X")


def is_bound(name: str) -> bool:
    """Whether the method picks λ on held-out or test data (an oracle, or an ``@`` variant of one): never a peer."""
    return name.split("@")[0] in BOUNDS


def is_personalized(name: str) -> bool:
    """Whether the method gives each client its own model: all but FedIT and FFA-LoRA (and their ``@`` variants)."""
    return name.split("@")[0] not in NON_PERSONALIZED


def row_label(name: str) -> str:
    """A table row's name: ``label``, and ``(not personalized)`` for a non-personalized baseline."""
    return label(name) if is_personalized(name) else f"{name} (not personalized)"


def label(name: str) -> str:
    """The method's name, with ``(bound)`` for a bound."""
    return f"{name} (bound)" if is_bound(name) else name


def colour_marker(name: str) -> tuple[str, str]:
    """The method's colour and marker: its own if it ships, else the hash of its name's."""
    if name in STYLES:
        return STYLES[name]
    h = zlib.crc32(name.encode())
    return SPARE_COLOURS[h % len(SPARE_COLOURS)], SPARE_MARKERS[(h // len(SPARE_COLOURS)) % len(SPARE_MARKERS)]


def style(name: str) -> dict[str, Any]:
    """matplotlib keyword arguments for a method's line or points: hollow markers and a dashed line for a bound."""
    colour, marker = colour_marker(name)
    hollow = {"markerfacecolor": "none", "linestyle": "--"} if is_bound(name) else {"linestyle": "-"}
    size = 11 if marker == "*" else 7
    return {"color": colour, "marker": marker, "markersize": size, **hollow}
