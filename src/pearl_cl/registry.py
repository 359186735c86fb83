"""Registries: name → class (or value) for methods, routers, backbones, benchmarks and probes.

Our design, after timm's ``register_model`` / ``create_model`` and PEFT's
``register_peft_method``: a module declares what it adds with a decorator, and the rest of the
code finds it by name through the registry, never by importing it. A registry fills itself on
first use by importing every module of its package (``pkgutil``), so a new method is one new
file in ``pearl_cl/methods/`` and nothing else; code outside the package (a test, a plugin)
registers with the same decorator. This module imports nothing heavy, so the CLI can build its
help without loading PyTorch.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from pearl_cl.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one kind (``"method"``, ``"router"``, …) mapped to what they name, in
    registration order.

    Args:
        kind: what the names are, for error messages (``"method"``).
        key: the config key that selects one (``"method"``, ``"routing.router"``), for error
            messages.
        package: dotted package whose modules are imported, once, before the first look-up, so
            that their decorators have run (None: entries come from explicit registration only).
    """

    def __init__(self, kind: str, key: str, package: str | None = None) -> None:
        self.kind, self.key, self.package = kind, key, package
        self._entries: dict[str, T] = {}
        self._default: str | None = None
        self._loaded = package is None
        self._loading = False

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True  # a module being imported may look names up: it sees what is registered so far
        try:
            root = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(getattr(root, "__path__", []), self.package + "."):
                importlib.import_module(info.name)
            self._loaded = True  # after every import succeeded: a failed one is raised again on the next look-up
        finally:
            self._loading = False

    def register(self, name: str, default: bool = False) -> Callable[[T], T]:
        """Decorator: register the decorated class or function as ``name`` and set its ``name``
        attribute (where it can be set); ``default`` makes it what :meth:`default` returns.

        Raises:
            ValueError: ``name`` is already registered to something else.
        """

        def decorate(entry: T) -> T:
            self.add(name, entry, default)
            try:
                entry.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return entry

        return decorate

    def add(self, name: str, entry: T, default: bool = False) -> T:
        """Register ``entry`` (a class, function or value) as ``name``; returns it. ``default``
        makes ``name`` what :meth:`default` returns.

        Raises:
            ValueError: ``name`` is already registered to something else.
        """
        known = self._entries.get(name)
        if known is not None and _origin(known) != _origin(entry):
            raise ValueError(f"{self.kind} {name!r} is registered twice ({known!r} and {entry!r}); choose another name")
        self._entries[name] = entry
        if default:
            self._default = name
        return entry

    def default(self) -> str:
        """The name registered with ``default=True`` (the config's default choice).

        Raises:
            ConfigError: none was.
        """
        self._load()
        if self._default is None:
            raise ConfigError(f"no default {self.kind} is registered; set {self.key} to one of: {', '.join(self._entries)}")
        return self._default

    def remove(self, name: str) -> None:
        """Unregister ``name`` (a plugin or test that registered it cleans up)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """What ``name`` names.

        Raises:
            ConfigError: unknown name; the message names the config key and every choice.
        """
        self._load()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.key} {name!r}; choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        self._load()
        return list(self._entries.items())

    def __getitem__(self, name: str) -> T:
        """Same as :meth:`get`."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())



def _origin(entry: Any) -> tuple[str, str] | int:
    """Where ``entry`` was defined (module, qualified name), so that a module imported twice
    re-registers the same names; the object's identity for values."""
    qualname = getattr(entry, "__qualname__", None)
    return (getattr(entry, "__module__", ""), qualname) if qualname else id(entry)


METHODS: Registry[Any] = Registry("method", "method", "pearl_cl.methods")
"""Continual-learning methods: name → :class:`~pearl_cl.methods.learner.Learner` subclass."""

ROUTERS: Registry[Any] = Registry("router", "routing.router", "pearl_cl.routers")
"""Task-identity routers: name → :class:`~pearl_cl.routers.base.Router` instance."""

BACKBONES: Registry[Any] = Registry("backbone", "backbone.name", "pearl_cl.backbones")
"""Backbones: name → builder ``(image_shape, width) -> nn.Module``."""

BENCHMARKS: Registry[Any] = Registry("benchmark", "benchmark", "pearl_cl.data.specs")
"""Built-in benchmarks: name → :class:`~pearl_cl.data.specs.BenchmarkSpec`."""

PROBES: Registry[Any] = Registry("probe", "pearl.probe", "pearl_cl.core.probe")
"""Proximity probes: name → function ``(reference, task, settings, seed) -> {layer: ΔW}``."""

PROXIMITIES: Registry[Any] = Registry("proximity", "pearl.proximity", "pearl_cl.core.proximity")
"""Task-level proximity measures: name → function ``(reference, task, settings, seed) ->``
:class:`~pearl_cl.core.proximity.Proximity`."""
