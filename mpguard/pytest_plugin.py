"""The pytest leak check, once it is turned on.

The entry point pytest loads is the top-level module
``_mpguard_pytestplugin``: it registers the options, the marker and the
``process_guard`` fixture, and imports this module only when the check is
on.  See that module for the settings, and ``docs/leaks.md``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pytest

from . import _platform
from ._errors import GuardDegradedWarning
from .testing._leaks import LeakedProcessWarning, LeakWatch, report

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["start"]


def start(config: pytest.Config, mode: str, grace: float, marker: str) -> None:
    """Watch every test of this session (a worker's, under pytest-xdist).

    *marker* is the name of the marker that exempts a test.
    """
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
    plugin = _LeakCheck(watch, mode, marker)
    config.pluginmanager.register(plugin, "mpguard-leak-check")


class _LeakCheck:
    """The hooks of a check that is on."""

    def __init__(self, watch: LeakWatch, mode: str, marker: str) -> None:
        self.watch = watch
        self.mode = mode
        self.marker = marker
        self.exempt = False
        self.resume_subreaper = False
        # The test whose check has not run yet.
        self.unchecked: pytest.Item | None = None
        # The current setup of each fixture: a new parameter is a new setup,
        # torn down and charged apart from the old one.
        self.setups: dict[pytest.FixtureDef[Any], object] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.watch.baseline()
        self.unchecked = item
        self.exempt = item.get_closest_marker(self.marker) is not None
        if self.exempt:
            self.resume_subreaper = self.watch.subreaper_off()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, None]:
        # pytest's own fixtures (tmp_path, capsys, monkeypatch...) start no
        # process: skip the two scans for them.
        module = getattr(getattr(fixturedef, "func", None), "__module__", "") or ""
        if module.startswith("_pytest."):
            yield
            return
        token = self.watch.owner_begin()
        yield
        key = self.setups[fixturedef] = object()
        label = f"fixture {fixturedef.argname!r} ({fixturedef.scope} scope)"
        try:
            self.watch.owner_end(token, key, label)
        except Exception as e:  # noqa: BLE001 - never break pytest's fixture setup
            warnings.warn(f"mpguard_leaks: {e!r}", LeakedProcessWarning, stacklevel=1)

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        key = self.setups.pop(fixturedef, None)
        if key is not None:
            self.watch.owner_released(key)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # trylast: after pytest's own teardown has run every finalizer.  A
        # leak fails the teardown, so the error is charged to this test.
        self.unchecked = None
        self._check(item)

    # pytest registers only names that start with pytest_; specname (pluggy
    # >= 1.0) lets this wrapper share the hook with the check above.
    @pytest.hookimpl(hookwrapper=True, specname="pytest_runtest_teardown")
    def pytest_runtest_teardown_raised(
        self, item: pytest.Item
    ) -> Generator[None, Any, None]:
        """A finalizer raised, so the check above never ran: run it now,
        and warn (the teardown has failed already)."""
        yield
        if self.unchecked is item:
            self.unchecked = None
            self._check(item, teardown_failed=True)

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

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Fixtures torn down at the end of the session, not in a test's
        teardown (after Ctrl-C or ``pytest.exit()``), are checked here."""
        leaks = self.watch.check("the session", exempt=True)
        if not leaks:
            return
        killed = self.watch.kill(leaks) if self.mode == "kill" else []
        text = report(leaks, killed=bool(killed))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "mpguard: leaked processes", red=True)
            reporter.write_line(text)
        if self.mode != "warn" and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_unconfigure(self) -> None:
        self.watch.close()
