"""Reads an export folder (one NAME.parquet or NAME.csv per table) and validates it eagerly.

Everything is checked before anything is returned, so a caller that writes only after
`load_inputs` succeeds writes nothing for a bad export. Every problem is reported as one
`InputError` naming the file, the column and the row key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pandera.errors
import polars as pl

from billing_pipeline.inputs.contract import TABLES, TableContract

TRUE_FALSE = {"true": True, "false": False}


class InputError(ValueError):
    """A structurally bad export: names the file, the column and the row key."""

    def __init__(self, file: str, problem: str, column: str | None = None, row_key: str | None = None):
        self.file, self.column, self.row_key, self.problem = file, column, row_key, problem
        where = file
        if column is not None:
            where += f", column '{column}'"
        if row_key is not None:
            where += f", row {row_key}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Inputs:
    facilities: pl.DataFrame
    plans: pl.DataFrame
    customers: pl.DataFrame
    contracts: pl.DataFrame
    payment_methods: pl.DataFrame
    status_changes: pl.DataFrame
    charges: pl.DataFrame
    payments: pl.DataFrame
    certification_types: pl.DataFrame
    certifications: pl.DataFrame
    applications: pl.DataFrame
    members: pl.DataFrame

    def row_counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name).height for f in fields(self)}


def load_inputs(folder: str | Path) -> Inputs:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(str(folder), "the export folder does not exist")
    return Inputs(**{name: load_table(folder, contract) for name, contract in TABLES.items()})


def find_table_file(folder: Path, name: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load_table(folder: Path, contract: TableContract) -> pl.DataFrame:
    path = find_table_file(folder, contract.name)
    if path is None:
        if contract.required:
            raise InputError(f"{contract.name}.parquet|.csv", f"missing file in {folder}")
        return pl.DataFrame(schema=contract.dtypes)
    raw = read_raw(path)
    missing = [c for c in contract.dtypes if c not in raw.columns]
    if missing:
        raise InputError(path.name, "missing column", column=missing[0])
    raw = raw.select(list(contract.dtypes))
    keys = raw.get_column(contract.key).cast(pl.String)
    frame = cast_columns(raw, contract, path.name, keys)
    validate(frame, contract, path.name, keys)
    return frame


def read_raw(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".csv":
            # Everything as text first, so that a bad value is reported with its row key.
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(path.name, f"cannot be read ({exc.__class__.__name__}: {exc})") from exc


def parse_expr(name: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if source == target == pl.String:
        return pl.when(col.str.strip_chars() == "").then(None).otherwise(col)
    if source == target:
        return col
    if source != pl.String:
        if isinstance(source, pl.Datetime) and source.time_zone is not None:
            col = col.dt.replace_time_zone(None)  # the wall time in its zone: dates and times are local
        if target == pl.Date and isinstance(source, pl.Datetime):  # a date, not a moment in a day
            return pl.when(col.dt.truncate("1d") == col).then(col.dt.date()).otherwise(None)
        if target == pl.Int64 and source.is_float():  # whole cents only, never truncated
            return pl.when(col == col.floor()).then(col.cast(pl.Int64, strict=False)).otherwise(None)
        return col.cast(target, strict=False)
    text = col.str.strip_chars()
    text = pl.when(text == "").then(None).otherwise(text)
    if target == pl.Boolean:
        return text.str.to_lowercase().replace_strict(TRUE_FALSE, default=None, return_dtype=pl.Boolean)
    if target == pl.Date:
        return text.str.to_date("%Y-%m-%d", strict=False)
    if isinstance(target, pl.Datetime):
        return pl.coalesce(
            text.str.to_datetime(fmt, strict=False, time_unit="us")
            for fmt in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")
        )
    if target == pl.Int64:
        return text.cast(pl.Int64, strict=False)
    if target == pl.Float64:
        return text.cast(pl.Float64, strict=False)
    return text


EXPECTED = {pl.Date: "a date (YYYY-MM-DD)", pl.Boolean: "true or false", pl.Int64: "a whole number",
            pl.Float64: "a number", pl.String: "text"}


def convertible(source: pl.DataType, target: pl.DataType) -> bool:
    """Whether a typed (Parquet) column of `source` type holds values of `target` type. Only
    conversions that cannot change a value's meaning: an integer column of dates (20260101 read
    as days since 1970), a boolean of cents or a number of dates is the wrong type, not data."""
    if source == pl.String or source == pl.Null or source == target:
        return True
    if target == pl.String:  # ids exported as numbers or dictionary-encoded text
        return source.is_integer() or isinstance(source, (pl.Categorical, pl.Enum))
    if target == pl.Int64:
        return source.is_integer() or source.is_float()  # floats: whole values only (parse_expr)
    if target == pl.Float64:
        return source.is_numeric()
    if target == pl.Date:
        return isinstance(source, pl.Datetime)  # midnight only (parse_expr)
    if isinstance(target, pl.Datetime):
        return isinstance(source, pl.Datetime) or source == pl.Date
    return False


def expected(target: pl.DataType) -> str:
    return EXPECTED.get(target, "an ISO timestamp" if isinstance(target, pl.Datetime) else str(target))


def cast_columns(raw: pl.DataFrame, contract: TableContract, file: str, keys: pl.Series) -> pl.DataFrame:
    for name, target in contract.dtypes.items():
        source = raw.schema[name]
        if not convertible(source, target):
            values = raw.get_column(name)
            first = values.is_not_null().arg_true().first() or 0
            shown = f" ({values.slice(first, 1).to_list()[0]!r})" if raw.height else ""
            raise InputError(file, f"the column's type is {source}{shown}, where {expected(target)} is expected",
                             column=name, row_key=f"{contract.key}={keys[first]}" if raw.height else None)
    exprs = [parse_expr(n, raw.schema[n], t).alias(n) for n, t in contract.dtypes.items()]
    frame = raw.select(exprs)
    for name, target in contract.dtypes.items():
        if raw.schema[name] == target:  # nothing was parsed: only blanks became nulls
            continue
        bad = frame.get_column(name).is_null() & raw.get_column(name).is_not_null()
        if raw.schema[name] == pl.String:
            bad = bad & (raw.get_column(name).str.strip_chars() != "")
        if bad.any():
            first = bad.arg_true()[0]
            raise InputError(
                file, f"{raw.get_column(name)[first]!r} is not {expected(target)}{more(bad.sum())}",
                column=name, row_key=f"{contract.key}={keys[first]}",
            )
    return frame


def more(count: int) -> str:
    return f" ({count - 1} more rows have the same problem)" if count > 1 else ""


def validate(frame: pl.DataFrame, contract: TableContract, file: str, keys: pl.Series) -> None:
    """Runs the pandera model and turns its first failure into an InputError with the row key."""
    null_keys = keys.is_null()
    if null_keys.any():
        raise InputError(file, f"empty key{more(null_keys.sum())}", column=contract.key,
                         row_key=f"row number {null_keys.arg_true()[0] + 1}")
    schema = contract.schema
    # pandera's uniqueness check hashes every value (3 s for 10M contract ids); most exports are
    # sorted by key, where comparing neighbours proves uniqueness in a fraction of that. A column
    # proven unique is validated without the check; anything else keeps it, so pandera reports.
    proven = [name for name, column in schema.columns.items() if column.unique and is_unique(frame.get_column(name))]
    if proven:
        schema = schema.update_columns({name: {"unique": False} for name in proven})
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        raise first_failure(errors, contract, file, keys) from None
    for rule in contract.required_when:
        empty = frame.select((rule.when & pl.col(rule.column).is_null()).fill_null(False)).to_series()
        if empty.any():
            raise InputError(file, f"empty value where one is required ({rule.because}){more(empty.sum())}",
                             column=rule.column, row_key=f"{contract.key}={keys[empty.arg_true()[0]]}")


def is_unique(values: pl.Series) -> bool:
    ordered = values if values.is_sorted() else values.sort()
    return values.len() < 2 or not (ordered.slice(1) == ordered.slice(0, ordered.len() - 1)).any()


def first_failure(errors: pandera.errors.SchemaErrors, contract: TableContract, file: str,
                  keys: pl.Series) -> InputError:
    cases = errors.failure_cases
    cases = cases if isinstance(cases, pl.DataFrame) else pl.from_pandas(cases)
    case = cases.row(0, named=True)
    column, check = case.get("column"), str(case.get("check"))
    count = cases.filter(pl.col("column") == column).height
    index = case.get("index")
    value = case.get("failure_case")
    if index is None or column is None:
        return InputError(file, f"{check}: {value}", column=column)
    row_key = f"{contract.key}={keys[int(index)]}"
    if check == "field_uniqueness" or "unique" in check:
        return InputError(file, f"duplicate key {value!r}{more(count)}", column=column, row_key=row_key)
    if check == "not_nullable":
        return InputError(file, f"empty value where one is required{more(count)}", column=column, row_key=row_key)
    if check.startswith("isin"):
        allowed = contract.schema.columns[column].checks[0].statistics.get("allowed_values")
        shown = ", ".join(sorted(allowed)) if allowed is not None and len(allowed) < 20 else "a known value"
        noun = "a valid IANA time zone" if column == "timezone" else f"one of {shown}"
        return InputError(file, f"{value!r} is not {noun}{more(count)}", column=column, row_key=row_key)
    return InputError(file, f"{value!r} fails {check}{more(count)}", column=column, row_key=row_key)
