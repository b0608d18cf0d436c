"""The bank simulator as a service for tests: ``python -m fxbatch.banksim serve`` in a subprocess
with its own ledger, started and stopped by the test (the ``service`` fixture in conftest.py)."""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SECRET = "banksim-s3cret-value"
CLIENT = "fxbatch-test"
DEADLINE_S = 30.0
LISTENING = re.compile(r"banksim listening on http://127\.0\.0\.1:(\d+) ")


def free_port() -> int:
    """A port free now (another process may take it before it is used: only for a bank whose
    address must be known before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One bank simulator process; ``start`` again after ``kill`` reuses its port and ledger.

    With ``port`` 0 (the default) the service picks a free port as it starts (read from its
    first line), so two test runs at once never race for one.
    """

    def __init__(self, tmp_path: Path, *args: str, port: int = 0) -> None:
        self.db = tmp_path / "bank.duckdb"
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "banksim.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "fxbatch.banksim", "serve", "--port", str(self.port), "--db", str(self.db),
               "--client-id", CLIENT, *self.args]  # fmt: skip
        env = {**os.environ, "FXBATCH_BANKSIM_CLIENT_SECRET": SECRET}  # not on the command line (ps shows it)
        seen = self.log.read_text() if self.log.exists() else ""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            found = LISTENING.findall(self.log.read_text()[len(seen) :])
            if found:
                self.port = int(found[0])
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "the bank simulator did not start: " + self.log.read_text()
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """Stop it as an operator would (SIGTERM); its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def ledger(self, tmp_path: Path) -> list[dict[str, str]]:
        """The service's booked deals, via ``banksim ledger`` (the service must be stopped)."""
        out = tmp_path / "ledger.csv"
        subprocess.run(
            [sys.executable, "-m", "fxbatch.banksim", "ledger", "--db", str(self.db), "-o", str(out)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        with out.open(newline="") as fh:
            return list(csv.DictReader(fh))
