"""A request made ahead: a function run on a thread while the caller makes another request."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Ahead(threading.Thread):
    """``fn(*args)`` on a thread; ``value()`` waits for it: its result, or None when it raised
    (what is asked ahead is asked again the ordinary way, which reports the error)."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        super().__init__(name="ckptkit-ahead", daemon=True)
        self._call = (fn, args)
        self._value: Any = None
        self.start()

    def run(self) -> None:
        fn, args = self._call
        try:
            self._value = fn(*args)
        except Exception:  # noqa: BLE001 - see the class docstring
            self._value = None

    def value(self) -> Any:
        self.join()
        return self._value
