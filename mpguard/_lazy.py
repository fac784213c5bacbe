"""Names a package loads on first use (PEP 562 module ``__getattr__``).

``import mpguard`` and a spawn worker's imports stay light: a package lists
which of its submodules defines each name, and the submodule is imported
when the name is first read.  The package imports the same names under
``TYPE_CHECKING`` for the type checker.
"""

from __future__ import annotations

import sys

# typing.TYPE_CHECKING without importing typing (on ``import mpguard``'s path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["loader"]


def loader(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for *package*.

    *where* maps each name to the submodule (without the package, e.g.
    ``"_pool"``) that defines it.  The value is cached in the package, so
    later reads skip this function; an unknown name raises AttributeError.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:  # noqa: N807 - the PEP 562 hook
        module = where.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        full = f"{package}.{module}"
        __import__(full)
        value = getattr(sys.modules[full], name)
        namespace[name] = value
        return value

    return __getattr__
