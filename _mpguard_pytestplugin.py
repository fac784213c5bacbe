"""mpguard's pytest plugin: the test that leaked a process fails.

This is the module the ``pytest11`` entry point ``mpguard`` names.  It sits
outside the ``mpguard`` package, as Hypothesis keeps its
``_hypothesis_pytestplugin``, so that loading it imports neither mpguard nor
multiprocessing: the plugin is inert until it is turned on, and installing
mpguard changes no test run::

    pytest --mpguard-leaks=fail          # or warn, or kill

    [pytest]                             # or [tool.pytest.ini_options]
    mpguard_leaks = fail
    mpguard_leaks_grace = 1.0            # seconds a process gets to exit
    mpguard_leaks_allow =                # command lines that are never leaks
        *chromedriver*

``-p no:mpguard`` removes it (``-p _mpguard_pytestplugin`` loads it where
plugin autoloading is disabled).  When on, after each test it finds the
processes started during the test that still run ``mpguard_leaks_grace``
seconds after its teardown, the children that exited but were never
waited for (zombies), and orphaned descendants: pytest is made a child
subreaper (Linux), so a grandchild whose parent exited is reparented to
pytest, found, and, once it exits, reaped.  A process started while a
fixture was set up is charged to that fixture, and checked when the fixture
is torn down.  ``@pytest.mark.mpguard_allow_leaks`` exempts one test.  The
check itself is ``mpguard.pytest_plugin``.

Fixture: ``process_guard`` (:class:`mpguard.testing.ProcessGuard`), in every
mode, off included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mpguard.testing import ProcessGuard

__all__ = ["process_guard"]

_MODES = ("off", "fail", "warn", "kill")
_MARKER = "mpguard_allow_leaks"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The command-line flag and the ini options."""
    group = parser.getgroup("mpguard", "leaked processes (mpguard)")
    group.addoption(
        "--mpguard-leaks",
        dest="mpguard_leaks",
        default=None,
        metavar="MODE",
        help=(
            "check every test for leaked processes: fail (error at the "
            "test's teardown), warn, kill (kill the leaked tree, then fail) "
            "or off (default: the mpguard_leaks ini option, else off)"
        ),
    )
    parser.addini(
        "mpguard_leaks", "leaked-process check: off, fail, warn or kill", default="off"
    )
    parser.addini(
        "mpguard_leaks_grace",
        "seconds a test's processes get to exit after it before they leak",
        default="1.0",
    )
    parser.addini(
        "mpguard_leaks_allow",
        "command-line patterns (fnmatch) of processes that are never leaks",
        type="linelist",
        default=[],
    )


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("mpguard_leaks") or config.getini("mpguard_leaks")
    mode = str(mode).strip().lower()
    if mode not in _MODES:
        msg = f"mpguard_leaks must be one of {', '.join(_MODES)}, not {mode!r}"
        raise pytest.UsageError(msg)
    return mode


def _grace(config: pytest.Config) -> float:
    try:
        raw = config.getini("mpguard_leaks_grace")
    except (TypeError, ValueError) as e:
        # pytest 9's native [tool.pytest] table refuses a number for a
        # string option: quote it there ("1.0").
        msg = f'mpguard_leaks_grace: {e}; write it as a string, such as "1.0"'
        raise pytest.UsageError(msg) from None
    text = str(raw)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        msg = f"mpguard_leaks_grace must be a number of seconds >= 0, not {text!r}"
        raise pytest.UsageError(msg)
    return value


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; start watching if the check is on."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}: mpguard does not check this test for leaked processes "
        "(and pytest does not adopt its orphans while it runs)",
    )
    mode = _mode(config)
    grace = _grace(config)
    if mode == "off":
        return
    # pytest-xdist: the controller runs no test; each worker checks its own.
    if getattr(config.option, "dist", "no") != "no" and not hasattr(
        config, "workerinput"
    ):
        return
    # Only now is mpguard imported.
    from mpguard.pytest_plugin import start  # noqa: PLC0415

    start(config, mode, grace, _MARKER)


@pytest.fixture
def process_guard() -> Iterator[ProcessGuard]:
    """A :class:`mpguard.testing.ProcessGuard` for one test.

    What the test starts through it (``process_guard.Popen``, ``.Pool``,
    ``.Process``, ``.track``) is killed with its descendants at teardown,
    and the test fails (an error at teardown) if anything had to be killed.
    """
    from mpguard.testing import ProcessGuard  # noqa: PLC0415 - only when used

    guard = ProcessGuard()
    yield guard
    killed = guard.close()
    if killed:
        pytest.fail(guard.message(killed), pytrace=False)
