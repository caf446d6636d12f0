"""One contract per record: schemas/<record>.schema.json (JSON Schema 2020-12) is the source.

A field or a rule is written there once; the rest is derived from it:

- selfcorrect.records builds the record class from "properties" (names in order, types,
  defaults) and checks every row it reads or writes against those names and types;
- suite() turns the schema into the Great Expectations suite the data gates run,
  schemas/<kind>.suite.json: generated (`make schemas`), and a test fails when it is stale.

    properties                 -> expect_table_columns_to_match_set (exact)
    x-dataset.key              -> one row per key: expect_(compound_)column(s)_..._unique
    enum, const                -> expect_column_values_to_be_in_set
    minimum, maximum           -> expect_column_values_to_be_between
    pattern                    -> expect_column_values_to_match_regex
    maxLength                  -> expect_column_value_lengths_to_be_between
    allOf: {description, properties} or {description, if, then}
                               -> the same, described so; `if` (one property's const)
                                  becomes the row_condition
    x-limit: NAME              -> meta.limit: validate's thresholds set its max_value
    x-dataset.cross_checks     -> meta.cross_checks (pandas, selfcorrect.validate)
    x-dataset.expectations     -> as written: shares of rows, which no single row breaks

A wrong type or name makes a row unusable (records.RecordError, exit 2); a value outside its
set, range or pattern fails the gate (exit 1) and the row can be quarantined. Another JSON
Schema keyword on a property is refused here, so a rule cannot hold in one place only.

    python -m selfcorrect.contract            # rewrite the suites from the schemas
    python -m selfcorrect.contract --check    # exit 1 when a suite is stale
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path

# dataset kind -> record schema (schemas/<record>.schema.json)
RECORDS = {"problems": "problem", "attempts": "attempt", "verdicts": "verdict",
           "eval_rows": "eval_row", "train_steps": "train_step"}
_NOT_RULES = {"type", "default", "description"}
_RULES = {"enum", "const", "minimum", "maximum", "pattern", "maxLength", "x-limit"}
NOTES = ("Generated from {file} by `make schemas` (python -m selfcorrect.contract): edit the "
         "schema, not this file. A Great Expectations 1.x ExpectationSuite, loaded with "
         "gx.ExpectationSuite(**this); meta.key names the columns that identify a row in reports; "
         "meta.cross_checks run in pandas next to it (selfcorrect.validate). An expectation's "
         "meta.threshold names a share (mostly = 1 - share) and meta.limit a bound (max_value) "
         "that validate(thresholds=...) may set.")


def folder(path: str | Path | None = None):
    """The schemas folder: path, or the installed selfcorrect.schemas (schemas/ of a source tree
    on sys.path but not installed)."""
    if path is not None:
        return Path(path)
    try:
        return files("selfcorrect.schemas")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "schemas"


def load(record: str, path: str | Path | None = None) -> dict:
    """The JSON Schema of a record ("problem", "attempt", ...)."""
    return json.loads(folder(path).joinpath(f"{record}.schema.json").read_text(encoding="utf-8"))


def suite(kind: str, schema: dict) -> dict:
    """The GX suite (as data) of a kind of dataset, derived from its record's schema."""
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)
    props, dataset = schema["properties"], schema.get("x-dataset", {})
    key = dataset.get("key", [])
    out = [_expect("expect_table_columns_to_match_set", {"column_set": list(props), "exact_match": True},
                   f"the columns are exactly the {schema['title']} fields")]
    if len(key) == 1:
        out.append(_expect("expect_column_values_to_be_unique", {"column": key[0]}, f"one row per {key[0]}"))
    elif key:
        out.append(_expect("expect_compound_columns_to_be_unique", {"column_list": key},
                           f"one row per ({', '.join(key)})"))
    for column, prop in props.items():
        out += _rules(column, prop)
    for i, rule in enumerate(schema.get("allOf", [])):
        then = rule.get("then", {"properties": rule.get("properties")})
        if set(rule) not in ({"description", "properties"}, {"description", "if", "then"}) \
                or set(then) != {"properties"}:
            raise ValueError(f"{schema['title']}: allOf[{i}]: a rule is {{description, properties}} "
                             "or {description, if, then: {properties}}")
        when = _condition(schema["title"], i, rule.get("if"))
        for column, prop in then["properties"].items():
            out += _rules(column, prop, rule["description"], when)
    out += dataset.get("expectations", [])
    named = key + [e["kwargs"]["column"] for e in out[1:] if "column" in e["kwargs"]]
    if set(named) - set(props):
        raise ValueError(f"{schema['title']}: no such property: {', '.join(sorted(set(named) - set(props)))}")
    meta = {"record": schema["title"], "key": key, "cross_checks": dataset.get("cross_checks", []),
            "notes": NOTES.format(file=f"{RECORDS[kind]}.schema.json")}
    return {"name": kind, "meta": meta, "expectations": out}


