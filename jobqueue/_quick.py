"""Frozen attrs objects built without their ``__init__``, for the few made for every job.

attrs' ``__init__`` for a frozen class writes each field through a bound
``object.__setattr__``, a call of its own that costs about 1,100
instructions (callgrind, CPython 3.11): a ``SubmitJob`` of nine fields costs
about 10,900 to build, a slotted class that is not frozen about 3,800. The
server builds six frozen objects for every job (a request, an event per
step, a reply), the worker three, and they stay frozen.

:func:`builder` makes a function that builds the object as an instance of
a *twin*: a subclass of the class that adds nothing (no slot, no field)
but lets its slots be written by plain attribute stores, about 60
instructions a field. Once every field is written (those it is not given
at their defaults), the object's ``__class__`` is set to the class itself,
which CPython allows because the twin's layout is its base's: the object
is then the one ``__init__`` makes, as frozen as before, and the twin
never escapes. (``SubmitJob``: 8,200 instructions a build through the
slots' own descriptors, the way the fourth round did it, 3,450 through a
twin.) Where CPython refuses the assignment the builder writes the slots
through their descriptors instead (about 780 a field).

Only for a class whose ``__init__`` does nothing else (slotted, no
validator, converter, factory default or init hook, no slot that is not a
field): anything else gets a function that calls the class itself. A test
holds every builder in use to the class's own ``__init__``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

_T = TypeVar("_T")


def builder(cls: type[_T], *given: str) -> Callable[..., _T]:
    """A function of the fields ``given`` (positionally, in that order) that builds ``cls``.

    ``builder(C, "a", "b")(x, y)`` is ``C(a=x, b=y)``: the same fields, the
    others at their defaults, without ``C.__init__``'s per-field calls. A
    field is named as ``__init__`` names it (its alias: ``progress_reporter``
    for a private ``_progress``).

    Raises:
        ValueError: if ``given`` names no field of ``cls``, or leaves out
            one without a default.
    """
    fields = attrs.fields(cls)  # type: ignore[arg-type]  # (an attrs class: _T cannot say so)
    names = [field.alias for field in fields]
    missing = [field.alias for field in fields if field.default is attrs.NOTHING]
    if not set(given) <= set(names) or not set(missing) <= set(given):
        raise ValueError(f"cannot build {cls.__name__} from {given}")
    slots = cls.__dict__
    plain = (
        not hasattr(cls, "__attrs_post_init__")
        and not hasattr(cls, "__attrs_pre_init__")
        and all(
            field.validator is None
            and field.converter is None
            and not isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
            and isinstance(slots.get(field.name), types.MemberDescriptorType)
            and field.alias.isidentifier()
            and not field.alias.startswith("_")  # (the function's own names)
            and field.alias != "made"
            for field in fields
        )
        # No slot the fields leave unwritten (attrs' cache_hash keeps one).
        and {name for name in slots.get("__slots__", ()) if name != "__weakref__"}
        == {field.name for field in fields}
    )
    if not plain:

        def build(*values: Any) -> _T:
            return cls(**dict(zip(given, values, strict=True)))

        return build
    twin = _twin(cls)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_twin": twin}
    lines = [
        f"def build({', '.join(given)}):",
        f"    made = _new({'_cls' if twin is None else '_twin'})",
    ]
    for index, field in enumerate(fields):
        if field.alias in given:
            value = field.alias
        else:
            namespace[f"_default{index}"] = field.default
            value = f"_default{index}"
        if twin is None:
            namespace[f"_set{index}"] = slots[field.name].__set__
            lines.append(f"    _set{index}(made, {value})")
        else:
            lines.append(f"    made.{field.name} = {value}")
    if twin is not None:
        lines.append("    made.__class__ = _cls")
    lines.append("    return made")
    exec("\n".join(lines), namespace)
    made: Callable[..., _T] = namespace["build"]
    made.__qualname__ = made.__name__ = f"build_{cls.__name__}"
    return made


def _twin(cls: type[_T]) -> type[_T] | None:
    """A subclass of ``cls`` whose slots take plain stores; ``None`` if CPython would refuse it.

    It adds no slot, so an instance can become a ``cls`` by ``__class__``
    assignment; ``__setattr__`` and ``__delattr__`` are ``object``'s (both:
    CPython writes slots directly only when neither is a Python function).
    """
    twin = type(
        f"_{cls.__name__}Twin",
        (cls,),
        {
            "__slots__": (),
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": __name__,
        },
    )
    probe: Any = object.__new__(twin)
    try:
        probe.__class__ = cls
    except TypeError:  # a layout CPython will not carry across
        return None
    return twin
