"""Hypothesis strategies for the instances of a JSON Schema (the subset of 2020-12 the published schemas use), biased
toward the edges valid input reaches in production: empty and longest strings, any Unicode JSON can carry, integers
at the int64 bounds, collections at their size limits. Used by tests/contracts/test_valid_input.py (on the pytest
path through ``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

__all__ = ["CHAR", "INT64", "JSON", "UNBOUNDED", "cycle", "from_schema", "many", "mapping"]

INT64 = (-(1 << 63), (1 << 63) - 1)  # orjson writes no bigger integer (and reads a bigger one as a float)
#: Any character JSON text can carry: orjson refuses lone surrogates (category Cs), and so does JSON's UTF-8.
CHAR = st.characters(blacklist_categories=("Cs",))
#: Longest string or largest collection generated where a schema sets no bound.
UNBOUNDED = 2048

#: Any JSON value (orjson writes integers of at most 64 bits).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64[0], (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(CHAR, max_size=4),
    lambda kids: st.lists(kids, max_size=2) | st.dictionaries(st.text(CHAR, max_size=3), kids, max_size=2),
    max_leaves=4,
)

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default", "examples", "$comment"}
_KNOWN = _ANNOTATIONS | {
    "$ref",
    "type",
    "enum",
    "const",
    "oneOf",
    "anyOf",
    "properties",
    "required",
    "additionalProperties",
    "maxProperties",
    "minProperties",
    "propertyNames",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
}


def _text(lo: int = 0, hi: int | None = None):
    """Strings of ``lo`` to ``hi`` characters: mostly short, sometimes of any allowed length up to the longest.
    A long string repeats a short random one: drawing a thousand characters one by one would cost a thousand
    choices of Hypothesis's budget per string."""
    hi = UNBOUNDED if hi is None else hi
    parts = [st.text(CHAR, min_size=lo, max_size=min(hi, max(lo, 12)))]
    if hi > 12:
        parts.append(st.builds(cycle, st.text(CHAR, min_size=1, max_size=6), st.integers(max(lo, 13), hi)))
    return st.one_of(parts)


