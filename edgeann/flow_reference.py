"""The flow key reference, generated from the flow schema (:mod:`edgeann.config`): one source of truth.

``edgeann keys`` prints it; ``docs/flow_keys.md`` is the same text, and a test keeps the two equal.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgeann.config import Flow, _is_union, _union_members
from edgeann.errors import EdgeannError

HEADER = """# Flow keys

Generated from the flow schema (`edgeann/config.py`) by `edgeann keys`; `edgeann keys SECTION` narrows
it (e.g. `edgeann keys pruning`, `edgeann keys data.jets`, `edgeann keys model.cnn`). Every key can be set in
the flow file or with `--set key.path=value`; choices are case-insensitive and lists may be written `64,32`.

"""


def _doc(cls: type) -> str:
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())


def _strip(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _type_name(annotation: Any) -> str:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if _is_union(annotation):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(_type_name(a) for a in parts)
        return text + (" or null" if len(parts) < len(get_args(annotation)) else "")
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"map of name to {_type_name(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    from pathlib import Path

    return {int: "int", float: "float", bool: "bool", str: "string", Path: "path"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(annotation: Any) -> list:
    """Constraints inside a type (``list[Annotated[int, Field(gt=0)]]``), for the items of a list."""
    found = []
    for arg in get_args(_strip(annotation)) or ():
        for m in getattr(arg, "__metadata__", ()):
            found += list(getattr(m, "metadata", [m]))
        found += _constraints(arg) if get_origin(arg) in (list, Union) else []
    return found


def _range(field) -> str:
    words = []
    items = _constraints(field.annotation)
    for m in list(field.metadata) + [None] + items:
        if m is None:
            words.append("items:")
            continue
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                words.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            words.append(f"at least {m.min_length} item(s)")
        if isinstance(m, annotated_types.MaxLen):
            words.append(f"at most {m.max_length} item(s)")
    text = ", ".join(dict.fromkeys(words)).replace("items:, ", "items ")
    return text.removesuffix("items:").rstrip(", ")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value}`" if value not in (None, "") else ("`null`" if value is None else "`''`")


def _section_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _sections(cls: type[BaseModel], path: str, title: str, outer: dict | None = None) -> list[tuple[str, str, str]]:
    """(path, title, markdown) for ``cls`` and every section below it, depth first. ``outer``: the unions being
    described already, by members, with their path (a residual block holds the same layer kinds as the model)."""
    outer = dict(outer or {})
    rows, below = [], []
    for name, field in cls.model_fields.items():
        key = f"{path}.{name}" if path else name
        members = _union_members(field.annotation)
        inner = _strip(field.annotation)
        if get_origin(inner) is list and not members:
            members = _union_members(get_args(inner)[0])
            item_path = f"{key}[]"
        else:
            item_path = key
        section = _section_of(field.annotation)
        desc = field.description or (_doc(section) if section else "")
        if members:
            tag = next(t for t in ("source", "family", "type") if t in next(iter(members.values())).model_fields)
            kinds = tuple(members)
            kind = "list of sections" if item_path != key else "section"
            if kinds in outer:
                rows.append((key, kind, _default(field), "", (desc + " " if desc else "")
                             + f"Items as in `{outer[kinds]}` (by `{tag}`)."))
                continue
            desc = (desc + " " if desc else "") + f"One of the `{tag}` sections below."
            rows.append((key, kind, _default(field), "", desc))
            outer[kinds] = item_path
            for tag_value, member in members.items():
                below += _sections(member, item_path, f"{item_path} ({tag}: {tag_value})", outer)
        elif section is not None:
            rows.append((key, "section", _default(field), "", desc))
            below += _sections(section, key, key)
        elif get_origin(inner) is dict and _section_of(get_args(inner)[1]):
            rows.append((key, _type_name(field.annotation), _default(field), "", desc))
            below += _sections(_section_of(get_args(inner)[1]), f"{key}.<name>", f"{key}.<name>")
        else:
            rows.append((key, _type_name(field.annotation), _default(field), _range(field), desc))
    lines = [f"## {title}", ""]
    doc = _doc(cls)
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") if i != 1 else cell for i, cell in enumerate(
        [f"`{k}`", t, d, r, m])) + " |" for k, t, d, r, m in rows]
    return [(path, title, "\n".join(lines) + "\n")] + below


def reference_markdown(section: str | None = None) -> str:
    """The whole reference, or the sections whose path or title starts with ``section`` (``data.jets``
    selects the ``data`` section with ``source: jets``)."""
    parts, seen = [], set()
    for path, title, md in _sections(Flow, "", "top level (name, seed, sections)"):
        if (title, md) not in seen:  # a section shared by several kinds (data.split) is shown once
            seen.add((title, md))
            parts.append((path, title, md))
    if section:
        want = section.strip().lower()
        head, _, tag = want.partition(".")
        chosen, within = [], None
        for path, title, md in parts:
            nested = within is not None and (path.startswith(within + ".") or path.startswith(within + "["))
            if tag and title.lower().startswith(head + " (") and title.lower().endswith(f": {tag})"):
                within = path
                chosen.append(md)
            elif nested or path.lower() == want or path.lower().startswith((want + ".", want + "[")):
                chosen.append(md)
            else:
                within = None
        if not chosen:
            known = sorted({p.split(".")[0].split("[")[0] for p, _, _ in parts if p})
            raise EdgeannError(f"no flow section {section!r} (sections: {', '.join(known)}; e.g. data.jets, model.cnn)")
        return HEADER + "\n".join(chosen)
    return HEADER + "\n".join(md for _, _, md in parts)
