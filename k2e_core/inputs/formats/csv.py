"""CSV files with a header line, plain or gzipped, read line by line (TensorFlow's
`decode_csv`): a column's type is what its first `SAMPLE_ROWS` values look like."""

from __future__ import annotations

import csv
import re

from k2e_core.errors import SpecError
from k2e_core.inputs.formats import Column, Source, files
from k2e_core.tf_runtime import tf

NAME = "csv"
EXTENSIONS = (".csv",)
TYPED = False  # the file says each column's type (else it is told from the values)
LISTS = False  # a column may hold a list per record, of varying length
REMOTE = "stream"

KINDS = ("int", "float", "string")
#: Rows read to tell a column's type: a float column may start with whole numbers ("1").
SAMPLE_ROWS = 1000
#: A cell larger than this is refused (Python's csv default; TensorFlow has none and slows).
FIELD_LIMIT = 131072
CHUNK_ROWS = 20_000  # rows checked at once, column by column


def open_text(path):
    import gzip

    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def value_kind(text: str) -> str:
    for kind, cast in (("int", int), ("float", float)):
        try:
            cast(text)
            return kind
        except ValueError:
            continue
    return "string"


def line_break_error(spec_field, path, line, lines) -> SpecError:
    """A CSV row over several lines: TensorFlow reads CSV line by line."""
    return SpecError(
        f"{spec_field}.files",
        f"{path} line {line}: a quoted field runs over {lines} lines (an unclosed quote?)",
        "close the quote, or replace the line "
        "breaks inside quoted text (CSV is read line by line; TFRecords hold any text)",
    )


def columns(spec_field, local, path, na_values):
    na_values = set(na_values)
    with open_text(local) as f:
        rows = csv.reader(f)
        try:
            header = next(rows, None)
            sample, last = [], rows.line_num
            for _, r in zip(range(SAMPLE_ROWS), rows):
                if r and rows.line_num - last > 1:
                    raise line_break_error(spec_field, path, last + 1, rows.line_num - last)
                last = rows.line_num
                sample.append((rows.line_num, r))
        except csv.Error as err:
            raise SpecError(
                f"{spec_field}.files",
                f"{path} line {rows.line_num}: {err}",
                "fix the row (an unclosed quote, or a field over 128 KB)",
            ) from None
    if not header or not sample:
        raise SpecError(
            f"{spec_field}.files",
            f"{path} has no data rows",
            "CSV files need a header line and at least one row",
        )
    kinds = ["int"] * len(header)
    text_at = [None] * len(header)
    for line, r in sample:
        for i, value in enumerate(r[: len(header)]):
            if value in na_values or value == "" or kinds[i] == "string":
                continue
            kind = value_kind(value)
            if kind == "string":
                text_at[i] = (line, value)
            kinds[i] = max(kinds[i], kind, key=KINDS.index)
    return {
        name: Column(kind, (), text_at=at) for name, kind, at in zip(header, kinds, text_at)
    }, header


def whole_records(raw: bytes) -> bytes:
    return raw[: raw.rfind(b"\n") + 1]


# --------------------------------------------------------------------------- checks


def scan(source: Source, checker, per_file) -> bool:
    return files.scan_files(
        source, per_file, lambda name, local: _scan_file(name, source, checker, per_file, local)
    )


def _bounded_lines(f, limit, counter):
    for line in f:
        counter[0] += len(line)
        yield line
        if limit is not None and counter[0] >= limit:
            counter[1] = True
            return


def _scan_file(path, source, checker, limit, local) -> bool:
    p = checker.p
    header = source.csv_header
    wanted = p.columns()
    index = [(c, header.index(c)) for c in wanted]
    counter = [0, False]
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        with open_text(local) as f:
            rows = csv.reader(_bounded_lines(f, limit, counter))
            try:
                first = next(rows, None)
                if first != header:
                    raise SpecError(
                        f"{source.field}.files",
                        f"{path} has the header {first} but {source.files[0]} has {header}",
                        "write every file of a split with the same columns in the same order",
                    )
                lines, cells = [], {c: [] for c, _ in index}
                last = rows.line_num
                for row in rows:
                    spanned, last = rows.line_num - last, rows.line_num
                    if not row:
                        continue
                    if spanned > 1:
                        raise line_break_error(source.field, path, last - spanned + 1, spanned)
                    if len(row) != len(header):
                        raise SpecError(
                            f"{source.field}.files",
                            f"{path} line {rows.line_num} has "
                            f"{len(row)} fields, the header {len(header)}",
                            "fix the row (a stray or missing comma, or text with a "
                            "comma that needs quotes)",
                        )
                    lines.append(rows.line_num)
                    for c, i in index:
                        cells[c].append(row[i])
                    if len(lines) == CHUNK_ROWS:
                        checker.chunk(path, lines, cells)
                        lines, cells = [], {c: [] for c, _ in index}
                if lines:
                    checker.chunk(path, lines, cells)
            except csv.Error as err:
                raise SpecError(
                    f"{source.field}.files",
                    f"{path} line {rows.line_num + 1}: {err}",
                    "fix the row: an unclosed quote, or a field over "
                    f"{FIELD_LIMIT // 1024} KB (long text belongs in TFRecords)",
                ) from None
    finally:
        csv.field_size_limit(previous)
    checker.result.bytes += counter[0]
    return not counter[1]


# --------------------------------------------------------------------------- tf.data


def records(p, source: Source, paths, parallel_reads, shuffled, seed, shard=None):
    def read(path):
        return tf.data.TextLineDataset(path, files.tf_compression(path)).skip(1)

    ds = files.file_records(source, paths, read, parallel_reads, shuffled, seed, shard)
    return ds, _parser(p, source)


def _parser(p, source: Source):
    wanted = p.columns()
    header = source.csv_header
    order = sorted(wanted, key=header.index)  # decode_csv wants select_cols in file order
    defaults = []
    for c in order:
        default = files.missing_default(p, c, p.types[c])
        dtype = files.tf_dtype(p.types[c])
        defaults.append(
            tf.constant([], dtype) if default is None else tf.constant([default], dtype)
        )
    markers = [m for m in (p.na_values if p.na_in_files is None else p.na_in_files) if m != ""]
    na_value = markers[0] if len(markers) == 1 else ""
    # Several markers: each becomes an empty cell first (twice: adjacent cells share a comma).
    pattern = (
        "(^|,)(" + "|".join(re.escape(m) for m in markers) + ")(,|$)" if len(markers) > 1 else None
    )

    def parse(batch):
        batch = tf.boolean_mask(batch, tf.strings.length(batch) > 0)
        if pattern:
            for _ in range(2):
                batch = tf.strings.regex_replace(batch, pattern, r"\1\3")
        values = tf.io.decode_csv(
            batch,
            record_defaults=defaults,
            na_value=na_value,
            select_cols=[header.index(c) for c in order],
        )
        return dict(zip(order, values))

    return parse


_FIELD = re.compile(r"Field (\d+)")


def column_of(text: str, p, source: Source) -> str | None:
    if "record" in text and ("Field" in text or "fields" in text):
        match = _FIELD.search(text)
        if match:
            order = sorted(p.columns(), key=source.csv_header.index)
            index = int(match.group(1))
            return order[index] if index < len(order) else ""
        return ""
    return None
