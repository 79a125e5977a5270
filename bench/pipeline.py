"""Input pipelines: k2e's against the tf.data pipeline a user would write, side by side.

    .venv/bin/python bench/pipeline.py [--reps 3] [--quick]

Iris-like rows (4 float features, an int class), batch 256, in turns within each repetition:
  * the pipeline alone, per format (CSV, CSV.gz, TFRecord, TFRecord.gz, NPZ) on one file,
    at least 5 repetitions:
    k2e's input_fn against `TextLineDataset -> shuffle -> repeat -> batch -> decode_csv`
    (`TFRecordDataset ... parse_example`, `from_tensor_slices` for NPZ), examples/s;
  * training on one CSV: `k2e train` (steady state) against Keras `fit` of the same compiled
    model on that hand-written pipeline (the fair baseline), and on k2e's own pipeline;
  * the same rows in 8 and 64 CSV shards: `k2e train` against the one file;
  * Parquet: `k2e train` against Keras `fit` on pyarrow record batches in tf.data (the
    reader a user would write) and against the same rows from CSV, and the peak memory of
    training on one Parquet file of 1 GB or more against a small one (`--only parquet`
    measures these and the CSV and Parquet pipelines alone);
  * the shards on moto's S3 server (127.0.0.1), streamed: time to the first training step
    (a fresh `k2e train` process), peak local disk under its temp directory and peak memory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import throughput  # noqa: E402
from bench.common import (  # noqa: E402
    BIN,
    REPO,
    finish,
    fmt,
    fmt_spread,
    met_cell,
    part_parser,
    ratios,
    row,
    spread,
    start_server,
)

PART = "pipeline"
BATCH = 256
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
FORMATS = ("csv", "csv.gz", "tfrecord", "tfrecord.gz", "npz", "parquet")
#: Rows per Parquet row group: pyarrow's default (1Mi rows) would make the bench's file one
#: group; Spark writes groups of about 128 MB.
ROW_GROUP = 100_000
BUCKET = "k2e-bench"


# --------------------------------------------------------------------------- data


def _rows(n: int):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 4)).round(3).astype(np.float32), rng.integers(0, 3, n)


def write(x, y, path: str) -> str:
    """The rows in the format `path` ends with, as pandas and TFRecordWriter write them."""
    if ".csv" in path:
        import pandas as pd

        frame = pd.DataFrame(x, columns=COLUMNS[:4]).assign(species=y)
        frame.to_csv(path, index=False, compression="gzip" if path.endswith(".gz") else None)
    elif ".tfrecord" in path:
        from k2e_core.estimator.compat import tf

        with tf.io.TFRecordWriter(path, "GZIP" if path.endswith(".gz") else None) as w:
            for features, label in zip(x, y):
                f = {
                    c: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                    for c, v in zip(COLUMNS, features)
                }
                f["species"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
                w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
    elif path.endswith(".parquet"):
        import pandas as pd

        frame = pd.DataFrame(x, columns=COLUMNS[:4]).assign(species=y)
        frame.to_parquet(path, index=False, row_group_size=ROW_GROUP)
    else:
        np.savez(path, **{c: x[:, i] for i, c in enumerate(COLUMNS[:4])}, species=y)
    return path


def shards(x, y, count: int, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(y)), count)):
        write(x[part], y[part], os.path.join(out_dir, f"part-{i:03d}.csv"))
    return os.path.join(out_dir, "*.csv")


# --------------------------------------------------------------------------- pipelines


def hand_written(path: str):
    """The pipeline of the tf.data guide for the file's format: (features, label) batches."""
    from k2e_core.estimator.compat import tf

    autotune = tf.data.AUTOTUNE
    if ".csv" in path:
        ds = tf.data.TextLineDataset(path, "GZIP" if path.endswith(".gz") else None).skip(1)

        def parse(lines):
            values = tf.io.decode_csv(lines, [[0.0]] * 4 + [[0]])
            return tf.stack(values[:4], axis=1), values[4]

    elif ".tfrecord" in path:
        ds = tf.data.TFRecordDataset(path, "GZIP" if path.endswith(".gz") else None)
        spec = {c: tf.io.FixedLenFeature([], tf.float32) for c in COLUMNS[:4]}
        spec["species"] = tf.io.FixedLenFeature([], tf.int64)

        def parse(records):
            cols = tf.io.parse_example(records, spec)
            return tf.stack([cols[c] for c in COLUMNS[:4]], axis=1), cols["species"]

    elif path.endswith(".parquet"):
        return pyarrow_reader(path)
    else:
        with np.load(path) as arrays:
            x = np.stack([arrays[c] for c in COLUMNS[:4]], axis=1)
            ds = tf.data.Dataset.from_tensor_slices((x, arrays["species"]))
        return ds.shuffle(10_000).repeat().batch(BATCH).prefetch(autotune)
    ds = ds.shuffle(10_000).repeat().batch(BATCH)
    return ds.map(parse, num_parallel_calls=autotune).prefetch(autotune)


