"""Data file formats, one module each, behind one small protocol.

A format module has:

- `NAME`, and `EXTENSIONS`: file name endings that say a file is in it (`of_file`);
- `TYPED`: whether the files say each column's type (else it is told from the values, and
  `data.columns` may declare it); `LISTS`: whether a column may hold a list per record;
- `REMOTE`: how remote files are read: "stream" (whole files downloaded while training reads
  them, `storage.stream`), "fetch" (downloaded before anything reads them) or "direct" (the
  module reads them at their URL itself);
- `columns(spec_field, path, name, na_values) -> (columns, header)`: the columns a file holds
  (`Column`), read from a local file or, for "direct", its URL;
- `whole_records(raw) -> bytes` ("stream" only): a file's start cut after its last whole
  record, for the checks and the columns of a streamed file;
- `scan(source, checker, per_file) -> bool`: hands the rows (at most `per_file` bytes of each
  file; None: all) to the checks (`datacheck`), True when every row was read;
- `records(p, source, files, parallel_reads, shuffled, seed, shard) -> (dataset, parse)`: a
  tf.data dataset of records and the function that turns a batch of them into columns;
  `shard` (count, index): this worker's share when a cluster has more workers than files;
- `column_of(text, p, source) -> str | None`: the column behind a TensorFlow error's text
  ("" when the error is about this format's records but names no column; None when it is
  not about them).

A new format is a module here and a line in `FORMATS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from k2e_core import storage
from k2e_core.errors import SpecError
from k2e_core.storage import stream

INT_MISSING = np.iinfo(np.int64).min  # a missing int cell while rows are being dropped


@dataclass(frozen=True)
class Column:
    dtype: str  # "float", "int" or "string"
    shape: tuple  # per-example shape: () for a CSV cell, (n,) for a TFRecord list
    varlen: bool = False  # lists whose length differs between records
    text_at: tuple | None = None  # CSV: (line, value) of the first cell that is not a number


@dataclass
class Source:
    """One split's files, their format and the columns they hold."""

    field: str  # spec field, e.g. "data.train"
    files: list
    format: str
    columns: dict
    csv_header: list = field(default_factory=list)
    #: A dataset directory's hive-style partition values: file -> {column: text}.
    partitions: dict = field(default_factory=dict)
    #: Remote files streamed while training reads them (storage.stream); `files` are then
    #: their URLs. None: `files` are local paths (or URLs a "direct" format reads itself).
    stream: object = None

    def names(self) -> list[str]:
        """The files as error messages name them."""
        return [storage.redact(f) for f in self.files]

    def another_reader(self, local_dir: str) -> Source:
        """The same files for a reader that runs while this one holds its local files (an
        evaluation of the training files during training): streamed with a budget of its
        own, or both would wait for each other's slots."""
        if self.stream is None:
            return self
        return replace(self, stream=stream.RemoteFiles(local_dir, self.stream.keep))


def of(name: str):
    """The module of format `name`."""
    return FORMATS[name]


def of_file(path: str, declared: str = "auto") -> str:
    """The format of a file: as declared, else by its name's ending."""
    if declared != "auto":
        return declared
    name = path.lower().removesuffix(".gz")
    for fmt, module in FORMATS.items():
        if name.endswith(module.EXTENSIONS):
            return fmt
    raise SpecError(
        "format",
        f"cannot tell the format of {os.path.basename(path)}",
        f"set format to one of {', '.join(FORMATS)}",
    )


from k2e_core.inputs.formats import csv, npz, parquet, tfrecord  # noqa: E402

FORMATS = {"csv": csv, "tfrecord": tfrecord, "npz": npz, "parquet": parquet}
