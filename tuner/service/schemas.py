"""Request bodies of the job-creating endpoints, derived from each job kind's request dataclass (declared once
with tuner.jobs.fields.option, which the CLI's arguments come from too).

The body is checked by `fields.from_dict` (one clear line per mistake, the same checks as the CLI); the JSON
schema built here only documents it in the OpenAPI docs and drives the web UI's form.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import Field, create_model

from tuner.jobs import fields as job_fields


def field_list(request_type: type) -> list[dict[str, Any]]:
    """One entry per field of `request_type` (options of the CLI, and API-only fields such as device_name): name, type (string|integer|number|boolean|list), default (None:
    none), required, choices, help, group. The web UI builds its job form from this."""
    out = []
    for f in dataclasses.fields(request_type):
        kind = job_fields._kind(request_type, f)
        type_name = ("list" if typing.get_origin(kind) is tuple else
                     {bool: "boolean", int: "integer", float: "number"}.get(kind, "string"))
        default = None if f.default is dataclasses.MISSING else f.default
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(default, float) and default in (float("inf"),):
            default = "inf"
        out.append({"name": f.name, "type": type_name, "default": default,
                    "required": f.default is dataclasses.MISSING, "choices": list(f.metadata.get("choices") or []),
                    "help": f.metadata.get("help", "") or _API_ONLY_HELP.get(f.name, ""),
                    "group": f.metadata.get("group", "")})
    return out


_API_ONLY_HELP = {"device_name": "the GPU it is for, as torch.cuda.get_device_name() says (e.g. NVIDIA H200); "
                                  "empty: GPU 0 of the service's host"}
_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float | str, "boolean": bool,
                             "list": list[str]}


def body_schema(request_type: type) -> dict[str, Any]:
    """The JSON schema of a request body for the OpenAPI docs (numbers may also be "inf")."""
    definitions: dict[str, Any] = {}
    for item in field_list(request_type):
        annotation = _PY_TYPES[item["type"]]
        if item["required"]:
            definitions[item["name"]] = (annotation, Field(..., description=item["help"]))
        else:
            definitions[item["name"]] = (annotation | None, Field(item["default"], description=item["help"]))
    model = create_model(request_type.__name__, **definitions)
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    return schema
