"""The pytest leak check, once it is turned on.

The entry point pytest loads is the top-level module
``_mpguard_pytestplugin``: it registers the options, the marker and the
``process_guard`` fixture, and imports this module only when the check is
on.  See that module for the settings, and ``docs/leaks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from . import _platform
from ._errors import GuardDegradedWarning
from .testing._leaks import LeakedProcessWarning, LeakWatch, report

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["start"]

#: The marker that exempts a test.
MARKER = "mpguard_allow_leaks"


def start(config: pytest.Config, mode: str, grace: float) -> None:
    """Watch every test of this session (a worker's, under pytest-xdist)."""
    subreaper = _platform.CAPS.subreaper
    if not subreaper:
        config.issue_config_time_warning(
            GuardDegradedWarning(
                "mpguard_leaks: no child subreaper here (PR_SET_CHILD_SUBREAPER, "
                "Linux >= 3.4): orphaned grandchildren are not found"
            ),
            stacklevel=2,
        )
    watch = LeakWatch(
        allow=config.getini("mpguard_leaks_allow"), grace=grace, subreaper=subreaper
    )
    config.pluginmanager.register(_LeakCheck(watch, mode), "mpguard-leak-check")


class _LeakCheck:
    """The hooks of a check that is on."""

    def __init__(self, watch: LeakWatch, mode: str) -> None:
        self.watch = watch
        self.mode = mode
        self.exempt = False
        self.resume_subreaper = False
        self.unchecked: pytest.Item | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.unchecked is not None:
            # The last test's teardown raised before the check ran.
            self._check(self.unchecked, teardown_failed=True)
        self.watch.baseline()
        self.unchecked = item
        self.exempt = item.get_closest_marker(MARKER) is not None
        if self.exempt:
            self.resume_subreaper = self.watch.subreaper_off()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Iterator[None]:
        # pytest's own fixtures (tmp_path, capsys, monkeypatch...) start no
        # process: skip the two scans for them.
        module = getattr(getattr(fixturedef, "func", None), "__module__", "") or ""
        if module.startswith("_pytest."):
            yield
            return
        token = self.watch.owner_begin()
        yield
        label = f"fixture {fixturedef.argname!r} ({fixturedef.scope} scope)"
        self.watch.owner_end(token, fixturedef, label)

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        self.watch.owner_released(fixturedef)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # trylast: after pytest's own teardown has run every finalizer.
        self.unchecked = None
        self._check(item)

    def _check(self, item: pytest.Item, *, teardown_failed: bool = False) -> None:
        if self.resume_subreaper:
            self.watch.subreaper_on()
            self.resume_subreaper = False
        leaks = self.watch.check("the test", exempt=self.exempt)
        self.exempt = False
        if not leaks:
            return
        killed = self.watch.kill(leaks) if self.mode == "kill" else []
        text = report(leaks, killed=bool(killed))
        if self.mode == "warn" or teardown_failed:
            item.warn(LeakedProcessWarning(text))
            return
        pytest.fail(text, pytrace=False)

    def pytest_unconfigure(self) -> None:
        self.watch.close()
