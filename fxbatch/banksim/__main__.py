"""``python -m fxbatch.banksim serve|ledger``: run the bank simulator, or export its booked deals."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from fxbatch.bank.model import REGISTRY_CODES
from fxbatch.bank.registry import ClientRegistry
from fxbatch.banksim.ledger import export_csv
from fxbatch.banksim.server import Limits, serve
from fxbatch.banksim.service import MAX_AMOUNT, SimConfig, Simulator
from fxbatch.banksim.tokens import Credentials
from fxbatch.errors import FxBatchError, SettingsError
from fxbatch.models import SEED_MAX, BankSettings, FailureCode
from fxbatch.rates import RateTable
from fxbatch.settings import load_settings

SECRET_ENV, PASSWORD_ENV = "FXBATCH_BANKSIM_CLIENT_SECRET", "FXBATCH_BANKSIM_PASSWORD"


def _number(lo: float, hi: float = math.inf, *, above: bool = False, whole: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in [lo, hi] (or (lo, hi] with ``above``); argparse names the flag."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if whole and not value.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        if not math.isfinite(value) or value < lo or (above and value == lo) or value > hi:
            low = f"above {lo:g}" if above else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(
                f"{text} must be {low}" + (f" and at most {hi:g}" if hi < math.inf else "")
            )
        return value

    return parse


def _whole(lo: int, hi: int = 1 << 62) -> Callable[[str], int]:
    """Like ``_number`` but exact: a float holds only 53 bits, so a large seed would change."""
    check = _number(lo, hi, whole=True)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            return int(check(text))  # '1e3', '2.0'
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} must be at least {lo} and at most {hi}")
        return value

    return parse


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _mix(text: str) -> dict[FailureCode, float]:
    """``CODE=weight,CODE=weight`` (FailureCode names)."""
    mix: dict[FailureCode, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        try:
            code = FailureCode(name.strip().upper())
        except ValueError:
            known = ", ".join(c.value for c in FailureCode)
            raise argparse.ArgumentTypeError(f"{name.strip()!r} is not a failure code; codes: {known}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r}: write CODE=weight")
        try:
            mix[code] = _number(0)(weight.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"weight of {code.value}: {exc}") from None
    if not mix or not any(w > 0 for w in mix.values()):
        raise argparse.ArgumentTypeError("give at least one code a weight above 0, like INSUFFICIENT_FUNDS=1")
    return mix


def build_config(args: argparse.Namespace) -> SimConfig:
    """The simulator's settings from the flags; SettingsError naming the flag at fault."""
    secret = args.client_secret or os.environ.get(SECRET_ENV)
    if args.client_id and not secret:
        raise SettingsError(f"--client-id needs --client-secret or {SECRET_ENV}.")
    password = args.password or os.environ.get(PASSWORD_ENV)
    if bool(args.username) != bool(password):
        raise SettingsError(f"--username and --password (or {PASSWORD_ENV}) go together.")
    if args.failure_mix and not args.registry:
        weighted = sorted(c.value for c, w in args.failure_mix.items() if w > 0 and c in REGISTRY_CODES)
        if weighted:
            raise SettingsError(
                f"--failure-mix gives weight to {', '.join(weighted)}, which only a client registry decides: "
                "give --registry or leave them out."
            )
    values = {"success_rate": args.success_rate, "quote_ttl_s": args.quote_ttl_s,
              "volatility_bps": args.volatility_bps, "price_tolerance_bps": args.price_tolerance_bps,
              "latency_ms": args.latency_ms, "registry_file": args.registry}  # fmt: skip
    if args.failure_mix:
        values["failure_mix"] = args.failure_mix
    try:
        bank = BankSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0] if err["loc"] else "?").replace("_", "-").replace("registry-file", "registry")
        raise SettingsError(f"{flag}: {err['msg']}") from exc
    settings = load_settings()
    try:
        rates = RateTable.from_csv(Path(args.rates) if args.rates else settings.rates_file)
    except SettingsError as exc:
        raise SettingsError(f"--rates: {exc.message}") from exc
    try:
        registry = ClientRegistry.from_csv(args.registry) if args.registry else None
    except SettingsError as exc:
        raise SettingsError(f"--registry: {exc.message}") from exc
    creds = Credentials(args.client_id or None, secret if args.client_id else None, args.username or None, password)
    return SimConfig(
        db=Path(args.db), rates=rates, bank=bank, seed=args.seed, latency_ms=args.latency_ms,
        error_rate=args.error_rate, drop_after_book_rate=args.drop_after_book_rate, max_amount=args.max_amount,
        hang_after_bookings=args.hang_after_bookings,
        today=args.today or settings.today, credentials=creds, token_ttl_s=args.token_ttl_s, registry=registry,
    )  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    limits = Limits(read_timeout_s=args.read_timeout_s, keep_alive_s=args.keep_alive_s,
                    max_connections=args.max_connections)  # fmt: skip
    sim = Simulator(config)

    def ready(port: int) -> None:
        print(f"banksim listening on http://127.0.0.1:{port} (ledger {args.db})", flush=True)

    serve(sim, limits, args.port, ready)
    return 0


