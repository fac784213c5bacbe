"""pytest plugin: billiard's default start method is mpguard's "guarded".

Loaded by ci/billiard-suite.sh for the second run of billiard's own unit
suite (``-p billiard_guarded_plugin`` with ``ci/`` on PYTHONPATH), so that
every ``billiard.Process`` and ``Pool`` the suite makes without naming a
context is started by the guarded fork.  The policy comes from the
environment (``MPGUARD_GRACE``, ``MPGUARD_PARENT_DEATH_GRACE``) and is
shown in the run's header.
"""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    """Switch billiard's default context before any test module runs."""
    import billiard  # noqa: PLC0415 - imported when pytest configures

    import mpguard.billiard  # noqa: PLC0415 - registers "guarded"

    billiard.set_start_method("guarded", force=True)
    ctx = billiard.get_context()
    if not isinstance(ctx, mpguard.billiard.GuardedBilliardContext):
        msg = f"billiard's default context is {ctx!r}, not mpguard's guarded one"
        raise RuntimeError(msg)


def pytest_report_header(config: Any) -> str:
    """Say in the run's header which context the suite runs under."""
    import billiard  # noqa: PLC0415

    import mpguard  # noqa: PLC0415

    return (
        f"billiard default context: {billiard.get_context()!r}; "
        f"mpguard {mpguard.__version__} policy: {mpguard.get_policy()}"
    )