def cycle(unit, n: int):
    """``unit`` (a string or a list) repeated to exactly ``n`` items."""
    return (unit * -(-n // len(unit)))[:n]


def many(items, lo: int, hi: int, few: int = 6, odds: int = 3):
    """Lists of ``lo`` to ``hi`` of ``items``: mostly few, now and then many up to ``hi`` (a few drawn items, cycled,
    so that a thousand of them cost no more to draw than three)."""
    small = st.lists(items, min_size=lo, max_size=min(hi, max(lo, few)))
    if hi <= few:
        return small
    return _rarely(small, st.builds(cycle, st.lists(items, min_size=1, max_size=3), _counts(few, lo, hi)), odds)


def _rarely(common, rare, odds: int):
    """``rare`` about one time in ``odds + 1``, else ``common`` (``st.one_of`` would draw each about as often)."""
    return st.integers(0, odds).flatmap(lambda i: rare if i == odds else common)


def _counts(few: int, lo: int, hi: int):
    """Sizes past ``few`` (< ``hi``): a spread of magnitudes up to the bound itself, where things break."""
    return st.sampled_from(sorted(n for n in {few + 1, 2 * few, 32, 100, hi - 1, hi} if max(lo, few + 1) <= n <= hi))


def mapping(names, values, lo: int, hi: int, longest_name: int, few: int = 6, odds: int = 3):
    """Objects of ``lo`` to ``hi`` entries: mostly few, now and then many up to ``hi`` (numbered names of at most
    ``longest_name`` characters, a few drawn values cycled)."""
    small = st.dictionaries(names, values, min_size=lo, max_size=min(hi, max(lo, few)))
    if hi <= few:
        return small
    return _rarely(
        small,
        st.builds(
            _numbered, names, st.lists(values, min_size=1, max_size=3), _counts(few, lo, hi), st.just(longest_name)
        ),
        odds,
    )


def _numbered(name: str, values: list, n: int, longest: int) -> dict:
    """``n`` entries (fewer where two truncated names meet): ``name`` numbered, ``values`` cycled."""
    keys = (name[: longest - len(str(i))] + str(i) for i in range(n))
    return dict(zip(keys, cycle(values, n)))


def _integers(lo: int, hi: int):
    """Integers in ``[lo, hi]``, and (JSON Schema's data model has no int/float split: ``7.0`` *is* the integer 7)
    the same numbers written as floats, where a float holds them exactly."""
    exact = (max(lo, -(1 << 53)), min(hi, 1 << 53))
    floats = st.integers(*exact).map(float) if exact[0] <= exact[1] else st.nothing()
    return st.one_of(st.integers(lo, hi), floats)


def _enum(values: list):
    """An enum's values, a number also written as the other numeric type (``1`` and ``1.0`` are one JSON value)."""
    variants = []
    for v in values:
        variants.append(v)
        if type(v) in (int, float) and float(v).is_integer():
            variants.append(float(v) if type(v) is int else int(v))
    return st.sampled_from(variants)


def from_schema(schema: dict, root: dict | None = None, refine=None, path: str = ""):
    """A strategy for the instances of ``schema`` (a subset of JSON Schema 2020-12: what the published schemas use;
    anything else raises). ``refine(path, schema, build)`` may replace the strategy of a sub-schema at a JSON
    pointer-like ``path`` (``/properties/ts``), e.g. to bias names or bound what the schema states in prose;
    ``build(sub, subpath)`` builds the default one."""
    root = schema if root is None else root
    unknown = schema.keys() - _KNOWN
    if unknown:
        raise NotImplementedError(f"{path or '/'}: schema keywords {sorted(unknown)} are not supported")

    def build(sub: dict, subpath: str):
        return from_schema(sub, root, refine, subpath)

    if refine is not None:
        custom = refine(path, schema, build)
        if custom is not None:
            return custom
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return build(target, path)
    if "const" in schema:
        return _enum([schema["const"]])
    if "enum" in schema:
        return _enum(schema["enum"])
    for key in ("oneOf", "anyOf"):  # the published schemas' branches are disjoint (a string or a number, ...)
        if key in schema:
            return st.one_of([build(sub, f"{path}/{key}/{i}") for i, sub in enumerate(schema[key])])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([build({**schema, "type": k}, path) for k in kind])
    if kind == "string":
        return _text(schema.get("minLength", 0), schema.get("maxLength"))
    if kind == "integer":
        return _integers(max(INT64[0], schema.get("minimum", INT64[0])), min(INT64[1], schema.get("maximum", INT64[1])))
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ints = _integers(
            INT64[0] if lo is None else max(INT64[0], math.ceil(lo)),
            INT64[1] if hi is None else min(INT64[1], math.floor(hi)),
        )
        return st.one_of(ints, st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", UNBOUNDED)
        return many(build(schema.get("items", {}), f"{path}/items"), lo, hi)
    if kind == "object":
        return _object(schema, path, build)
    if not kind and schema.keys() <= _ANNOTATIONS:  # {}: any JSON value
        return JSON
    raise NotImplementedError(f"{path or '/'}: type {kind!r} is not supported")


def _object(schema: dict, path: str, build):
    """A JSON object's strategy: fixed properties (some optional), or a map of names to values."""
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    lo, hi = schema.get("minProperties", 0), schema.get("maxProperties", UNBOUNDED)
    if props:
        if extra is not False or lo or hi < len(props):
            raise NotImplementedError(f"{path or '/'}: fixed properties with additional ones")
        required = set(schema.get("required", ()))
        strategies = {name: build(sub, f"{path}/properties/{name}") for name, sub in props.items()}
        return st.fixed_dictionaries(
            {k: v for k, v in strategies.items() if k in required},
            optional={k: v for k, v in strategies.items() if k not in required},
        )
    name_schema = {"type": "string", **schema.get("propertyNames", {})}
    names = build(name_schema, f"{path}/propertyNames")
    values = build(extra if isinstance(extra, dict) else {}, f"{path}/additionalProperties")
    return mapping(names, values, lo, hi, name_schema.get("maxLength", UNBOUNDED))
