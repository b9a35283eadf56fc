"""The builders of :mod:`jobqueue._quick`, held to the classes' own ``__init__``.

Every builder in use must make, from any values, the object ``__init__``
makes from them as keywords: every field the same (those left out of
equality included), as frozen, equal, with the same repr and hash.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue import _journal, _quick, _state
from jobqueue._events import Assigned, Completed, Submitted
from jobqueue._handler import Job, Outcome, build_job, build_returned
from jobqueue._quick import builder
from jobqueue._replies import JobAssigned, JobSubmitted, build_assigned, build_submitted
from jobqueue._requests import JobComplete, RequestJob, SubmitJob, build_plain_submit, build_report

#: Every builder the package uses, with its class.
IN_USE: list[tuple[type[Any], Callable[..., Any]]] = [
    (SubmitJob, build_plain_submit),
    (JobComplete, build_report),
    (JobAssigned, build_assigned),
    (JobSubmitted, build_submitted),
    (Submitted, _state._submitted),
    (Assigned, _state._assigned),
    (Completed, _state._completed),
    # A replay's events, from all their fields in order.
    (Submitted, _journal._BUILDERS[Submitted]),
    (Assigned, _journal._BUILDERS[Assigned]),
    (Completed, _journal._BUILDERS[Completed]),
    (Job, build_job),
    (Outcome, build_returned),
]

values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)  # (NaN is unequal to itself: equality is checked)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.lists(st.integers(), max_size=3)
    | st.just(RequestJob(max=64))
)


@pytest.mark.parametrize(("cls", "build"), IN_USE, ids=lambda x: getattr(x, "__name__", "?"))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_builder_makes_what_init_makes(
    cls: type[Any], build: Callable[..., Any], data: st.DataObject
) -> None:
    names = list(inspect.signature(build).parameters)
    drawn = [data.draw(values, label=name) for name in names]
    built = build(*drawn)
    made = cls(**dict(zip(names, drawn, strict=True)))
    assert type(built) is cls
    for field in attrs.fields(cls):
        assert getattr(built, field.name) is getattr(made, field.name), field.name
    assert built == made
    assert repr(built) == repr(made)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.job_id = "changed"  # (a field or not: a frozen class refuses any)
    assert _hash(built) == _hash(made)


def _hash(obj: object) -> int | str:
    try:
        return hash(obj)
    except TypeError:  # an unhashable value drawn (a list)
        return "unhashable"


def test_a_builder_leaves_the_fields_it_is_not_given_at_their_defaults() -> None:
    job = build_plain_submit("n", {"a": 1}, b'{"a":1}')
    assert job == SubmitJob("n", {"a": 1})
    assert (job.queue, job.priority, job.max_attempts, job.delay, job.run_at, job.key) == (
        "default", 0, None, 0.0, None, None,
    )  # fmt: skip
    assert job.stored_payload == b'{"a":1}'


@attrs.frozen
class _Checked:
    size: int = attrs.field(validator=attrs.validators.instance_of(int))
    label: str = "x"


@attrs.frozen
class _Hooked:
    size: int
    seen: list[int] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.seen.append(self.size)


def test_a_class_whose_init_does_more_is_built_by_its_init() -> None:
    build = builder(_Checked, "size")
    assert build(3) == _Checked(3)
    with pytest.raises(TypeError):
        build("three")  # the validator ran
    hooked = builder(_Hooked, "size")(5)
    assert hooked.seen == [5]


def test_a_builder_needs_every_field_without_a_default() -> None:
    with pytest.raises(ValueError, match="cannot build"):
        builder(JobAssigned, "job_id", "name")
    with pytest.raises(ValueError, match="cannot build"):
        builder(Completed, "job_id", "result", "when")


@attrs.frozen(cache_hash=True)
class _CachedHash:
    size: int


def test_a_class_with_a_slot_that_is_not_a_field_is_built_by_its_init() -> None:
    built = builder(_CachedHash, "size")(4)
    assert built == _CachedHash(4)
    assert hash(built) == hash(_CachedHash(4))  # (its hidden slot was written)


@pytest.mark.parametrize(("cls", "build"), IN_USE, ids=lambda x: getattr(x, "__name__", "?"))
def test_the_twin_never_escapes(cls: type[Any], build: Callable[..., Any]) -> None:
    names = list(inspect.signature(build).parameters)
    built = build(*range(len(names)))
    assert type(built) is cls
    assert not [kind for kind in cls.__subclasses__() if isinstance(built, kind)]


@pytest.mark.parametrize(("cls", "build"), IN_USE, ids=lambda x: getattr(x, "__name__", "?"))
def test_without_a_twin_the_slots_are_written_through_their_descriptors(
    cls: type[Any], build: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = list(inspect.signature(build).parameters)
    monkeypatch.setattr(_quick, "_twin", lambda cls: None)  # as if CPython refused
    slow = builder(cls, *names)
    values = [f"v{index}" for index in range(len(names))]
    made = cls(**dict(zip(names, values, strict=True)))
    for built in (slow(*values), build(*values)):
        assert type(built) is cls
        assert [getattr(built, f.name) for f in attrs.fields(cls)] == [
            getattr(made, f.name) for f in attrs.fields(cls)
        ]
