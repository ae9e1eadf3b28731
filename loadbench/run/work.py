"""A ``[workload]``'s requests as the engine sends them: items sized before the stage, a
body per request, and a session's turns one after another.

Why items are computed ahead: sizing a prompt can take a dozen calls to the server's
``/tokenize``, a blocking HTTP client, so it runs in a thread before the stage's window
opens, never on the event loop mid-stage. Items depend only on the seed and the index, so
every stage (and every model) gets the same items: differences between stages are the
load's, between models the models'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio.to_thread

from loadbench.records import RequestRecord
from loadbench.run.lengths import LengthFold
from loadbench.run.plan import StagePlan
from loadbench.scenario import LoadMode
from loadbench.workload import Conversation, WorkItem, Workload

__all__ = ["MAX_POOL", "Body", "Send", "StageWork", "WorkPool", "items_needed"]

# Distinct items for a closed-loop stage bounded by time (its request count is not known):
# enough that a server's prefix cache cannot hold them all, few enough to size up front.
MAX_POOL = 4096
_POOL_PER_STREAM = 8

# (index, body, answer pieces or None, due_ns or None) -> the request's record; the engine
# decides whether it is warmup (by index, or by the clock during a ramp).
Send = Callable[[int, bytes, list[str] | None, int | None], Awaitable[RequestRecord]]
# (model, messages, the item's own fields) -> the request body: ``LoadClient.body``
Body = Callable[[str, list[dict[str, str]], dict[str, object]], bytes]


class WorkPool:
    """Every item computed so far, by index; shared by the stages of a run."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._items: list[WorkItem] = []

    async def ensure(self, n: int) -> None:
        """Items 0 to n-1 ready (a trace's length at most); sized in a worker thread."""
        size = self.workload.size
        n = n if size is None else min(n, size)
        have = len(self._items)
        if n > have:
            more = await anyio.to_thread.run_sync(self.workload.items, n - have, have)
            self._items.extend(more)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> WorkItem:
        return self._items[index]


def items_needed(plan: StagePlan) -> int:
    """Distinct items a stage sends: each index once when the stage is bounded by count (or
    by its schedule), else a pool that the stage cycles through."""
    if plan.mode is LoadMode.RATE:
        return plan.units * plan.turns
    if plan.requests is not None:
        return plan.warmup + plan.requests
    pool = min(MAX_POOL, max(64, (plan.concurrency or 1) * _POOL_PER_STREAM))
    return -(-pool // plan.turns) * plan.turns  # whole sessions


class StageWork:
    """One stage's items, turned into bodies for one model, and what came back folded."""

    def __init__(self, pool: WorkPool, plan: StagePlan, body: Body) -> None:
        self._pool = pool
        self._body = body
        self.size = min(items_needed(plan), len(pool))
        self.turns = plan.turns
        w = pool.workload
        self.fold = LengthFold(plan.turns > 1, w.tokenizer_note, w.approximate)

    @classmethod
    async def prepare(cls, pool: WorkPool, plan: StagePlan, body: Body) -> StageWork:
        await pool.ensure(items_needed(plan))
        return cls(pool, plan, body)

    def item(self, index: int) -> WorkItem:
        return self._pool[index % self.size]

    async def run(self, unit: int, model: str, send: Send, due_ns: int | None) -> None:
        """Unit ``unit``: one request, or a session's turns in order, each carrying the
        history so far. A turn that fails ends its session: a user whose answer never came
        does not ask the follow-up (the later turns are not sent, so not counted)."""
        history: Conversation | None = None
        first = unit * self.turns
        for turn in range(self.turns):
            index = first + turn
            item = self.item(index)
            if turn and item.think_time_s > 0:
                await anyio.sleep(item.think_time_s)
            if history is None:
                history = Conversation(item.session_id or "", item.system)
            messages = [m.to_json() for m in item.messages(history)]
            body = self._body(model, messages, item.body_fields())
            answer: list[str] | None = [] if turn + 1 < self.turns else None
            rec = await send(index, body, answer, due_ns)
            due_ns = None  # later turns are due when the previous answer and think time end
            self.fold.add(
                rec,
                max_tokens=item.max_tokens,
                input_requested=item.input_tokens_requested,
                input_counted=item.input_tokens_counted,
                turn=item.turn,
            )
            if rec.error is not None:
                return
            if answer is not None:
                history = history.after(item.user, "".join(answer))
