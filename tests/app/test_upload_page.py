"""The Upload page keeps its word: per-file state, a file kept across pages, the truth at every step."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.errors import UnusableFileError
from tests.conftest import DATA

OpenPage = Callable[[str], AppTest]
ERRORS = DATA / "sample_with_errors.csv"
UPLOAD = "pages/upload.py"


def choose(at: AppTest, name: str, content: bytes, key: str = "upload") -> AppTest:
    return at.file_uploader(key=key).set_value((name, content, "text/csv")).run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def status(at: AppTest) -> str:
    """The status line under the file's name: the one caption that says where the file stands."""
    found = [c for c in captions(at) if "stored" in c or "cannot be loaded" in c]
    assert len(found) == 1, captions(at)
    return found[0]


def visit_another_page_and_return(at: AppTest) -> AppTest:
    ok(at.switch_page("pages/home.py").run())
    return ok(at.switch_page(UPLOAD).run())


def seed_edits(at: AppTest, key: str, edits: dict[int, dict[str, str]]) -> AppTest:
    """AppTest cannot type into a grid: seed the editor's edit state as the browser would send it."""
    at.session_state[key] = {"edited_rows": edits, "added_rows": [], "deleted_rows": []}
    return ok(at.run())


def grid_position(at: AppTest, key: str) -> dict[int, int]:
    return {int(row): i for i, row in enumerate(at.data_editor(key=key).value["row"])}


# -- per-file state ------------------------------------------------------------------------


def test_a_new_file_starts_with_an_empty_batch_name_sheet_and_no_corrections(
    empty_db: Path, open_page: OpenPage
) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.text_input(key="batch_name").input("Morning run").run()
    at.text_input(key="sheet").input("Trades").run()
    at.text_input(key="sheet").input("").run()
    position = grid_position(at, "fix_grid_0")
    seed_edits(at, "fix_grid_0", {position[9]: {"side": "SELL"}}).button(key="revalidate").click().run()
    ok(at)
    assert "1 corrected row(s) now pass" in at.info[0].value

    choose(at, "sample_trades.csv", (DATA / "sample_trades.csv").read_bytes())

    ok(at)
    assert at.text_input(key="batch_name").value == ""
    assert at.text_input(key="batch_name").placeholder == "sample_trades"
    assert at.text_input(key="sheet").value == ""
    assert not at.info  # no corrections carried over
    at.button(key="create").click().run()
    assert "Batch 1 'sample_trades' created" in at.success[0].value


