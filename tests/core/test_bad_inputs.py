"""Bad input given to the `k2e` command: exit 2, one line naming the field (or file) and the
fix, nothing published, before any training."""

from __future__ import annotations

import copy

import pytest

from tests.core.test_cli import _main, _write, assert_refused


def _cases(tmp_path, iris_spec):
    """name -> (spec changes, extra CLI arguments, the line's start)."""
    (tmp_path / "syntax.py").write_text("def build(:\n    pass\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "bad.json").write_text('{"train.steps": 10,,}')
    (tmp_path / "corrupt.npz").write_bytes(b"not an archive")
    return {
        "corrupt .npz": ({"data": dict(iris_spec["data"], train={"files": str(tmp_path / "corrupt.npz")},
                                       eval=None)}, [], "data.train.files: "),
        "--set value not YAML": ({}, ["--set", "train.steps=[1,"], "--set: 'train.steps=[1,'"),
        "--overrides not JSON": ({}, ["--overrides", str(tmp_path / "bad.json")], "--overrides: cannot read"),
        "model_dir protocol": ({"model_dir": "foo://bucket/model"}, [], "model_dir: unknown protocol 'foo'"),
        "export.base protocol": ({"export": {"base": "foo://bucket/export"}}, [],
                                 "export.base: unknown protocol 'foo'"),
        "factory syntax error": ({"model": {"factory": str(tmp_path / "syntax.py") + ":build"}}, [],
                                 "model.factory: importing"),
        "factory module raises": ({"model": {"factory": str(tmp_path / "raises.py") + ":build"}}, [],
                                  "model.factory: importing"),
    }


CASES = ["corrupt .npz", "--set value not YAML", "--overrides not JSON", "model_dir protocol",
         "export.base protocol", "factory syntax error", "factory module raises"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_naming_the_field(case, iris_spec, tmp_path, capsys):
    change, args, expected = _cases(tmp_path, iris_spec)[case]
    spec = copy.deepcopy(iris_spec)
    spec.update(change)
    spec["data"] = {k: v for k, v in spec["data"].items() if v is not None}
    assert_refused(*_main(["validate", _write(tmp_path, spec), *args], capsys), expected,
                   iris_spec["export"]["base"])


@pytest.mark.parametrize("source,expected", [
    ("{not json", "spec: the inline JSON spec is not valid JSON"),
    ("DIR", "spec: DIR is a directory"),
    ("foo://bucket/job.yaml", "spec: unknown protocol 'foo' in foo://bucket/job.yaml"),
])
def test_a_spec_that_cannot_be_read_is_named(tmp_path, capsys, source, expected):
    source = source.replace("DIR", str(tmp_path))
    code, out, err = _main(["validate", source], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("k2e: error: " + expected.replace("DIR", str(tmp_path))), lines[0]
