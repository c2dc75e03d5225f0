"""docs/template.schema.json against the examples and the validator's cases.

Every example template (docs/templates/*.json, recipes/templates/*.json and
the JSON blocks of docs/templates.md that are templates) must pass the
schema; each case of template_cases.json that the validator rejects is
rejected by the schema exactly when the case says "schema": true, so the
list of what only the validator can tell (docs/templates.md) stays true.
Usage: python3 test_template_schema.py SOURCE_DIR"""
import copy
import glob
import json
import os
import re
import sys
import unittest

import jsonschema

SRC = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def expand(v):
    """The cases' shorthand '@repeat(x,N)' (merge_patch reads '@null', '@[]'; apply '@replace(J)')."""
    if isinstance(v, str):
        m = re.fullmatch(r"@repeat\((.*),(\d+)\)", v)
        if m:
            return m.group(1) * int(m.group(2))
    if isinstance(v, dict):
        return {k: expand(x) for k, x in v.items()}
    if isinstance(v, list):
        return [expand(x) for x in v]
    return v


def merge_patch(target, patch):
    """RFC 7386; '@null' sets a null instead of removing, '@[]' an empty array."""
    if not isinstance(patch, dict):
        return {"@null": None, "@[]": []}.get(patch, copy.deepcopy(patch)) if isinstance(patch, str) else copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def apply(base, patch):
    if isinstance(patch, str) and patch.startswith("@replace("):
        return json.loads(patch[len("@replace("):-1])
    return merge_patch(base, expand(patch))


def doc_templates():
    """The JSON blocks of docs/templates.md (tagged ```json test=batch) holding a "schema" field."""
    with open(os.path.join(SRC, "docs", "templates.md"), encoding="utf-8") as f:
        text = f.read()
    out = []
    for block in re.findall(r"```json test=batch\n(.*?)```", text, re.S):
        v = json.loads(block)
        if isinstance(v, dict) and "schema" in v:
            out.append(v)
    return out


class Schema(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schema = load(os.path.join(SRC, "docs", "template.schema.json"))
        jsonschema.Draft202012Validator.check_schema(cls.schema)
        cls.v = jsonschema.Draft202012Validator(cls.schema)
        cls.cases = load(os.path.join(HERE, "template_cases.json"))

    def errors(self, doc):
        return [e.message for e in self.v.iter_errors(doc)]

    def test_examples_pass(self):
        files = sorted(glob.glob(os.path.join(SRC, "docs", "templates", "*.json")) +
                       glob.glob(os.path.join(SRC, "recipes", "templates", "*.json")))
        self.assertGreaterEqual(len(files), 2)
        for f in files:
            with self.subTest(f):
                self.assertEqual([], self.errors(load(f)))
        blocks = doc_templates()
        self.assertGreaterEqual(len(blocks), 1)
        for i, d in enumerate(blocks):
            with self.subTest(f"docs/templates.md block {i + 1}"):
                self.assertEqual([], self.errors(d))

    def test_cases(self):
        base = self.cases["base"]
        self.assertEqual([], self.errors(base))
        for c in self.cases["cases"]:
            with self.subTest(c["name"]):
                errs = self.errors(apply(base, c["patch"]))
                if c["errors"] and c["schema"]:
                    self.assertTrue(errs, "the schema should reject it")
                else:
                    self.assertEqual([], errs, "the schema cannot tell this (the case says so); it rejected it")


if __name__ == "__main__":
    unittest.main(verbosity=1)