def pyarrow_reader(path: str):
    """The Parquet reader a user would write: pyarrow record batches into tf.data."""
    import pyarrow.parquet as pq

    from k2e_core.estimator.compat import tf

    def batches():
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=COLUMNS):
            x = np.stack([batch.column(c).to_numpy() for c in COLUMNS[:4]], axis=1)
            yield x.astype(np.float32), batch.column("species").to_numpy()

    ds = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ),
    )
    ds = ds.unbatch().shuffle(10_000).repeat().batch(BATCH)
    return ds.prefetch(tf.data.AUTOTUNE)


def _spec(files: str, model_dir: str, steps: int, batch: int = BATCH):
    return throughput._spec("iris", files, {}, batch, steps, model_dir)


def batches_per_second(ds, batches: int) -> float:
    it = iter(ds)
    for _ in range(20):
        next(it)
    began = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - began)


def k2e_pipeline_rate(path: str, batches: int, work: str) -> float:
    from k2e_core.steps import job

    with job.open_job(_spec(path, tempfile.mkdtemp(dir=work), 1)) as j:
        j.check_data()
        return batches_per_second(j.data.input_fn("train")(), batches) * BATCH


def keras_fit_rate(ds, steps: int, model=None) -> float:
    from k2e_core.estimator.compat import tf

    if model is None:
        tf.keras.backend.clear_session()
        sys.path.insert(0, os.path.join(REPO, "examples"))
        import models

        model = models.iris_model()
    model.fit(ds, steps_per_epoch=50, epochs=1, verbose=0)
    began = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * BATCH / (time.perf_counter() - began)


def k2e_train_rate(files: str, steps: int, work: str) -> float:
    return throughput.k2e_rate(_spec(files, tempfile.mkdtemp(dir=work), steps)) * BATCH


def k2e_pipeline_fit_rate(files: str, steps: int, work: str) -> float:
    from k2e_core.steps import job

    with job.open_job(_spec(files, tempfile.mkdtemp(dir=work), steps)) as j:
        j.check_data()
        return keras_fit_rate(j.data.input_fn("train")(), steps, j.model)


# --------------------------------------------------------------------------- streaming


