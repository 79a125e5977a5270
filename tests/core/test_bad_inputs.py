"""The catalogue of bad inputs and faults, as a user meets them at the `k2e` command.

Every case starts from a job that has trained (checkpoints at steps 0, 10, 20, 30) and
published version 1, breaks one thing (the spec, an argument, the model, a data file, a
storage location, a checkpoint) and runs one command. What the user sees is checked the
same way each time: the exit code (2: bad input, 1: a failure, 3: one a rerun would
repeat), one line naming the field or file and then the fix (k2e's own log lines aside),
nothing on stdout, no traceback, and model_dir and the export base exactly as they were:
nothing published, nothing lost.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests.conftest import BUCKET, EXAMPLES, iris_job
from tests.core.test_cli import DIVERGING, _main, _write, problem_lines


@dataclass
class Case:
    expect: str  # the line's start after "k2e: error: " (or "k2e: failed: "); {tmp}: the case's dir
    change: dict | Callable = field(default_factory=dict)  # spec updates, or (spec, ws) -> spec
    args: tuple = ()  # more CLI arguments; "{tmp}" is the case's directory
    command: str = "run"
    code: int = 2
    setup: Callable | None = None  # (ws) -> None: files to write or break first
    source: Callable | None = None  # (ws) -> the spec argument, instead of the spec's file
    env: dict = field(default_factory=dict)
    s3: bool = False  # needs the S3 server (its options go into storage.options)


class Workspace:
    """A copy of the trained job in the case's own directory."""

    def __init__(self, trained, tmp_path):
        self.tmp = tmp_path
        self.model_dir = str(tmp_path / "model")
        self.export = str(tmp_path / "export")
        shutil.copytree(trained["model_dir"], self.model_dir)
        shutil.copytree(trained["export"], self.export)
        self.spec = copy.deepcopy(trained["spec"])
        self.spec.update(model_dir=self.model_dir, export={"base": self.export})
        self.train_csv = trained["spec"]["data"]["train"]["files"]

    def write(self, name, text: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def csv_with(self, name, line, row) -> str:
        """The training CSV with its line `line` (the header is line 1) replaced by `row`."""
        with open(self.train_csv) as f:
            lines = f.read().splitlines()
        lines[line - 1] = row
        return self.write(name, "\n".join(lines) + "\n")

    def tfrecord(self, name, bad_record: int, copies: int = 1) -> str:
        """The training CSV's rows (`copies` times) as tf.train.Example records, as a
        TFRecord writer writes them, with record `bad_record` (1-based) replaced by bytes
        that are no Example."""
        import csv

        import tensorflow as tf

        path = str(self.tmp / name)
        with open(self.train_csv) as f:
            rows = list(csv.DictReader(f)) * copies
        with tf.io.TFRecordWriter(path) as writer:
            for number, row in enumerate(rows, 1):
                if number == bad_record:
                    writer.write(b"\x0a\xff truncated")
                    continue
                feature = {
                    k: tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
                    for k, v in row.items()
                    if k != "species"
                }
                feature["species"] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(row["species"])])
                )
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        return path

    def snapshot(self) -> dict:
        """{path: sha256} of every file in model_dir and the export base."""
        found = {}
        for root in (self.model_dir, self.export):
            for d, _, files in os.walk(root):
                for name in files:
                    with open(os.path.join(d, name), "rb") as f:
                        found[os.path.join(d, name)] = hashlib.sha256(f.read()).hexdigest()
        return found


def _data(**changes) -> Callable:
    def change(spec, ws):
        spec["data"] = {
            **spec["data"],
            **{k: v(ws) if callable(v) else v for k, v in changes.items()},
        }
        return spec

    return change


def _train_file(make) -> Callable:
    return _data(train=lambda ws: {"files": make(ws)})


def _model(**model) -> Callable:
    def change(spec, ws):
        spec["model"] = {k: v(ws) if callable(v) else v for k, v in model.items()}
        return spec

    return change


def _factory(name, text) -> Callable:
    return _model(factory=lambda ws: ws.write(name, text) + ":build")


def _damage_checkpoints(steps, how="garble") -> Callable:
    def setup(ws):
        for name in os.listdir(ws.model_dir):
            if any(name.startswith(f"model.ckpt-{s}.data") for s in steps):
                path = os.path.join(ws.model_dir, name)
                if how == "remove":
                    os.remove(path)
                else:
                    size = os.path.getsize(path)
                    with open(path, "wb") as f:
                        f.write(np.random.default_rng(0).bytes(size))

    return setup


