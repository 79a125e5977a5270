"""NumPy .npz archives (numpy.savez): one array per column, one row per example, read into
memory whole; remote archives are fetched before anything reads them."""

from __future__ import annotations

import numpy as np

from k2e_core.errors import SpecError, first_line
from k2e_core.inputs.formats import Column, Source, files
from k2e_core.tf_runtime import tf

NAME = "npz"
EXTENSIONS = (".npz",)
TYPED = True  # the file says each column's type (else it is told from the values)
LISTS = False  # a column may hold a list per record, of varying length
REMOTE = "fetch"


def columns(spec_field, local, path, na_values):
    try:
        with np.load(local) as arrays:
            found = {k: Column(_kind(a.dtype), tuple(a.shape[1:])) for k, a in arrays.items()}
            rows = {len(a) for a in arrays.values()}
    except (OSError, ValueError, EOFError) as err:
        raise SpecError(
            f"{spec_field}.files",
            f"{path} is not a NumPy .npz file ({first_line(err)})",
            "write it with numpy.savez (text as str arrays, not objects)",
        ) from None
    except Exception as err:  # a corrupt archive: zipfile.BadZipFile and friends
        raise SpecError(
            f"{spec_field}.files",
            f"{path} is not a NumPy .npz file ({type(err).__name__}: {first_line(err)})",
            "write it with numpy.savez",
        ) from None
    if rows == {0} or not rows:
        raise SpecError(
            f"{spec_field}.files", f"{path} holds no rows", "point it at a file with data"
        )
    if len(rows) > 1:
        raise SpecError(
            f"{spec_field}.files",
            f"{path} holds arrays of different lengths {sorted(rows)}",
            "save one row per example in every array",
        )
    return found, []


def _kind(dtype) -> str:
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    return "string"


def scan(source: Source, checker, per_file) -> bool:
    return files.scan_files(
        source, per_file, lambda name, local: _scan_file(name, checker, per_file, local)
    )


def _scan_file(path, checker, limit, local) -> bool:
    p = checker.p
    with np.load(local) as arrays:
        cols = {c: arrays[c] for c in p.columns()}
    rows = len(next(iter(cols.values())))
    size = sum(a.nbytes for a in cols.values())
    take = rows if limit is None or size <= limit else max(int(rows * limit / size), 1)
    for i in range(take):
        values = {}
        for c, a in cols.items():
            v = a[i]
            values[c] = v.tolist() if isinstance(v, np.ndarray) and v.ndim else v.item()
        checker.row(f"{path} row {i + 1}", values)
    checker.result.bytes += int(size * take / rows)
    return take == rows


def records(p, source: Source, paths, parallel_reads, shuffled, seed, shard=None):
    """Columns of one dtype and shape travel as one array, split again after batching:
    shuffle and batch cost per tensor of an element (five columns ran at half the speed of
    the two arrays a hand-written pipeline has)."""
    wanted = p.columns()
    arrays = {c: [] for c in wanted}
    for path in paths:
        with np.load(path) as data:
            for c in wanted:
                arrays[c].append(data[c])
    arrays = {c: np.concatenate(v) for c, v in arrays.items()}
    groups: dict = {}
    for c, a in arrays.items():
        groups.setdefault((a.dtype.str, a.shape[1:]), []).append(c)
    packed = {
        str(i): np.stack([arrays[c] for c in cols], axis=1)
        for i, cols in enumerate(groups.values())
    }

    def parse(batch):
        return {
            c: batch[str(i)][:, j]
            for i, cols in enumerate(groups.values())
            for j, c in enumerate(cols)
        }

    ds = tf.data.Dataset.from_tensor_slices(packed)
    return (ds.shard(*shard) if shard else ds), parse


def column_of(text: str, p, source: Source) -> str | None:
    return None
