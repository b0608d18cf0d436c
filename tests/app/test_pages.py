"""Every page of the real app (app.py + st.navigation), driven through AppTest on a temporary database."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fxbatch.money import zar_compact
from tests.app.conftest import PAGES
from tests.app.test_run_pages import app_workbench
from tests.conftest import DATA, HEADER, good_row

OpenPage = Callable[[str], AppTest]
TITLES = {
    "pages/home.py": "fxbatch",
    "pages/upload.py": "Upload trades",
    "pages/batches.py": "Batches",
    "pages/run.py": "Run detail",
}


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def tables(at: AppTest) -> list[pd.DataFrame]:
    """The data of the read-only tables on the page, in page order (data editors are widgets, with a key)."""
    return [d.value for d in at.dataframe if d.editing_mode == "read_only"]


def assert_rendered(at: AppTest, page: str) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [t.value for t in at.title] == [TITLES[page]]


def choose(at: AppTest, name: str, content: bytes) -> AppTest:
    """Choose a file on the Upload page: the page checks it at once and stores nothing."""
    return at.file_uploader(key="upload").set_value((name, content, "text/csv")).run()


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    """Choose a file on the Upload page and press the create button when the page offers it."""
    choose(at, name, content)
    create = [b for b in at.button if b.key == "create"]
    return create[0].click().run() if create else at


# -- every page renders ------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_database(empty_db: Path, open_page: OpenPage, page: str) -> None:
    at = open_page(page)
    assert_rendered(at, page)
    assert empty_db.exists()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_database_the_app_creates(db_path: Path, open_page: OpenPage, page: str) -> None:
    at = open_page(page)
    assert_rendered(at, page)


# -- home ----------------------------------------------------------------------------------


def test_home_shows_the_sample_batch_loaded_on_first_start(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/home.py")
    notional = app_workbench().batches()[0].notional_zar
    assert notional is not None and notional > 0
    assert metrics(at) == {"Batches": "1", "Trades loaded": "200", "Notional loaded": zar_compact(notional),
                           "Rows rejected": "0"}  # fmt: skip
    latest = at.dataframe[0].value
    assert latest["name"].tolist() == ["Sample batch"]
    assert latest["trades"].tolist() == [200]
    assert latest["notional_zar"].tolist() == [notional]  # money beside the counts


def test_home_on_an_empty_database_offers_to_load_the_sample(empty_db: Path, open_page: OpenPage) -> None:
    at = open_page("pages/home.py")
    assert metrics(at) == {"Batches": "0", "Trades loaded": "0", "Notional loaded": "R 0.00", "Rows rejected": "0"}
    assert "No batches yet" in at.info[0].value
    at.button[0].click().run()
    assert not at.exception
    assert [s.value for s in at.success] == ["Batch 1 created with 200 trades."]
    assert metrics(at)["Trades loaded"] == "200" and metrics(at)["Notional loaded"].startswith("R ")


# -- upload --------------------------------------------------------------------------------


def test_upload_waits_for_a_file_before_offering_to_create_a_batch(empty_db: Path, open_page: OpenPage) -> None:
    at = open_page("pages/upload.py")
    assert at.file_uploader(key="upload").value is None
    assert not [b for b in at.button if b.key == "create"]


def test_upload_creates_a_batch_and_explains_every_rejected_row(empty_db: Path, open_page: OpenPage) -> None:
    at = upload(open_page("pages/upload.py"), "sample_with_errors.csv", (DATA / "sample_with_errors.csv").read_bytes())

    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.success) == 1
    assert "Batch 1 'sample_with_errors" in at.success[0].value
    assert metrics(at) == {"Data rows": "14", "Accepted": "3", "Rejected": "10", "Ignored (blank)": "1"}
    rejected = at.dataframe[0].value
    assert len(rejected) == 10
    assert {"row", "column", "value", "code", "message"} <= set(rejected.columns)
    bad_side = rejected[rejected["value"] == "HOLD"]
    assert bad_side["column"].tolist() == ["Buy/Sell"]
    assert bad_side["row"].tolist() == [9]  # the spreadsheet row the analyst sees, below a title and a blank row


def test_upload_of_a_header_only_file_shows_why_and_creates_no_batch(empty_db: Path, open_page: OpenPage) -> None:
    at = upload(open_page("pages/upload.py"), "morning.csv", (HEADER + "\n").encode())

    assert not at.exception
    assert not at.success
    assert len(at.error) == 1
    message = at.error[0].value
    assert "no trade rows" in message
    assert "morning.csv" in message  # the analyst's file name, not the server's temporary copy
    at.switch_page("pages/home.py").run()
    assert metrics(at)["Batches"] == "0"


def test_upload_checks_the_file_before_anything_is_stored(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page("pages/upload.py"), "sample_with_errors.csv", (DATA / "sample_with_errors.csv").read_bytes())

    assert not at.exception and not at.error and not at.success
    shown = metrics(at)
    notional = shown.pop("Notional accepted")  # the accepted rows' money, before anything is stored
    assert shown == {"Data rows": "14", "Accepted": "3", "Rejected": "10", "Ignored (blank)": "1"}
    assert notional.startswith("R ") and notional != "R 0.00"
    assert at.button(key="create").label == "Create batch with 3 trade(s)"
    rejections = tables(at)[0]
    assert rejections[rejections["value"] == "HOLD"]["row"].tolist() == [9]
    grid = at.data_editor(key="fix_grid_0").value
    assert grid["row"].tolist() == [6, 7, 9, 10, 11, 12, 13, 14, 15, 17]
    assert grid.set_index("row").loc[9, "side"] == "HOLD"
    at.switch_page("pages/home.py").run()
    assert metrics(at)["Batches"] == "0"


def test_upload_corrects_rejected_rows_in_the_grid_and_loads_them(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page("pages/upload.py"), "sample_with_errors.csv", (DATA / "sample_with_errors.csv").read_bytes())
    before = next(m.help for m in at.metric if m.label == "Notional accepted")
    grid = at.data_editor(key="fix_grid_0").value
    position = {row: i for i, row in enumerate(grid["row"])}
    # AppTest cannot type into a grid: seed the editor's edit state as the browser would send it.
    at.session_state["fix_grid_0"] = {
        "edited_rows": {position[9]: {"side": "SELL"}, position[10]: {"amount": "500"}, position[7]: {"amount": "1"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run().button(key="revalidate").click().run()

    assert not at.exception and not at.error
    assert next(m.help for m in at.metric if m.label == "Notional accepted") != before  # two more rows accepted
    shown = metrics(at)
    shown.pop("Notional accepted")
    assert shown == {"Data rows": "14", "Accepted": "5", "Rejected": "8", "Ignored (blank)": "1"}
    assert "2 corrected row(s) now pass; still rejected: row 7" in at.info[0].value
    grid = at.data_editor(key="fix_grid_1").value
    assert 9 not in grid["row"].tolist() and grid.set_index("row").loc[7, "amount"] == "1"

    at.button(key="create").click().run()
    assert "Batch 1 'sample_with_errors' created" in at.success[0].value
    assert metrics(at)["Accepted"] == "5"
    assert any("row 9, 10" in c.value for c in at.caption)
    at.switch_page("pages/batches.py").run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Trades (5)", "Rejections (8 rows)", "Corrected cells (3)"]
    corrected = tables(at)[-1]
    assert corrected.values.tolist()[1] == [9, "Side", "HOLD", "SELL"]


def test_upload_creates_no_batch_while_grid_edits_are_not_re_validated(empty_db: Path, open_page: OpenPage) -> None:
    """A batch created with edits still unchecked left them out without a word."""
    at = choose(open_page("pages/upload.py"), "sample_with_errors.csv", (DATA / "sample_with_errors.csv").read_bytes())
    assert not at.button(key="create").disabled and not at.warning
    grid = at.data_editor(key="fix_grid_0").value
    position = {row: i for i, row in enumerate(grid["row"])}
    at.session_state["fix_grid_0"] = {
        "edited_rows": {position[9]: {"side": "SELL"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert at.button(key="create").disabled
    assert any("Your edits to 1 rejected row(s) are not checked yet: press Re-validate" in w.value for w in at.warning)
    at.button(key="revalidate").click().run()
    assert not at.button(key="create").disabled and not at.warning
    assert metrics(at)["Accepted"] == "4"


def test_upload_edits_on_one_sheet_neither_follow_to_another_nor_block_its_batch(
    empty_db: Path, open_page: OpenPage
) -> None:
    bad = pd.read_csv(DATA / "sample_with_errors.csv", dtype=str, keep_default_na=False)
    good = pd.DataFrame([good_row(1).split(",")], columns=HEADER.split(","))
    book = io.BytesIO()
    with pd.ExcelWriter(book) as out:
        bad.to_excel(out, sheet_name="Sheet1", index=False)
        good.to_excel(out, sheet_name="Sheet2", index=False)
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    at = open_page("pages/upload.py").file_uploader(key="upload").set_value(("two.xlsx", book.getvalue(), xlsx)).run()
    grid = at.data_editor(key="fix_grid_0").value
    at.session_state["fix_grid_0"] = {"edited_rows": {0: {grid.columns[2]: "X"}}, "added_rows": [], "deleted_rows": []}
    assert at.run().button(key="create").disabled  # edits waiting on Sheet1
    at.text_input(key="sheet").set_value("Sheet2").run()
    assert not at.exception and metrics(at)["Accepted"] == "1"
    assert not at.button(key="create").disabled and not at.warning
    at.button(key="create").click().run()
    assert "created" in at.success[0].value


def test_upload_maps_columns_whose_headers_were_not_recognised(empty_db: Path, open_page: OpenPage) -> None:
    odd = b"Cust No,Acct,Pair,Dir,Amt\n0123456789,0012345678,USD/ZAR,BUY,100\n"
    at = choose(open_page("pages/upload.py"), "odd.csv", odd)

    assert "No header row found" in at.error[0].value
    mapping = at.data_editor(key="map_grid_0").value
    assert mapping["file column"].tolist() == ["Cust No", "Acct", "Pair", "Dir", "Amt"]
    assert mapping["field"].tolist() == ["(ignore)", "(ignore)", "currency_pair", "(ignore)", "(ignore)"]
    at.session_state["map_grid_0"] = {
        "edited_rows": {0: {"field": "client_cif"}, 1: {"field": "account_number"}, 3: {"field": "side"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run().button(key="apply_map").click().run()
    assert "Required column(s) missing: amount" in at.error[0].value  # one still to map
    at.session_state["map_grid_1"] = {"edited_rows": {4: {"field": "amount"}}, "added_rows": [], "deleted_rows": []}
    at.run().button(key="apply_map").click().run()

    assert not at.error, [e.value for e in at.error]
    assert metrics(at)["Accepted"] == "1"
    at.button(key="create").click().run()
    assert "Batch 1 'odd' created" in at.success[0].value


def test_uploading_the_same_file_twice_warns_and_keeps_both_batches(db_path: Path, open_page: OpenPage) -> None:
    at = upload(open_page("pages/upload.py"), "sample_trades.csv", (DATA / "sample_trades.csv").read_bytes())

    assert "Batch 2" in at.success[0].value
    assert len(at.warning) == 1
    assert "loaded before as batch 1" in at.warning[0].value


# -- batches -------------------------------------------------------------------------------


def test_batches_page_on_an_empty_database_points_to_upload(empty_db: Path, open_page: OpenPage) -> None:
    at = open_page("pages/batches.py")
    assert "No batches yet" in at.info[0].value
    assert not at.dataframe


def test_batches_page_lists_every_batch_and_shows_the_chosen_ones_rows(db_path: Path, open_page: OpenPage) -> None:
    at = upload(open_page("pages/upload.py"), "sample_with_errors.csv", (DATA / "sample_with_errors.csv").read_bytes())
    at.switch_page("pages/batches.py").run()

    assert not at.exception
    listed = at.dataframe[0].value
    assert listed["batch_id"].tolist() == [2, 1]  # newest first
    assert listed["name"].tolist()[1] == "Sample batch"
    assert [t.label for t in at.tabs] == ["Trades (3)", "Rejections (10 rows)"]
    rejections = [d for d in at.get("download_button") if "rejections" in d.proto.label]
    assert len(rejections) == 1  # every rejection, not only the rows shown

    at.selectbox(key="batch").select(1).run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Trades (200)", "Rejections (0 rows)"]
    assert not [d for d in at.get("download_button") if "rejections" in d.proto.label]
    assert len(tables(at)[1]) == 200


# -- a database another process holds -------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_a_locked_database_shows_an_error_naming_the_file(
    db_path: Path, open_page: OpenPage, lock_database: Callable[[Path], subprocess.Popen[str]], page: str
) -> None:
    lock_database(db_path)
    at = open_page(page)

    assert not at.exception, [e.message for e in at.exception]
    assert len(at.error) == 1
    message = at.error[0].value
    assert str(db_path) in message
    assert "in use by another process" in message
    assert not at.dataframe
    assert not at.metric


def test_the_app_opens_the_database_once_the_other_process_lets_go(
    db_path: Path, open_page: OpenPage, lock_database: Callable[[Path], subprocess.Popen[str]]
) -> None:
    holder = lock_database(db_path)
    at = open_page("pages/home.py")
    assert len(at.error) == 1

    holder.kill()
    holder.wait(timeout=10)
    at.run()
    assert not at.error
    assert metrics(at)["Batches"] == "0"  # the database existed already, so no sample is loaded


def test_a_bad_setting_shows_an_error_naming_the_variable(
    db_path: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FXBATCH_DEFAULT_SPREAD_PIPS", "lots")
    at = open_page("pages/home.py")

    assert not at.exception, [e.message for e in at.exception]
    assert len(at.error) == 1
    assert "FXBATCH_DEFAULT_SPREAD_PIPS" in at.error[0].value
    assert not db_path.exists()


def test_a_server_process_that_lost_its_host_opens_no_second_database_and_says_restart(
    empty_db: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamlit reloading the project's modules under a running server drops the page's view of
    the hosted workbench: the record beside the database still names this process, so the page
    refuses to open its own (it would run batches beside the API's) and says what to do."""
    from fxbatch.serving import hosted_here, remove_record, write_record

    write_record(empty_db, "http://127.0.0.1:8501")
    monkeypatch.setenv("FXBATCH_HOSTING", f"{os.getpid()} {empty_db.resolve()}")  # as the server's lifespan left it
    try:
        assert hosted_here(empty_db)
        at = open_page("pages/batches.py")
        assert not at.exception
        assert any("code was reloaded while it ran" in e.value and "Restart the server" in e.value for e in at.error)
        assert not empty_db.exists()  # no workbench of the page's own
    finally:
        remove_record(empty_db)
    assert not hosted_here(empty_db)
