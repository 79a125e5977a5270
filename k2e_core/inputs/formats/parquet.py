"""Parquet files (pyarrow), as Spark, BigQuery and Snowflake exports and `DataFrame.to_parquet`
write them: files, globs, or a directory holding a dataset (hive-style `key=value` folders
give partition columns), local or at any fsspec URL.

Only the columns the job uses are read, a row group at a time; remote files are read at their
URL, row group by row group, so neither local disk nor memory grows with a file's size. Types
come from the schema: integers and booleans read as int, floats and decimals as float,
strings, binary and dictionary-encoded (pandas categorical) columns as text, lists as
variable-length columns (RaggedTensors, padded after batching for dense inputs), fixed-size
lists as fixed-length ones. Timestamps, dates, durations, structs and maps are refused when
the job uses them, naming the column. Nulls are missing values (`data.missing`). A cluster's
workers divide the row groups when there are fewer files than workers.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import os
import random

import numpy as np

from k2e_core import storage
from k2e_core.errors import SpecError, first_line
from k2e_core.inputs.formats import INT_MISSING, Column, Source, files
from k2e_core.tf_runtime import tf

NAME = "parquet"
EXTENSIONS = (".parquet", ".pq")
TYPED = True
LISTS = True
REMOTE = "direct"


def _pa():
    import pyarrow
    import pyarrow.parquet

    return pyarrow, pyarrow.parquet


#: Column chunks of a remote row group this close are fetched in one request (fsspec's
#: `open_parquet_file` merges ranges alike).
MAX_GAP = 64_000


@dataclasses.dataclass
class _File:
    """An open Parquet file: its footer's metadata, and how to read a row group. A remote
    file's row group is read as its column chunks, one request per run of adjacent chunks,
    fetched concurrently where the filesystem can, not through fsspec's readahead cache
    (which reads 50 MB on S3 for each row group of a shuffled order)."""

    metadata: object  # pyarrow FileMetaData
    local: object = None  # pyarrow ParquetFile of a local file
    fs: object = None  # fsspec filesystem of a remote file
    path: str = ""
    size: int = 0

    def read(self, g: int, columns: list):
        if self.local is not None:
            return self.local.read_row_group(g, columns=columns)
        from fsspec.utils import merge_offset_ranges

        _, pq = _pa()
        group = self.metadata.row_group(g)
        starts, ends = [], []
        for i in range(group.num_columns):
            chunk = group.column(i)
            where = chunk.path_in_schema
            if any(where == c or where.startswith(c + ".") for c in columns):
                start = chunk.data_page_offset
                if chunk.has_dictionary_page:
                    start = min(start, chunk.dictionary_page_offset)
                starts.append(start)
                ends.append(start + chunk.total_compressed_size)
        paths, starts, ends = merge_offset_ranges(
            [self.path] * len(starts), starts, ends, max_gap=MAX_GAP
        )
        blobs = self.fs.cat_ranges(paths, starts, ends)
        parts = dict(zip(zip(starts, ends), blobs))
        with self.fs.open(
            self.path,
            "rb",
            cache_type="parts",
            cache_options={"data": parts, "strict": False},
            size=self.size,
        ) as f:
            return pq.ParquetFile(f, metadata=self.metadata).read_row_group(g, columns=columns)


@contextlib.contextmanager
def _opened(path: str, name: str, spec_field: str, footers: dict | None = None):
    """A `_File` of a local path or a URL (read through fsspec). `footers` keeps remote
    files' footers between openings (a file is opened again each epoch)."""
    _, pq = _pa()
    try:
        if storage.is_local(path):
            local = pq.ParquetFile(storage.local_path(path))
            opened = _File(local.metadata, local=local)
        else:
            fs, remote = storage.filesystem(path)
            if footers is not None and path in footers:
                metadata, size = footers[path]
            else:
                with fs.open(remote, "rb", cache_type="none") as f:
                    metadata, size = pq.read_metadata(f), f.size
                if footers is not None:
                    footers[path] = metadata, size
            opened = _File(metadata, fs=fs, path=remote, size=size)
    except (OSError, ValueError) as err:
        if isinstance(err, SpecError):
            raise
        raise SpecError(
            f"{spec_field}.files",
            f"{name} is not a Parquet file ({first_line(err, 160)})",
            "write it with pyarrow, pandas.to_parquet or Spark",
        ) from None
    try:
        yield opened
    finally:
        if opened.local is not None:
            opened.local.close()


