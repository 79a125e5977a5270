"""The data, row by row, before any training: every problem TensorFlow would meet mid-run
(`Graph execution error`) is found here and named by file, line (or record), column and fix.

Each split is read up to `data.scan_mb` (spread over its files: the start of each when the
split is larger), or whole with `scan_mb: all` / `--full`. The same pass collects what the
training data decides: the classes of a text label and the fill statistics.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from k2e_core.errors import SpecError
from k2e_core.inputs import data, formats

log = logging.getLogger("k2e.data")

#: Number texts that are not finite numbers (case and sign aside): missing values, like NaN.
NON_FINITE = ["nan", "inf", "infinity"]
_IMAGE_MAGIC = {
    "png": (b"\x89PNG",),
    "jpeg": (b"\xff\xd8",),
    "auto": (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM"),
}


@dataclass
class Scan:
    field: str
    rows: int = 0
    bytes: int = 0
    complete: bool = True
    dropped: int = 0  # rows with a missing value (data.missing: drop)
    markers: set = field(default_factory=set)  # missing-value markers met in CSV cells
    values: dict = field(default_factory=dict)  # column -> values the plan still needs

    def summary(self) -> str:
        part = "all" if self.complete else "the first"
        size = f"{self.bytes / 1e6:.1f} MB" if self.bytes >= 1e5 else f"{self.bytes / 1e3:.1f} kB"
        text = f"{self.field}: checked {part} {self.rows} rows ({size})"
        return text + (f", {self.dropped} with missing values skipped" if self.dropped else "")


def budget(data_spec) -> int | None:
    """Bytes of each split to check; None: all of it."""
    return None if data_spec.scan_mb == "all" else int(data_spec.scan_mb * 1e6)


def check(p: data.Plan, sources: list, data_spec) -> tuple[data.Plan, list]:
    """Scans the training split (resolving what the plan still needs from it), then every
    other split. Returns the resolved plan and the scans."""
    limit = budget(data_spec)
    if limit == 0:
        if data.pending(p):
            raise SpecError(
                "data.scan_mb",
                f"0 reads no training data, so {data.pending(p)} cannot be taken from it",
                "give data.label_vocabulary and constant fills, or scan the data",
            )
        return p, []
    train = sources[0]
    scans = [scan(p, train, limit)]
    p = resolve(p, scans[0])
    for source in sources[1:]:
        if source is not train:
            scans.append(scan(p, source, limit))
    if all(s.complete for s in scans):  # else a marker may lie beyond what was read
        p = replace(p, na_in_files=tuple(sorted(set().union(*(s.markers for s in scans)))))
    return p, scans


def report(p: data.Plan, scans: list, data_spec) -> None:
    """Logs what the checks found and what the training data decided (once all is valid)."""
    for s in scans:
        log.info("data %s", s.summary())
    for c, names in p.vocabulary.items():
        log.info("classes of %s: %s", c, names if len(names) <= 20 else f"{len(names)} classes")
    for c, value in p.fills.items():
        how, _ = data_spec.fill_of(c)
        log.info(
            "missing %s filled with %r%s",
            c,
            value,
            "" if how == "constant" else f" (the training data's {how})",
        )


def resolve(p: data.Plan, train: Scan) -> data.Plan:
    """Vocabularies and fill statistics from the training data's values."""
    vocabulary = dict(p.vocabulary)
    for c, names in p.vocabulary.items():
        if names is None:
            vocabulary[c] = sorted(set(train.values.get(c, [])))
            _, classes = p.io.label_kinds[p.output_of(c)]
            if classes and len(vocabulary[c]) != classes:
                raise SpecError(
                    "data.label_vocabulary",
                    f"label column {c!r} of {train.field} "
                    f"holds {len(vocabulary[c])} classes {vocabulary[c][:10]} but the "
                    f"model's output has {classes}",
                    "give data.label_vocabulary with every class, or fix the output size",
                )
    fills = dict(p.fills)
    for c, value in p.fills.items():
        if isinstance(value, data.Statistic):
            seen = train.values.get(c, [])
            if not seen:
                raise SpecError(
                    f"data.missing.{c}",
                    f"{train.field} holds no values of {c!r} to compute its {value}",
                    "give a constant fill",
                )
            if value == "mean":
                fills[c] = float(np.mean(seen))
            elif value == "median":
                fills[c] = float(statistics.median(seen))
            else:
                counts = Counter(seen)
                fills[c] = min(counts, key=lambda v: (-counts[v], v))
            if p.types[c] == "int":
                fills[c] = int(round(float(fills[c])))
    return replace(p, vocabulary=vocabulary, fills=fills)