def _rules(column: str, prop: dict, description: str | None = None, when: dict | None = None) -> list[dict]:
    """The expectations one property's value keywords make."""
    unknown = set(prop) - _NOT_RULES - _RULES
    if unknown:
        raise ValueError(f"property {column!r}: {', '.join(sorted(unknown))}: no GX expectation is "
                         f"derived from it; the keywords that are: {', '.join(sorted(_RULES))}")
    found = []
    if "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        shown = [v if isinstance(v, str) else json.dumps(v) for v in values]
        either = f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else shown[0]
        found.append(("expect_column_values_to_be_in_set", {"value_set": values}, f"{column} is {either}"))
    if "minimum" in prop or "maximum" in prop:
        bounds = {k: prop[s] for k, s in (("min_value", "minimum"), ("max_value", "maximum")) if s in prop}
        lo, hi = prop.get("minimum"), prop.get("maximum")
        said = (f"lies in [{lo}, {hi}]" if len(bounds) == 2 else f"is at least {lo}" if hi is None
                else f"is at most {hi}")
        found.append(("expect_column_values_to_be_between", bounds, f"{column} {said}"))
    if "pattern" in prop:
        said = "is not blank" if prop["pattern"] == r"\S" else f"matches {prop['pattern']}"
        found.append(("expect_column_values_to_match_regex", {"regex": prop["pattern"]}, f"{column} {said}"))
    if "maxLength" in prop:
        found.append(("expect_column_value_lengths_to_be_between", {"max_value": prop["maxLength"]},
                      f"{column} has at most {prop['maxLength']} characters"))
    limit = prop.get("x-limit")
    if limit and [("max_value" in kw) for _, kw, _ in found] != [True]:
        raise ValueError(f"property {column!r}: x-limit names the upper bound of one rule "
                         "(maximum or maxLength) and the property has no other")
    condition = {"row_condition": when} if when else {}
    return [_expect(kind, {"column": column, **kwargs, **condition}, description or said,
                    {"limit": limit} if limit else None)
            for kind, kwargs, said in found]


def _condition(title: str, i: int, schema: dict | None) -> dict | None:
    """A GX row_condition from an `if` that pins one property: {"properties": {c: {"const": v}}}."""
    if schema is None:
        return None
    props = schema.get("properties", {})
    if set(schema) != {"properties"} or len(props) != 1 or set(*props.values()) != {"const"}:
        raise ValueError(f"{title}: allOf[{i}].if: only one property's const is supported: "
                         '{"properties": {"column": {"const": value}}}')
    (column, pinned), = props.items()
    return {"type": "comparison", "column": {"name": column}, "operator": "==", "parameter": pinned["const"]}


def _expect(kind: str, kwargs: dict, description: str, meta: dict | None = None) -> dict:
    return {"type": kind, "kwargs": kwargs, **({"meta": meta} if meta else {}), "description": description}


def render(suite: dict) -> str:
    """A suite as the text of its file: one expectation a line."""
    lines = ",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in suite["expectations"])
    return (f'{{\n  "name": {json.dumps(suite["name"])},\n'
            f'  "meta": {json.dumps(suite["meta"], ensure_ascii=False)},\n'
            f'  "expectations": [\n{lines}\n  ]\n}}\n')


def main(argv: list[str] | None = None) -> int:
    """`python -m selfcorrect.contract [--check] [--dir schemas]`: write each kind's suite from
    its record schema, or (--check) exit 1 naming the suites that differ from it."""
    parser = argparse.ArgumentParser(prog="python -m selfcorrect.contract", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a suite is stale")
    parser.add_argument("--dir", help="the schemas folder (default: the installed selfcorrect.schemas)")
    args = parser.parse_args(argv)
    stale = []
    for kind, record in RECORDS.items():
        target = folder(args.dir).joinpath(f"{kind}.suite.json")
        text = render(suite(kind, load(record, args.dir)))
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target.name)
            if not args.check:
                Path(str(target)).write_text(text, encoding="utf-8")
    if stale and args.check:
        print(f"stale (run `make schemas`): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"written: {', '.join(stale)}" if stale else "suites up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
