"""Import-time costs that every process of a run would pay for nothing.

``import streaming`` (Mosaic) executes ``streaming.text``, ``streaming.multimodal`` and
``streaming.vision`` eagerly: ready-made NLP and vision datasets that import ``transformers``'
tokenizer registry and ``sklearn`` (~1.5 s of CPU). Every process that touches MDS pays it:
each training rank, each Spark Python worker of an export, each ``kedro run``. This project
uses only ``streaming.base``.

So, before ``streaming`` is first imported, the three families are entered in ``sys.modules``
as placeholders that import the real module on first use of any public attribute (after which
the real module replaces the placeholder). Dunder lookups (``__file__``, ``__spec__``, ...)
are answered by the placeholder itself: tools that scan ``sys.modules`` read those and must
not trigger the import (the standard library's ``LazyLoader`` loads on any attribute, which
re-enters a partly imported ``torch`` and crashes it).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

#: Mosaic's dataset families that ``streaming/__init__.py`` imports and this project never uses.
STREAMING_FAMILIES = ("text", "multimodal", "vision")


class _Deferred(types.ModuleType):
    """A module entry that imports the real module when a public attribute is first read."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent, _, child = self.__name__.rpartition(".")
        setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def defer_streaming_dataset_families(package: str = "streaming") -> list[str]:
    """Enter ``package``'s unused dataset families as placeholders before ``package`` is
    imported. Returns the module names deferred: none if ``package`` is already imported or is
    not installed (then nothing changes)."""
    if package in sys.modules or importlib.util.find_spec(package) is None:
        return []
    deferred = []
    for family in STREAMING_FAMILIES:
        name = f"{package}.{family}"
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)
            deferred.append(name)
    return deferred
