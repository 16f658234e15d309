"""One small mechanism for every table of implementations edgeann fills with decorators:
model families, data sources, Brevitas lowerings, ONNX emitters and firmware lowerings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry(dict):
    """``key -> implementation``; ``@registry.register(key)`` adds one."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, key) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self[key] = fn
            return fn

        return deco
