"""Every method keeps one colour and marker, in every plot and every run; a bound is hollow."""

from __future__ import annotations

import subprocess
import sys

from potara import config
from potara.methods import available
from potara.reporting.outputs import best_peer
from potara.reporting.styles import STYLES, colour_marker, is_bound, style


def test_every_shipped_method_has_its_own_colour_and_marker():
    shipped = set(available(config.RunConfig()))
    assert shipped <= set(STYLES)
    colours = [c for c, _ in STYLES.values()]
    assert len(set(colours)) == len(colours)
    potara = {colour_marker(name)[0] for name in shipped if name.startswith("potara")}
    assert colour_marker("local")[0] not in potara and len(potara) == len([n for n in shipped if n.startswith("potara")])


def test_a_bound_is_hollow_and_dashed_a_method_filled():
    assert style("oracle_test")["markerfacecolor"] == "none" and style("oracle_test")["linestyle"] == "--"
    assert "markerfacecolor" not in style("potara") and style("potara")["linestyle"] == "-"


def test_a_variant_gets_the_same_style_in_every_process():
    variant = "fixed@peers.fixed_lambda=0.3"
    code = f"from potara.reporting.styles import colour_marker; print(colour_marker({variant!r}))"
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)}).stdout
        for seed in ("1", "2")
    }
    assert seen == {f"{colour_marker(variant)}\n"}


def test_a_variant_of_a_bound_is_a_bound_never_the_best_peer():
    variant = "oracle_test@local.init=pretrained"
    assert is_bound(variant) and style(variant)["linestyle"] == "--"
    assert best_peer("potara", {"ditto": 0.6, variant: 0.7}) == "ditto"
