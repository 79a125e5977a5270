"""TFRecord files of tf.train.Example, plain or gzipped: a feature's type and length are
what its first `SAMPLE_RECORDS` records hold; lists of varying length feed 1-D inputs."""

from __future__ import annotations

import re

import numpy as np

from k2e_core.errors import SpecError, first_line
from k2e_core.inputs.formats import Column, Source, files
from k2e_core.tf_runtime import tf

NAME = "tfrecord"
EXTENSIONS = (".tfrecord", ".tfrecords")
TYPED = True  # the file says each column's type (else it is told from the values)
LISTS = True  # a column may hold a list per record, of varying length
REMOTE = "stream"

#: Records read to tell a feature's type and whether its length varies.
SAMPLE_RECORDS = 200
_KINDS = {"float_list": "float", "int64_list": "int", "bytes_list": "string"}


def parse_example(record: bytes, spec_field: str, where: str):
    """A serialized tf.train.Example, or an error naming the record (`where`)."""
    try:
        return tf.train.Example.FromString(record)
    except Exception:  # protobuf's DecodeError
        raise SpecError(
            f"{spec_field}.files",
            f"{where} is not a tf.train.Example",
            "write tf.train.Example records",
        ) from None


def columns(spec_field, local, path, na_values):
    try:
        records = [
            r.numpy()
            for r in tf.data.TFRecordDataset(local, files.compression_of(local)).take(
                SAMPLE_RECORDS
            )
        ]
    except tf.errors.OpError as err:
        raise SpecError(
            f"{spec_field}.files",
            f"{path} is not a TFRecord file ({first_line(err)})",
            "write tf.train.Example records with tf.io.TFRecordWriter",
        ) from None
    if not records:
        raise SpecError(
            f"{spec_field}.files", f"{path} holds no records", "point it at a file with data"
        )
    kinds, lengths = {}, {}
    for i, record in enumerate(records):
        example = parse_example(record, spec_field, f"{path} record {i + 1}")
        for name, feat in example.features.feature.items():
            kind = feat.WhichOneof("kind")
            if kind is None:
                continue
            kinds.setdefault(name, _KINDS[kind])
            lengths.setdefault(name, set()).add(len(getattr(feat, kind).value))
    found = {}
    for name, kind in kinds.items():
        counts = lengths[name]
        varlen = len(counts) > 1
        found[name] = Column(kind, (None,) if varlen else (counts.pop(),), varlen=varlen)
    return found, []


def whole_records(raw: bytes) -> bytes:
    end = 0  # each record: u64 length, u32 crc, data, u32 crc
    while end + 12 <= len(raw):
        size = 16 + int.from_bytes(raw[end : end + 8], "little")
        if end + size > len(raw):
            break
        end += size
    return raw[:end]


# --------------------------------------------------------------------------- checks


def scan(source: Source, checker, per_file) -> bool:
    return files.scan_files(
        source, per_file, lambda name, local: _scan_file(name, source, checker, per_file, local)
    )


def _scan_file(path, source, checker, limit, local) -> bool:
    p = checker.p
    wanted = p.columns()
    size = 0
    complete = True
    try:
        for number, record in enumerate(
            tf.data.TFRecordDataset(local, files.compression_of(local)), 1
        ):
            raw = record.numpy()
            size += len(raw)
            where = f"{path} record {number}"
            example = parse_example(raw, source.field, where)
            values = {}
            for c in wanted:
                feat = example.features.feature.get(c)
                kind = feat.WhichOneof("kind") if feat is not None else None
                if kind is None:
                    values[c] = None
                    continue
                got = list(getattr(feat, kind).value)
                stored = source.columns[c]
                expected_kind = {v: k for k, v in _KINDS.items()}[stored.dtype]
                if kind != expected_kind:
                    raise SpecError(
                        f"{source.field}.files",
                        f"{where} feature {c!r} is a "
                        f"{kind}, earlier records hold a {expected_kind}",
                        "write the feature with one type in every record",
                    )
                if c in p.varlen:
                    checker.fits(where, f"feature {c!r}", c, len(got))
                elif len(got) != stored.shape[0]:
                    raise SpecError(
                        f"{source.field}.files",
                        f"{where} feature {c!r} holds "
                        f"{len(got)} values, earlier records {stored.shape[0]}",
                        "write the same number in every record, or feed it to an "
                        "input of shape (None,) to pad each batch to its longest",
                    )
                if stored.dtype == "string" and c not in p.decode:
                    got = [g.decode("utf-8", "replace") for g in got]
                values[c] = got if len(got) != 1 or c in p.varlen else got[0]
            checker.row(where, values)
            if limit is not None and size >= limit:
                complete = False
                break
    except tf.errors.OpError as err:
        raise SpecError(
            f"{source.field}.files",
            f"{path} is damaged after {size} bytes ({err.message.splitlines()[0]})",
            "write the file again",
        ) from None
    checker.result.bytes += size
    return complete


# --------------------------------------------------------------------------- tf.data


def records(p, source: Source, paths, parallel_reads, shuffled, seed, shard=None):
    def read(path):
        return tf.data.TFRecordDataset(path, files.tf_compression(path))

    ds = files.file_records(source, paths, read, parallel_reads, shuffled, seed, shard)
    return ds, _parser(p, source)


def _parser(p, source: Source):
    spec = {}
    for c in p.columns():
        stored = source.columns[c]
        dtype = files.tf_dtype(stored.dtype)
        if c in p.varlen:
            ragged = any(c in p.features[name] for name in p.io.ragged)
            spec[c] = tf.io.RaggedFeature(dtype) if ragged else tf.io.VarLenFeature(dtype)
            continue
        default = files.missing_default(p, c, stored.dtype)
        shape = stored.shape
        spec[c] = tf.io.FixedLenFeature(
            shape,
            dtype,
            default_value=None
            if default is None
            else np.full(shape, default, dtype.as_numpy_dtype).tolist()
            if dtype != tf.string
            else [default] * int(np.prod(shape)),
        )
    widths = p.padded_widths()

    def parse(batch):
        cols = tf.io.parse_example(batch, spec)
        for c, width in widths.items():
            cols[c] = files.pad_to(cols[c], width)
        return cols

    return parse


_FEATURE = re.compile(r"(?:Feature|Key): ([^\s,(]+)")


def column_of(text: str, p, source: Source) -> str | None:
    match = _FEATURE.search(text)
    return match.group(1).rstrip(".") if match else ""
