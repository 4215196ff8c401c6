"""Rate limits and budgets shared by the gateways on one PostgreSQL store: without it each
gateway counts alone and N gateways allow N times what an agent may spend.

One table each, changed by one statement per request (so two gateways never both take the
last token or the last request of a budget), on a connection of its own outside the batches'
transactions, timed by the server's clock (the gateways' clocks may differ):

    ledger = Ledger("postgresql://gw@db/microfang")
    router = Router(limiter=SharedRateLimiter(ledger, rate=50, burst=100), budget=SharedBudget(ledger, 1000))
    TokenBudget(2000, spending=SharedSpendWindow(ledger, "llm_tokens"))

While the store fails, a rate limit lets requests through (the broker and the batches hold the
traffic back anyway) and a budget refuses them, with the reason: a budget caps what costs money.
A SQLite store has one gateway, whose in-memory counters (router.py, request.SpendWindow) are exact.
"""

from __future__ import annotations

from microfang.gateway.db import StoreFailure, connect
from microfang.gateway.router import Budget, RateLimiter
from microfang.request import SpendWindow

SCHEMA = """
CREATE TABLE IF NOT EXISTS spending (        -- what each agent spent in its current window
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    what TEXT NOT NULL,                      -- requests | llm_tokens
    start DOUBLE PRECISION NOT NULL,         -- the window's start (server clock, s)
    spent DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, agent, what)
);
CREATE TABLE IF NOT EXISTS buckets (         -- each agent's rate-limit token bucket
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL,            -- when it was last filled (server clock, s)
    allowed BOOLEAN NOT NULL,                -- whether the last request took a token
    PRIMARY KEY (device, agent)
)
"""
NOW = "extract(epoch from clock_timestamp())"


class Ledger:
    """The shared counters, on a connection of their own to the store at `where`."""

    def __init__(self, where: str) -> None:
        self.db = connect(where)
        self.db.schema(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def spend(self, device: str, agent: str, what: str, amount: float, window_s: float) -> float:
        """Add `amount` to the agent's current window (a new one if it ended); what it has spent
        in it now, this included."""
        row = self.db.execute(
            f"INSERT INTO spending AS s (device, agent, what, start, spent) VALUES (?, ?, ?, {NOW}, ?) "
            "ON CONFLICT (device, agent, what) DO UPDATE SET "
            "start = CASE WHEN excluded.start - s.start >= ? THEN excluded.start ELSE s.start END, "
            "spent = CASE WHEN excluded.start - s.start >= ? THEN excluded.spent ELSE s.spent + excluded.spent END "
            "RETURNING spent", (device, agent, what, amount, window_s, window_s)).fetchone()
        return float(row[0])

    def take_token(self, device: str, agent: str, rate: float, burst: float) -> bool:
        """Refill the agent's bucket for the time since it was last filled (at most `burst`),
        then take a token if it holds one; whether it did."""
        filled = f"LEAST(?, b.tokens + ({NOW} - b.at) * ?)"
        row = self.db.execute(
            f"INSERT INTO buckets AS b (device, agent, tokens, at, allowed) VALUES (?, ?, ? - 1, {NOW}, TRUE) "
            f"ON CONFLICT (device, agent) DO UPDATE SET tokens = CASE WHEN {filled} >= 1 THEN {filled} - 1 "
            f"ELSE {filled} END, allowed = {filled} >= 1, at = {NOW} RETURNING allowed",
            (device, agent, burst, burst, rate, burst, rate, burst, rate, burst, rate)).fetchone()
        return bool(row[0])


class SharedRateLimiter(RateLimiter):
    """router.RateLimiter, its buckets in the ledger."""

    def __init__(self, ledger: Ledger, rate: float = 50.0, burst: int = 100) -> None:
        super().__init__(rate, burst)
        self.ledger = ledger

    def allow(self, device: str, agent: str) -> bool:
        rate = self.rates.get((device, agent), self.rate)
        burst = self.burst if (device, agent) not in self.rates else max(1.0, 2 * rate)
        try:
            return self.ledger.take_token(device, agent, rate, burst)
        except StoreFailure:
            return True  # see the module's docstring


class SharedBudget(Budget):
    """router.Budget, spent in the ledger: a request counts as spent before it is checked, so
    the budget's last request goes to one gateway only."""

    def __init__(self, ledger: Ledger, limit: int | None = None, window_s: float = 3600.0) -> None:
        super().__init__(limit, window_s)
        self.ledger = ledger

    def spend(self, device: str, agent: str) -> bool:
        if self.limit is None:
            return True
        try:
            return self.ledger.spend(device, agent, "requests", 1, self.window_s) <= self.limit
        except StoreFailure:
            return False  # see the module's docstring


class SharedSpendWindow(SpendWindow):
    """request.SpendWindow (what TokenBudget counts LLM tokens in), kept in the ledger."""

    def __init__(self, ledger: Ledger, what: str, window_s: float = 3600.0) -> None:
        super().__init__(window_s)
        self.ledger = ledger
        self.what = what

    def spent(self, device: str, agent: str) -> float:
        try:
            return self.ledger.spend(device, agent, self.what, 0, self.window_s)
        except StoreFailure:
            return float("inf")  # nothing left while it cannot be known

    def add(self, device: str, agent: str, amount: float) -> None:
        try:
            self.ledger.spend(device, agent, self.what, amount, self.window_s)
        except StoreFailure:
            pass  # spent already; the window forgets it

