"""Every page speaks plain English: no table shows a header that is a field name or a code.

The pages are opened as an analyst meets them (Home, Upload with a file that has rejections,
Batches with its rejections and corrections, a finished run, What-if with a sweep and two runs
compared), and each table's shown headers are read from what Streamlit sends to the browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from streamlit.testing.v1 import AppTest

from pages.common import workbench
from tests.conftest import DATA

OpenPage = Callable[[str], AppTest]
ERRORS = DATA / "sample_with_errors.csv"
# A field name ('client_cif', 'reason:INSUFFICIENT_FUNDS'), a code ('PARTIAL') or a bare lower-case name ('amount').
CODE_LIKE = re.compile(r".*_.*|.*:\S.*|[A-Z0-9]{2,}|[a-z][a-z0-9]*")


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def column_configs(table: Any) -> dict[str, dict[str, Any]]:
    """Column name -> its config as sent to the browser (Streamlit keys them 'col:<name>' or by name)."""
    raw = json.loads(table.proto.columns) if table.proto.columns else {}
    return {key.removeprefix("col:") if key.startswith("col:") else key: cfg for key, cfg in raw.items()}


def shown_headers(table: Any) -> dict[str, str]:
    """Column name -> the header the analyst reads, for the columns the table shows."""
    frame: pd.DataFrame = table.value
    configs = column_configs(table)
    order = list(table.proto.column_order) or [str(c) for c in frame.columns]
    shown = {}
    for name in order:
        cfg = configs.get(name, {})
        if cfg.get("hidden"):
            continue
        shown[name] = str(cfg.get("label") or name)
    return shown


def code_like_headers(at: AppTest) -> dict[str, list[str]]:
    """Each table's headers that are not words (keyed by the table's first headers, to say which)."""
    bad = {}
    for table in at.dataframe:  # st.dataframe and st.data_editor alike
        headers = shown_headers(table)
        wrong = [h for h in headers.values() if CODE_LIKE.fullmatch(h)]
        if wrong:
            bad[" | ".join(list(headers.values())[:4])] = wrong
    return bad


def unformatted_money(at: AppTest) -> list[str]:
    """Money columns (a ZAR header over decimals) drawn without a number format: 260897858.45 as is."""
    found = []
    for table in at.dataframe:
        configs = column_configs(table)
        for name, header in shown_headers(table).items():
            column = table.value[name] if name in table.value.columns else None
            if "ZAR" not in header or column is None or not pd.api.types.is_float_dtype(column):
                continue
            if not (configs.get(name, {}).get("type_config") or {}).get("format"):
                found.append(header)
    return found


def assert_words(at: AppTest, page: str) -> None:
    ok(at)
    assert at.dataframe, f"{page}: expected tables to check"
    assert code_like_headers(at) == {}, f"{page} shows headers that are not words"
    assert unformatted_money(at) == [], f"{page} shows money without separators"


def test_no_page_shows_a_snake_case_or_code_header(db_path: Path, open_page: OpenPage) -> None:
    ok(open_page("pages/home.py"))  # the app loads the sample batch on first start
    wb = workbench()
    report = wb.check(ERRORS)
    bad_side = next(r.row for r in report.rejected_rows if r.values.get("trade_id") == "D005")
    corrected = wb.load(ERRORS, name="Morning", fixes={bad_side: {"side": "BUY"}})
    sample = wb.batches()[-1].batch_id if wb.batches()[-1].batch_id != corrected.batch_id else wb.batches()[0].batch_id
    first = wb.run(sample, success_rate=0.5, seed=1)
    second = wb.run(sample, success_rate=0.9, seed=2)
    assert wb.whatif.differing_trades(first.run_id, second.run_id).shape[0] > 0

    home = open_page("pages/home.py")
    assert_words(home, "Home")
    assert "Completed with failures" in set(home.dataframe[0].value["status"])

    upload = open_page("pages/upload.py")
    upload.file_uploader(key="upload").set_value((ERRORS.name, ERRORS.read_bytes(), "text/csv")).run()
    assert not upload.exception
    assert any(d for d in upload.dataframe), "the rejections of the checked file"
    assert code_like_headers(upload) == {}, "Upload shows headers that are not words"

    batches = open_page("pages/batches.py")
    ok(batches.selectbox(key="batch").select(corrected.batch_id).run())
    assert any("Corrected cells" in t.label for t in batches.tabs)
    assert_words(batches, "Batches")

    run = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=60)
    run.query_params["run"] = str(second.run_id)
    run.run()
    ok(run.switch_page("pages/run.py").run())
    assert_words(run, "Run detail")
    assert f"Run {second.run_id}: Completed with failures" in [p.proto.text for p in run.progress]
    trades = next(d.value for d in run.dataframe if "trade_id" in d.value.columns)
    assert set(trades["status"]) <= {"Succeeded", "Failed", "Cancelled"}

    whatif = open_page("pages/whatif.py")
    ok(whatif.selectbox(key="whatif_batch").select(sample).run())
    whatif.slider(key="seeds").set_value(1)
    whatif.select_slider(key="step").set_value(0.25)
    ok(whatif.button[0].click().run())  # the sweep form's submit
    assert whatif.multiselect(key="compare_runs").value == [second.run_id, first.run_id]
    compared = next(d for d in whatif.dataframe if "success_rate_setting" in d.value.columns)
    assert set(compared.value["status"]) <= {"Completed", "Completed with failures", "Failed"}
    headers = shown_headers(compared)  # read from the column configs, not the frame's names
    assert headers["success_rate_setting"] == "Bank success rate (setting)"
    assert headers["reason:INSUFFICIENT_FUNDS"] == "Failed: insufficient funds"
    assert column_configs(compared)["notional_zar_succeeded"]["type_config"]["format"] == "%,.2f"
    assert any("status_a" in d.value.columns for d in whatif.dataframe), "the differing trades"
    assert_words(whatif, "What-if")


def test_the_upload_page_explains_the_legacy_curpair_rule_when_it_meets_the_legacy_layout(
    empty_db: Path, open_page: OpenPage
) -> None:
    legacy = DATA / "legacy_sample.csv"
    at = open_page("pages/upload.py")
    ok(at.file_uploader(key="upload").set_value((legacy.name, legacy.read_bytes(), "text/csv")).run())
    rule = [c.value for c in at.caption if c.value.startswith("Legacy layout: CurPair")]
    assert rule and "ZARUSD = the client sells ZAR and buys USD: pair USD/ZAR, side BUY" in rule[0]
    assert "USDZAR = the client sells USD for ZAR: pair USD/ZAR, side SELL" in rule[0]