def test_the_same_file_chosen_again_keeps_the_work_on_it(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.text_input(key="batch_name").input("Morning run").run()
    choose(at, "sample_with_errors.csv", ERRORS.read_bytes())
    assert ok(at).text_input(key="batch_name").value == "Morning run"


def test_the_file_name_and_corrections_survive_a_visit_to_another_page(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.text_input(key="batch_name").input("Morning run").run()
    position = grid_position(at, "fix_grid_0")
    seed_edits(at, "fix_grid_0", {position[9]: {"side": "SELL"}}).button(key="revalidate").click().run()
    position = grid_position(at, "fix_grid_1")
    seed_edits(at, "fix_grid_1", {position[10]: {"amount": "500"}})  # edited, not re-validated yet

    visit_another_page_and_return(at)

    assert at.file_uploader(key="upload").value is None  # Streamlit forgets the uploader's file...
    assert any("sample_with_errors.csv" in m.value and "kept" in m.value for m in at.markdown)  # ...the page does not
    assert at.text_input(key="batch_name").value == "Morning run"
    assert {m.label: m.value for m in at.metric}["Accepted"] == "4"  # row 9's correction still applies
    assert "1 corrected row(s) now pass" in at.info[0].value
    grid = at.data_editor(key="fix_grid_1").value.set_index("row")
    assert grid.loc[10, "amount"] == "500"  # the edit not yet re-validated is back in the grid
    assert not at.button(key="revalidate").disabled

    at.button(key="revalidate").click().run()
    assert {m.label: m.value for m in ok(at).metric}["Accepted"] == "5"
    at.button(key="create").click().run()
    assert "Batch 1 'Morning run' created" in ok(at).success[0].value
    assert any("row 9, 10" in c for c in captions(at))


def test_a_created_batch_is_still_shown_after_a_visit_to_another_page(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.button(key="create").click().run()
    visit_another_page_and_return(at)
    assert "Batch 1 'sample_with_errors' created" in at.success[0].value
    assert not [b for b in at.button if b.key == "create"]  # nothing offers to load it a second time by accident


def test_clear_file_lets_the_file_and_its_state_go(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.text_input(key="batch_name").input("Morning run").run()
    visit_another_page_and_return(at)

    at.button(key="clear_file").click().run()

    ok(at)
    assert not [b for b in at.button if b.key in ("create", "clear_file")]
    assert not at.metric and not at.text_input
    assert [u.value for u in at.file_uploader] == [None]
    choose(at, "sample_with_errors.csv", ERRORS.read_bytes(), key=at.file_uploader[0].key)
    assert ok(at).text_input(key="batch_name").value == ""


def test_removing_the_file_from_the_uploader_lets_it_go(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    at.file_uploader(key="upload").set_value(None).run()
    assert not [b for b in ok(at).button if b.key in ("create", "clear_file")]
    visit_another_page_and_return(at)
    assert not at.metric


# -- already loaded, at check time -----------------------------------------------------------


def test_a_file_already_loaded_is_named_at_check_time_before_any_batch_is_created(
    db_path: Path, open_page: OpenPage
) -> None:
    at = choose(open_page(UPLOAD), "sample_trades.csv", (DATA / "sample_trades.csv").read_bytes())

    ok(at)
    assert not at.success  # nothing created yet
    assert len(at.warning) == 1
    assert "already loaded as batch 1" in at.warning[0].value
    assert at.button(key="create").label == "Create batch with 200 trade(s)"


def test_a_new_file_gets_no_already_loaded_warning(db_path: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    assert not ok(at).warning


# -- the status line -------------------------------------------------------------------------


def test_the_status_line_says_nothing_is_stored_until_the_batch_is_created_then_says_it_is(
    empty_db: Path, open_page: OpenPage
) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())
    assert status(at) == (
        "sample_with_errors.csv is checked: 3 of 13 trade row(s) can be loaded. "
        "Nothing is stored until you create the batch."
    )

    at.button(key="create").click().run()

    line = status(ok(at))
    assert line.startswith("sample_with_errors.csv is stored as batch 1 'sample_with_errors'.")
    assert not [c for c in captions(at) if "nothing is stored" in c.lower()]


def test_a_file_that_cannot_be_loaded_is_never_called_ready(empty_db: Path, open_page: OpenPage) -> None:
    header_only = (ERRORS.read_text().splitlines()[2] + "\n").encode()
    at = choose(open_page(UPLOAD), "morning.csv", header_only)

    assert len(ok(at).error) == 1
    assert status(at) == "morning.csv cannot be loaded as it is (see why below); nothing is stored."
    assert not [c for c in captions(at) if "ready" in c or "can be loaded" in c]


def test_a_create_that_fails_says_the_file_was_not_stored(
    empty_db: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())

    def refuse(self: Workbench, *args: object, **kwargs: object) -> None:
        raise UnusableFileError("The database refused the batch.", code="NO_VALID_ROWS")

    monkeypatch.setattr(Workbench, "load", refuse)
    at.button(key="create").click().run()

    assert [e.value for e in ok(at).error] == ["The database refused the batch."]
    assert status(at) == "sample_with_errors.csv was not stored: see why below."
    assert not at.success


def test_a_file_with_no_loadable_row_is_not_called_ready(empty_db: Path, open_page: OpenPage) -> None:
    lines = ERRORS.read_text().splitlines()
    bad = "\n".join([lines[2], *(line for line in lines[5:] if "HOLD" in line or "XYZ" in line)]) + "\n"
    at = choose(open_page(UPLOAD), "bad.csv", bad.encode())

    assert status(ok(at)) == (
        "bad.csv is checked: none of its 2 trade row(s) can be loaded yet; correct them or the column "
        "mapping below. Nothing is stored."
    )
    assert at.button(key="create").disabled


# -- rejections in the file's own words ----------------------------------------------------


def test_rejections_name_the_files_headers_at_check_time_and_after_create(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "sample_with_errors.csv", ERRORS.read_bytes())

    rejections = next(d.value for d in at.dataframe if d.editing_mode == "read_only").set_index("value")
    assert rejections.loc["HOLD", "column"] == "Buy/Sell"
    assert rejections.loc["HOLD", "message"].startswith("Buy/Sell HOLD must be BUY or SELL")
    assert rejections.loc["XYZ/ZAR", "column"] == "Ccy Pair"
    assert rejections.loc["XYZ/ZAR", "message"].startswith("Ccy Pair XYZ/ZAR")
    assert not rejections["column"].isin(["side", "currency_pair", "amount", "client_cif"]).any()
    grid = at.data_editor(key="fix_grid_0").value.set_index("row")
    assert grid.loc[9, "problems"].startswith("Buy/Sell HOLD")

    at.button(key="create").click().run()
    after = ok(at).dataframe[0].value.set_index("value")
    assert after.loc["HOLD", "column"] == "Buy/Sell"
    assert after.loc["-500", "message"].startswith("Notional -500 must be greater than zero")


# -- one masking rule ------------------------------------------------------------------------

BAD_ACCOUNT = (
    b"trade_id,client_cif,account_number,currency_pair,side,amount\n"
    b"T1,0123456789,0012345678,USD/ZAR,HOLD,1000\n"
    b"T2,0123456789,00123X5678,USD/ZAR,BUY,1000\n"
)


def test_rejected_rows_show_accounts_masked_until_the_analyst_unmasks(empty_db: Path, open_page: OpenPage) -> None:
    at = choose(open_page(UPLOAD), "accounts.csv", BAD_ACCOUNT)
    rejections = next(d.value for d in at.dataframe if d.editing_mode == "read_only").set_index("row")
    assert rejections.loc[3, "value"] == "••••••5678"
    assert "00123X5678" not in rejections.loc[3, "message"] and "••••••5678" in rejections.loc[3, "message"]
    grid = at.data_editor(key="fix_grid_0").value.set_index("row")
    assert grid.loc[2, "account_number"] == "••••••5678" and grid.loc[3, "account_number"] == "••••••5678"
    assert "00123X5678" not in grid.loc[3, "problems"]

    at.toggle(key="upload_unmask").set_value(True).run()
    rejections = next(d.value for d in ok(at).dataframe if d.editing_mode == "read_only").set_index("row")
    assert rejections.loc[3, "value"] == "00123X5678"
    assert at.data_editor(key="fix_grid_0_unmasked").value.set_index("row").loc[2, "account_number"] == "0012345678"


def test_a_masked_account_left_as_shown_is_kept_and_one_typed_over_it_is_the_correction(
    empty_db: Path, open_page: OpenPage
) -> None:
    at = choose(open_page(UPLOAD), "accounts.csv", BAD_ACCOUNT)
    position = grid_position(at, "fix_grid_0")
    # Row 2: the side corrected, the masked account sent back as shown (the grid returns the row's cells).
    # Row 3: a whole new account typed over the masked one.
    edits = {
        position[2]: {"side": "BUY", "account_number": "••••••5678"},
        position[3]: {"account_number": "0099995678"},
    }
    seed_edits(at, "fix_grid_0", edits).button(key="revalidate").click().run()
    assert "2 corrected row(s) now pass" in ok(at).info[0].value
    at.button(key="create").click().run()
    assert "created" in ok(at).success[0].value
    with Workbench.open(empty_db) as wb:
        trades = wb.trades(1, unmask=True).set_index("trade_id")
    assert trades.loc["T1", "account_number"] == "0012345678"  # the file's own account, not the dots
    assert trades.loc["T2", "account_number"] == "0099995678"


def test_a_batch_for_tomorrow_is_checked_for_the_trading_date_chosen(empty_db: Path, open_page: OpenPage) -> None:
    header = (
        "trade_id,client_cif,account_number,currency_pair,side,amount,amount_currency,spread_pips,delivery,value_date"
    )
    row = "T1,0123456789,0012345678,USD/ZAR,BUY,1000.00,USD,50,CASH,2026-12-01"
    at = choose(open_page(UPLOAD), "tomorrow.csv", f"{header}\n{row}\n".encode())
    assert at.date_input(key="trade_date").value == date(2026, 11, 30)  # today, by default
    assert "none of its 1 trade row(s) can be loaded" in status(at)
    ok(at.date_input(key="trade_date").set_value(date(2026, 12, 1)).run())
    assert "1 of 1 trade row(s) can be loaded" in status(at)
    visit_another_page_and_return(at)
    assert at.date_input(key="trade_date").value == date(2026, 12, 1)  # kept with the file
    ok(at.button(key="create").click().run())
    assert "Batch 1 'tomorrow' created" in at.success[0].value
    with Workbench.open(empty_db) as wb:
        assert wb.trades(1)["value_date"].dt.date.tolist() == [date(2026, 12, 1)]
    choose(at, "sample_trades.csv", (DATA / "sample_trades.csv").read_bytes())
    assert at.date_input(key="trade_date").value == date(2026, 11, 30)  # a new file starts from today
