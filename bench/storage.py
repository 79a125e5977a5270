"""Storage: publishing to an S3 endpoint, concurrent against sequential, and the bytes a resumed
training job downloads.

    .venv/bin/python bench/storage.py [--reps 3] [--quick]

moto's S3 server runs on 127.0.0.1 in a process of its own.
1. A SavedModel-shaped directory of about 200 files / 100 MB is published with 16 concurrent
   transfers and with one at a time, in turns, straight to the server (loopback: no network
   latency, so client and server CPU are all there is to overlap; both are reported) and
   through a proxy that delays every packet by half of `--rtt-ms` each way, as a network
   between a training job and an object store does.
2. The bag-of-words job trains with its model_dir on S3, then a second run resumes it:
   bytes downloaded against the checkpoint it resumes from (variables and index; its graph is
   rebuilt, not downloaded) and against the whole model_dir.
3. A model of 19M parameters (two Dense(4096); a checkpoint with Adam's slots is about
   230 MB) trains with a checkpoint every 2 seconds, its model_dir on the S3 server against
   a local one, in turns: training's wall time and rate (checkpoints go up in the
   background). And one such checkpoint file uploaded by k2e against s3fs's own `put_file`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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

PART = "storage"
BUCKET = "k2e-bench"
CONCURRENCY = 16


# --------------------------------------------------------------------------- latency proxy


async def _pump(reader, writer, delay):
    """Forwards bytes in order, each chunk `delay` seconds after it arrived."""
    queue: asyncio.Queue = asyncio.Queue()

    async def send():
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, chunk = item
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    loop = asyncio.get_running_loop()
    try:
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, chunk))
    finally:
        queue.put_nowait(None)
        await sender


async def _proxy(listen_port, target_port, delay):
    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pump(client_reader, server_writer, delay),
            _pump(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------- helpers


def _cpu_seconds(pid) -> float | None:
    """User + system CPU seconds of a process so far (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def publish_once(src, options, concurrency, server_pid) -> dict:
    from k2e_core import storage
    from k2e_core.storage import publish

    server_cpu = _cpu_seconds(server_pid)
    cpu, began = time.process_time(), time.perf_counter()
    with storage.configured(options, concurrency=concurrency):
        publish.publish(src, f"s3://{BUCKET}/bench/{uuid.uuid4().hex}", run_id="bench")
    wall = time.perf_counter() - began
    server = _cpu_seconds(server_pid)
    return {
        "wall": wall,
        "client_cpu": time.process_time() - cpu,
        "server_cpu": None if server is None else server - server_cpu,
    }


def publish_rows(src, options, reps, server_pid, label, met_required) -> list:
    samples = {1: [], CONCURRENCY: []}
    for rep in range(reps):
        for c in (1, CONCURRENCY) if rep % 2 == 0 else (CONCURRENCY, 1):
            samples[c].append(publish_once(src, options, c, server_pid))
    seq = [s["wall"] for s in samples[1]]
    conc = [s["wall"] for s in samples[CONCURRENCY]]
    speedup = spread(ratios(seq, conc), 2)
    client = spread([s["client_cpu"] for s in samples[1]], 2)
    server = spread([s["server_cpu"] for s in samples[1]], 2)
    # The sequential wall time over the least CPU time any overlap still needs.
    cpu_bound = None
    if client["median"] and server["median"]:
        least = max(
            client["median"],
            server["median"],
            (client["median"] + server["median"]) / os.cpu_count(),
        )
        cpu_bound = round(statistics.median(seq) / least, 2)
    return [
        row(
            PART,
            f"publish, {label}: {CONCURRENCY} concurrent transfers",
            spread(conc, 2),
            "s",
            baseline=spread(seq, 2),
            baseline_name="one at a time",
            ratio=speedup,
            target=">= 3x faster" if met_required is not None else None,
            met=None if met_required is None else speedup["median"] >= 3,
            sequential_client_cpu=client,
            sequential_server_cpu=server,
            cpu_bound=cpu_bound,
        )
    ]


def resume_row(options, steps) -> dict:
    from k2e_core import storage
    from k2e_core.steps import job

    spec = job.load_spec(
        os.path.join(REPO, "examples", "bag_of_words.yaml"),
        {
            "model_dir": f"s3://{BUCKET}/bench-resume/model_dir",
            "data.train.files": _bow_data(),
            "data.eval": None,
            "train.steps": steps,
            "run_config.save_checkpoints_steps": max(steps // 5, 1),
            "storage.options": options,
            "export": None,
        },
    )
    job.train_step(spec)
    again = job.train_step(spec, {"train.steps": steps + 10})
    with storage.configured(options):
        files = storage.find(f"s3://{BUCKET}/bench-resume/model_dir")
    checkpoint = sum(
        v
        for k, v in files.items()
        if k.startswith(f"model.ckpt-{steps}.") and not k.endswith(".meta")
    )
    downloaded = again["resume_download_bytes"]
    ratio = downloaded / checkpoint
    return row(
        PART,
        "resume bag_of_words from S3: bytes downloaded",
        {"median": downloaded, "min": downloaded, "max": downloaded, "n": 1},
        "bytes",
        baseline={"median": checkpoint, "min": checkpoint, "max": checkpoint, "n": 1},
        baseline_name="checkpoint resumed from",
        ratio={"median": round(ratio, 4), "min": round(ratio, 4), "max": round(ratio, 4), "n": 1},
        target="<= 1.05x the checkpoint",
        met=ratio <= 1.05,
        model_dir_bytes=sum(files.values()),
        model_dir_files=len(files),
    )


BIG_MODEL = """
import tensorflow as tf


def build(width=4096, inputs=256):
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(inputs,), name="x"),
        tf.keras.layers.Dense(width, activation="relu"),
        tf.keras.layers.Dense(width, activation="relu"),
        tf.keras.layers.Dense(1, name="y"),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model
"""


def _big_job(work: str, width: int) -> dict:
    import numpy as np

    with open(os.path.join(work, "big_model.py"), "w") as f:
        f.write(BIG_MODEL)
    rng = np.random.default_rng(1)
    np.savez(
        os.path.join(work, "big.npz"),
        x=rng.normal(size=(512, 256)).astype(np.float32),
        y=rng.normal(size=(512, 1)).astype(np.float32),
    )
    return {
        "model": {
            "factory": os.path.join(work, "big_model.py") + ":build",
            "factory_kwargs": {"width": width},
        },
        "data": {"train": {"files": os.path.join(work, "big.npz")}, "batch_size": 32},
        "eval": {"every_steps": "end"},
        "run_config": {
            "save_checkpoints_secs": 2,
            "save_summary_steps": 0,
            "keep_checkpoint_max": 2,
        },
    }


def checkpoint_rows(
    options, reps: int, quick: bool, server_pid: int, server_cpus: str | None = None
) -> list:
    """Training with model_dir on S3 against a local one (steady-state steps/s, and wall
    time with the last upload), and one big checkpoint file uploaded by k2e against s3fs's
    put_file. `server_cpus`: the S3 server runs on those CPUs, apart from this process's
    (run it under `taskset -c` for others), as a store on another machine would."""
    import s3fs

    from k2e_core import storage
    from k2e_core.steps import job

    work = tempfile.mkdtemp(prefix="k2e-bench-ckpt-")
    width, steps = (64, 20) if quick else (4096, 240)
    base = _big_job(work, width)
    runs, ckpt_bytes = {"local": [], "s3": []}, 0
    for rep in range(reps):
        for side in ("local", "s3") if rep % 2 == 0 else ("s3", "local"):
            run = uuid.uuid4().hex
            model_dir = os.path.join(work, run) if side == "local" else f"s3://{BUCKET}/ckpt/{run}"
            spec = job.load_spec(
                {
                    **base,
                    "model_dir": model_dir,
                    "train": {"steps": steps},
                    "storage": {"options": options},
                }
            )
            with job.open_job(spec) as j:
                j.check_data()
                server_cpu, cpu = _cpu_seconds(server_pid), time.process_time()
                result = job._train(j)
                cpu = time.process_time() - cpu
                server_cpu = _cpu_seconds(server_pid) - server_cpu
            uploads = result.get("checkpoint_uploads") or {}
            runs[side].append(
                {
                    "wall": result["train_seconds"],
                    "rate": result["steps_per_second"],
                    "cpu": cpu + server_cpu,
                    "server_cpu": server_cpu,
                    "uploaded": uploads.get("uploaded", 0),
                    "not_uploaded": uploads.get("not_uploaded", 0),
                }
            )
            if side == "local":
                ckpt_bytes = max(
                    ckpt_bytes,
                    sum(
                        os.path.getsize(os.path.join(model_dir, f))
                        for f in os.listdir(model_dir)
                        if f.startswith(f"model.ckpt-{steps}.data")
                    ),
                )
    print(f"checkpoints to S3: {runs}", file=sys.stderr, flush=True)

    def of(side, key):
        return [r[key] for r in runs[side]]

    cores = len(os.sched_getaffinity(0))
    # CPU seconds spent on training's cores: the S3 run's include the uploads, and the
    # server's unless it runs on CPUs of its own.
    on_training_cores = [r["cpu"] - (r["server_cpu"] if server_cpus else 0) for r in runs["s3"]]
    where = (
        f", training on CPU {','.join(map(str, sorted(os.sched_getaffinity(0))))} and the S3 "
        f"server on CPU {server_cpus}"
        if server_cpus
        else ""
    )
    wall_ratio = ratios(of("local", "wall"), of("s3", "wall"))
    rows = [
        row(
            PART,
            f"train {width}-wide model ({ckpt_bytes / 1e6:.0f} MB checkpoints every 2 s, "
            f"{steps} steps{where}), model_dir on S3: steps/s",
            spread(of("s3", "rate"), 2),
            "steps/s",
            baseline=spread(of("local", "rate"), 2),
            baseline_name="local model_dir",
            ratio=spread(ratios(of("s3", "rate"), of("local", "rate")), 2),
            target=">= 0.9x local",
            met=statistics.median(ratios(of("s3", "rate"), of("local", "rate"))) >= 0.9,
            kind="checkpoints",
            note=(
                f"wall time with the last upload {fmt_spread(spread(of('s3', 'wall'), 1), 1, ' s')}"
                f" vs {fmt_spread(spread(of('local', 'wall'), 1), 1, ' s')} "
                f"({fmt_spread(spread(wall_ratio, 2), 2, 'x')}); checkpoints uploaded "
                f"{statistics.median(of('s3', 'uploaded')):g}, not uploaded "
                f"{statistics.median(of('s3', 'not_uploaded')):g} (medians); CPU seconds on "
                f"training's {cores} core{'s' if cores > 1 else ''}: "
                f"{statistics.median(on_training_cores):.0f} vs "
                f"{statistics.median(of('local', 'cpu')):.0f} local (S3 server "
                f"{statistics.median(of('s3', 'server_cpu')):.0f}"
                f"{', on its own CPU' if server_cpus else ', included'})"
            ),
        )
    ]
    # one checkpoint-sized file: k2e's upload against s3fs's own put_file
    big = os.path.join(work, "big.data")
    with open(big, "wb") as f:
        f.write(os.urandom(max(ckpt_bytes, 1 << 20)))
    size = os.path.getsize(big)
    fs = s3fs.S3FileSystem(**options["s3"])
    rate = {"k2e": [], "put_file": []}
    for rep in range(reps):
        for side in ("k2e", "put_file") if rep % 2 == 0 else ("put_file", "k2e"):
            dst = f"{BUCKET}/one/{uuid.uuid4().hex}"
            began = time.perf_counter()
            if side == "k2e":
                with storage.configured(options):
                    storage.upload([(big, f"s3://{dst}")])
            else:
                fs.put_file(big, dst)
            rate[side].append(size / 1e6 / (time.perf_counter() - began))
    print(f"one file: {rate}", file=sys.stderr, flush=True)
    rows.append(
        row(
            PART,
            f"upload one {size / 1e6:.0f} MB file",
            spread(rate["k2e"], 1),
            "MB/s",
            baseline=spread(rate["put_file"], 1),
            baseline_name="s3fs put_file",
            ratio=spread(ratios(rate["k2e"], rate["put_file"]), 2),
            target=None,
            met=None,
            kind="one file",
        )
    )
    return rows


def _bow_data() -> str:
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import generate_data

    path = os.path.join(tempfile.mkdtemp(prefix="k2e-bench-bow-"), "train.tfrecord")
    generate_data.write_bag_of_words_tfrecord(path, 500, seed=1)
    return path


def measure(
    reps: int, quick: bool, rtt_ms: float, server_cpus: str | None = None, only=None
) -> list:
    from k2e_core.estimator import compat  # noqa: F401 - TensorFlow, quietly
    from tests.conftest import free_port
    from tests.storage.test_publish import make_savedmodel_like

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port, proxy_port = free_port(), free_port()
    pinned = ["taskset", "-c", server_cpus] if server_cpus else []
    server = start_server(
        [*pinned, os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port
    )
    proxy = start_server(
        [sys.executable, __file__, "--proxy", str(proxy_port), str(port), str(rtt_ms)], proxy_port
    )
    try:
        import s3fs

        direct = {
            "s3": {"endpoint_url": f"http://127.0.0.1:{port}", "key": "bench", "secret": "bench"}
        }
        delayed = {"s3": {**direct["s3"], "endpoint_url": f"http://127.0.0.1:{proxy_port}"}}
        s3fs.S3FileSystem(**direct["s3"]).mkdir(BUCKET)
        if only == "checkpoints":
            return checkpoint_rows(direct, reps, quick, server.pid, server_cpus)
        files, size = (20, 50_000) if quick else (198, 500_000)
        src = make_savedmodel_like(tempfile.mkdtemp() + "/sm", files=files, size=size)
        label = f"{files + 2} files / {files * size / 1e6:.0f} MB"
        rows = publish_rows(src, direct, reps, server.pid, f"{label}, loopback", True)
        rows += publish_rows(
            src, delayed, reps, server.pid, f"{label}, {rtt_ms:g} ms round trip", True
        )
        rows.append(resume_row(direct, 20 if quick else 200))
        rows += checkpoint_rows(direct, reps, quick, server.pid)
        return rows
    finally:
        for proc in (proxy, server):
            proc.terminate()
            proc.wait(10)


def table(rows) -> list:
    lines = [
        "| measure | k2e | baseline | ratio | target | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("kind") in ("checkpoints", "one file"):
            unit = " " + r["unit"]
            lines.append(
                f"| {r['measure']} | {fmt_spread(r['value'], 2, unit)} "
                f"| {fmt_spread(r['baseline'], 2, unit)} ({r['baseline_name']}) "
                f"| {fmt_spread(r['ratio'], 2, 'x')} | {r['target'] or ''} | {met_cell(r)} "
                f"| {r.get('note', '')} |"
            )
            continue
        if r["unit"] == "bytes":
            note = f"model_dir: {r['model_dir_bytes'] / 1e6:.1f} MB in {r['model_dir_files']} files"
            lines.append(
                f"| {r['measure']} | {r['value']['median'] / 1e6:.3f} MB "
                f"| {r['baseline']['median'] / 1e6:.3f} MB ({r['baseline_name']}) "
                f"| {fmt(r['ratio']['median'], 4)}x | {r['target']} | {met_cell(r)} | {note} |"
            )
            continue
        client, server = r["sequential_client_cpu"], r["sequential_server_cpu"]
        note = (
            f"one at a time: client CPU {fmt(client['median'], 2)} s, "
            f"server CPU {fmt(server['median'], 2)} s"
        )
        if r.get("cpu_bound"):
            note += (
                f"; CPU alone allows at most {fmt(r['cpu_bound'], 2)}x on {os.cpu_count()} cores"
            )
        lines.append(
            f"| {r['measure']} | {fmt_spread(r['value'], 2, ' s')} "
            f"| {fmt_spread(r['baseline'], 2, ' s')} ({r['baseline_name']}) "
            f"| {fmt_spread(r['ratio'], 2, 'x')} | {r['target'] or ''} | {met_cell(r)} "
            f"| {note} |"
        )
    return lines


def main(argv=None):
    parser = part_parser(__doc__, reps=3, quick="22 small files, one rep")
    parser.add_argument(
        "--rtt-ms", type=float, default=20.0, help="round trip the proxy adds (default 20 ms)"
    )
    parser.add_argument(
        "--server-cpus",
        help="run the S3 server on these CPUs (taskset -c), e.g. 1 with the bench under "
        "taskset -c 0: a store on another machine",
    )
    parser.add_argument("--only", choices=["checkpoints"], help="measure only the checkpoint rows")
    parser.add_argument(
        "--proxy", nargs=3, metavar=("LISTEN", "TARGET", "RTT_MS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.proxy:
        listen, target, rtt = args.proxy
        asyncio.run(_proxy(int(listen), int(target), float(rtt) / 2000))
        return None
    rows = measure(
        1 if args.quick else args.reps, args.quick, args.rtt_ms, args.server_cpus, args.only
    )
    return finish(rows, table, args.json)


if __name__ == "__main__":
    main()
