"""Messages and keys built from columns (`rules.text.fmt`), and the Polars streaming panic it avoids."""

import datetime as dt
import itertools

import polars as pl
import pytest

from billing_pipeline.rules import dues
from billing_pipeline.rules.text import fmt

ROWS = pl.DataFrame({"s": ["a", None, "c"], "n": [1, 2, None], "d": [dt.date(2026, 1, 1), None, dt.date(2026, 2, 28)]})


@pytest.mark.parametrize("template, args", [
    ("x {} {}", ("n", "s")), ("{} x", ("s",)), ("{}|{}|{}", (pl.col("d"), "s", "n")),
    ("sim_{}", (pl.col("s").hash(1),)), ("period|{}|{}", ("s", "d")), ("no placeholder", ()),
])
def test_fmt_gives_the_text_and_name_pl_format_gives(template, args):
    assert ROWS.select(fmt(template, *args)).equals(ROWS.select(pl.format(template, *args)))


def chunked(lengths: list[int], flagged: set[int]) -> pl.DataFrame:
    parts, start = [], 0
    for n in lengths:
        rows = range(start, start + n)
        parts.append(pl.DataFrame({"s": [f"C{i}" for i in rows], "flagged": [i in flagged for i in rows]}))
        start += n
    return pl.concat(parts, rechunk=False)


def test_a_filter_that_empties_the_last_chunk_then_fmt_does_not_panic():
    """Polars 2.1's streaming engine panics on pl.format after a filter that empties the last of
    several chunks (`assertion failed: i < self.len()`, e.g. keeping rows 0-4 of chunks of 5, 3
    and 2 rows); fmt gives the text for every layout, keeping or dropping the flagged rows."""
    layouts = [set(c) for r in (1, 2, 3) for c in itertools.combinations(range(10), r)]
    for flagged in layouts:
        frame = chunked([5, 3, 2], flagged)
        for keep in (pl.col("flagged"), ~pl.col("flagged")):
            got = frame.lazy().filter(keep).select(fmt("customer {} does not exist", "s")).collect()
            assert got["s"].to_list() == [f"customer {s} does not exist" for s in frame.filter(keep)["s"]]


def test_dues_errors_of_a_chunked_export_whose_last_rows_are_bad():
    """The crash the review found: unknown customers in the last chunk of the night's contracts."""
    n = 10
    frame = pl.DataFrame({
        "business_date": [dt.date(2026, 3, 5)] * n, "facility_id": ["F1"] * n, "contract_id": [f"K{i}" for i in range(n)],
        "contract_key": pl.Series(range(n), dtype=pl.UInt32), "customer_id": [f"C{i}" for i in range(n)],
        "plan_id": ["P"] * n, "plan_known": [True] * n, "customer_known": [i < 8 for i in range(n)],
        "facility_known": [True] * n, "home_unknown": [False] * n, "contract_facility_id": ["F1"] * n,
        "home_facility_id": ["F1"] * n, "amount_cents": [100] * n, "freeze_fee_cents": [0] * n,
        "start_date": [dt.date(2026, 1, 1)] * n, "end_date": pl.Series([None] * n, dtype=pl.Date)})
    chunks = pl.concat([frame.slice(0, 5), frame.slice(5, 3), frame.slice(8, 2)], rechunk=False)
    no_duplicates = pl.LazyFrame(schema={"business_date": pl.Date, "customer_id": pl.String})
    errors = dues.data_errors(chunks.lazy(), no_duplicates).collect()
    assert sorted(zip(errors["contract_id"], errors["error_code"])) == [("K8", "unknown_customer"),
                                                                         ("K9", "unknown_customer")]
