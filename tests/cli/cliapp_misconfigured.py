"""An app module whose import fails with a ConfigurationError: two tasks share an id."""

from __future__ import annotations

import perdure

app = perdure.App()


@app.task(id="twice")
async def first(payload: int) -> int:
    return payload


@app.task(id="twice")
async def second(payload: int) -> int:
    return payload
