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


def _bow_data() -> str:
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import generate_data

    path = os.path.join(tempfile.mkdtemp(prefix="k2e-bench-bow-"), "train.tfrecord")
    generate_data.write_bag_of_words_tfrecord(path, 500, seed=1)
    return path


def measure(reps: int, quick: bool, rtt_ms: float) -> list:
    from k2e_core.estimator import compat  # noqa: F401 - TensorFlow, quietly
    from tests.conftest import free_port
    from tests.storage.test_publish import make_savedmodel_like

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port, proxy_port = free_port(), free_port()
    server = start_server(
        [os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port
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
        files, size = (20, 50_000) if quick else (198, 500_000)
        src = make_savedmodel_like(tempfile.mkdtemp() + "/sm", files=files, size=size)
        label = f"{files + 2} files / {files * size / 1e6:.0f} MB"
        rows = publish_rows(src, direct, reps, server.pid, f"{label}, loopback", True)
        rows += publish_rows(
            src, delayed, reps, server.pid, f"{label}, {rtt_ms:g} ms round trip", True
        )
        rows.append(resume_row(direct, 20 if quick else 200))
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
        "--proxy", nargs=3, metavar=("LISTEN", "TARGET", "RTT_MS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.proxy:
        listen, target, rtt = args.proxy
        asyncio.run(_proxy(int(listen), int(target), float(rtt) / 2000))
        return None
    rows = measure(1 if args.quick else args.reps, args.quick, args.rtt_ms)
    return finish(rows, table, args.json)


if __name__ == "__main__":
    main()