def scan(p: data.Plan, source: data.Source, limit: int | None) -> Scan:
    p = data.for_source(p, source)
    result = Scan(source.field)
    checker = _Rows(p, source, result)
    per_file = None if limit is None else max(limit // len(source.files), 1)
    result.complete = formats.of(source.format).scan(source, checker, per_file)
    return result


class _Rows:
    """The checks of one row, whatever the format: `values` maps column -> list of values."""

    def __init__(self, p: data.Plan, source: data.Source, result: Scan):
        self.p, self.source, self.result = p, source, result
        self.na = set(p.na_values)
        self.labels = {c: p.output_of(c) for c in p.label_columns()}
        self.collect = set(data.pending(p))
        self.widths = p.padded_widths()

    def missing(self, value) -> bool:
        if isinstance(value, float):
            return not math.isfinite(value)
        return value == "" or value in self.na

    def is_missing(self, c, value) -> bool:
        if value is None:
            return True
        if not isinstance(value, list):
            return self.missing(value)
        if not value:
            return c not in self.p.varlen  # an empty list is a valid variable-length value
        if isinstance(value[0], float):
            return not np.isfinite(np.asarray(value, np.float64)).all()
        return isinstance(value[0], str) and any(self.missing(x) for x in value)

    def fits(self, where: str, what: str, c: str, count: int) -> None:
        """A variable-length value holds no more values than the input it is padded to."""
        width = self.widths.get(c)
        if width is not None and count > width:
            raise SpecError(
                f"{self.source.field}.files",
                f"{where} {what} holds {count} values, more than the input's {width}",
                "widen the input, or shorten the lists",
            )

    def row(self, where: str, values: dict) -> None:
        p = self.p
        self.result.rows += 1
        absent = [c for c, v in values.items() if self.is_missing(c, v)]
        if absent:
            if p.drop_missing:
                self.result.dropped += 1
                return
            for c in absent:
                if c not in p.fills:
                    self.refuse_missing(where, c, values[c])
        for c, value in values.items():
            if c in absent:
                continue
            if isinstance(value, list):
                if c in self.labels or c in self.collect or c in p.decode:
                    for v in value:
                        self.cell(where, c, v)
            else:
                self.cell(where, c, value)

    def refuse_missing(self, where, c, value):
        shown = value if not isinstance(value, list) else value[:3]
        what = (
            f"is {shown!r}, not a finite number" if _infinite(value) else f"is missing ({shown!r})"
        )
        raise SpecError(
            f"{self.source.field}.files",
            f"{where} column {c!r} {what}",
            f"set data.missing: drop, or a fill (data.missing: {{{c}: "
            f"{'most_frequent' if self.p.types[c] == 'string' else 'median'}}}), or fix the file",
        )

    def chunk(self, path: str, lines: list, columns: dict) -> None:
        """Many CSV rows at once: `columns` maps column -> list of cell texts."""
        p = self.p
        na = np.array(sorted(self.na | {""}))
        cells = {c: np.array(v, dtype=str) for c, v in columns.items()}
        missing = {c: np.isin(a, na) for c, a in cells.items()}
        for c, m in missing.items():
            if m.any():
                self.result.markers.update(np.unique(cells[c][m]).tolist())
        for c, a in cells.items():  # TensorFlow reads these as NaN and inf: missing too
            if p.types[c] == "float":
                missing[c] |= np.isin(
                    np.char.lstrip(np.char.lower(np.char.strip(a)), "+-"), NON_FINITE
                )

        def where(i):
            return f"{path} line {lines[i]}"

        def values_of(c, present):
            kind = p.types[c]
            values = cells[c][present]
            if kind != "string":
                try:
                    values = values.astype(np.float64 if kind == "float" else np.int64)
                except ValueError:
                    for i in np.flatnonzero(present):  # find the first bad cell to name it
                        self.cell(where(i), c, str(cells[c][i]))
            return values

        self.typed_chunk(where, len(lines), missing, values_of, lambda c, i: str(cells[c][i]))

    def typed_chunk(self, where, rows: int, missing: dict, values_of, shown=None) -> None:
        """Many rows at once: `missing` maps column -> mask of its missing cells,
        `values_of(column, mask)` gives the values of the rows in the mask, `where(i)` names
        row i, `shown(column, i)` the missing cell an error quotes."""
        p = self.p
        any_missing = np.zeros(rows, bool)
        for m in missing.values():
            any_missing |= m
        keep = np.ones(rows, bool)
        if any_missing.any():
            if p.drop_missing:
                self.result.dropped += int(any_missing.sum())
                keep = ~any_missing
            else:
                for c, m in missing.items():
                    if c not in p.fills and m.any():
                        i = int(np.argmax(m))
                        self.refuse_missing(where(i), c, shown(c, i) if shown else None)
        self.result.rows += rows
        for c, m in missing.items():
            present = keep & ~m
            values = values_of(c, present)
            if c in self.labels:
                self.labels_chunk(where, c, values, np.flatnonzero(present))
            elif c in self.collect and c in p.fills:
                self.result.values.setdefault(c, []).extend(values.tolist())

    def labels_chunk(self, where, c, values, index) -> None:
        p = self.p
        output = self.labels[c]
        kind, classes = p.io.label_kinds[output]
        if c in p.vocabulary:
            names = p.vocabulary[c]
            if names is None:
                self.result.values.setdefault(c, set()).update(np.unique(values).tolist())
                return
            bad = ~np.isin(values, np.array(names, dtype=str))
        elif kind in ("sparse", "binary") and classes and len(p.labels[output]) == 1:
            bad = (values < 0) | (values >= classes) | (values != np.floor(values))
        else:
            return
        if bad.any():
            i = int(np.argmax(bad))
            value = values[i]
            self.label(where(index[i]), c, value.item() if hasattr(value, "item") else value)

    def cell(self, where: str, c: str, v) -> None:
        p = self.p
        kind = p.types[c]
        if c in p.decode:
            magic = _IMAGE_MAGIC[p.decode[c].format]
            if not isinstance(v, bytes) or not v.startswith(magic):
                raise SpecError(
                    f"{self.source.field}.files",
                    f"{where} column {c!r} is not "
                    f"{p.decode[c].format if p.decode[c].format != 'auto' else 'PNG or JPEG'} "
                    "image bytes",
                    "store the encoded image file's bytes, or fix data.decode.format",
                )
            return
        if kind != "string" and isinstance(v, str):
            try:
                number = float(v) if kind == "float" else int(v)
            except ValueError:
                raise SpecError(
                    f"{self.source.field}.files",
                    f"{where} column {c!r}: {v!r} is "
                    f"not {'a number' if kind == 'float' else 'an integer'} "
                    f"({c} is read as {kind})",
                    f"fix the value, or declare data.columns.{c}: string and feed "
                    "a tf.string input",
                ) from None
            v = number
        if c in self.labels:
            self.label(where, c, v)
        if c in self.collect and c in p.fills:
            self.result.values.setdefault(c, []).append(v)

    def label(self, where: str, c: str, v) -> None:
        p = self.p
        output = self.labels[c]
        kind, classes = p.io.label_kinds[output]
        if c in p.vocabulary:
            text = v.decode() if isinstance(v, bytes) else str(v)
            names = p.vocabulary[c]
            if names is None:
                self.result.values.setdefault(c, set()).add(text)
            elif text not in names:
                raise SpecError(
                    f"{self.source.field}.files",
                    f"{where} column {c!r}: label {text!r} is not one of the classes {names[:10]}",
                    "fix the row, or add the class to data.label_vocabulary",
                )
            return
        if kind in ("sparse", "binary") and classes and len(p.labels[output]) == 1:
            if float(v) != int(float(v)):
                raise SpecError(
                    f"{self.source.field}.files",
                    f"{where} column {c!r}: label {v!r} is not a class id (0..{classes - 1})",
                    "fix the row",
                )
            if not 0 <= int(float(v)) < classes:
                raise SpecError(
                    f"{self.source.field}.files",
                    f"{where} column {c!r}: label "
                    f"{v!r} is outside the model's {classes} classes (0..{classes - 1})",
                    "fix the row, or give the output as many units as classes",
                )


def _infinite(value) -> bool:
    """Whether a cell (or a list of values) holds an infinity, as a float or as text."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, float) and math.isinf(v):
            return True
        if isinstance(v, str) and v.strip().lower().lstrip("+-") in ("inf", "infinity"):
            return True
    return False