IRIS_ROW = "5.1,3.5,1.4,0.2,0"
UNCOMPILED = (
    "import tensorflow as tf\n"
    "def build():\n"
    "    return tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])\n"
)
FACTORY = os.path.join(EXAMPLES, "models.py") + ":iris_model"

CASES = {
    # ---------------------------------------------------------------- the spec
    "spec file missing": Case(
        "spec: no spec file at {tmp}/nope.yaml", source=lambda ws: str(ws.tmp / "nope.yaml")
    ),
    "spec is a directory": Case("spec: {tmp} is a directory", source=lambda ws: str(ws.tmp)),
    "spec is binary": Case(
        "spec: {tmp}/job.bin is not a text file",
        source=lambda ws: ws.write("job.bin", b"\x9d\x00\xff" * 10),
    ),
    "spec YAML syntax": Case(
        "spec: {tmp}/bad.yaml is not valid YAML/JSON",
        source=lambda ws: ws.write("bad.yaml", "model: [1,\n"),
    ),
    "spec is a list": Case(
        "spec: {tmp}/list.yaml is not a mapping of fields",
        source=lambda ws: ws.write("list.yaml", "[1, 2]\n"),
    ),
    "inline JSON spec invalid": Case(
        "spec: the inline JSON spec is not valid JSON", source=lambda ws: "{not json"
    ),
    "spec URL protocol": Case("spec: unknown protocol 'foo'", source=lambda ws: "foo://b/job.yaml"),
    "--set not KEY=VALUE": Case(
        "--set: 'train.steps' is not KEY=VALUE", args=("--set", "train.steps")
    ),
    "--set value not YAML": Case("--set: 'train.steps=[1,'", args=("--set", "train.steps=[1,")),
    "--overrides not JSON": Case(
        "--overrides: cannot read",
        args=("--overrides", "{tmp}/bad.json"),
        setup=lambda ws: ws.write("bad.json", '{"train.steps": 10,,}'),
    ),
    "--overrides not a mapping": Case(
        "--overrides: {tmp}/list.json is not a mapping",
        args=("--overrides", "{tmp}/list.json"),
        setup=lambda ws: ws.write("list.json", "[1]"),
    ),
    "--overrides missing": Case(
        "--overrides: cannot read {tmp}/none.json", args=("--overrides", "{tmp}/none.json")
    ),
    "unknown field": Case("train.epochs: unknown field", {"train": {"steps": 10, "epochs": 3}}),
    "wrong type": Case(
        "train.steps: Input should be a valid integer", {"train": {"steps": "many"}}
    ),
    "steps <= 0": Case("train.steps: Input should be greater than 0", {"train": {"steps": 0}}),
    "required field": Case(
        "data: required field is missing",
        lambda spec, ws: {k: v for k, v in spec.items() if k != "data"},
    ),
    "checkpoint steps and secs": Case(
        "run_config: save_checkpoints_steps and save_checkpoints_secs are both set",
        {"run_config": {"save_checkpoints_steps": 100, "save_checkpoints_secs": 30}},
    ),
    "batch size 0": Case("data.batch_size: Input should be greater than 0", _data(batch_size=0)),
    "storage.retries 0": Case(
        "storage.retries: Input should be greater than or equal to 1", {"storage": {"retries": 0}}
    ),
    "model_dir protocol": Case("model_dir: unknown protocol 'foo'", {"model_dir": "foo://b/model"}),
    "export.base protocol": Case(
        "export.base: unknown protocol 'foo'", {"export": {"base": "foo://b/e"}}
    ),
    "TF_CONFIG for evaluate": Case(
        "TF_CONFIG: names a worker task",
        command="evaluate",
        env={
            "TF_CONFIG": '{"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"], '
            '"ps": ["localhost:3"]}, '
            '"task": {"type": "worker", "index": 0}}'
        },
    ),
    "--cluster layout": Case(
        "--cluster: 'workers=abc' is not ROLE=COUNT",
        command="train",
        args=("--cluster", "workers=abc"),
    ),
    # ---------------------------------------------------------------- the model
    "no model": Case("model: no model source", _model()),
    "both sources": Case(
        "model: both model.factory and model.path are set", _model(factory=FACTORY, path="m.keras")
    ),
    "factory file missing": Case(
        "model.factory: '{tmp}/no.py:build': no such file",
        _model(factory=lambda ws: str(ws.tmp / "no.py") + ":build"),
    ),
    "factory function missing": Case(
        f"model.factory: '{EXAMPLES}/models.py:nope': ",
        _model(factory=os.path.join(EXAMPLES, "models.py") + ":nope"),
    ),
    "factory syntax error": Case(
        "model.factory: importing", _factory("syntax.py", "def build(:\n    pass\n")
    ),
    "factory module raises": Case(
        "model.factory: importing", _factory("raises.py", "raise RuntimeError('no GPU here')\n")
    ),
    "factory raises": Case(
        "model.factory: {tmp}/fails.py:build raised ValueError: x",
        _factory("fails.py", "def build():\n    raise ValueError('x')\n"),
    ),
    "factory returns a non-model": Case(
        "model.factory: {tmp}/number.py:build returned int",
        _factory("number.py", "def build():\n    return 3\n"),
    ),
    "factory kwargs": Case(
        f"model.factory: {FACTORY} raised TypeError",
        _model(factory=FACTORY, factory_kwargs={"nope": 1}),
    ),
    "uncompiled model": Case(
        "model.factory: the Keras model is not compiled", _factory("uncompiled.py", UNCOMPILED)
    ),
    "model file missing": Case(
        "model.path: no Keras model at", _model(path=lambda ws: str(ws.tmp / "no.keras"))
    ),
    "model file corrupt": Case(
        "model.path: cannot load a Keras model",
        _model(path=lambda ws: ws.write("corrupt.keras", b"not a model")),
    ),
    "checkpoint format": Case(
        "model.checkpoint_format:", _model(factory=FACTORY, checkpoint_format="pickle")
    ),
    "custom_objects path": Case(
        "model.custom_objects: 'no.module:X': cannot import no.module",
        _model(factory=FACTORY, custom_objects={"X": "no.module:X"}),
    ),
    "metric_names_map": Case(
        "model.metric_names_map: unknown Keras metric names",
        _model(factory=FACTORY, metric_names_map={"auc": "a"}),
    ),
    "gate metric unknown": Case(
        "gate.metrics.aucc: the evaluation reports no such metric",
        {"gate": {"metrics": {"aucc": {"at_least": 0.5}}}},
    ),
    # ---------------------------------------------------------------- the data
    "data file missing": Case(
        "data.train.files: no file matches {tmp}/x.csv;",
        _train_file(lambda ws: str(ws.tmp / "x.csv")),
    ),
    "data file empty": Case(
        "data.train.files: {tmp}/empty.csv is empty",
        _train_file(lambda ws: ws.write("empty.csv", "")),
    ),
    "corrupt .npz": Case(
        "data.train.files: {tmp}/c.npz is not a NumPy .npz file",
        _data(train=lambda ws: {"files": ws.write("c.npz", b"PK\x03 no")}, eval=None),
    ),
    "damaged TFRecord": Case(
        "data.train.files: {tmp}/d.tfrecord is not a TFRecord file (corrupted record at 0",
        _data(
            train=lambda ws: {
                "files": ws.write("d.tfrecord", b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
            },
            eval=None,
        ),
    ),
    "TFRecord of something else": Case(
        "data.train.files: {tmp}/other.tfrecord record 1 is not a tf.train.Example; "
        "write tf.train.Example records",
        _data(train=lambda ws: {"files": ws.tfrecord("other.tfrecord", 1)}, eval=None),
    ),
    "TFRecord with a stray record past the sampled ones": Case(
        "data.train.files: {tmp}/late.tfrecord record 230 is not a tf.train.Example; "
        "write tf.train.Example records",
        _data(train=lambda ws: {"files": ws.tfrecord("late.tfrecord", 230, copies=2)}, eval=None),
        args=("--full",),
    ),
    "unknown data format": Case(
        "data.train.format: cannot tell the format of x.avro",
        _train_file(lambda ws: ws.write("x.avro", "Obj\x01")),
    ),
    "not a parquet file": Case(
        "data.train.files: {tmp}/x.parquet is not a Parquet file",
        _train_file(lambda ws: ws.write("x.parquet", "PAR1")),
    ),
    "ragged row": Case(
        "data.train.files: {tmp}/r.csv line 5 has 6 fields, the header 5",
        _train_file(lambda ws: ws.csv_with("r.csv", 5, IRIS_ROW + ",7")),
    ),
    "text in a number column": Case(
        "data.features.dense_input: column 'sepal_width' of data.train "
        "files holds text (line 6: 'abc')",
        _train_file(lambda ws: ws.csv_with("t.csv", 6, "5.1,abc,1.4,0.2,0")),
    ),
    "empty cell": Case(
        "data.train.files: {tmp}/e.csv line 7 column 'sepal_width' is missing ('')",
        _train_file(lambda ws: ws.csv_with("e.csv", 7, "5.1,,1.4,0.2,0")),
    ),
    "nan cell": Case(
        "data.train.files: {tmp}/n.csv line 8 column 'sepal_width' is missing ('nan')",
        _train_file(lambda ws: ws.csv_with("n.csv", 8, "5.1,nan,1.4,0.2,0")),
    ),
    "inf cell": Case(
        "data.train.files: {tmp}/i.csv line 9 column 'petal_length' is 'inf', not a finite number",
        _train_file(lambda ws: ws.csv_with("i.csv", 9, "5.1,3.5,inf,0.2,0")),
    ),
    "label outside the classes": Case(
        "data.train.files: {tmp}/l.csv line 10 column 'species': label 7 is outside",
        _train_file(lambda ws: ws.csv_with("l.csv", 10, "5.1,3.5,1.4,0.2,7")),
    ),
    "unclosed quote": Case(
        "data.train.files: {tmp}/q.csv line 4: a quoted field runs over",
        _train_file(lambda ws: ws.csv_with("q.csv", 4, '5.1,"3.5,1.4,0.2,0')),
    ),
    "header differs": Case(
        "data.train.files: {tmp}/h.csv has the header ['a',",
        _data(train=lambda ws: {"files": [ws.train_csv, ws.csv_with("h.csv", 1, "a,b,c,d,e")]}),
    ),
    "feature names": Case(
        "data.features: the model expects inputs ['dense_input']", _data(features=None)
    ),
    "label shape": Case(
        "data.labels: labels of shape", _data(labels=["sepal_length", "sepal_width", "species"])
    ),
    "label column missing": Case(
        "data.labels.dense_1: columns ['kind'] are not in data.train files", _data(labels="kind")
    ),
    # ---------------------------------------------------------------- storage and locations
    "model_dir is a file": Case(
        "model_dir: cannot write to {tmp}/file: {tmp}/file is a file, not a directory",
        lambda spec, ws: {**spec, "model_dir": ws.write("file", "x")},
    ),
    "model_dir under a file": Case(
        "model_dir: cannot write to {tmp}/file/model: {tmp}/file is a file, so",
        lambda spec, ws: {**spec, "model_dir": ws.write("file", "x") + "/model"},
    ),
    "export.base under a file": Case(
        "export.base: cannot write to {tmp}/file/export: {tmp}/file is a file, so",
        lambda spec, ws: {**spec, "export": {"base": ws.write("file", "x") + "/export"}},
    ),
    "candidates is a file": Case(
        "export.base: cannot write to {tmp}/export: {tmp}/export/candidates is a file",
        setup=lambda ws: (
            shutil.rmtree(os.path.join(ws.export, "candidates"), ignore_errors=True),
            open(os.path.join(ws.export, "candidates"), "w").close(),
        ),
    ),
    "model_dir bucket missing": Case(
        "model_dir: cannot write to s3://no-such-bucket/m: bucket 'no-such-bucket' does not exist",
        {"model_dir": "s3://no-such-bucket/m"},
        s3=True,
    ),
    "export bucket missing": Case(
        "export.base: cannot write to s3://no-such-bucket/e: bucket",
        {"export": {"base": "s3://no-such-bucket/e"}},
        s3=True,
    ),
    "data bucket missing": Case(
        "data.train.files: no file matches s3://no-such-bucket/x.csv (bucket "
        "'no-such-bucket' does not exist)",
        _train_file(lambda ws: "s3://no-such-bucket/x.csv"),
        s3=True,
    ),
    "data object missing": Case(
        f"data.train.files: no file matches s3://{BUCKET}/none.csv;",
        _train_file(lambda ws: f"s3://{BUCKET}/none.csv"),
        s3=True,
    ),
    "storage unreachable": Case(
        "model_dir: cannot reach s3://b/m",
        {
            "model_dir": "s3://b/m",
            "storage": {
                "retries": 2,
                "options": {
                    "s3": {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"}
                },
            },
        },
        code=1,
    ),
    "warm start missing": Case(
        "warm_start: no checkpoint at {tmp}/nothing;",
        lambda spec, ws: {
            **spec,
            "model_dir": str(ws.tmp / "fresh"),
            "warm_start": str(ws.tmp / "nothing"),
        },
    ),
    "warm start damaged": Case(
        "warm_start: {tmp}/model/model.ckpt-30 does not read (its data fails its checksum)",
        lambda spec, ws: {**spec, "model_dir": str(ws.tmp / "fresh"), "warm_start": ws.model_dir},
        setup=_damage_checkpoints([30]),
    ),
    "warm start version": Case(
        "warm_start: no version 7",
        lambda spec, ws: {**spec, "model_dir": str(ws.tmp / "fresh"), "warm_start": "7"},
    ),
    "warm start misfit": Case(
        "warm_start: {tmp}/model/model.ckpt-30 does not fit this model",
        lambda spec, ws: {
            **spec,
            "model_dir": str(ws.tmp / "fresh"),
            "warm_start": ws.model_dir,
            "model": {
                "factory": os.path.join(EXAMPLES, "models.py") + ":two_input_two_output_model"
            },
        },
    ),
    # ---------------------------------------------------------------- training and checkpoints
    "every checkpoint damaged": Case(
        "model_dir: no checkpoint in {tmp}/model reads (model.ckpt-30, "
        "model.ckpt-20, model.ckpt-10, model.ckpt-0: its data fails its checksum)",
        setup=_damage_checkpoints([0, 10, 20, 30]),
    ),
    "only incomplete checkpoints": Case(
        "model_dir: {tmp}/model holds only incomplete checkpoints",
        setup=_damage_checkpoints([0, 10, 20, 30], "remove"),
    ),
    "loss diverges": Case(
        "training diverged: the loss is NaN at step",
        lambda spec, ws: {
            **spec,
            "model_dir": str(ws.tmp / "fresh"),
            "model": {"factory": ws.write("diverging.py", DIVERGING) + ":build"},
        },
        code=3,
    ),
    "optimizer changed": Case(
        "model_dir: {tmp}/model holds checkpoints trained with Adam, not SGD",
        lambda spec, ws: {
            **spec,
            "train": {"steps": 60},
            "model": {
                "factory": ws.write("sgd.py", DIVERGING.replace("Adam(1e30)", "SGD(0.1)"))
                + ":build"
            },
        },
    ),
    # ---------------------------------------------------------------- pre-made Estimators
    "vs_baseline without a baseline": Case(
        "spec: gate.metrics.accuracy.vs_baseline: the job has no baseline section",
        {"gate": {"metrics": {"accuracy": {"vs_baseline": {}}}}},
    ),
    "baseline of boosted trees": Case(
        "baseline: kind boosted_trees: TensorFlow Estimator 2.15 has no BoostedTrees",
        {"baseline": {"kind": "boosted_trees"}},
    ),
    "baseline option of another kind": Case(
        "baseline: hidden_units is an option of kind dnn, not linear",
        {"baseline": {"kind": "linear", "hidden_units": [8]}},
    ),
    "baseline metric it does not report": Case(
        "gate.metrics.accuracy.vs_baseline: the pre-made baseline reports no 'auc'",
        {
            "baseline": {"kind": "linear"},
            "gate": {"metrics": {"accuracy": {"vs_baseline": {"metric": "auc"}}}},
        },
    ),
    "evaluate without a trained baseline": Case(
        "baseline: {tmp}/model/baseline holds no trained baseline",
        {"baseline": {"kind": "linear"}},
        command="evaluate",
    ),
    "export without a trained baseline": Case(
        "baseline: {tmp}/model/baseline holds no trained baseline",
        {"baseline": {"kind": "dnn"}},
        command="export",
    ),
    "pre-made model warm-started": Case(
        "spec: warm_start: a pre-made model (model.premade) starts from its own initial weights",
        {"model": {"premade": {"kind": "linear"}}, "warm_start": "latest"},
    ),
    "pre-made model with a Keras field": Case(
        "model: model.metric_names_map is for Keras models",
        {"model": {"premade": {"kind": "dnn"}, "metric_names_map": {"a": "b"}}},
    ),
    "pre-made model on two label columns": Case(
        "data.labels: ['species', 'sepal_width'] are several columns",
        _model(premade={"kind": "linear"}),
        args=("--set", "data.labels=[species, sepal_width]"),
    ),
    "pre-made model on a column the files lack": Case(
        "data.features.size: columns ['petal_size'] are not in data.train files",
        _model(premade={"kind": "linear"}),
        args=("--set", "data.features={size: [petal_size]}"),
    ),
    # ---------------------------------------------------------------- publishing
    "run without export": Case(
        "export: no export section",
        lambda spec, ws: {k: v for k, v in spec.items() if k != "export"},
    ),
    "export without export": Case(
        "export: no export section",
        lambda spec, ws: {k: v for k, v in spec.items() if k != "export"},
        command="export",
    ),
    "--metrics not JSON": Case(
        "--metrics: '{acc' is not JSON", command="export", args=("--metrics", "{acc")
    ),
    "--metrics a list": Case(
        "--metrics: expected a JSON object", command="export", args=("--metrics", "[1, 2]")
    ),
    "registry on a missing bucket": Case(
        "base: s3://no-such-bucket/e: bucket 'no-such-bucket' does not exist",
        {"export": {"base": "s3://no-such-bucket/e"}},
        command="registry",
        s3=True,
    ),
    "--metrics NaN": Case(
        "--metrics: expected a JSON object", command="export", args=("--metrics", '{"a": NaN}')
    ),
}


@pytest.fixture(scope="module")
def trained(example_data, tmp_path_factory):
    return trained_job(example_data, tmp_path_factory.mktemp("trained"))


def trained_job(example_data, root, **changes) -> dict:
    """The iris job trained to step 30 (a checkpoint every 10 steps) and published once."""
    from k2e_core.steps import job

    spec = dict(
        iris_job(example_data, root),
        train={"steps": 30},
        run_config={"tf_random_seed": 1, "save_checkpoints_steps": 10, "log_every_secs": 60},
        **changes,
    )
    assert job.run(spec)["version"] == 1
    return {"spec": spec, "model_dir": spec["model_dir"], "export": spec["export"]["base"]}


def test_the_catalogue_is_large_and_covers_every_stage():
    assert len(CASES) >= 60
    assert {c.command for c in CASES.values()} >= {"run", "train", "evaluate", "export"}
    assert {c.code for c in CASES.values()} == {1, 2, 3}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_or_fault(name, trained, tmp_path, capsys, monkeypatch, request):
    check(CASES[name], trained, tmp_path, capsys, monkeypatch, request)


def check(case: Case, trained, tmp_path, capsys, monkeypatch, request) -> None:
    """Runs `case` on a copy of the trained job: one line, its exit code, nothing lost."""
    ws = Workspace(trained, tmp_path)
    spec = copy.deepcopy(ws.spec)
    if case.s3:
        spec["storage"] = {"options": request.getfixturevalue("s3"), "retries": 2}
    if case.setup:
        case.setup(ws)
    spec = case.change(spec, ws) if callable(case.change) else {**spec, **case.change}
    if "data" in spec:
        spec["data"] = {k: v for k, v in spec["data"].items() if v is not None}
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = ws.snapshot()
    source = case.source(ws) if case.source else _write(tmp_path, spec, "job-under-test.yaml")
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]

    command = (
        [case.command, "list", source] if case.command == "registry" else [case.command, source]
    )
    code, out, err = _main([*command, *args], capsys)

    lines = problem_lines(err)
    assert code == case.code, err
    assert len(lines) == 1, err
    start = "k2e: error: " if case.code == 2 else "k2e: failed: "
    assert lines[0].startswith(start + case.expect.replace("{tmp}", str(tmp_path))), lines[0]
    assert ";" in lines[0], lines[0]  # the fix (or what to do) follows the problem
    assert out == "" and "Traceback" not in err
    assert ws.snapshot() == before  # nothing published, nothing lost
