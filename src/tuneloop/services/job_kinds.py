"""Every job kind a worker runs besides training, registered by the services that define them. Whoever starts
a worker (`tuneloop serve`, `tuneloop worker`) takes the kinds from here. A new kind: a function registered
with `tuneloop.worker.kinds.register` in its service module, and that module imported below."""

from __future__ import annotations

from tuneloop.services import arena  # noqa: F401  (registers "arena")
from tuneloop.services import comparison_jobs  # noqa: F401  (registers "compare")
from tuneloop.services import eval_runs  # noqa: F401  (registers "eval")
from tuneloop.services import searches  # noqa: F401  (registers "search-trial")
from tuneloop.services.review import rounds  # noqa: F401  (registers "repredict")
from tuneloop.worker.kinds import KINDS, KindFn


def kinds() -> dict[str, KindFn]:
    return dict(KINDS)
