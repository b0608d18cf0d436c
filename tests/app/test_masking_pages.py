"""One masking rule on the pages (issue 16): accounts masked on Batches and Run detail unless the
analyst unmasks, and then every download says UNMASKED in its file name."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from fxbatch.samples import make_trades, write_csv
from pages.common import workbench
from tests.conftest import HEADER, TODAY, good_row

OpenPage = Callable[[str], AppTest]


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def trades_table(at: AppTest) -> pd.DataFrame:
    """The one table on the page with account numbers (the trades tab's)."""
    [table] = [d.value for d in at.dataframe if "account_number" in d.value.columns]
    return table


class Recorded(MediaFileManager):
    """AppTest's media file manager, kept so a test can click a deferred download (run its callable)."""

    made: ClassVar[list[Recorded]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorded.made.append(self)


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Recorded]]:
    Recorded.made = []
    monkeypatch.setattr("streamlit.testing.v1.app_test.MediaFileManager", Recorded)
    yield Recorded.made


def click_download(media: list[Recorded], at: AppTest, key: str) -> tuple[str, bytes]:
    """(file name, bytes) the deferred download button ``key`` hands the browser."""
    [button] = [d for d in at.get("download_button") if d.proto.id.endswith(f"-{key}")]
    file_id = button.proto.deferred_file_id
    [entry] = [m._deferred_callables[file_id] for m in media if file_id in m._deferred_callables]
    data = entry["callable"]()
    assert isinstance(data, bytes)
    return str(entry["filename"]), data


def stored_download(media: list[Recorded], at: AppTest, key: str) -> tuple[str, bytes]:
    """(file name, bytes) of the download button ``key`` whose data the page handed over at once."""
    [button] = [d for d in at.get("download_button") if d.proto.id.endswith(f"-{key}")]
    stored = Path(button.proto.url).name
    for manager in media:
        try:
            file = manager._storage.get_file(stored)  # type: ignore[attr-defined]
        except Exception:
            continue
        return str(file.filename), bytes(file.content)
    raise AssertionError(f"no stored file {stored}")


def downloads(at: AppTest) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def is_masked(accounts: pd.Series) -> bool:
    return all(a.startswith("••") and a[-4:].isdigit() for a in accounts)


def test_the_batches_trades_tab_masks_accounts_until_the_analyst_unmasks(
    db_path: Path, open_page: OpenPage, media: list[Recorded]
) -> None:
    at = ok(open_page("pages/batches.py"))  # the sample batch, loaded when the database was created
    masked = trades_table(at)["account_number"]
    assert len(masked) == 200 and is_masked(masked)
    assert at.toggle(key="batch_unmask").value is False
    [label] = downloads(at)
    assert "batch_1_trades.csv" in label and "UNMASKED" not in label
    name, data = click_download(media, at, "download_trades")
    assert name == "batch_1_trades.csv"
    assert [r["account_number"] for r in csv.DictReader(io.StringIO(data.decode()))] == masked.tolist()

    ok(at.toggle(key="batch_unmask").set_value(True).run())
    clear = trades_table(at)["account_number"]
    assert all(a.isdigit() for a in clear)
    assert [a[-4:] for a in clear] == [a[-4:] for a in masked]
    [label] = downloads(at)
    assert "batch_1_trades-UNMASKED.csv" in label
    name, data = click_download(media, at, "download_trades")
    assert name == "batch_1_trades-UNMASKED.csv"
    assert [r["account_number"] for r in csv.DictReader(io.StringIO(data.decode()))] == clear.tolist()

    full = workbench().trades(1, unmask=True)["account_number"]
    assert clear.tolist() == full.tolist()


