"""Schemathesis hooks for fuzzing budgetd (SCHEMATHESIS_HOOKS=tests.security.schemathesis_hooks):
msgpack answers are decoded so that they are checked against the document like JSON ones."""

from __future__ import annotations

from typing import Any

import msgpack
import schemathesis


@schemathesis.deserializer("application/msgpack")
def msgpack_body(ctx: Any, response: Any) -> Any:
    if ctx.operation.path == "/v1/snapshot":
        # Documented as an opaque msgpack file (a string of bytes), not as a value.
        return response.content.decode("latin-1")
    try:
        return msgpack.unpackb(response.content, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ValueError(f"the answer is not valid msgpack: {error}") from error
