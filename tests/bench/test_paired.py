"""The paired differences the report, the map and the sweep share: the headline Holm family and the text."""

import numpy as np

from potara.bench.paired import delta_text, p_text, verdict_text, versus, wtl_text

SEEDS, CLIENTS = range(10), range(4)


def accs(edge: float, seed: int = 0) -> dict[tuple, float]:
    rng = np.random.default_rng(seed)
    return {("s", k, c): 0.5 + edge + 0.01 * rng.standard_normal() for k in SEEDS for c in CLIENTS}


def test_potara_against_every_method_corrects_over_peers_only_and_the_text_shows_it():
    numbers = versus({"potara": accs(0.05, 1), "ditto": accs(0.0, 2), "local": accs(0.0, 3),
                      "oracle_test": accs(0.2, 4), "potara@potara.safety=val_loss": accs(0.05, 5)}, "potara")
    assert {k for k, d in numbers.items() if d["holm_family"]} == {"ditto", "local"}
    assert numbers["oracle_test"].get("p_holm") is None and numbers["ditto"]["p_holm"] is not None
    ditto = numbers["ditto"]
    assert ditto["verdict"] == "win" and verdict_text(ditto, bold=True) == "**win**" and verdict_text(ditto) == "win"
    assert delta_text(ditto).startswith(f"{ditto['mean']:+.3f} [") and delta_text(ditto).endswith("%")  # Holm level
    assert delta_text(numbers["oracle_test"]).endswith("]")  # uncorrected: 95%, not shown
    assert "Holm" in p_text(ditto) and "Holm" not in p_text(numbers["oracle_test"])
    assert wtl_text(ditto) == f"{ditto['wins']}/{ditto['ties']}/{ditto['losses']}"
    assert versus({"ditto": accs(0.0)}, "potara") == {}
    assert delta_text(None) == p_text(None) == wtl_text(None) == verdict_text(None) == "–"
