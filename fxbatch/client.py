"""``fxbatch.connect(url)``: the workbench's methods over a running fxbatch server's HTTP API.

The server (``make run``) owns the database; a notebook or a CLI command on the same machine
gets this client from ``Workbench.open()`` when the database is held by a server, or explicitly
with ``fxbatch.connect(url)`` / ``--server URL`` / ``FXBATCH_SERVER``. Methods and result types are
the workbench's: pydantic models for objects, DataFrames (over Arrow) for tables, and
``RemoteJob`` in place of the in-process ``Job`` for runs started without waiting.

>>> import fxbatch
>>> wb = fxbatch.connect("http://127.0.0.1:8501")
>>> summary = wb.run(1, success_rate=0.9)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
from httpx_sse import SSEError, connect_sse

from fxbatch import errors
from fxbatch.analytics import TradeFilter
from fxbatch.approvals import Approval
from fxbatch.audit import AuditCheck
from fxbatch.ingest import Fixes
from fxbatch.masking import export_path
from fxbatch.models import BatchInfo, CheckReport, LoadResult, RunConfig, RunProgress, RunSummary, RunView
from fxbatch.moneyview import RunMoney
from fxbatch.settlements import Settlement
from fxbatch.whatif.models import Sweep, SweepInfo

ARROW = "application/vnd.apache.arrow.stream"
API = "/api/v1"


class RemoteJob:
    """A run executing in the server: what ``Client.start_run`` returns in place of a ``Job``."""

    def __init__(self, client: Client, run_id: int, batch_id: int) -> None:
        self.client = client
        self.run_id = run_id
        self.batch_id = batch_id

    def view(self) -> RunView:
        return self.client.run_view(self.run_id)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the run has ended (final or INTERRUPTED); False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for view in self.client.events(self.run_id):
            if view.finished:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return self.view().finished

    def cancel(self) -> None:
        self.client.cancel(self.run_id, wait=False)


class Client:
    """The fxbatch server's API with the workbench's methods (``fxbatch.connect``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        """``token``: a personal API token for a server with login (default: FXBATCH_TOKEN)."""
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("FXBATCH_TOKEN", "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=self.url + API, timeout=httpx.Timeout(timeout_s), transport=transport, headers=headers
        )
        self.whatif = _RemoteWhatIf(self)
        self.db: str | None = None  # the database file the server holds, as its health check said

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"fxbatch.Client({self.url!r})"

    # -- the wire ----------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; a problem answer raises the fxbatch error it names, with its message."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.ServerError(f"The fxbatch server at {self.url} did not answer ({exc}).") from exc
        if resp.status_code >= 400:
            raise _problem(self.url, resp)
        return resp

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError as exc:
            raise errors.ServerError(f"{self.url}{API}{path} did not answer JSON: is it an fxbatch server?") from exc

    def table(self, path: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        resp = self.request("GET", path, params=_params(params), headers={"Accept": ARROW})
        return _arrow_frame(resp)

    def health(self) -> dict[str, Any]:
        body = self.json("GET", "/health")
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise errors.ServerError(f"{self.url} is not an fxbatch server (GET {API}/health: {body!r}).")
        self.db = str(body["db"]) if body.get("db") is not None else None
        return body

    def schema_version(self) -> int:
        return int(self.health()["schema_version"])

    # -- batches -----------------------------------------------------------------
    def load(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        sheet: str | None = None,
        column_map: Mapping[str, str] | None = None,
        fixes: Fixes | None = None,
        today: date | None = None,
        display_name: str | None = None,
        unmask: bool = False,
    ) -> LoadResult:
        """Upload a file; the server validates it and stores its good rows as a new batch. A rejected
        account number comes masked unless ``unmask`` (recorded on the server's audit trail)."""
        form = _form(name=name, sheet=sheet, column_map=column_map, fixes=fixes, today=today, unmask=unmask or None)
        body = self._upload("/batches", path, display_name, form)
        return LoadResult.model_validate(body)

    def check(
        self,
        path: Path | str,
        *,
        sheet: str | None = None,
        column_map: Mapping[str, str] | None = None,
        fixes: Fixes | None = None,
        today: date | None = None,
        display_name: str | None = None,
        limit: int = 1000,
        unmask: bool = False,
    ) -> CheckReport:
        """As ``Workbench.check``, but a rejected account number comes masked (as in every table over
        the API) unless ``unmask`` (recorded on the server's audit trail)."""
        form = _form(sheet=sheet, column_map=column_map, fixes=fixes, today=today, limit=limit, unmask=unmask or None)
        return CheckReport.model_validate(self._upload("/batches:check", path, display_name, form))

    def _upload(self, route: str, path: Path | str, display_name: str | None, form: dict[str, str]) -> Any:
        path = Path(path)
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise errors.UnusableFileError.unreadable(path.name, exc) from exc
        with handle:
            return self.json("POST", route, data=form, files={"file": (display_name or path.name, handle)})

    def batches(self) -> list[BatchInfo]:
        return [BatchInfo.model_validate(b) for b in self.json("GET", "/batches")]

    def batches_df(self) -> pd.DataFrame:
        return pd.DataFrame([b.model_dump() for b in self.batches()], columns=list(BatchInfo.model_fields))

    def batch(self, batch_id: int) -> BatchInfo:
        return BatchInfo.model_validate(self.json("GET", f"/batches/{int(batch_id)}"))

    def trades(self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False) -> pd.DataFrame:
        """As in process: every row unless ``limit`` (the API's default is a page)."""
        return self.table(
            f"/batches/{int(batch_id)}/trades", {"limit": _all(limit), "offset": offset, "unmask": unmask}
        )

    def corrections(
        self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
    ) -> pd.DataFrame:
        return self.table(
            f"/batches/{int(batch_id)}/corrections", {"limit": _all(limit), "offset": offset, "unmask": unmask}
        )

    def rejections(
        self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
    ) -> pd.DataFrame:
        return self.table(
            f"/batches/{int(batch_id)}/rejections", {"limit": _all(limit), "offset": offset, "unmask": unmask}
        )

    def delete_batch(self, batch_id: int) -> None:
        self.request("DELETE", f"/batches/{int(batch_id)}")

    # -- runs --------------------------------------------------------------------
    def start_run(
        self, batch_id: int, config: RunConfig | None = None, *, approval: int | None = None, **overrides: object
    ) -> RemoteJob:
        """Start a run in the server and return at once; ``overrides`` and ``approval`` as ``Workbench.start_run``."""
        options = _run_options(config, overrides)
        if approval is not None:
            options["approval_id"] = int(approval)
        body = self.json("POST", f"/batches/{int(batch_id)}/runs", json=options)
        return RemoteJob(self, int(body["run_id"]), int(batch_id))

    def run(
        self, batch_id: int, config: RunConfig | None = None, *, approval: int | None = None, **overrides: object
    ) -> RunSummary:
        job = self.start_run(batch_id, config, approval=approval, **overrides)
        job.wait()
        return self.run_summary(job.run_id)

    def start_approved(self, approval_id: int) -> RemoteJob:
        """Start exactly the run an approval approved."""
        found = self.approval(approval_id)
        body = self.json("POST", f"/approvals/{int(approval_id)}:run")
        return RemoteJob(self, int(body["run_id"]), found.batch_id)

    # -- four-eyes approvals and who am I --------------------------------------------
    def me(self) -> dict[str, Any]:
        """Who this client acts as on the server (name, role, via, login)."""
        found: dict[str, Any] = self.json("GET", "/me")
        return found

    def request_run(self, batch_id: int, config: RunConfig | None = None, **overrides: object) -> Approval:
        options = {"batch_id": int(batch_id), **_run_options(config, overrides)}
        return Approval.model_validate(self.json("POST", "/runs:request", json=options))

    def approve(self, approval_id: int) -> Approval:
        return Approval.model_validate(self.json("POST", f"/approvals/{int(approval_id)}:approve"))

    def reject(self, approval_id: int, reason: str) -> Approval:
        return Approval.model_validate(
            self.json("POST", f"/approvals/{int(approval_id)}:reject", json={"reason": reason})
        )

    def approvals(self, status: str | None = None) -> list[Approval]:
        rows = self.json("GET", "/approvals", params=_params({"status": status}))
        return [Approval.model_validate(r) for r in rows]

    def approval(self, approval_id: int) -> Approval:
        return Approval.model_validate(self.json("GET", f"/approvals/{int(approval_id)}"))

    def verify_audit(self) -> AuditCheck:
        """The server's check of the audit trail's hash chain (admins)."""
        return AuditCheck.model_validate(self.json("GET", "/audit/verify"))

    def audit_trail(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        params = {"actor": actor, "action": action, "since": since.isoformat() if since else None,
                  "until": until.isoformat() if until else None, "limit": limit}  # fmt: skip
        return self.table("/audit", params)

    def start_resume(self, run_id: int, *, bank_url: str | None = None) -> RemoteJob:
        body = self.json("POST", f"/runs/{int(run_id)}/resume", json={"bank_url": bank_url})
        return RemoteJob(self, int(body["run_id"]), self.run_summary(run_id).batch_id)

    def resume(self, run_id: int, *, bank_url: str | None = None) -> RunSummary:
        job = self.start_resume(run_id, bank_url=bank_url)
        job.wait()
        return self.run_summary(job.run_id)

    def cancel(self, run_id: int, *, wait: bool = True) -> None:
        """Cancel a run; with ``wait``, a run still at work after the cancel (an executing run
        finishing its calls in flight, or an INTERRUPTED one asking the bank about bookings it left
        unanswered) is followed to its end."""
        view = RunView.model_validate(self.json("POST", f"/runs/{int(run_id)}/cancel"))
        if wait and view.progress is not None:
            for _ in self.events(run_id):  # the stream ends with the run's final state
                pass

    def bookings_in_doubt(self, run_id: int) -> pd.DataFrame:
        return self.table(f"/runs/{int(run_id)}/in-doubt")

    def settle_by_hand(
        self, run_id: int, *, booked: Iterable[int] = (), not_booked: Iterable[int] = (), note: str
    ) -> RunSummary:
        body = {"booked": [int(r) for r in booked], "not_booked": [int(r) for r in not_booked], "note": note}
        view = RunView.model_validate(self.json("POST", f"/runs/{int(run_id)}/settle", json=body))
        return RunSummary.model_validate(view.model_dump(exclude={"progress"}))

    def propose_settlement(
        self, run_id: int, *, booked: Iterable[int] = (), not_booked: Iterable[int] = (), note: str
    ) -> Settlement:
        body = {"booked": [int(r) for r in booked], "not_booked": [int(r) for r in not_booked], "note": note}
        return Settlement.model_validate(self.json("POST", f"/runs/{int(run_id)}/settlements", json=body))

    def confirm_settlement(self, settlement_id: int) -> RunSummary:
        view = RunView.model_validate(self.json("POST", f"/settlements/{int(settlement_id)}:confirm"))
        return RunSummary.model_validate(view.model_dump(exclude={"progress"}))

    def reject_settlement(self, settlement_id: int, reason: str) -> Settlement:
        found = self.json("POST", f"/settlements/{int(settlement_id)}:reject", json={"reason": reason})
        return Settlement.model_validate(found)

    def settlements(self, run_id: int) -> list[Settlement]:
        return [Settlement.model_validate(r) for r in self.json("GET", f"/runs/{int(run_id)}/settlements")]

    def settlement(self, settlement_id: int) -> Settlement:
        return Settlement.model_validate(self.json("GET", f"/settlements/{int(settlement_id)}"))

    def awaiting_settlements(self) -> list[Settlement]:
        return [Settlement.model_validate(r) for r in self.json("GET", "/settlements")]

    def run_view(self, run_id: int) -> RunView:
        return RunView.model_validate(self.json("GET", f"/runs/{int(run_id)}"))

    def run_summary(self, run_id: int) -> RunSummary:
        return RunSummary.model_validate(self.run_view(run_id).model_dump(exclude={"progress"}))

    def runs(self, batch_id: int | None = None) -> list[RunSummary]:
        items = self.json("GET", "/runs", params=_params({"batch_id": batch_id}))
        return [RunSummary.model_validate({k: v for k, v in r.items() if k != "progress"}) for r in items]

    def progress(self, run_id: int) -> RunProgress | None:
        return self.run_view(run_id).progress

    def active_runs(self) -> list[RunProgress]:
        views = [RunView.model_validate(r) for r in self.json("GET", "/runs")]
        active = [v.progress.model_copy(update={"batch_id": v.batch_id}) for v in views if v.progress is not None]
        return sorted(active, key=lambda p: p.run_id)

    def events(self, run_id: int) -> Iterator[RunView]:
        """The run as it changes (server-sent events), ending with its final state."""
        try:
            with connect_sse(self.http, "GET", f"/runs/{int(run_id)}/events", timeout=None) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise _problem(self.url, source.response)
                for sse in source.iter_sse():
                    yield RunView.model_validate_json(sse.data)
        except httpx.TransportError as exc:
            raise errors.ServerError(f"The fxbatch server at {self.url} stopped answering ({exc}).") from exc
        except SSEError as exc:
            raise errors.ServerError(f"{self.url}{API}/runs/{run_id}/events is not an event stream ({exc}).") from exc

    # -- review --------------------------------------------------------------------
    def _analytics(self, run_id: int, name: str, **params: Any) -> pd.DataFrame:
        return self.table(f"/runs/{int(run_id)}/analytics/{name}", params)

    def outcome_counts(self, run_id: int) -> pd.DataFrame:
        return self._analytics(run_id, "outcome_counts")

    def failure_pareto(self, run_id: int) -> pd.DataFrame:
        return self._analytics(run_id, "failure_pareto")

    def outcomes_by(self, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
        return self._analytics(run_id, "outcomes_by", by=by, top=top)

    def notional_by_outcome(self, run_id: int) -> pd.DataFrame:
        return self._analytics(run_id, "notional_by_outcome")

    def income_by(self, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
        return self._analytics(run_id, "income_by", by=by, top=top)

    def notional_by(self, run_id: int, by: str, top: int = 10, *, failed: bool = False) -> pd.DataFrame:
        return self._analytics(run_id, "notional_by", by=by, top=top, failed=failed)

    def notional_breakdown(self, run_id: int, top: int = 10) -> dict[tuple[str, bool], pd.DataFrame]:
        """``notional_by`` for pairs and clients, by notional and by failed notional: keys ``("pair" | "client", failed)``."""
        return {(by, failed): self.notional_by(run_id, by, top, failed=failed)
                for by in ("pair", "client") for failed in (False, True)}  # fmt: skip

    def run_money(self, run_id: int) -> RunMoney:
        return RunMoney.model_validate(self.json("GET", f"/runs/{int(run_id)}/money"))

    def latency_histogram(self, run_id: int, bins: int = 30) -> pd.DataFrame:
        return self._analytics(run_id, "latency_histogram", bins=bins)

    def throughput(self, run_id: int) -> pd.DataFrame:
        return self._analytics(run_id, "throughput")

    def run_trades_page(
        self, run_id: int, filters: TradeFilter | None = None, *, limit: int = 50, offset: int = 0, unmask: bool = False
    ) -> tuple[pd.DataFrame, int]:
        f = filters or TradeFilter()
        params = {"status": f.statuses, "reason": f.failure_codes, "pair": f.pair, "client": f.client,
                  "search": f.text, "limit": limit, "offset": offset, "unmask": unmask}  # fmt: skip
        resp = self.request("GET", f"/runs/{int(run_id)}/trades", params=_params(params), headers={"Accept": ARROW})
        return _arrow_frame(resp), int(resp.headers.get("X-Total-Count", "0"))

    def run_filter_choices(self, run_id: int) -> dict[str, list[str]]:
        body: dict[str, list[str]] = self.json("GET", f"/runs/{int(run_id)}/analytics/filter_choices")
        return body

    def trade_detail(self, run_id: int, row: int, *, unmask: bool = False) -> dict[str, Any]:
        """As ``Workbench.trade_detail``: its dates and times as timestamps, its ``timeline`` a DataFrame."""
        body: dict[str, Any] = self.json("GET", f"/runs/{int(run_id)}/trades/{int(row)}", params={"unmask": unmask})
        for name in ("value_date", "quote_expiry", "executing_at", "quoted_at", "finished_at"):
            if isinstance(body.get(name), str):
                body[name] = pd.Timestamp(body[name])
        if isinstance(body.get("timeline"), list):
            timeline = pd.DataFrame(body["timeline"])
            if "at" in timeline:
                timeline["at"] = pd.to_datetime(timeline["at"])
            body["timeline"] = timeline
        return body

    def export_run(self, run_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """Download the run's per-trade export to ``path`` (format from its suffix); returns rows.

        Accounts are masked unless ``unmask``; then the file lands at ``masking.export_path(path, unmask=True)``
        (``-UNMASKED`` before the suffix), as ``Workbench.export_run`` writes it."""
        return self._download(f"/runs/{int(run_id)}/export", export_path(path, unmask=unmask), {"unmask": unmask})

    def export_batch(self, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """Download a batch's trades as loaded to ``path``; masked unless ``unmask`` (as ``export_run``)."""
        return self._download(f"/batches/{int(batch_id)}/export", export_path(path, unmask=unmask), {"unmask": unmask})

    def export_rejections(self, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """Download a batch's rejections to ``path``; a rejected account masked unless ``unmask``."""
        return self._download(
            f"/batches/{int(batch_id)}/rejections:export", export_path(path, unmask=unmask), {"unmask": unmask}
        )

    def export_ledger(self, path: Path | str, run_id: int | None = None) -> int:
        return self._download("/ledger", path, {"run_id": run_id})

    def _download(self, route: str, path: Path | str, params: dict[str, Any]) -> int:
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("csv", "xlsx", "parquet"):
            raise errors.SettingsError(f"Cannot export to {path.name}: use a .csv, .xlsx or .parquet file name.")
        tmp = path.with_name(path.name + ".part")
        # The server writes the whole file before its answer begins (an XLSX of a million trades
        # takes minutes): no read timeout; the file is written to disk as it comes, not held.
        wait = self.http.timeout.as_dict() | {"read": None}
        try:
            with self.http.stream("GET", route, params=_params({**params, "format": fmt}),
                                  timeout=httpx.Timeout(**wait)) as resp:  # fmt: skip
                if resp.status_code >= 400:
                    resp.read()
                    raise _problem(self.url, resp)
                try:
                    with tmp.open("wb") as fh:
                        for chunk in resp.iter_bytes():
                            fh.write(chunk)
                    tmp.replace(path)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    raise errors.SettingsError(
                        f"Cannot write {path}: {exc.strerror or exc}.", code="UNWRITABLE_PATH"
                    ) from exc
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise errors.ServerError(f"The fxbatch server at {self.url} did not answer ({exc}).") from exc
        return int(resp.headers.get("X-Row-Count", "-1"))


class RemoteSweepJob:
    """A sweep running in the server: what ``client.whatif.start_sweep`` returns in place of a
    ``SweepJob``. Each attribute asks the server (``GET /whatif/{id}``)."""

    def __init__(self, whatif: _RemoteWhatIf, sweep_id: int, batch_id: int, name: str | None) -> None:
        self.whatif = whatif
        self.sweep_id = sweep_id
        self.batch_id = batch_id
        self.name = name

    def state(self) -> dict[str, Any]:
        """The server's answer on the sweep: RUNNING (done, total), DONE (the sweep), FAILED or CANCELLED."""
        return dict(self.whatif.client.json("GET", f"/whatif/{self.sweep_id}"))

    @property
    def running(self) -> bool:
        return self.state().get("status") == "RUNNING"

    @property
    def done(self) -> int:
        """Scenarios finished so far (all of them once it is stored)."""
        state = self.state()
        return int(state["done"] if "done" in state else state.get("scenario_count", 0))

    @property
    def error(self) -> errors.FxBatchError | None:
        """Why it ended without a sweep (CancelledError for a cancel); None while it runs or once stored."""
        state = self.state()
        if state.get("status") not in ("FAILED", "CANCELLED"):
            return None
        try:
            self.whatif._stored(self.sweep_id, state)
        except errors.FxBatchError as exc:
            return exc
        return None

    def wait(self, timeout: float | None = None, *, poll_s: float = 0.2) -> bool:
        """Wait for the end; False if it is still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
        return True

    def cancel(self) -> None:
        self.whatif.cancel(self.sweep_id)


class _RemoteWhatIf:
    """``client.whatif``: sweeps run in the server; the same methods as ``wb.whatif``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def sweep(
        self,
        batch_id: int,
        success_rates: list[float],
        *,
        seeds: int | list[int] = 1,
        seed: int = 42,
        base: RunConfig | None = None,
        variants: dict[str, list[Any]] | None = None,
        name: str | None = None,
        workers: int | None = None,
        dask_address: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        poll_s: float = 0.2,
    ) -> Sweep:
        """Start a sweep in the server and wait for it, reporting (done, total) as it goes.

        Where it runs is the server's choice (its FXBATCH_DASK_ADDRESS): ``workers`` and
        ``dask_address`` are accepted for the workbench's signature and left to the server; they
        change how fast a sweep runs, never its results.
        """
        job = self.start_sweep(batch_id, success_rates, seeds=seeds, seed=seed, base=base, variants=variants,
                               name=name)  # fmt: skip
        sweep_id = job.sweep_id
        try:
            while True:
                state = job.state()
                if state.get("status") != "RUNNING":
                    break
                if on_progress is not None:
                    on_progress(int(state["done"]), int(state["total"]))
                time.sleep(poll_s)
        except KeyboardInterrupt as stopped:
            # Nobody waits for it any more (Ctrl-C, a notebook's interrupt): stop it in the server too.
            try:
                self.cancel(sweep_id)
                stopped.add_note(f"sweep {sweep_id} is cancelled in the server: nothing of it is stored")
            except errors.ConflictError:
                stopped.add_note(f"sweep {sweep_id} had finished: it is stored (`python -m fxbatch sweep {sweep_id}`)")
            except errors.FxBatchError as exc:
                stopped.add_note(f"sweep {sweep_id} may still run in the server: {exc.message}")
            raise
        sweep = self._stored(sweep_id, state)
        if on_progress is not None:
            on_progress(sweep.scenario_count, sweep.scenario_count)
        return sweep

    def start_sweep(
        self,
        batch_id: int,
        success_rates: list[float],
        *,
        seeds: int | list[int] = 1,
        seed: int = 42,
        base: RunConfig | None = None,
        variants: dict[str, list[Any]] | None = None,
        name: str | None = None,
        workers: int | None = None,
    ) -> RemoteSweepJob:
        """Start a sweep in the server and return at once (``wb.whatif.start_sweep``): the job says
        how far it is, waits for its end and cancels it; ``get(job.sweep_id)`` reads it once stored.
        ``workers`` is left to the server, as in ``sweep``."""
        body = {"batch_id": batch_id, "success_rates": success_rates, "seeds": seeds, "seed": seed, "name": name,
                "variants": variants or {}, "base": base.model_dump(mode="json") if base else None}  # fmt: skip
        sweep_id = int(self.client.json("POST", "/whatif", json=body)["sweep_id"])
        return RemoteSweepJob(self, sweep_id, batch_id, name)

    def _stored(self, sweep_id: int, state: Mapping[str, Any]) -> Sweep:
        """The sweep a ``GET /whatif/{id}`` answer holds; the error it says instead, if any."""
        status = state.get("status")
        if status == "FAILED":
            raise _error_from(self.client.url, state.get("error") or {})
        if status == "CANCELLED":
            raise errors.CancelledError(str(state.get("detail") or f"Sweep {sweep_id} was cancelled."))
        if status == "RUNNING":
            raise errors.ConflictError(
                f"Sweep {sweep_id} is still running in the server at {self.client.url} ({state.get('done', 0):,} of "
                f"{state.get('total', 0):,} scenarios done); ask again once it has finished."
            )
        return Sweep.model_validate(state)

    def cancel(self, sweep_id: int) -> None:
        """Stop a sweep running in the server: nothing of it is stored (``wb.whatif.cancel``)."""
        self.client.json("POST", f"/whatif/{int(sweep_id)}/cancel")

    def get(self, sweep_id: int) -> Sweep:
        return self._stored(int(sweep_id), self.client.json("GET", f"/whatif/{int(sweep_id)}"))

    def sweeps(self, batch_id: int | None = None) -> list[SweepInfo]:
        items = self.client.json("GET", "/whatif", params=_params({"batch_id": batch_id}))
        return [SweepInfo.model_validate(s) for s in items]

    def scenarios_df(self, sweep_id: int) -> pd.DataFrame:
        return self.get(sweep_id).scenarios_df()

    def summary_df(self, sweep_id: int) -> pd.DataFrame:
        return self.get(sweep_id).summary_df()

    def start_promote(self, sweep_id: int, scenario: int) -> RemoteJob:
        body = self.client.json("POST", f"/whatif/{int(sweep_id)}/promote", json={"scenario": scenario})
        run_id = int(body["run_id"])
        return RemoteJob(self.client, run_id, self.client.run_summary(run_id).batch_id)

    def promote(self, sweep_id: int, scenario: int) -> RunSummary:
        job = self.start_promote(sweep_id, scenario)
        job.wait()
        return self.client.run_summary(job.run_id)

    def compare(self, run_ids: list[int]) -> pd.DataFrame:
        return self.client.table("/compare", {"run_ids": list(run_ids)})

    def differing_trades(self, run_a: int, run_b: int, limit: int = 1000) -> pd.DataFrame:
        return self.client.table("/compare/differing", {"run_a": run_a, "run_b": run_b, "limit": limit})


def connect(url: str, *, timeout_s: float = 60.0, token: str | None = None) -> Client:
    """A client of the fxbatch server at ``url`` (checked to answer as one); ``token`` as ``Client``."""
    client = Client(url, timeout_s=timeout_s, token=token)
    try:
        client.health()
    except BaseException:
        client.close()
        raise
    return client


# -- helpers -------------------------------------------------------------------------
def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters without the unset ones (None, empty lists); booleans as true/false."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _form(**fields: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out[key] = json.dumps({str(k): v for k, v in value.items()})
        elif isinstance(value, date):
            out[key] = value.isoformat()
        else:
            out[key] = str(value)
    return out


_EVERY_ROW = 2**62  # the API's largest limit (fxbatch.api.deps.BIG, not imported: it loads FastAPI)


def _all(limit: int | None) -> int:
    """A table's ``limit`` as the API takes it: None (every row, as in process) is the largest."""
    return _EVERY_ROW if limit is None else limit


def _flat_options(config: RunConfig) -> dict[str, Any]:
    """A RunConfig as the flat run options the API takes (bank settings at top level)."""
    data = config.model_dump(mode="json")
    bank = data.pop("bank")
    return {k: v for k, v in {**data, **bank}.items() if v is not None}


def _run_options(config: RunConfig | None, overrides: Mapping[str, object]) -> dict[str, Any]:
    """The run options to send: checked here as in process (``make_config``), then all of them for
    a ``config``, else only those given, so the server fills the rest as in process (a retry takes
    its run's settings and the next seed, not the defaults)."""
    from fxbatch.workbench import make_config  # the same flattening rules as in process

    options = _flat_options(make_config(config, **overrides))
    if config is not None:
        return options
    return {k: v for k, v in options.items() if overrides.get(k) is not None}


def _arrow_frame(resp: httpx.Response) -> pd.DataFrame:
    if not resp.headers.get("content-type", "").startswith(ARROW):
        raise errors.ServerError(
            f"{resp.request.url} answered {resp.headers.get('content-type')!r}, not an Arrow table."
        )
    with pa.ipc.open_stream(resp.content) as reader:
        frame: pd.DataFrame = reader.read_all().to_pandas()
    return frame


def _problem(url: str, resp: httpx.Response) -> errors.FxBatchError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        return errors.ServerError(f"{resp.request.url} answered HTTP {resp.status_code} without a problem report.")
    return _error_from(url, body)


def _error_from(url: str, body: Mapping[str, Any]) -> errors.FxBatchError:
    """The fxbatch error a problem+json body names (same code and message as in process)."""
    code = str(body.get("code") or "SERVER_ERROR")
    message = str(body.get("detail") or body.get("title") or f"The server at {url} refused the request.")
    cls = getattr(errors, str(body.get("kind") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.FxBatchError)) or cls is errors.DatabaseLockedError:
        cls = errors.FxBatchError
    err = cls(message, code=code)
    if isinstance(err, errors.UnusableFileError) and isinstance(body.get("headers"), list):
        err.headers = [str(h) for h in body["headers"]]
    return err
