"""Generate the TrainingCampaign CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no `$ref`, no
`anyOf` at the top of a property, `nullable` instead of `null` types, boolean `exclusiveMinimum`, every
object typed. This module does that translation, so the CRD can never drift from the models
(`flopwise crd` prints it; a test compares it with `crds/trainingcampaign.yaml`).
"""

from __future__ import annotations

from typing import Any

import yaml

from flopwise.api import spec as api
from flopwise.api.status import TrainingCampaignStatus
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
            if merged.get("default", ...) is None:
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
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
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


def _spec_schema() -> dict[str, Any]:
    schema = openapi_schema(api.TrainingCampaignSpec)
    # Rules the 1.20 schema language cannot state; newer servers (1.25+) enforce them, older ones ignore them,
    # and flopwise's own validation enforces them everywhere.
    known = ", ".join(f"'{name}'" for name in [*GPU_PEAK_FLOPS, *GPU_ALIASES])
    schema["properties"]["gpuPool"]["x-kubernetes-validations"] = [
        {"rule": f"self.gpuType in [{known}] || has(self.peakFlops)",
         "message": "unknown gpuType: use a known type or give gpuPool.peakFlops"},
    ]
    schema["properties"]["budget"]["x-kubernetes-validations"] = [
        {"rule": "has(self.flops) || has(self.usd)", "message": "give budget.flops and/or budget.usd"},
    ]
    schema["properties"]["budget"]["properties"]["split"]["x-kubernetes-validations"] = [
        {"rule": "self.ladder + self.round1 + self.round2 + self.final <= 1.0",
         "message": "budget.split shares must sum to at most 1"},
    ]
    return schema


def _status_schema() -> dict[str, Any]:
    return openapi_schema(TrainingCampaignStatus, mode="serialization")


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Budget-Used", "type": "number", "format": "float", "jsonPath": ".status.ledger.usedPercent",
     "description": "percent of the budget reserved or spent"},
    {"name": "Target-Params", "type": "integer", "jsonPath": ".status.targetParams",
     "description": "parameters of the recommended model"},
    {"name": "Predicted-Loss", "type": "number", "format": "float", "jsonPath": ".status.predictedLoss",
     "description": "predicted final loss of the recommended model"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd_manifest() -> dict[str, Any]:
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
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `flopwise crd` from flopwise/api: do not edit by hand.\n"
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=120)