# --------------------------------------------------------------------------- columns


def partitions_of(path: str, root: str) -> dict:
    """Hive-style partition values of a file below a dataset's root: {key: text}."""
    rel = os.path.relpath(path, root) if "://" not in path else path[len(root) :].lstrip("/")
    found = {}
    for part in rel.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep:
            found[key] = value
    return found


def _kind(pa, dtype) -> tuple[Column | None, str | None]:
    """(Column, None) for a type k2e reads, else (None, what the type is)."""
    types = pa.types
    if types.is_dictionary(dtype):
        return _kind(pa, dtype.value_type)
    if types.is_integer(dtype) or types.is_boolean(dtype):
        return Column("int", ()), None
    if types.is_floating(dtype) or types.is_decimal(dtype):
        return Column("float", ()), None
    if types.is_string(dtype) or types.is_large_string(dtype) or types.is_binary(dtype):
        return Column("string", ()), None
    if types.is_large_binary(dtype) or types.is_string_view(dtype):
        return Column("string", ()), None
    if types.is_fixed_size_list(dtype) or types.is_list(dtype) or types.is_large_list(dtype):
        inner, problem = _kind(pa, dtype.value_type)
        if inner is None or inner.shape != ():
            return None, f"a list of {dtype.value_type}"
        if types.is_fixed_size_list(dtype):
            return Column(inner.dtype, (dtype.list_size,)), None
        return Column(inner.dtype, (None,), varlen=True), None
    return None, str(dtype)


def columns(spec_field, path, name, na_values):
    pa, _ = _pa()
    with _opened(path, name, spec_field) as f:
        schema = f.metadata.schema.to_arrow_schema()
        rows = f.metadata.num_rows
    if rows == 0:
        raise SpecError(
            f"{spec_field}.files", f"{name} holds no rows", "point it at a file with data"
        )
    found = {}
    for column in schema:
        kind, problem = _kind(pa, column.type)
        found[column.name] = kind if kind is not None else _unreadable(problem)
    return found, []


def _unreadable(what: str) -> Column:
    """A column k2e does not read: refused, with the fix, when the job uses it."""
    if any(word in what for word in ("timestamp", "date", "time", "duration")):
        fix = "cast it to int64 (e.g. seconds since the epoch) or string where the table is written"
    else:
        fix = "flatten it into columns of numbers or text where the table is written"
    return Column("unreadable", (), text_at=(what, fix))


def with_partitions(columns: dict, partitions: dict) -> dict:
    """The columns of a dataset's files and its partition columns (typed by their values)."""
    from k2e_core.inputs.formats.csv import KINDS, value_kind

    keys = {k for values in partitions.values() for k in values}
    out = dict(columns)
    for key in sorted(keys):
        kinds = [value_kind(values[key]) for values in partitions.values() if key in values]
        out[key] = Column(max(kinds, key=KINDS.index), ())
    return out


# --------------------------------------------------------------------------- reading


def _row_groups(source: Source, paths) -> list:
    """(file, row group) of every row group of `paths`."""
    names = dict(zip(source.files, source.names()))
    units = []
    for path in paths:
        with _opened(path, names.get(path, path), source.field) as f:
            units += [(path, g) for g in range(f.metadata.num_row_groups)]
    return units


