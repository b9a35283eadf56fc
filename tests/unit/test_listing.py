"""Bounded listings: what ``stats`` and the metrics endpoint keep of a long table."""

from __future__ import annotations

from jobqueue._listing import busiest, busiest_items


def by_size(name: str, size: int) -> tuple[int, str]:
    return -size, name


def test_a_short_table_comes_back_whole() -> None:
    table = {"b": 1, "a": 2}
    assert busiest(table, by_size, 10_000, most=2) == ({"b": 1, "a": 2}, 0)


def test_the_busiest_are_kept_in_the_tables_order() -> None:
    table = {"a": 1, "b": 5, "c": 1, "d": 3, "e": 1}
    kept, left = busiest(table, by_size, 10_000, most=3)
    assert list(kept.items()) == [("a", 1), ("b", 5), ("d", 3)]  # ties: "a" sorts first
    assert left == 2


def test_the_byte_budget_cuts_a_listing_the_count_would_keep() -> None:
    table = {f"n{i}": i for i in range(100)}
    # Each entry encodes as {"nXX":XX}: 10 or 11 bytes.
    kept, left = busiest(table, by_size, 55, most=100, entry_bytes=0)
    assert list(kept) == ["n95", "n96", "n97", "n98", "n99"]
    assert left == 95


def test_items_are_kept_in_order_and_one_too_long_is_skipped() -> None:
    entries = [{"name": "a"}, {"name": "x" * 100}, {"name": "b"}, {"name": "c"}]
    kept, left = busiest_items(entries, 40, most=10)
    assert kept == [{"name": "a"}, {"name": "b"}]  # 14 bytes counted for each
    assert left == 2
    assert busiest_items(entries, 10_000, most=1) == ([{"name": "a"}], 3)