def _disk_usage(root: str) -> int:
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes; 0 once it is gone.
    Not wait4's ru_maxrss: that counts the bench's own memory, which the child had before
    its exec."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def streamed_run(files_url: str, options: dict, steps: int, work: str, batch=BATCH) -> dict:
    """A fresh `k2e train` of the shards under `files_url`: seconds to its first step,
    peak bytes under its temp directory, peak memory (max RSS)."""
    tmp = tempfile.mkdtemp(dir=work)
    spec = _spec(files_url, os.path.join(work, os.path.basename(tmp) + "-model"), steps, batch)
    path = os.path.join(tmp, "..", os.path.basename(tmp) + ".yaml")
    raw = spec.model_dump(mode="json", exclude_none=True, warnings=False)
    raw["storage"] = {"options": options}
    raw["model"]["factory"] = os.path.join(REPO, "examples", "models.py") + ":iris_model"
    raw["run_config"]["log_every_secs"] = 0.01
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    env = {**os.environ, "TMPDIR": tmp, "TF_CPP_MIN_LOG_LEVEL": "2"}
    began = time.perf_counter()
    proc = subprocess.Popen(
        [os.path.join(BIN, "k2e"), "train", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = [0, 0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _disk_usage(tmp))
            peak[1] = max(peak[1], _peak_rss(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first_step, tail = None, []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        if first_step is None and re.search(r"\bstep \d+/\d+", line):
            first_step = time.perf_counter() - began
    returncode = proc.wait()
    done.set()
    watcher.join()
    if returncode != 0:
        raise SystemExit("k2e train failed:\n" + "".join(tail))
    shutil.rmtree(tmp, ignore_errors=True)
    return {"first_step": first_step, "disk": peak[0], "rss": peak[1]}


def _moto():
    from tests.conftest import free_port

    port = free_port()
    proc = start_server(
        [os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port
    )
    options = {"s3": {"endpoint_url": f"http://127.0.0.1:{port}", "key": "b", "secret": "b"}}
    return proc, options


# --------------------------------------------------------------------------- measure


def measure(reps: int, quick: bool, only: str | None = None) -> list:
    from k2e_core.estimator import compat  # noqa: F401 - TensorFlow, quietly

    rows_n = 20_000 if quick else 400_000
    batches = 20 if quick else 3000
    steps = 30 if quick else 5000
    work = tempfile.mkdtemp(prefix="k2e-bench-pipeline-")
    x, y = _rows(rows_n)
    out = []
    try:
        formats = ("csv", "parquet") if only == "parquet" else FORMATS
        files = {f: write(x, y, os.path.join(work, f"iris.{f}")) for f in formats}
        for fmt_ in formats:
            k2e, hand = [], []
            for rep in range(reps if quick else max(reps, 5)):  # about a second each
                sides = [("hand", hand), ("k2e", k2e)]
                for side, samples in sides if rep % 2 == 0 else sides[::-1]:
                    if side == "hand":
                        ds = hand_written(files[fmt_])
                        samples.append(batches_per_second(ds, batches) * BATCH)
                    else:
                        samples.append(k2e_pipeline_rate(files[fmt_], batches, work))
            ratio = spread(ratios(k2e, hand), 2)
            out.append(
                row(
                    PART,
                    f"pipeline alone, {fmt_}",
                    spread(k2e, 0),
                    "examples/s",
                    baseline=spread(hand, 0),
                    baseline_name="pyarrow record batches in tf.data"
                    if fmt_ == "parquet"
                    else "hand-written tf.data",
                    ratio=ratio,
                    target=">= 0.9x hand-written",
                    met=ratio["median"] >= 0.9,
                    kind="pipeline",
                )
            )
            print(f"pipeline {fmt_}: k2e {k2e} hand {hand}", file=sys.stderr, flush=True)

        csv_file = files["csv"]
        if only == "parquet":
            return out + parquet_rows(files["parquet"], csv_file, reps, steps, quick, work)
        train = {"k2e": [], "fit_hand": [], "fit_k2e": []}
        for rep in range(reps):
            order = list(train) if rep % 2 == 0 else list(train)[::-1]
            for side in order:
                if side == "k2e":
                    train[side].append(k2e_train_rate(csv_file, steps, work))
                elif side == "fit_hand":
                    train[side].append(keras_fit_rate(hand_written(csv_file), steps))
                else:
                    train[side].append(k2e_pipeline_fit_rate(csv_file, steps, work))
        print(f"training: {train}", file=sys.stderr, flush=True)
        ratio = spread(ratios(train["k2e"], train["fit_hand"]), 2)
        out.append(
            row(
                PART,
                "k2e train, iris CSV",
                spread(train["k2e"], 0),
                "examples/s",
                baseline=spread(train["fit_hand"], 0),
                baseline_name="Keras fit on the hand-written pipeline",
                ratio=ratio,
                target=">= 1.0x Keras fit",
                met=ratio["median"] >= 1.0,
                kind="training",
                fit_on_k2e_pipeline=spread(train["fit_k2e"], 0),
                ratio_to_fit_on_k2e_pipeline=spread(ratios(train["k2e"], train["fit_k2e"]), 2),
            )
        )

        out += parquet_rows(files["parquet"], csv_file, reps, steps, quick, work)

        globs = {n: shards(x, y, n, os.path.join(work, f"shards{n}")) for n in (8, 64)}
        sharded = {1: [], 8: [], 64: []}
        for rep in range(reps):
            order = list(sharded) if rep % 2 == 0 else list(sharded)[::-1]
            for n in order:
                sharded[n].append(k2e_train_rate(csv_file if n == 1 else globs[n], steps, work))
        print(f"shards: {sharded}", file=sys.stderr, flush=True)
        for n in (8, 64):
            ratio = spread(ratios(sharded[n], sharded[1]), 2)
            out.append(
                row(
                    PART,
                    f"k2e train, {n} CSV shards",
                    spread(sharded[n], 0),
                    "examples/s",
                    baseline=spread(sharded[1], 0),
                    baseline_name="the same rows in one file",
                    ratio=ratio,
                    target=">= 0.9x one file",
                    met=ratio["median"] >= 0.9,
                    kind="shards",
                    shards=n,
                )
            )

        server, options = _moto()
        try:
            import s3fs

            fs = s3fs.S3FileSystem(**options["s3"])
            fs.mkdir(BUCKET)
            remote = {}
            for n in (1, 64):
                local = os.path.join(work, f"shards{n}")
                if n == 1:
                    os.makedirs(local, exist_ok=True)
                    shutil.copy(csv_file, os.path.join(local, "part-000.csv"))
                fs.put(local + "/", f"{BUCKET}/shards{n}/", recursive=True)
                remote[n] = f"s3://{BUCKET}/shards{n}/*.csv"
            total = os.path.getsize(csv_file)
            stream = {1: [], 64: []}
            for rep in range(reps):
                for n in (1, 64) if rep % 2 == 0 else (64, 1):
                    stream[n].append(streamed_run(remote[n], options, steps, work))
            print(f"streamed: {stream}", file=sys.stderr, flush=True)
            first = {n: [r["first_step"] for r in runs] for n, runs in stream.items()}
            ratio = spread(ratios(first[64], first[1]), 2)
            out.append(
                row(
                    PART,
                    "S3, 64 shards streamed: time to first step",
                    spread(first[64], 2),
                    "s",
                    baseline=spread(first[1], 2),
                    baseline_name="one file",
                    ratio=ratio,
                    target="<= 1.2x one file",
                    met=ratio["median"] <= 1.2,
                    kind="stream",
                    data_bytes=total,
                    disk={str(n): spread([r["disk"] for r in v], 0) for n, v in stream.items()},
                    rss={str(n): spread([r["rss"] for r in v], 0) for n, v in stream.items()},
                )
            )
        finally:
            server.terminate()
            server.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def write_big_parquet(path: str, nbytes: float) -> str:
    """Iris-like rows in one Parquet file of at least `nbytes`, written a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    writer = None
    try:
        while not os.path.exists(path) or os.path.getsize(path) < nbytes:
            x = rng.normal(size=(ROW_GROUP, 4)).astype(np.float32)
            table = pa.table(
                {
                    **{c: x[:, i] for i, c in enumerate(COLUMNS[:4])},
                    "species": rng.integers(0, 3, ROW_GROUP),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    return path


def parquet_rows(parquet_file, csv_file, reps, steps, quick, work) -> list:
    """k2e train on Parquet against Keras fit on the pyarrow reader, the same rows from
    CSV, and the peak memory of training on a Parquet file of 1 GB or more."""
    train = {"k2e": [], "fit_reader": [], "k2e_csv": []}
    for rep in range(reps):
        for side in list(train) if rep % 2 == 0 else list(train)[::-1]:
            if side == "k2e":
                train[side].append(k2e_train_rate(parquet_file, steps, work))
            elif side == "fit_reader":
                train[side].append(keras_fit_rate(pyarrow_reader(parquet_file), steps))
            else:
                train[side].append(k2e_train_rate(csv_file, steps, work))
    print(f"parquet training: {train}", file=sys.stderr, flush=True)
    out = []
    for measure_name, baseline, name, target in (
        ("k2e train, iris Parquet", "fit_reader", "Keras fit on the pyarrow reader", 1.0),
        ("k2e train, the same rows from Parquet", "k2e_csv", "k2e train from CSV", 1.0),
    ):
        ratio = spread(ratios(train["k2e"], train[baseline]), 2)
        out.append(
            row(
                PART,
                measure_name,
                spread(train["k2e"], 0),
                "examples/s",
                baseline=spread(train[baseline], 0),
                baseline_name=name,
                ratio=ratio,
                target=f">= {target:.1f}x",
                met=ratio["median"] >= target,
                kind="parquet",
            )
        )
    return out + parquet_memory_rows(parquet_file, reps, quick, work)


#: Training on the big Parquet file reads this many row groups (an eighth of a 1 GB file),
#: in batches of MEMORY_BATCH rows.
MEMORY_GROUPS = 50
MEMORY_BATCH = 4096


def parquet_memory_rows(parquet_file, reps, quick, work) -> list:
    """Peak memory of `k2e train` reading MEMORY_GROUPS row groups of a Parquet file of 1 GB
    or more, locally and from the S3 server (with the local disk it used), against the
    same steps on the small file."""
    import s3fs

    big = write_big_parquet(os.path.join(work, "big.parquet"), 2e7 if quick else 1.0e9)
    groups = 4 if quick else MEMORY_GROUPS
    steps = groups * ROW_GROUP // MEMORY_BATCH
    server, options = _moto()
    try:
        fs = s3fs.S3FileSystem(**options["s3"])
        fs.mkdir(BUCKET)
        for path in (big, parquet_file):
            fs.put_file(path, f"{BUCKET}/{os.path.basename(path)}")
        paths = {
            "big": big,
            "small": parquet_file,
            "big_s3": f"s3://{BUCKET}/{os.path.basename(big)}",
            "small_s3": f"s3://{BUCKET}/{os.path.basename(parquet_file)}",
        }
        runs = {side: [] for side in paths}
        for rep in range(max(1, reps - 1)):
            for side in list(paths) if rep % 2 == 0 else list(paths)[::-1]:
                s3 = options if side.endswith("_s3") else {}
                runs[side].append(streamed_run(paths[side], s3, steps, work, MEMORY_BATCH))
    finally:
        server.terminate()
        server.wait(10)
    print(f"parquet memory: {runs}", file=sys.stderr, flush=True)
    mib = {side: [r["rss"] / 2**20 for r in v] for side, v in runs.items()}
    out = []
    for where, suffix in (("", ""), (" on S3", "_s3")):
        ratio = spread(ratios(mib["big" + suffix], mib["small" + suffix]), 2)
        out.append(
            row(
                PART,
                f"k2e train, one {os.path.getsize(big) / 1e9:.2f} GB Parquet file{where}, "
                f"{groups} row groups read: peak memory",
                spread(mib["big" + suffix], 0),
                "MiB",
                baseline=spread(mib["small" + suffix], 0),
                baseline_name=f"the same steps on a {os.path.getsize(parquet_file) / 1e6:.0f} MB "
                f"file{where}",
                ratio=ratio,
                target="<= 1.2x",
                met=ratio["median"] <= 1.2,
                kind="parquet",
                disk=spread([r["disk"] for r in runs["big" + suffix]], 0),
                rows_read=groups * ROW_GROUP,
            )
        )
    os.remove(big)
    return out


def table(rows) -> list:
    lines = [
        "| measure | k2e | baseline | k2e / baseline | target |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        digits = 2 if r["unit"] == "s" else 0
        lines.append(
            f"| {r['measure']} | {fmt_spread(r['value'], digits)} {r['unit']} "
            f"| {r['baseline_name']}: {fmt_spread(r['baseline'], digits)} "
            f"| {fmt_spread(r['ratio'], 2, 'x')} | {r['target']}: {met_cell(r)} |"
        )
    for r in rows:
        if r.get("kind") == "training":
            lines.append(
                f"\nKeras fit on k2e's own pipeline: {fmt_spread(r['fit_on_k2e_pipeline'], 0)} "
                f"examples/s (k2e {fmt_spread(r['ratio_to_fit_on_k2e_pipeline'], 2, 'x')} of it)."
            )
        if r.get("kind") == "stream":
            mb = {n: fmt((s["median"] or 0) / 1e6, 1) for n, s in r["disk"].items()}
            rss = {n: fmt((s["median"] or 0) / 2**20, 0) for n, s in r["rss"].items()}
            lines.append(
                f"\nStreaming {fmt(r['data_bytes'] / 1e6, 1)} MB of CSV from S3: peak local "
                f"disk {mb['1']} MB (1 file) and {mb['64']} MB (64 shards); peak memory "
                f"{rss['1']} MiB and {rss['64']} MiB."
            )
    return lines


def main(argv=None):
    parser = part_parser(__doc__, reps=3, quick="20,000 rows, 30 steps, one rep")
    parser.add_argument(
        "--only",
        choices=["parquet"],
        help="the Parquet rows alone (and the CSV ones they compare with)",
    )
    args = parser.parse_args(argv)
    rows = measure(1 if args.quick else args.reps, args.quick, args.only)
    return finish(rows, table, args.json)


if __name__ == "__main__":
    main()
