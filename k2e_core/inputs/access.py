"""A job's data, reached through one object (as TFX's DataAccessor): the splits' files, the
plan, input functions and the data errors TensorFlow raises, named.

The plan is built once, on first use, whatever asks for it first: columns mapped and typed,
every split's rows checked (`datacheck`), vocabularies and fills from model_dir's record or
the training data. Nothing changes it afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import os

from k2e_core.inputs import data, datacheck, pipeline


class DataAccess:
    def __init__(
        self,
        data_spec,
        resolve,
        staging_dir: str,
        model_dir: str,
        io,
        check_labels=None,
        seed=None,
        share=None,
        examples=None,
    ):
        """`resolve`: the spec's resolver of file patterns; `io`: a function giving the
        model's inputs and outputs (`data.ModelIO`);
        `check_labels(plan, source)`: runs the model's loss on a batch (None: no model);
        `share`: this cluster task's share of the training data, (index, count);
        `examples`: a function giving the default `example` of `input_fn` (a pre-made
        model's; None: what a Keras model takes)."""
        self.spec = data_spec
        self._resolve = resolve
        self._staging = staging_dir
        self._model_dir = model_dir
        self._io = io
        self._check_labels = check_labels
        self._seed = seed
        self._share = share
        self._examples = examples
        self._sources = {}
        self._eval_reader = None
        self.scans = []

    def source(self, split: str) -> data.Source:
        """The split's files; evaluation falls back to the training files."""
        split = self._split(split)
        if split not in self._sources:
            self._sources[split] = data.open_source(
                f"data.{split}",
                getattr(self.spec, split),
                self._resolve,
                os.path.join(self._staging, split),
                self.spec.na_values,
                self.spec.local_files,
            )
        return self._sources[split]

    def _split(self, split: str) -> str:
        return "train" if split == "eval" and self.spec.eval is None else split

    @functools.cached_property
    def plan(self) -> data.Plan:
        sources = [self.source("train"), self.source("eval")]
        record = data.load_record(self._model_dir)
        plan = data.plan(self.spec, self._io(), sources, record)
        plan, self.scans = datacheck.check(plan, sources, self.spec)
        if self._check_labels is not None:
            self._check_labels(plan, sources[-1])
        datacheck.report(plan, self.scans, self.spec)
        return plan

    def class_names(self) -> dict:
        """{output key: class names} of outputs trained on text labels."""
        io, names = self._io(), {}
        for output, columns in self.plan.labels.items():
            if columns[0] in self.plan.vocabulary:
                names[io.output_keys[io.outputs.index(output)]] = self.plan.vocabulary[columns[0]]
        return names

    def save_record(self) -> None:
        """Keeps what the plan resolved from the data in model_dir, for the later steps."""
        data.save_record(self._model_dir, self.plan)

    def input_fn(self, split: str, example=None, shard: bool = True):
        """An Estimator input_fn over the split. `example`: as in `pipeline.input_fn`
        (default: what the model takes); `shard`: in a cluster, this task's share of the
        training data (else all of it)."""
        if example is None and self._examples is not None:
            example = self._examples()
        source = self.source(split)
        if split == "eval" and self.spec.eval is None:
            if self._eval_reader is None:  # the training files, read beside training
                stream_dir = os.path.join(self._staging, "eval", "stream")
                self._eval_reader = source.another_reader(stream_dir)
            source = self._eval_reader
        return pipeline.input_fn(
            self.plan,
            source,
            self.spec,
            training=split == "train",
            seed=self._seed,
            shard=self._share if shard and split == "train" else None,
            example=example,
        )

    def first_batch(self, split: str, rows: int):
        """The split's first `rows` examples as numpy (features, labels), in file order."""
        return pipeline.first_batch(self.plan, self.source(split), self.spec, rows)

    @contextlib.contextmanager
    def errors(self, split: str):
        """A data error TensorFlow raises mid-run as one line naming the files and column."""
        with pipeline.named_data_errors(self.plan, self.source(split)):
            yield
