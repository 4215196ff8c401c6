"""The LLM answers the gateway gave agents, kept for the dashboard (`microfang dashboard`): what
was asked (the prompt, or the last message of a chat, cut to PROMPT_MAX characters), what came
back (cut to ANSWER_MAX) or the error, and the tokens it cost; the newest ANSWERS_KEEP of each
device, older ones deleted as new ones come. Written in the transaction that keeps the reply
(requests.py), so an answer is kept exactly when it is sent.

    answers = Answers(store)
    answers.add("b1", "chat", request.body, ok=True, reply={"text": "hi", "tokens": 3}, ts=time.time())
    answers.latest(20)          # newest first: [{"device", "agent", "ts", "ok", "prompt", "answer", "tokens"}]
"""

from __future__ import annotations

from typing import Any

from microfang.gateway.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_answers (
    n {serial},
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,     -- when the gateway answered (seconds since the epoch)
    ok INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,             -- the text, or the error
    tokens BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS llm_answers_device ON llm_answers (device, n)
"""
ANSWERS_KEEP = 100  # per device
PROMPT_MAX = 300
ANSWER_MAX = 1000
FIELDS = ("device", "agent", "ts", "ok", "prompt", "answer", "tokens")


def asked(body: Any) -> str:
    """The question of an llm request's body: its prompt, or its chat's last message."""
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
        last = body["messages"][-1]
        return str(last.get("content", "")) if isinstance(last, dict) else ""
    prompt = body.get("prompt") if isinstance(body, dict) else body
    return prompt if isinstance(prompt, str) else ""


class Answers:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.db.schema(SCHEMA)

    def add(self, device: str, agent: str, body: Any, ok: bool, reply: Any, ts: float) -> None:
        """An llm request's answer (`reply`: the handler's body, or the error), in the reply's transaction."""
        if ok and isinstance(reply, dict):
            answer, tokens = str(reply.get("text", "")), reply.get("tokens", 0)
        else:
            answer, tokens = str(reply), 0
        db = self.store.db
        db.execute("INSERT INTO llm_answers (device, agent, ts, ok, prompt, answer, tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (device, agent, ts, int(ok), asked(body)[:PROMPT_MAX], answer[:ANSWER_MAX],
                    tokens if isinstance(tokens, int) else 0))
        db.execute("DELETE FROM llm_answers WHERE device = ? AND n <= (SELECT n FROM llm_answers WHERE device = ? "
                   "ORDER BY n DESC LIMIT 1 OFFSET ?)", (device, device, ANSWERS_KEEP))

    def latest(self, limit: int, device: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` answers (of `device`, if given), newest first."""
        where, args = (" WHERE device = ?", (device,)) if device else ("", ())
        rows = self.store.db.execute(f"SELECT {', '.join(FIELDS)} FROM llm_answers{where} ORDER BY n DESC LIMIT ?",
                                     (*args, limit)).fetchall()
        return [{**dict(zip(FIELDS, r, strict=True)), "ok": bool(r[3])} for r in rows]
