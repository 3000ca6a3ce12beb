"""The demo data generator: deterministic, in the input contract, and covering every billing path."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import polars as pl
import pytest

from billing_pipeline import demo_data
from billing_pipeline.demo_data import generate
from billing_pipeline.inputs.contract import CONTRACT_STATUSES, CONTRACT_TYPES, FREQUENCIES, SCHEDULES, TABLES

START = dt.date(2026, 3, 28)
WINDOW_END = START + dt.timedelta(days=10)
CONTRACTS = 2_000


def _read(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("demo")
    return folder, generate(folder, contracts=CONTRACTS, seed=7, start=START, progress=False)


@pytest.fixture(scope="module")
def tables(demo: tuple[Path, dict[str, int]]) -> dict[str, pl.DataFrame]:
    return _read(demo[0])


def test_same_seed_gives_byte_identical_files(demo, tmp_path):
    folder, _ = demo
    generate(tmp_path, contracts=CONTRACTS, seed=7, start=START, progress=False)
    for name in TABLES:
        assert (tmp_path / f"{name}.parquet").read_bytes() == (folder / f"{name}.parquet").read_bytes(), name


def test_same_seed_gives_byte_identical_csv(tmp_path):
    generate(tmp_path / "a", contracts=500, seed=3, fmt="csv", progress=False)
    generate(tmp_path / "b", contracts=500, seed=3, fmt="csv", progress=False)
    for name in TABLES:
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()


def test_different_seed_gives_different_contracts(tables, tmp_path):
    generate(tmp_path, contracts=CONTRACTS, seed=8, start=START, progress=False)
    other = pl.read_parquet(tmp_path / "contracts.parquet")
    assert other.height == tables["contracts"].height
    assert not other.equals(tables["contracts"])


def test_every_table_has_the_contract_columns_and_types(demo, tables):
    _, counts = demo
    assert list(counts) == list(TABLES)
    for name, contract in TABLES.items():
        assert list(tables[name].schema.items()) == list(contract.dtypes.items()), name
        assert tables[name].height == counts[name] > 0, name


def test_keys_are_unique_with_stable_prefixes(tables):
    prefixes = {"facilities": "F", "plans": "P", "customers": "CU", "contracts": "CT", "payment_methods": "PM",
                "status_changes": "SC", "charges": "CH", "payments": "PY", "members": "M",
                "certifications": "CE", "applications": "AP"}
    for name, contract in TABLES.items():
        keys = tables[name][contract.key]
        assert keys.is_unique().all() and keys.null_count() == 0, name
        if name in prefixes:
            assert keys.str.starts_with(prefixes[name]).all(), name
            assert keys.str.slice(len(prefixes[name])).str.contains(r"^\d+$").all(), name


def test_chunks_continue_ids_and_references(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "CHUNK_CONTRACTS", 700)
    counts = generate(tmp_path, contracts=CONTRACTS, seed=7, progress=False)
    got = _read(tmp_path)
    assert counts["contracts"] == CONTRACTS and counts["customers"] == CONTRACTS * 4 // 5
    for name, contract in TABLES.items():
        assert got[name][contract.key].is_unique().all(), name
    assert got["contracts"]["contract_id"][-1] == f"CT{CONTRACTS:08d}"
    for name, column, parent in [("payment_methods", "customer_id", "customers"),
                                 ("status_changes", "contract_id", "contracts"),
                                 ("charges", "customer_id", "customers"),
                                 ("certifications", "member_id", "members")]:
        assert got[name][column].is_in(got[parent][column].implode()).all(), name


def _offsets(zone: str) -> tuple[dt.timedelta, dt.timedelta, dt.timedelta]:
    tz = zoneinfo.ZoneInfo(zone)
    return tuple(dt.datetime(2026, month, 15, 12, tzinfo=tz).utcoffset() for month in (1, 7, 3))


def test_six_facilities_cover_every_kind_of_time_zone(tmp_path):
    generate(tmp_path, contracts=300, facilities=6, progress=False)
    zones = pl.read_parquet(tmp_path / "facilities.parquet")["timezone"].to_list()
    assert len(set(zones)) == 6
    kinds = set()
    for zone in zones:
        january, july, march = _offsets(zone)
        if march % dt.timedelta(hours=1):
            kinds.add("half-hour")
        kinds.add("no DST" if january == july else "northern DST" if july > january else "southern DST")
    assert kinds == {"half-hour", "no DST", "northern DST", "southern DST"}


def test_facility_settings(tables):
    f = tables["facilities"]
    assert f["timezone"].n_unique() >= 6
    assert f["monthly_billing_day"].is_in([31]).any()
    assert f["weekly_billing_day"].is_between(1, 7).all()
    assert set(f["sweep_mode"]) == {"off", "fixed", "rolling"}
    fixed, rolling = pl.col("sweep_mode") == "fixed", pl.col("sweep_mode") == "rolling"
    assert f.filter(fixed != pl.col("fixed_sweep_days").is_not_null()).is_empty()
    assert f.filter(rolling != pl.col("rolling_sweep_days").is_not_null()).is_empty()
    assert f.filter(pl.col("surcharge_enabled") != pl.col("surcharge_percent").is_not_null()).is_empty()
    assert f["surcharge_enabled"].any() and not f["surcharge_enabled"].all()
    assert f["retry_declined_after_days"].null_count() > 0 and f["retry_declined_after_days"].is_in([3, 5]).any()
    assert f["active_contracts_only"].any() and not f["active_contracts_only"].all()
    assert f["report_recipients"][0] == "billing@f001.example;manager@f001.example"


def test_plans_cover_every_frequency_schedule_and_type_in_use(tables):
    used = tables["plans"].join(tables["contracts"].select("plan_id").unique(), on="plan_id")
    pairs = set(used.select("frequency", "schedule").iter_rows())
    assert pairs == {(f, s) for f in FREQUENCIES for s in SCHEDULES}
    assert set(used["contract_type"]) == set(CONTRACT_TYPES)
    fees = tables["plans"]["freeze_fee_cents"]
    assert (fees > 0).any() and (fees.is_null().any() or (fees == 0).any())


def test_contracts_every_status_with_consistent_dates(tables):
    c = tables["contracts"]
    assert set(c["status"]) == set(CONTRACT_STATUSES)
    assert c["status"].value_counts(sort=True)["status"][0] == "active"
    pending = c.filter(pl.col("status") == "pending")
    assert pending["start_date"].is_between(START + dt.timedelta(1), START + dt.timedelta(20)).all()
    assert (c.filter(pl.col("status") == "concluded")["end_date"] < START).all()
    assert c["start_date"].min() < START - dt.timedelta(days=900)
    assert c["dues_cents"].null_count() > 0.8 * c.height
    customers = tables["customers"]
    assert 0.75 < customers.height / c.height < 0.85
    assert 0.01 < customers["email"].null_count() / customers.height < 0.1
    homes = c.join(customers.select("customer_id", home="facility_id"), on="customer_id")
    assert (homes["facility_id"] == homes["home"]).all()


def test_migrated_contracts_are_first_billed_in_the_demo_weeks(tables):
    c = tables["contracts"].join(tables["plans"].select("plan_id", "frequency"), on="plan_id", how="left")
    old = c.filter(pl.col("start_date") < START - dt.timedelta(days=61), pl.col("first_bill_date").is_not_null())
    last = pl.col("frequency").replace_strict({"weekly": 14, "biweekly": 14, "monthly": 35}, default=365)
    late = old.filter((pl.col("first_bill_date") - pl.lit(START)).dt.total_days() > last)
    assert old.height > 0.8 * c.height and late.is_empty()
    assert (old["first_bill_date"] >= START - dt.timedelta(days=3)).all()
    recent = c.filter(pl.col("start_date") > START - dt.timedelta(days=60))
    assert recent.height > 0 and recent["first_bill_date"].null_count() == recent.height


def test_contracts_include_every_dues_posting_error(tables):
    c = tables["contracts"]
    assert (c["plan_id"] == "P-UNKNOWN").sum() >= 1
    assert (c["dues_cents"] < 0).sum() >= 1
    assert c.filter(pl.col("end_date") < pl.col("start_date")).height >= 1
    assert c.join(tables["customers"], on="customer_id", how="anti").height >= 1
    never_billed = c.filter(pl.col("status") == "active", pl.col("first_bill_date").is_null(),
                            pl.col("start_date") < START - dt.timedelta(days=400))
    assert never_billed.height >= 1


def test_some_customers_hold_duplicate_contracts_in_effect(tables):
    in_effect = tables["contracts"].filter(pl.col("status").is_in(["active", "frozen"]))
    duplicates = in_effect.group_by("customer_id", "plan_id").len().filter(pl.col("len") > 1)
    assert 1 <= duplicates.height <= 0.01 * tables["customers"].height


def test_payment_methods_cover_missing_expired_removed_and_declining(tables):
    pm, customers = tables["payment_methods"], tables["customers"]
    without = customers.join(pm, on="customer_id", how="anti").height
    assert 0.001 * customers.height <= without <= 0.02 * customers.height
    defaults = pm.filter("is_default")
    assert defaults["customer_id"].is_unique().all()
    assert pm.filter(~pl.col("is_default")).height > 0
    assert (defaults["token"].str.starts_with("decline_")).sum() >= 0.01 * defaults.height
    assert (defaults["token"].str.starts_with("error_")).sum() >= 1
    assert defaults.filter(pl.col("expires_on") < START, ~pl.col("removed")).height >= 1
    assert defaults["removed"].sum() >= 1
    assert pm.filter(pl.col("kind") == "ach")["expires_on"].null_count() == (pm["kind"] == "ach").sum() > 0
    assert (pm.filter(pl.col("kind") == "card")["expires_on"] > START).mean() > 0.9


def test_status_changes_include_same_day_and_not_applicable_changes(tables):
    sc = tables["status_changes"].join(tables["contracts"].select("contract_id", "status"), on="contract_id")
    assert sc.height == tables["status_changes"].height
    assert (sc["requested_at"].dt.date() <= sc["effective_date"]).all()
    assert (sc["effective_date"] < START).any()
    assert sc["effective_date"].is_between(START, WINDOW_END).any()
    assert set(sc["kind"]) == {"freeze", "thaw", "terminate"}
    ordered = sc.sort("contract_id", "effective_date", "requested_at").with_columns(
        before=pl.col("kind").shift(1).over("contract_id"))
    thaw_of_active = ordered.filter(pl.col("kind") == "thaw", pl.col("before").is_null(), pl.col("status") == "active")
    assert thaw_of_active.height >= 1
    assert ordered.filter(pl.col("kind") == "freeze", pl.col("before") == "terminate").height >= 1
    same_day = sc.group_by("contract_id", "effective_date").agg(
        pl.col("kind").sort().alias("kinds"), pl.col("requested_at").n_unique().alias("times"))
    assert same_day.filter(pl.col("kinds") == ["freeze", "thaw"], pl.col("times") == 2).height >= 1
    thawed_frozen = sc.filter(pl.col("status") == "frozen", pl.col("kind") == "thaw")
    assert thawed_frozen["effective_date"].is_between(START, WINDOW_END).all() and thawed_frozen.height >= 1


def test_charges_and_payments(tables):
    ch, py = tables["charges"], tables["payments"]
    assert ch["amount_cents"].is_between(200, 20000).all() and ch["product_id"].is_in(["PT-SESSION"]).any()
    assert ((ch["due_date"] - ch["posted_date"]).dt.total_days().is_between(0, 14)).all()
    assert (ch["posted_date"] < START).any() and (ch["posted_date"] >= START).any()
    assert 0.05 < ch["customer_id"].n_unique() / tables["customers"].height < 0.15
    assert (py["amount_cents"] > 0).all() and set(py["channel"]) == {"terminal", "signup", "manual"}


def test_certifying_association_tables(tables):
    members, certs, apps = tables["members"], tables["certifications"], tables["applications"]
    assert members.height == CONTRACTS // 10
    assert certs["member_id"].is_in(members["member_id"].implode()).all()
    assert set(certs["status"]) == {"active", "lapsed", "dropped"}
    assert certs["expires_on"].is_between(START - dt.timedelta(days=60), START + dt.timedelta(days=60)).any()
    assert set(apps["status"]) == {"submitted", "approved", "active", "rejected"}
    approved = apps["status"].is_in(["approved", "active"])
    assert (apps["approved_on"].is_not_null() == approved).all()
    assert 3 <= tables["certification_types"].height <= 4


def test_csv_and_parquet_load_through_the_loader(demo, tables, tmp_path):
    load = pytest.importorskip("billing_pipeline.inputs.load")
    from_parquet = load.load_inputs(demo[0])
    generate(tmp_path, contracts=CONTRACTS, seed=7, start=START, fmt="csv", progress=False)
    text = (tmp_path / "facilities.csv").read_text()
    assert ",true," in text and ",false," in text and not list(tmp_path.glob("*.parquet"))
    from_csv = load.load_inputs(tmp_path)
    for name in TABLES:
        assert getattr(from_parquet, name).equals(tables[name]), name
        assert getattr(from_csv, name).equals(tables[name]), name
