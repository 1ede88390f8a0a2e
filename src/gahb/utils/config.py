"""One config discipline: frozen dataclasses, one typed ``key=value`` parser, field metadata.

* :func:`parse_value`: the text of one ``key=value`` item, typed by the field it sets (its default
  or current value): the one parser behind study ``--set`` overrides, sampler specs
  (``paper:beta=0.2``) and synthetic dataset specs (``calpha:alpha=2,size=32``).
* :func:`parse_spec`: ``"NAME:key=value,key=value"`` into the name and typed values.
* :func:`apply_overrides`: a copy of a frozen dataclass with ``["key=value", ...]`` applied.
* :func:`runtime` and :func:`added`: the two things a field's metadata can say about whether a
  finished result stays valid: a *runtime* field (threads, device, folders) says how or where a run
  executes, not what it computes, so results are reused across its values; an *added* field was
  introduced after some results were written, and ``before`` is the value those results implicitly
  had. :func:`comparable` and :func:`same_result_config` apply both.

Typing rules of :func:`parse_value`, by the field's current value ``like``:

==============  =====================================================================================
``bool``        true/false, yes/no, on/off, 1/0 (any case)
``int``         an integer literal (``2.0`` is an error)
``float``       any float literal (``1e-3``, ``2``)
tuple, list     a JSON list (``[1, 2]``), or ``HxW`` (``40x80`` -> (40, 80))
``str``         the text as given; a JSON object or list when it starts with ``{`` or ``[``
``None``        none/null -> None, else inferred as below
(inferred)      none/null, a bool word, an int, a float, ``HxW``, JSON, else the text
==============  =====================================================================================
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

RUNTIME = "gahb_runtime"  # metadata key: the field does not change the result
BEFORE = "gahb_before"  # metadata key: the value results written before the field existed had
_TRUE, _FALSE, _NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


def runtime(default: Any = dataclasses.MISSING, **kw) -> Any:
    """A field that says how or where a run executes (threads, device, a folder), not what it computes."""
    return dataclasses.field(default=default, metadata={RUNTIME: True}, **kw)


def added(default: Any, before: Any, **kw) -> Any:
    """A field added after some results were written, which then behaved as ``before``."""
    return dataclasses.field(default=default, metadata={BEFORE: before}, **kw)


def _nested(cls) -> dict[str, type]:
    """``{field: dataclass}`` for the fields of ``cls`` whose default is itself a dataclass (a nested config)."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out[f.name] = type(default)
    return out


def runtime_fields(cls) -> frozenset[str]:
    """Names of the fields of dataclass ``cls`` (and of its nested configs) marked :func:`runtime`."""
    own = {f.name for f in dataclasses.fields(cls) if f.metadata.get(RUNTIME)}
    return frozenset(own.union(*(runtime_fields(sub) for sub in _nested(cls).values())))


def before_values(cls) -> dict[str, Any]:
    """``{field: value older results had}`` for the fields of ``cls`` (and of its nested configs, by their
    own names) marked :func:`added`."""
    out = {}
    for sub in _nested(cls).values():
        out.update(before_values(sub))
    out.update({f.name: f.metadata[BEFORE] for f in dataclasses.fields(cls) if BEFORE in f.metadata})
    return out


def flat(d: dict | None, nested=("train",)) -> dict:
    """A config dict with its nested configs (``train``: the training recipe) merged into the top level,
    the form results were written in before the recipe was nested; comparisons use it."""
    out = {}
    for k, v in (d or {}).items():
        if k in nested and isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


