#!/usr/bin/env python3
"""Checks JSON values against a JSON Schema (draft 2020-12).

    check_schema.py SCHEMA CASES

CASES is a JSON file {"valid": [...], "invalid": [...]}: every value under
"valid" must validate and every value under "invalid" must not. Prints one
JSON summary line; exits 0 only when every case went as expected.
"""

import json
import sys

from jsonschema import Draft202012Validator


def main() -> int:
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    with open(sys.argv[2]) as f:
        cases = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    problems = []
    for value in cases.get("valid", []):
        errors = [e.message for e in validator.iter_errors(value)]
        if errors:
            problems.append({"value": value, "should": "validate", "errors": errors[:3]})
    for value in cases.get("invalid", []):
        if validator.is_valid(value):
            problems.append({"value": value, "should": "be refused"})
    summary = {
        "ok": not problems,
        "valid": len(cases.get("valid", [])),
        "invalid": len(cases.get("invalid", [])),
        "problems": problems,
    }
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
