"""What the hostile-input property tests share: their hypothesis settings and what a clear error is."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def hostile(max_examples: int) -> settings:
    """``max_examples`` cases, the same on every run (derandomized, no example database), no deadline (torch and
    file I/O vary in speed); a function-scoped fixture (tmp_path) is shared by a test's cases on purpose."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def assert_clear(message: str, *names: str) -> None:
    """A message a person can act on: one non-empty line that names each of ``names``."""
    assert message.strip() and "\n" not in message, repr(message)
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
