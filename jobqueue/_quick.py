"""Frozen attrs objects built without their ``__init__``, for the few made for every job.

attrs' ``__init__`` for a frozen class writes each field through a bound
``object.__setattr__``, a call of its own that costs about 1,100
instructions (callgrind, CPython 3.11): a ``SubmitJob`` of nine fields costs
about 10,900 to build, a slotted class that is not frozen about 3,800. The
server builds six frozen objects for every job (a request, an event per
step, a reply; about 47,000 of the 160,000 instructions a job of the
batched shape), and they stay frozen: :func:`builder` makes a function that
writes the slots through their own descriptors instead, about 780 a field,
every field it is not given at its default. The object is the one
``__init__`` makes, as frozen as before.

Only for a class whose ``__init__`` does nothing else (slotted, no
validator, converter, factory default or init hook): anything else gets a
function that calls the class itself. A test holds every builder in use to
the class's own ``__init__``.
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
    )
    if not plain:

        def build(*values: Any) -> _T:
            return cls(**dict(zip(given, values, strict=True)))

        return build
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(given)}):", "    made = _new(_cls)"]
    for index, field in enumerate(fields):
        namespace[f"_set{index}"] = slots[field.name].__set__
        if field.alias in given:
            value = field.alias
        else:
            namespace[f"_default{index}"] = field.default
            value = f"_default{index}"
        lines.append(f"    _set{index}(made, {value})")
    lines.append("    return made")
    exec("\n".join(lines), namespace)
    made: Callable[..., _T] = namespace["build"]
    made.__qualname__ = made.__name__ = f"build_{cls.__name__}"
    return made