def test_the_run_export_is_masked_unless_unmasked_and_then_named_unmasked(
    db_path: Path, open_page: OpenPage, media: list[Recorded]
) -> None:
    open_page("pages/home.py")
    wb = workbench()
    wb.run(wb.batches()[-1].batch_id, success_rate=1.0)
    at = ok(open_page("pages/run.py"))
    assert downloads(at) == ["Download run_1.csv (200 trades)"]
    assert any("last 4 digits" in c.value for c in at.caption)
    assert "export" not in set(wb.audit_trail()["action"]), "nothing is built until it is clicked"
    name, data = click_download(media, at, "download_export")
    accounts = pd.read_csv(io.BytesIO(data), dtype=str)["account_number"]
    assert name == "run_1.csv" and len(accounts) == 200 and is_masked(accounts)

    ok(at.toggle(key="unmask").set_value(True).run())
    assert downloads(at) == ["Download run_1-UNMASKED.csv (200 trades)"]
    name, data = click_download(media, at, "download_export")
    assert name == "run_1-UNMASKED.csv"
    assert all(a.isdigit() for a in pd.read_csv(io.BytesIO(data), dtype=str)["account_number"])
    assert wb.audit_trail(action="export")["object"].tolist() == ["run:1", "run:1"]


def test_a_run_export_is_of_the_run_as_it_is_when_clicked(
    db_path: Path, open_page: OpenPage, media: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FXBATCH_BANK_UNREACHABLE_WINDOW_S", "0.5")  # nobody listens: the run stops INTERRUPTED
    open_page("pages/home.py")
    wb = workbench()
    run_id = wb.run(1, bank_url="http://127.0.0.1:9").run_id
    at = ok(open_page("pages/run.py"))
    at.button(key="cancel_interrupted").click().run()
    ok(at.button(key="cancel_interrupted_confirm").click().run())
    assert wb.engine.wait(run_id, 60).status.value == "CANCELLED"
    _, data = click_download(media, at, "download_export")  # the button drawn before the cancel
    assert set(pd.read_csv(io.BytesIO(data))["status"]) == {"CANCELLED"}


def test_the_page_offers_no_excel_file_it_would_take_minutes_to_write(
    db_path: Path, open_page: OpenPage, tmp_path: Path
) -> None:
    open_page("pages/home.py")
    wb = workbench()
    batch = wb.load(write_csv(make_trades(100_001, seed=3), tmp_path / "big.csv"), today=TODAY).batch_id
    wb.run(batch, success_rate=1.0)
    at = ok(open_page("pages/run.py"))
    assert downloads(at) == ["Download run_1.csv (100,001 trades)"]
    ok(at.selectbox(key="export_format").select("Excel (XLSX)").run())
    assert not downloads(at)
    assert any("Excel takes minutes to write 100,001 trades" in i.value for i in at.info)


def test_a_rejected_account_is_masked_in_the_table_and_the_download_until_unmasked(
    db_path: Path, open_page: OpenPage, media: list[Recorded], tmp_path: Path
) -> None:
    open_page("pages/home.py")
    source = tmp_path / "accounts.csv"
    source.write_text("\n".join([HEADER, good_row(1), good_row(2, account_number="12345678AB")]) + "\n")
    batch = workbench().load(source, today=TODAY).batch_id
    at = ok(open_page("pages/batches.py"))  # the newest batch is the one shown
    [rejections] = [d.value for d in at.dataframe if "code" in d.value.columns]
    assert rejections["value"].tolist() == ["••••••78AB"]
    name, data = click_download(media, at, "download_rejections")
    assert name == f"batch_{batch}_rejections.csv"
    assert "••••••78AB" in data.decode() and b"12345678AB" not in data

    ok(at.toggle(key="batch_unmask").set_value(True).run())
    exports = [a for a in workbench().audit_trail()["action"] if a == "export"]
    assert len(exports) == 1, "the masked download clicked; the unmasked one built only when clicked"
    name, data = click_download(media, at, "download_rejections")
    assert name == f"batch_{batch}_rejections-UNMASKED.csv" and b"12345678AB" in data
    assert "Download all rejections (CSV, UNMASKED)" in downloads(at)
    trail = workbench().audit_trail()
    assert trail.loc[trail["action"] == "export", "object"].tolist() == [f"batch:{batch}:rejections"] * 2
