"""``python -m fxbatch.banksim serve|ledger``: run the bank simulator, or export its ledger."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from fxbatch.bank.simulated import SimulatedBank
from fxbatch.banksim.desk import Desk
from fxbatch.banksim.service import BankServer, Faults, Tokens
from fxbatch.errors import FxBatchError, SettingsError
from fxbatch.models import BankSettings
from fxbatch.rates import RateTable
from fxbatch.settings import load_settings
from fxbatch.store import Store

LEDGER_SQL = (
    "SELECT deal_transaction_id, quote_id, booked_at, run_id, src_row, deal_rate FROM sim_ledger "
    "ORDER BY booked_at, deal_transaction_id"
)


def serve(args: argparse.Namespace) -> int:
    # The loop gives up the GIL on every socket call and the desk thread takes it; with the
    # default 5 ms switch interval the loop then waits that long per answer. 0.5 ms keeps it lively.
    sys.setswitchinterval(0.0005)
    secret = args.client_secret or os.environ.get("FXBATCH_BANKSIM_CLIENT_SECRET")
    if args.client_id and not secret:
        raise SettingsError("--client-id needs --client-secret or FXBATCH_BANKSIM_CLIENT_SECRET.")
    for name in ("error_rate", "drop_after_book_rate"):
        if not 0 <= getattr(args, name) <= 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be between 0 and 1.")
    try:
        bank_settings = BankSettings(success_rate=args.success_rate, quote_ttl_s=args.quote_ttl_s)
    except ValidationError as exc:
        raise SettingsError(f"--success-rate/--quote-ttl-s: {exc.errors()[0]['msg']}") from exc
    settings = load_settings()
    rates = RateTable.from_csv(Path(args.rates) if args.rates else settings.rates_file)
    store = Store(args.db)
    bank = SimulatedBank(store, bank_settings, args.seed, rates.mids)
    desk = Desk(bank, rates)
    tokens = Tokens(args.client_id, secret if args.client_id else None, args.token_ttl_s)
    faults = Faults(args.latency_ms, args.error_rate, args.drop_after_book_rate, args.seed)
    server = BankServer(args.port, desk, tokens, faults)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    def ready(port: int) -> None:
        print(f"banksim listening on http://127.0.0.1:{port} (ledger {args.db})", flush=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(on_ready=ready)
    finally:
        store.close()
    return 0


def ledger(args: argparse.Namespace) -> int:
    store = Store(args.db, read_only=True)
    try:
        cur = store.cursor()
        n = cur.execute("SELECT count(*) FROM sim_ledger").fetchall()[0][0]
        out = str(Path(args.output)).replace("'", "''")
        cur.execute(f"COPY ({LEDGER_SQL}) TO '{out}' (HEADER, DELIMITER ',')")
    finally:
        store.close()
    print(f"Wrote {n:,} booked deals to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fxbatch.banksim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the trading API on 127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port, printed)")
    p.add_argument("--db", required=True, help="the service's own DuckDB file: its durable ledger")
    p.add_argument("--latency-ms", type=float, default=0.0, help="time added to every API call")
    p.add_argument("--success-rate", type=float, default=0.95, help="probability a valid trade books")
    p.add_argument("--seed", type=int, default=42, help="seed of the bank model (as the run's seed)")
    p.add_argument("--drop-after-book-rate", type=float, default=0.0, help="share of bookings whose answer is lost")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of API calls answered with a bare 503")
    p.add_argument("--quote-ttl-s", type=float, default=30.0, help="how long a quote lives")
    p.add_argument("--client-id", help="required OAuth2 client id (default: any credentials)")
    p.add_argument("--client-secret", help="its secret; prefer FXBATCH_BANKSIM_CLIENT_SECRET (ps shows arguments)")
    p.add_argument("--token-ttl-s", type=float, default=300.0, help="lifetime of an access token")
    p.add_argument("--rates", help="rate table CSV (default: FXBATCH_RATES_FILE or the bundled one)")
    p.set_defaults(func=serve)
    p = sub.add_parser("ledger", help="write the booked deals as CSV")
    p.add_argument("--db", required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=ledger)
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