def from_dict(cls, d: dict):
    """The dataclass ``cls`` from a saved config dict: lists back to tuples, nested configs rebuilt (also
    from the flat form, their fields at the top level), fields the class no longer has dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    nested = _nested(cls)

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    kw = {k: tup(v) for k, v in d.items() if k in names and k not in nested}
    for name, sub in nested.items():
        sub_names = {f.name for f in dataclasses.fields(sub)}
        values = {k: v for k, v in d.items() if k in sub_names and k not in names}
        if isinstance(d.get(name), dict):
            values.update(d[name])
        if values:
            kw[name] = from_dict(sub, values)
    return cls(**kw)


def comparable(d: dict | None, ignore=frozenset()) -> dict:
    """A config dict without the fields in ``ignore`` (the runtime fields)."""
    return {k: v for k, v in (d or {}).items() if k not in ignore}


def same_result_config(old: dict | None, new: dict, *, ignore=frozenset(), before: dict | None = None) -> bool:
    """Whether results computed with config ``old`` (a dict, as saved) hold for config ``new``.

    Fields in ``ignore`` (runtime) are not compared. A field ``old`` lacks was added after it was
    saved: when ``before`` names the value older results had, ``new`` must ask for that value,
    otherwise the field's default kept the old behaviour and it is not compared.
    """
    if old is None:
        return False
    a, b = comparable(flat(old), ignore), comparable(flat(new), ignore)
    before = before or {}
    if any(k not in a and k in before and b[k] != before[k] for k in b):
        return False
    return all(k in b and a[k] == b[k] for k in a)


# -- the parser ------------------------------------------------------------------------------------
def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is not valid JSON") from None


def _hxw(text: str) -> tuple[int, int] | None:
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _infer(t: str) -> Any:
    low = t.lower()
    if low in _NONE:
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if _hxw(t) is not None:
        return _hxw(t)
    if t[:1] in ("[", "{"):
        v = _json(t)
        return tuple(v) if isinstance(v, list) else v
    return t


def parse_value(text: str, like: Any = dataclasses.MISSING, annotation: str = "") -> Any:
    """The value of ``key=text`` for a field whose current value is ``like`` (see the module docstring).

    ``annotation``, the field's type as written (e.g. ``"float | None"``), refines ``like``: none/null
    give None for an optional field, and an int default of a float field still parses floats.
    """
    t = str(text).strip()
    words = set(re.findall(r"[A-Za-z_]+", annotation))
    if t.lower() in _NONE and ("None" in words or "Optional" in words):
        return None
    if words & {"object", "Any"}:
        return _infer(t)
    if "float" in words and "str" not in words and isinstance(like, int) and not isinstance(like, bool):
        like = float(like)
    if like is dataclasses.MISSING or like is None:
        return _infer(t)
    if isinstance(like, bool):
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError(f"{t!r} is not a bool (true/false, yes/no, on/off, 1/0)")
    if isinstance(like, int):
        try:
            return int(t)
        except ValueError:
            raise ValueError(f"{t!r} is not an int") from None
    if isinstance(like, float):
        try:
            return float(t)
        except ValueError:
            raise ValueError(f"{t!r} is not a float") from None
    if isinstance(like, (tuple, list)):
        hxw = _hxw(t)
        if hxw is not None:
            return hxw
        v = _json(t)
        if not isinstance(v, list):
            raise ValueError(f"{t!r} is not a list (e.g. [1, 2])")
        return tuple(v)
    if isinstance(like, str):
        return _json(t) if t[:1] in ("[", "{") else t
    return _infer(t)


def parse_items(text: str, what: str = "spec") -> list[tuple[str, str]]:
    """``"a=1,b=x"`` into ``[("a", "1"), ("b", "x")]``; an item without ``=`` or a repeated key is an error."""
    items, seen = [], set()
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"bad item {item!r} in {what}: not KEY=VALUE (write key=value)")
        if key in seen:
            raise ValueError(f"{key!r} given twice in {what}")
        seen.add(key)
        items.append((key, value.strip()))
    return items


def field_types(cfg) -> dict[str, tuple[Any, str]]:
    """``{name: (current value, annotation)}`` of a dataclass instance: what :func:`parse_value` types by."""
    return {f.name: (getattr(cfg, f.name), f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
            for f in dataclasses.fields(cfg)}


def parse_spec(spec: str, fields: dict | None = None, what: str = "spec") -> tuple[str, dict]:
    """``"NAME"`` or ``"NAME:key=value,..."`` into ``(NAME, {key: typed value})``.

    ``fields`` maps each allowed key to ``(a value of its type, annotation)`` (see :func:`field_types`);
    None allows any key, each value inferred.
    """
    name, _, rest = str(spec).strip().partition(":")
    out = {}
    for key, text in parse_items(rest, f"{what} {spec!r}"):
        if fields is not None and key not in fields:
            raise ValueError(f"unknown option {key!r} in {what} {spec!r}: KEY=VALUE takes KEY from {sorted(fields)}")
        like, annotation = (dataclasses.MISSING, "") if fields is None else fields[key]
        try:
            out[key] = parse_value(text, like, annotation)
        except ValueError as exc:
            raise ValueError(f"bad {what} {spec!r}: {key} = {text!r}: {exc}") from None
    return name.strip(), out


def apply_overrides(cfg, overrides: list[str] | dict | None):
    """A copy of the dataclass ``cfg`` with ``["key=value", ...]`` (or a dict of values) applied.

    Keys may use dashes for underscores. A key that names a field of a nested config (``epochs`` of
    the training recipe ``train``) sets it there; ``train.epochs`` says so explicitly. Unknown keys
    are an error that lists the valid ones.
    """
    if not overrides:
        return cfg
    types = field_types(cfg)
    nested = {name: getattr(cfg, name) for name in _nested(type(cfg))}
    inner = {k: name for name, sub in nested.items() for k in field_types(sub) if k not in types}

    def where(key: str) -> tuple[str | None, str]:
        head, dot, tail = key.partition(".")
        if dot and head in nested and tail in field_types(nested[head]):
            return head, tail
        if key in types:
            return None, key
        if key in inner:
            return inner[key], key
        valid = sorted(set(types) | set(inner))
        raise ValueError(f"unknown setting {key!r} for {type(cfg).__name__}; valid: {valid}")

    top, sub = {}, {name: {} for name in nested}
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
            key, text = item.split("=", 1)
            items.append((key.strip().replace("-", "_"), (item, text)))
    for key, value in items:
        parent, name = where(key)
        target = cfg if parent is None else nested[parent]
        if isinstance(value, tuple) and not isinstance(overrides, dict):
            item, text = value
            try:
                value = parse_value(text, *field_types(target)[name])
            except ValueError as exc:
                raise ValueError(f"--set {item}: {exc}") from None
        (top if parent is None else sub[parent])[name] = value
    for name, values in sub.items():
        if values:
            top[name] = dataclasses.replace(top.get(name, nested[name]), **values)
    return dataclasses.replace(cfg, **top)
