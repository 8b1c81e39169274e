"""Read a campaign from YAML and turn every problem into a message that names the field and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flopwise.api.spec import FieldProblem, TrainingCampaign

MAX_FILE_BYTES = 1 << 20  # etcd refuses objects over ~1.5 MiB; a campaign file is a few KiB


class CampaignError(ValueError):
    """A campaign that cannot be used, with one line per problem (`field: what is wrong. fix`)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Loader(yaml.SafeLoader):
    """YAML as kubectl reads it: `1e21` and `1.5e3` are numbers (YAML 1.2), not the strings PyYAML's 1.1 rules
    make of them (validation is strict, so a string is never coerced into a number)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_./-]{1,63}$")


def field_path(loc: tuple[Any, ...]) -> str:
    """`('spec', 'budget', 'split', 'ladder')` → `spec.budget.split.ladder`; list indices as `[i]`. A key that
    is not plain (a user's map key or unknown field: newlines, control or non-ASCII characters, very long) is
    shown quoted and shortened, `spec.gpuPool["a\\nb"]`, so one problem stays one line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += ("." if out else "") + str(part)
        else:
            quoted = json.dumps(str(part))
            out += f"[{quoted[:40]}…]" if len(quoted) > 40 else f"[{quoted}]"
    return out or "(top level)"


def _field_parts(field: str) -> tuple[Any, ...]:
    """A FieldProblem's field, `containers[0].securityContext`, as a location: ('containers', 0, …)."""
    out: list[Any] = []
    for part in field.split("."):
        name, _, rest = part.partition("[")
        indices = re.findall(r"\[(\d+)\]", "[" + rest) if rest else []
        if rest and "[" + rest != "".join(f"[{i}]" for i in indices):
            out.append(part)  # not an index suffix: a key as it is
            continue
        if name:
            out.append(name)
        out += [int(i) for i in indices]
    return tuple(out)


def _hint(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "remove it or fix its spelling (see `flopwise crd` for the schema)"
    if kind == "missing":
        return "add it"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return "use a value in range"
    if kind == "literal_error":
        return "use one of the listed values"
    return ""


def describe(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    """One readable line per pydantic error (the value is shown, shortened, never the whole input)."""
    lines = []
    for err in error.errors(include_url=False):
        # A model-level validator reports at its model's path; its message already says what to do.
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = ""
        if err["type"] not in ("missing", "value_error") and not isinstance(got, dict | list):
            text = repr(got)
            shown = f" (got {text[:60]}{'…' if len(text) > 60 else ''})"
        hint = _hint(err)
        loc = prefix + tuple(err["loc"])
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem) and problem.field:
            loc += _field_parts(problem.field)
        lines.append(f"{field_path(loc)}: {message}{shown}" + (f"; {hint}" if hint else ""))
    return lines


def parse_campaign(document: Any) -> TrainingCampaign:
    if not isinstance(document, dict):
        raise CampaignError(["(top level): a campaign is a YAML mapping with apiVersion, kind, metadata and spec"])
    try:
        # strict: no coercion (a string "1e21" or a boolean for a number) that the API server would refuse
        return TrainingCampaign.model_validate(document, strict=True)
    except ValidationError as error:
        raise CampaignError(describe(error)) from None


def load_campaign(path: str | Path) -> TrainingCampaign:
    """Load and validate one TrainingCampaign from a YAML (or JSON) file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CampaignError([f"{path}: {size} bytes is too large for a campaign (limit {MAX_FILE_BYTES})"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CampaignError([f"{path}: cannot read the file ({error})"]) from None
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as error:
        raise CampaignError([f"{path}: not valid YAML ({str(error).splitlines()[0]})"]) from None
    if len(documents) != 1:
        raise CampaignError([f"{path}: expected exactly one YAML document, found {len(documents)}"])
    return parse_campaign(documents[0])
