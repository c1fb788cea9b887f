"""A batch's inputs: prompts on the command line or lines of a --from file, each expanded to
one job per image (pure: no files, no clock, no randomness; random seeds come in as a function).

A --from line is a prompt, or a JSON object (JSON Lines) whose keys give that line's own options;
a blank line is skipped. Every line is parsed and checked before anything is recorded, and a bad
one is named by its line number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from imagen.core.inputs import BadInput, check_extra, check_prompt

# The keys a JSON line may carry, and what each must be.
LINE_KEYS: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "seed": (int,),
    "count": (int,),
    "size": (str,),
    "aspect": (str,),
    "steps": (int,),
    "backend": (str,),
    "format": (str,),
    "options": (dict,),
}
MAX_COUNT = 1000  # images per input: a typo such as -n 10000000 is refused, not paid


@dataclass(frozen=True)
class Input:
    """One prompt of the batch with the options that apply to it."""

    index: int  # 0-based, in the order given (blank lines not counted)
    where: str  # how an error names it: "prompt 2", "line 7"
    prompt: str
    count: int = 1
    seed: int | None = None
    size: str | None = None
    aspect: str | None = None
    steps: int | None = None
    backend: str | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    """One job of the batch: an image (or `per_job` images) of one input with its own seed."""

    index: int  # the job's place in the batch, 0-based
    input: Input
    seed: int


def check_count(count: int, flag: str = "--count") -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise BadInput(f"{flag} {count!r}: use 1 to {MAX_COUNT} (images per prompt)")
    return count


def parse_line(text: str, index: int, line: int, defaults: Input) -> Input | None:
    """One line of a --from file (None for a blank line). `defaults` holds the command's
    options; a JSON line's keys replace them for that line (size or aspect replaces both)."""
    where = f"line {line}"
    stripped = text.strip()
    if not stripped:
        return None
    if not stripped.startswith("{"):
        try:
            prompt = check_prompt(stripped)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        return _with(defaults, index=index, where=where, prompt=prompt)
    try:
        obj = json.loads(stripped)
    except ValueError as exc:
        raise BadInput(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: a JSON line must be an object with a prompt")
    unknown = sorted(set(obj) - set(LINE_KEYS))
    if unknown:
        raise BadInput(
            f"{where}: unknown key {unknown[0]!r}; a line may give {', '.join(LINE_KEYS)}"
        )
    for key, value in obj.items():
        types = LINE_KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = {str: "a string", int: "an integer", dict: "an object"}[types[0]]
            raise BadInput(f"{where}: {key} must be {wanted}, not {json.dumps(value)[:40]}")
    if "prompt" not in obj:
        raise BadInput(f'{where}: no prompt (give {{"prompt": "..."}})')
    try:
        prompt = check_prompt(obj["prompt"])
        if "count" in obj:
            check_count(obj["count"], "count")
        check_extra(obj.get("options", {}), "options:")
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    changes: dict[str, Any] = {k: v for k, v in obj.items() if k not in ("options", "prompt")}
    if "size" in obj or "aspect" in obj:
        changes.setdefault("size", None)
        changes.setdefault("aspect", None)
    if "options" in obj:
        changes["options"] = {**defaults.options, **obj["options"]}
    return _with(defaults, **changes, index=index, where=where, prompt=prompt)


def _with(defaults: Input, **changes: Any) -> Input:
    from dataclasses import replace

    return replace(defaults, **changes)


def inputs_from_lines(lines: Iterable[tuple[int, str]], defaults: Input) -> Iterator[Input]:
    """The inputs of a --from file given as (line number, text) pairs."""
    index = 0
    for line, text in lines:
        parsed = parse_line(text, index, line, defaults)
        if parsed is not None:
            yield parsed
            index += 1


def inputs_from_prompts(prompts: Iterable[str], defaults: Input) -> Iterator[Input]:
    for index, prompt in enumerate(prompts):
        where = f"prompt {index + 1}"
        try:
            checked = check_prompt(prompt)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        yield _with(defaults, index=index, where=where, prompt=checked)


def members(inputs: Iterable[Input], random_seed: Callable[[], int]) -> Iterator[Member]:
    """One member per image asked for: an input's seeds are S, S+1, ... when it gives a seed,
    else each is drawn from `random_seed` (the same function replays the same seeds)."""
    n = 0
    for item in inputs:
        for k in range(item.count):
            seed = item.seed + k if item.seed is not None else random_seed()
            yield Member(n, item, seed)
            n += 1
