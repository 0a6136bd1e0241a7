"""``potara bench``: suites of runs (methods × settings × seeds) and their report."""

from importlib import resources


def packaged_suites() -> list[str]:
    """The names of the suites shipped in ``potara/bench/suites`` (light: the CLI's help lists them)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).joinpath("suites").iterdir()
                  if p.name.endswith(".yaml"))
