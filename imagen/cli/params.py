"""`Parameter` for command signatures, without importing cyclopts to define them.

Command modules annotate with `Annotated[..., Parameter(...)]` under `from __future__ import
annotations`: the annotation is only evaluated when cyclopts reads the signature, by which
time cyclopts is imported anyway. Importing a command module (for its columns, its helpers, in
a test) then needs no cyclopts.
"""

from __future__ import annotations

from typing import Any


def Parameter(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (stands in for cyclopts' class)
    from cyclopts import Parameter as _Parameter

    return _Parameter(*args, **kwargs)
