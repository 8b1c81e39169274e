"""Generate the TrainingCampaign CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no `$ref`, no
`anyOf` at the top of a property, `nullable` instead of `null` types, boolean `exclusiveMinimum`, every
object typed. This module does that translation, so the CRD can never drift from the models
(`flopwise crd` prints it; a test compares it with `crds/trainingcampaign.yaml`).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from flopwise.api import spec as api
from flopwise.api.status import IMMUTABLE_SECTIONS, TrainingCampaignStatus
from flopwise.contract import GPU_ALIASES, GPU_PEAK_FLOPS

_DROP_KEYS = {"title", "$defs", "discriminator"}


def openapi_schema(model: type, *, mode: str = "validation") -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, with every `$ref` inlined."""
    raw = model.model_json_schema(by_alias=True, mode=mode)
    return _structural(raw, raw.get("$defs", {}))


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    # Optional[X] arrives as anyOf [X, null]: keep X and mark it nullable.
    variants = node.get("anyOf")
    if variants is not None:
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**_structural(non_null[0], defs), **_structural(rest, defs)}
            if len(non_null) < len(variants):
                merged["nullable"] = True
            if merged.get("default", ...) in (None, ""):
                del merged["default"]
            return merged
        raise ValueError(f"a non-structural union cannot become a CRD schema: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value == "":
            continue  # Kubernetes 1.20 rejects empty-string defaults; absent and "" mean the same to pydantic
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "additionalProperties" and value is True:  # free-form (trainer.podTemplate): kept, not pruned
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif (key == "additionalProperties" and isinstance(value, dict)) or key in ("items",):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
        # Nested defaults only apply when their parent object exists: default an optional object to {}
        # when that is itself valid (no required fields), so `spec: {budget: ..., dataset: ...}` gets them all.
        for name, prop in out["properties"].items():
            if (prop.get("type") == "object" and "properties" in prop and not prop.get("required")
                    and name not in out.get("required", []) and "default" not in prop and not prop.get("nullable")):
                prop["default"] = {}
    if out.get("type") == "object" and "additionalProperties" in out and out["additionalProperties"] is False:
        del out["additionalProperties"]  # structural schemas prune unknown fields already
    return out


def _spec_schema(cel: bool) -> dict[str, Any]:
    schema = openapi_schema(api.TrainingCampaignSpec)
    if not cel:
        return schema
    # Cross-field rules need CEL (Kubernetes 1.25+); kubectl refuses the field on older servers, so they are
    # opt-in (`flopwise crd --cel`). flopwise's own validation enforces them on every server.
    known = ", ".join(f"'{name}'" for name in [*GPU_PEAK_FLOPS, *GPU_ALIASES])
    schema["properties"]["gpuPool"]["x-kubernetes-validations"] = [
        {"rule": f"self.gpuType in [{known}] || has(self.peakFlops)",
         "message": "unknown gpuType: use a known type or give gpuPool.peakFlops"},
    ]
    schema["properties"]["budget"]["x-kubernetes-validations"] = [
        {"rule": "has(self.flops) || has(self.usd)", "message": "give budget.flops and/or budget.usd"},
    ]
    for name in IMMUTABLE_SECTIONS:  # transition rules: checked on update only
        schema["properties"][name].setdefault("x-kubernetes-validations", []).append(
            {"rule": "self == oldSelf", "message": f"spec.{name} cannot change once the campaign is planned"})
    schema["properties"]["budget"]["properties"]["split"]["x-kubernetes-validations"] = [
        {"rule": "self.ladder + self.round1 + self.round2 + self.final <= 1.0",
         "message": "budget.split shares must sum to at most 1"},
    ]
    return schema


def _without_defaults(node: Any) -> Any:
    """Status is observation written by flopwise, never defaulted by the API server."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _status_schema() -> dict[str, Any]:
    schema = _without_defaults(openapi_schema(TrainingCampaignStatus, mode="serialization"))
    # conditions are a map keyed by type (metav1.Condition's convention): server-side apply and tools merge them
    schema["properties"]["conditions"].update({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    return schema


PRINTER_COLUMNS = [  # the display strings (status.display), never raw floats; the numbers stay beside them
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Budget-Used", "type": "string", "jsonPath": ".status.display.budgetUsed",
     "description": "share of the budget reserved or spent"},
    {"name": "Target-Params", "type": "string", "jsonPath": ".status.display.targetParams",
     "description": "parameters of the recommended model"},
    {"name": "Predicted-Loss", "type": "string", "jsonPath": ".status.display.predictedLoss",
     "description": "the campaign's own predicted final loss ('-' before its first fit)"},
    {"name": "Runs", "type": "string", "jsonPath": ".status.display.runs", "priority": 1,
     "description": "runs finished / all runs known so far"},
    {"name": "Spent", "type": "string", "jsonPath": ".status.display.spent", "priority": 1,
     "description": "dollars spent (FLOPs where the pool is unpriced)"},
    {"name": "Backtest-ARE", "type": "string", "jsonPath": ".status.display.backtestAre", "priority": 1,
     "description": "the law's absolute relative error on the held-out largest ladder runs"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd_manifest(*, cel: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "flopwise", "app.kubernetes.io/part-of": "flopwise"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.KIND.lower(),
                "shortNames": api.SHORT_NAMES,
                "categories": ["flopwise", "ml"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A compute budget turned into the best model it can buy.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(cel),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml(*, cel: bool = False) -> str:
    header = "# Generated by `flopwise crd` from flopwise/api: do not edit by hand.\n"
    return header + yaml.safe_dump(crd_manifest(cel=cel), sort_keys=False, width=120)


def reference_markdown() -> str:
    """The spec's field reference, generated from the same schema as the CRD (docs/crd-reference.md)."""
    lines = ["# TrainingCampaign reference (`flopwise.dev/v1alpha1`)", "",
             "Generated by `flopwise crd --reference` from the API models; a test fails when it is stale.", "",
             "| field | type | default | bounds | description |", "|---|---|---|---|---|"]

    def bounds(node: dict[str, Any]) -> str:
        parts = []
        for key, sign in (("minimum", ">"), ("maximum", "<")):
            if key in node:
                exclusive = node.get("exclusiveMinimum" if key == "minimum" else "exclusiveMaximum") is True
                parts.append(f"{sign}{'' if exclusive else '='} {node[key]:g}")
        for key, label in (("minLength", "len ≥"), ("maxLength", "len ≤"), ("minItems", "items ≥"),
                           ("maxItems", "items ≤")):
            if key in node:
                parts.append(f"{label} {node[key]}")
        if "enum" in node:
            parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
        if "pattern" in node:
            parts.append(f"pattern `{node['pattern']}`")
        return "; ".join(parts)

    def walk(node: dict[str, Any], path: str, required: bool) -> None:
        kind = node.get("type", "")
        if kind == "array":
            kind = f"array of {node.get('items', {}).get('type', '?')}"
        if kind == "object" and "additionalProperties" in node:
            kind = "map"
        default = node.get("default")
        shown = "" if default is None or default == {} else f"`{json.dumps(default)}`"
        description = node.get("description", "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{path}`{' (required)' if required else ''} | {kind} | {shown} | {bounds(node)} | "
                     f"{description} |")
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}", name in node.get("required", []))
        items = node.get("items")
        if isinstance(items, dict) and "properties" in items:
            for name, child in items["properties"].items():
                walk(child, f"{path}[].{name}", name in items.get("required", []))

    walk(_spec_schema(cel=False), "spec", True)
    return "\n".join(lines) + "\n"
