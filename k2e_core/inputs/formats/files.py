"""What the file-by-file formats (CSV, TFRecord, NumPy) share: reading a split's files, local
or remote, for the checks and into tf.data, and the parse defaults that mark missing cells."""

from __future__ import annotations

import itertools
import os
import zlib

import numpy as np

from k2e_core import storage
from k2e_core.errors import SpecError
from k2e_core.inputs.formats import INT_MISSING, Source, of
from k2e_core.storage import stream
from k2e_core.tf_runtime import tf


def refuse_empty(spec_field, path, name):
    if os.path.getsize(path) == 0:
        raise SpecError(f"{spec_field}.files", f"{name} is empty", "point it at a file with data")


def readable_files(source: Source, nbytes: int | None):
    """(local path, name, whole?) of each file, at least its first `nbytes` (None: all):
    local files as they are; a remote file's start (see `file_starts`), or the whole file
    fetched one at a time, deleted once read."""
    if source.stream is None:
        for path in source.files:
            yield path, path, True
        return
    scratch = source.stream.local_dir + "-check"
    if nbytes is not None:
        slack = 1 << 16  # the line or record that crosses `nbytes` is read whole
        yield from file_starts(source, len(source.files), nbytes + slack, scratch)
        return
    for url, name in zip(source.files, source.names()):
        path = storage.fetch(url, scratch)
        refuse_empty(source.field, path, name)
        yield path, name, True
        os.remove(path)


def file_starts(source: Source, count: int, nbytes: int, local_dir: str):
    """The first `nbytes` of the first `count` remote files as local files, cut after their
    last whole line or record (uncompressed: the name loses its .gz), each deleted once the
    caller asks for the next: (local path, name, whole?)."""
    os.makedirs(local_dir, exist_ok=True)
    urls = source.files[:count]
    for i, ((raw, whole), name) in enumerate(zip(stream.heads(urls, nbytes), source.names())):
        if not raw:
            raise SpecError(
                f"{source.field}.files", f"{name} is empty", "point it at a file with data"
            )
        path = os.path.join(local_dir, f"{i:05d}-{os.path.basename(urls[i])}")
        if not whole:
            if path.endswith(".gz"):
                raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw)
                path = path.removesuffix(".gz")
            raw = of(source.format).whole_records(raw)
        with open(path, "wb") as f:
            f.write(raw)
        try:
            yield path, name, whole
        finally:
            os.remove(path)


def scan_files(source: Source, per_file: int | None, scan_file) -> bool:
    """Runs `scan_file(name, local path) -> complete` over every file (its start where the
    budget is smaller); True when every row was read."""
    complete = True
    for local, name, whole in readable_files(source, per_file):
        if not scan_file(name, local) or not whole:
            complete = False
    return complete


def compression_of(path):
    return "GZIP" if path.endswith(".gz") else None


def tf_compression(path):
    """GZIP for a file whose name ends in .gz: a split may mix compressed and plain files."""
    if isinstance(path, str):
        return compression_of(path) or ""
    return tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")


def file_records(source: Source, files, read, parallel_reads, shuffled, seed, shard=None):
    """The records of `files`, read with `read(path)`: local files interleaved, remote ones
    streamed; `shard` (count, index): every count-th record from the index-th."""
    if source.stream is not None:
        ds = _streamed(source.stream, files, read, parallel_reads, shuffled, seed)
    else:
        ds = _interleave(files, read, parallel_reads, shuffled, seed)
    return ds.shard(*shard) if shard else ds


def _interleave(files, read, parallel_reads, shuffled, seed):
    """One reader over many files. Not a parallel interleave: handing records over between
    threads costs more than reading them (a third to a fifth of the speed on CSV and
    TFRecord, bench/pipeline.py); the parse after batching runs in parallel."""
    if len(files) == 1:
        return read(files[0])
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffled:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return names.interleave(read, cycle_length=min(len(files), parallel_reads))


def _streamed(stream, files, read, parallel_reads, shuffled, seed):
    """Records of remote files, each downloaded ahead of its turn and deleted once its
    reader has reached its end (storage.stream)."""
    open_at_once = max(1, min(len(files), parallel_reads, stream.keep - 1))
    epochs = itertools.count()

    def paths():
        epoch = next(epochs)
        order_seed = None if seed is None else seed + epoch
        return stream.epoch(files, open_at_once, shuffled=shuffled, seed=order_seed)

    def release(path):
        stream.release(path.numpy().decode())
        return path

    def read_then_release(path):
        done = (
            tf.data.Dataset.from_tensors(path)
            .map(lambda p: tf.reshape(tf.py_function(release, [p], tf.string), []))
            .filter(lambda _: False)
        )
        return read(path).concatenate(done)

    names = tf.data.Dataset.from_generator(paths, output_signature=tf.TensorSpec((), tf.string))
    return names.interleave(read_then_release, cycle_length=open_at_once)


def tf_dtype(kind):
    return {"float": tf.float32, "int": tf.int64, "string": tf.string}[kind]


def missing_default(p, column: str, kind: str):
    """The parse default for a `kind` column: none (a missing value is an error), a value
    that marks the cell for dropping or filling, or the fill itself (ints cannot be NaN)."""
    if p.drop_missing:
        return {"float": np.nan, "int": INT_MISSING, "string": ""}[kind]
    if column in p.fills:
        return {
            "float": np.nan,
            "int": int(round(float(p.fills[column]))) if kind == "int" else None,
            "string": "",
        }[kind]
    return None


def pad_to(sparse, width):
    """A variable-length feature (SparseTensor) as a dense batch padded to `width` (None: to
    the longest row of the batch); a longer row fails naming the width."""
    default = "" if sparse.dtype == tf.string else 0
    dense = tf.sparse.to_dense(sparse, default_value=tf.cast(default, sparse.dtype))
    if width is None:
        return dense
    longest = tf.shape(dense)[1]
    check = tf.debugging.assert_less_equal(
        longest,
        width,
        message=f"k2e: a variable-length feature holds more values than the input's {width}",
    )
    with tf.control_dependencies([check]):
        return tf.pad(
            dense,
            [[0, 0], [0, tf.maximum(width - longest, 0)]],
            constant_values=tf.cast(default, sparse.dtype),
        )
