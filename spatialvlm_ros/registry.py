"""Name -> implementation registries: how config names pick pluggable pieces (backends, experts, shapings)."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from spatialvlm_ros.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Callables (factories, functions) registered under the names a config uses to choose them.

    Example:
        >>> greeters: Registry = Registry("demo.greeter")
        >>> @greeters.register("hello")
        ... def _hello(name):
        ...     return f"hello {name}"
        >>> greeters.create("hello", "robot")
        'hello robot'
        >>> greeters.get("bye")
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: demo.greeter: unknown 'bye'; registered: hello
    """

    def __init__(self, config_key: str) -> None:
        """Create an empty registry; ``config_key`` names the setting in error messages."""
        self.config_key = config_key
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Register the decorated callable under ``name``."""
        def decorate(item: F) -> F:
            self._items[name] = item
            return item
        return decorate

    @property
    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def get(self, name: str) -> F:
        """Return what is registered as ``name``; ConfigError naming the setting and the choices otherwise."""
        try:
            return self._items[name]
        except KeyError as err:
            raise ConfigError(f"{self.config_key}: unknown {name!r}; registered: {', '.join(self.names)}") from err

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call what is registered as ``name`` (usually a factory taking the config)."""
        return self.get(name)(*args, **kwargs)
