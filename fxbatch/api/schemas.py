"""The API's own request and answer models; everything else is fxbatch's models as they are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fxbatch.api.deps import INT32
from fxbatch.models import FailureCode, RunConfig
from fxbatch.whatif.models import Sweep


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    db: str = Field(description="The database file the server holds (resolved path).")
    version: str = Field(description="fxbatch's version.")
    schema_version: int = Field(description="The database's schema version.")


class RunAccepted(BaseModel):
    run_id: int
    url: str = Field(description="The run's API path (also the Location header).")


class SweepAccepted(BaseModel):
    sweep_id: int
    url: str = Field(description="The sweep's API path (also the Location header).")


class RunOptions(BaseModel):
    """The options of a new run (the CLI's run options); unset ones keep RunConfig's defaults.
    Bank settings are given at top level, as ``Workbench.start_run`` takes them."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(None, description="Seed of the simulated bank and market.")
    success_rate: float | None = Field(None, description="Probability that a valid trade ends SUCCESS.")
    failure_mix: dict[FailureCode, float] | None = Field(None, description="Relative weights of failure reasons.")
    latency_ms: float | None = Field(None, description="Simulated time per bank call, in milliseconds.")
    concurrency: int | None = Field(None, description="Bank calls in flight at once.")
    max_attempts: int | None = Field(None, description="Attempts per trade for retryable failures.")
    backoff_ms: float | None = Field(None, description="Base backoff before a retry, in milliseconds.")
    chunk_size: int | None = Field(None, description="Trades processed and persisted together.")
    retry_of_run: int | None = Field(None, description="Run whose FAILED trades this run retries.")
    registry_file: str | None = Field(None, description="Client registry CSV on the server (enables client checks).")
    bank_url: str | None = Field(None, description="HTTP bank base URL; unset = the simulated bank.")
    quote_ttl_s: float | None = Field(None, description="How long a quote lives, in seconds.")
    volatility_bps: float | None = Field(None, description="Mid-rate random walk per trade step, in bps.")
    transient_absorb_share: float | None = Field(None, description="Share of retryable errors a retry absorbs.")
    price_tolerance_bps: float | None = Field(None, description="Booking rate tolerance against the quote, in bps.")
    approval_id: int | None = Field(
        None, description="An approved request for this run (needed for an HTTP bank on a server with login)."
    )


class ResumeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bank_url: str | None = Field(
        None, description="Another HTTP bank address ('' = the simulated bank); unset keeps the run's own."
    )


class SettleRequest(BaseModel):
    """Bookings in doubt settled with what the bank's dealers said (rows from ``GET .../in-doubt``)."""

    model_config = ConfigDict(extra="forbid")

    booked: list[Annotated[int, Field(ge=0, le=INT32)]] = Field(
        [], max_length=100_000, description="Rows the bank booked: they end SUCCESS with the quote they were sent with."
    )
    not_booked: list[Annotated[int, Field(ge=0, le=INT32)]] = Field(
        [], max_length=100_000, description="Rows the bank has no booking of: they end FAILED (TIMEOUT_UNKNOWN)."
    )
    note: str = Field(
        ...,
        max_length=2_000,
        description="What the bank confirmed (its reference, who at the bank); at most 500 "
        "characters once spaces are collapsed. Kept on each not-booked trade and on the audit trail.",
    )


class WhatIfRequest(BaseModel):
    """A sweep: every success rate x variant x seed over a batch, in fast mode."""

    model_config = ConfigDict(extra="forbid")

    batch_id: int = Field(ge=0, le=2**31 - 1)
    success_rates: list[float] = Field(min_length=1, max_length=10_000, description="Success rates to try (0..1).")
    seeds: Annotated[int, Field(ge=1, le=100_000)] | Annotated[list[int], Field(min_length=1, max_length=100_000)] = (
        Field(1, description="Replications per point: a count (from `seed`) or the seeds.")
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="First seed when `seeds` is a count.")
    name: str | None = None
    variants: dict[str, list[Any]] | None = Field(
        None, description="Other bank settings to vary, e.g. {'transient_absorb_share': [0.2, 0.8]}."
    )
    base: RunConfig | None = Field(None, description="Settings shared by every scenario.")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: int = Field(ge=1, le=2**31 - 1, description="The scenario's number within the sweep (1-based).")


class SweepRunning(BaseModel):
    sweep_id: int
    status: Literal["RUNNING"] = "RUNNING"
    done: int = Field(description="Scenarios finished.")
    total: int = Field(description="Scenarios in the sweep.")


class SweepFailed(BaseModel):
    sweep_id: int
    status: Literal["FAILED"] = "FAILED"
    error: dict[str, Any] = Field(description="Why, as a problem (type, title, status, detail, code).")


class SweepCancelled(BaseModel):
    sweep_id: int
    status: Literal["CANCELLED"] = "CANCELLED"
    done: int = Field(description="Scenarios finished when it stopped (none of them stored).")
    total: int = Field(description="Scenarios in the sweep.")
    detail: str = Field(description="What happened, in words.")


class SweepDone(Sweep):
    status: Literal["DONE"] = "DONE"


class Failures(BaseModel):
    """The batch-error details of a run: failures by reason, and the failed trades."""

    reasons: list[dict[str, Any]] = Field(description="failure_code, trades, share, cumulative_share; most first.")
    trades: list[dict[str, Any]] = Field(description="The first `limit` failed trades in row order.")
    total_failed: int


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="Why (the requester or proposer reads it).")