def run_ledger(args: argparse.Namespace) -> int:
    n = export_csv(Path(args.db), Path(args.output))
    print(f"Wrote {n:,} booked deals to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fxbatch.banksim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the trading API on 127.0.0.1")
    p.add_argument("--port", type=_whole(0, 65535), required=True, help="TCP port (0 = any free port, printed)")
    p.add_argument("--db", required=True, help="the service's own DuckDB file: its quote book and booked deals")
    p.add_argument("--latency-ms", type=_number(0, 60_000), default=0.0, help="time every API answer takes")
    p.add_argument("--success-rate", type=_number(0, 1), default=0.95, help="probability a valid trade books")
    p.add_argument("--failure-mix", type=_mix, help="weights of the failure reasons, CODE=weight,CODE=weight "
                   "(default: the simulated bank's mix)")  # fmt: skip
    p.add_argument("--seed", type=_whole(0, SEED_MAX), default=42, help="seed of the bank model and the market")
    p.add_argument("--volatility-bps", type=_number(0, 100), default=0.1, help="rate walk per quote, in bps")
    p.add_argument("--quote-ttl-s", type=_number(0, 3600, above=True), default=30.0, help="how long a quote lives")
    p.add_argument("--price-tolerance-bps", type=_number(0), default=5.0,
                   help="how far a booking's quoteRate may be from the quoted rate")  # fmt: skip
    p.add_argument("--max-amount", type=_number(0, above=True), default=MAX_AMOUNT,
                   help="largest dealCurrencyAmount the bank takes")  # fmt: skip
    p.add_argument("--today", type=_day, help="the bank's trade date (default: FXBATCH_TODAY, else today in "
                   "Johannesburg)")  # fmt: skip
    p.add_argument("--registry", help="client registry CSV (cif, account_number, status, limit_zar): client checks")
    p.add_argument("--drop-after-book-rate", type=_number(0, 1), default=0.0,
                   help="share of bookings whose answer is lost")  # fmt: skip
    p.add_argument("--error-rate", type=_number(0, 1), default=0.0, help="share of API calls answered with a bare 503")
    p.add_argument("--hang-after-bookings", type=_whole(0), metavar="N",
                   help="answer N bookings, then hold every later one unanswered (a hung booking service)")  # fmt: skip
    p.add_argument("--client-id", help="required OAuth2 client id (default: any client)")
    p.add_argument("--client-secret", help=f"its secret; prefer {SECRET_ENV} (ps shows arguments)")
    p.add_argument("--username", help="the dealer the password grant requires (default: any)")
    p.add_argument("--password", help=f"the dealer's password; prefer {PASSWORD_ENV}")
    p.add_argument("--token-ttl-s", type=_number(0, above=True), default=300.0, help="lifetime of an access token")
    p.add_argument("--rates", help="rate table CSV (default: FXBATCH_RATES_FILE or the bundled one)")
    p.add_argument("--read-timeout-s", type=_number(0, 3600, above=True), default=10.0,
                   help="a request must arrive whole within this time, or the connection is closed")  # fmt: skip
    p.add_argument("--keep-alive-s", type=_whole(1, 3600), default=5, help="idle time before a connection is closed")
    p.add_argument("--max-connections", type=_whole(16, 1_000_000), default=16_384,
                   help="connections served at once (beyond: 503)")  # fmt: skip
    p.set_defaults(func=run_serve)
    p = sub.add_parser("ledger", help="write the booked deals as CSV (with the service stopped)")
    p.add_argument("--db", required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run_ledger)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FxBatchError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