def _arrays(pa, table, column: str, kind: str, floats=np.float64):
    """A column of a row group as (numpy values, missing mask): text as str, nulls marked
    (NaN in floats, 0 in ints, "" in text)."""
    import pyarrow.compute as pc

    array = table.column(column).combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_decimal(array.type):
        array = pc.cast(array, pa.float64())
    if array.null_count:
        missing = array.is_null().to_numpy(zero_copy_only=False)
    else:
        missing = np.zeros(len(array), bool)
    if kind == "string":
        if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
            values = np.array(array.fill_null(b"").to_pylist(), dtype=object)
        else:
            values = np.asarray(array.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
        return values, missing
    if pa.types.is_boolean(array.type):
        array = pc.cast(array, pa.int64())
    if kind == "int":
        values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return values, missing
    values = array.to_numpy(zero_copy_only=False).astype(floats, copy=False)  # nulls: NaN
    return values, missing | ~np.isfinite(values)


def _read_group(f: _File, g, wanted, partitions, source):
    """A row group's columns among `wanted`, partition columns filled in."""
    pa, _ = _pa()
    in_file = [c for c in wanted if c not in partitions]
    table = f.read(g, in_file)
    for key in wanted:
        if key in partitions:
            cast = {"int": int, "float": float, "string": str}[source.columns[key].dtype]
            table = table.append_column(key, pa.array([cast(partitions[key])] * table.num_rows))
    return table


# --------------------------------------------------------------------------- checks


def scan(source: Source, checker, per_file) -> bool:
    pa, _ = _pa()
    p = checker.p
    wanted = p.columns()
    complete = True
    for path, name in zip(source.files, source.names()):
        read = 0
        partitions = source.partitions.get(path, {})
        with _opened(path, name, source.field) as f:
            first = 0
            for g in range(f.metadata.num_row_groups):
                if per_file is not None and read >= per_file:
                    complete = False
                    break
                table = _read_group(f, g, wanted, partitions, source)
                read += table.nbytes
                rows = table.num_rows

                def where(i, first=first, g=g, name=name):
                    return f"{name} row {first + i + 1} (row group {g})"

                if any(source.columns[c].shape != () for c in wanted if c in source.columns):
                    lists = {c: table.column(c).to_pylist() for c in wanted}
                    for i in range(rows):
                        for c in wanted:
                            cell = lists[c][i]
                            if c in p.varlen and cell is None:
                                lists[c][i] = []  # as training reads it
                            elif source.columns[c].shape != () and (cell is None or None in cell):
                                raise SpecError(
                                    f"{source.field}.files",
                                    f"{where(i)} column {c!r} holds a null "
                                    + ("list" if cell is None else "inside its list"),
                                    _NULL_IN_LIST,
                                )
                        for c in p.varlen:
                            checker.fits(where(i), f"column {c!r}", c, len(lists[c][i]))
                        checker.row(where(i), {c: lists[c][i] for c in wanted})
                else:
                    arrays = {c: _arrays(pa, table, c, p.types[c]) for c in wanted}
                    checker.typed_chunk(
                        where,
                        rows,
                        {c: m for c, (_, m) in arrays.items()},
                        lambda c, mask, arrays=arrays: arrays[c][0][mask],
                    )
                first += rows
        checker.result.bytes += read
    return complete


#: A null inside a list, or a null fixed-size list, has no missing-value meaning k2e could
#: give it (drop the row? fill one value?): refused, in the checks and in training. A null
#: variable-length list is an empty one.
_NULL_IN_LIST = "write lists without nulls where the table is written"


# --------------------------------------------------------------------------- tf.data


def records(p, source: Source, paths, parallel_reads, shuffled, seed, shard=None):
    pa, _ = _pa()
    wanted = p.columns()
    # path -> the row groups to read (None: all); a worker's share of few files is every
    # count-th row group, which needs each file's row groups listed up front
    groups_of_file: dict = dict.fromkeys(paths)
    if shard:
        count, index = shard
        groups_of_file = {}
        for path, g in _row_groups(source, paths)[index::count]:
            groups_of_file.setdefault(path, []).append(g)
    names = dict(zip(source.files, source.names()))
    partitions = source.partitions
    missing_text = p.na_values[0] if p.na_values else ""
    # Columns of one dtype and shape travel as one array, split again after batching:
    # shuffle and batch cost per tensor of an element (as for NumPy files). Lists of varying
    # length travel as RaggedTensors, padded after batching where their input is dense.
    lists = [c for c in wanted if c in p.varlen]
    groups_of: dict = {}
    for c in wanted:
        if c not in p.varlen:
            groups_of.setdefault((p.types[c], source.columns[c].shape), []).append(c)
    packs = list(groups_of.items())
    specs = {
        str(i): tf.TensorSpec([None, len(cols), *shape], files.tf_dtype(kind))
        for i, ((kind, shape), cols) in enumerate(packs)
    }
    for c in lists:
        specs[c] = tf.RaggedTensorSpec(
            [None, None], files.tf_dtype(p.types[c]), ragged_rank=1, row_splits_dtype=tf.int64
        )
    widths = p.padded_widths()
    epochs = itertools.count()
    footers: dict = {}
    # tf.data runs the generator in threads of its own: files open with this context's
    # storage options
    context = contextvars.copy_context()

    def groups():
        """Each file's row groups as packed columns; files, and a file's row groups, in an
        order shuffled each epoch when `shuffled`. One file is open at a time."""
        rng = random.Random(None if seed is None else seed + next(epochs))
        order = list(groups_of_file)
        if shuffled:
            rng.shuffle(order)
        for path in order:
            name = names.get(path, path)
            with contextlib.ExitStack() as stack:
                opened = _opened(path, name, source.field, footers)
                f = context.run(stack.enter_context, opened)
                wanted_groups = groups_of_file[path]
                if wanted_groups is None:
                    wanted_groups = range(f.metadata.num_row_groups)
                wanted_groups = list(wanted_groups)
                if shuffled:
                    rng.shuffle(wanted_groups)
                for g in wanted_groups:
                    table = _read_group(f, g, wanted, partitions.get(path, {}), source)
                    cols = _batch(p, pa, table, source, missing_text, name, g)
                    packed = {
                        str(i): np.stack([cols[c] for c in cs], axis=1)
                        for i, (_, cs) in enumerate(packs)
                    }
                    yield packed | {c: cols[c] for c in lists}

    def parse(batch):
        cols = {c: batch[str(i)][:, j] for i, (_, cs) in enumerate(packs) for j, c in enumerate(cs)}
        for c in lists:
            cols[c] = files.pad_to(batch[c].to_sparse(), widths[c]) if c in widths else batch[c]
        return cols

    # the next row groups are read while the rows of this one are consumed
    ds = tf.data.Dataset.from_generator(groups, output_signature=specs).prefetch(2).unbatch()
    return ds, parse


def _batch(p, pa, table, source, missing_text, name, g):
    """A row group as {column: numpy array} in the types the plan reads (lists of varying
    length as RaggedTensors), missing cells marked as the other formats mark them (NaN, a
    marker, the fill), or an error."""
    out = {}
    for c in p.columns():
        kind = p.types[c]
        if source.columns[c].shape != ():
            out[c] = _list_column(
                pa, table.column(c), kind, c in p.varlen, f"{name} row group {g}", c
            )
            continue
        values, missing = _arrays(pa, table, c, kind, floats=np.float32)
        if not missing.any():
            out[c] = values
            continue
        if not p.drop_missing and c not in p.fills:
            row = int(np.argmax(missing))
            raise ValueError(
                f"k2e: {name} row group {g} row {row + 1} column {c!r} is missing (null); "
                "set data.missing: drop or a fill"
            )
        if kind == "string":
            values = np.where(missing, missing_text, values).astype(object)
        elif kind == "int":
            fill = p.fills.get(c)
            values = np.where(missing, INT_MISSING if fill is None else int(fill), values)
        else:
            values = np.where(missing, np.float32(np.nan), values)
        out[c] = values
    return out


def _list_column(pa, column, kind: str, ragged: bool, where: str, name: str):
    """A list column as a RaggedTensor (`ragged`; a null list empty) or a dense [rows, size]
    array (fixed-size lists); an error where a list holds a null, or a fixed-size list is
    null."""
    import pyarrow.compute as pc

    array = column.combine_chunks()
    if pc.list_flatten(array).null_count or (not ragged and array.null_count):
        raise ValueError(
            f"k2e: {where} column {name!r} holds a null in or for a list; " + _NULL_IN_LIST
        )
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    if ragged:
        values = pc.list_flatten(array)
    else:
        size = array.type.list_size
        values = array.values.slice(array.offset * size, len(array) * size)
    dtype = {"float": np.float32, "int": np.int64, "string": object}[kind]
    if kind == "string":
        flat = np.asarray(values.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    else:
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int64())
        flat = values.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if ragged:
        return tf.RaggedTensor.from_row_lengths(flat, lengths.astype(np.int64), validate=False)
    return flat.reshape(len(lengths), -1)


def column_of(text: str, p, source: Source) -> str | None:
    return None
