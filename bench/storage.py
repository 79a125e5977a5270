"""Storage figures against a local S3 endpoint (moto's server on 127.0.0.1).

    .venv/bin/python bench/storage.py [--reps 3] [--quick]

1. Publishing a SavedModel-shaped directory of about 200 files / 100 MB: concurrent
   transfers against one file at a time, measured in the same run (ratio).
2. Resuming a training job whose model_dir is on S3: bytes downloaded against the size of
   the whole model_dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from k2e_core import job, publish, storage  # noqa: E402
from tests.conftest import BUCKET, free_port  # noqa: E402
from tests.storage.test_publish import make_savedmodel_like  # noqa: E402


def publish_seconds(src, options, concurrency):
    with storage.configured(options, concurrency=concurrency):
        began = time.perf_counter()
        publish.publish(src, f"s3://{BUCKET}/bench/{uuid.uuid4().hex}", run_id="bench")
        return time.perf_counter() - began


def resume_bytes(options, steps):
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import generate_data

    data = tempfile.mkdtemp()
    generate_data.write_iris_csv(os.path.join(data, "train.csv"), 120, seed=1)
    spec = job.load_spec(os.path.join(REPO, "examples", "iris.yaml"), {
        "model_dir": f"s3://{BUCKET}/bench-resume/model_dir",
        "data.train.files": os.path.join(data, "train.csv"),
        "data.eval": None,
        "train.steps": steps,
        "run_config.save_checkpoints_steps": max(steps // 5, 1),
        "storage.options": options,
        "export": None,
    })
    job.train_step(spec)
    again = job.train_step(spec, {"train.steps": steps + 10})
    with storage.configured(options):
        files = storage.find(f"s3://{BUCKET}/bench-resume/model_dir")
    step = steps  # the checkpoint the second run resumed from
    checkpoint = sum(v for k, v in files.items() if k.startswith(f"model.ckpt-{step}."))
    return again["resume_download_bytes"], sum(files.values()), checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # A server process of its own, so that its request handling does not share this
    # process's interpreter lock with the client whose concurrency is measured.
    import subprocess


    port = free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import requests

        for _ in range(100):
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        options = {"s3": {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}}
        import s3fs

        s3fs.S3FileSystem(**options["s3"]).mkdir(BUCKET)
        files, size = (20, 50_000) if args.quick else (198, 500_000)
        src = make_savedmodel_like(tempfile.mkdtemp() + "/sm", files=files, size=size)
        total_mb = sum(os.path.getsize(os.path.join(src, f)) for f in storage.local_files(src)) / 1e6
        reps = 1 if args.quick else args.reps
        sequential = [publish_seconds(src, options, 1) for _ in range(reps)]
        concurrent = [publish_seconds(src, options, 16) for _ in range(reps)]
        ratios = [s / c for s, c in zip(sequential, concurrent)]
        downloaded, model_dir, checkpoint = resume_bytes(options, 60 if args.quick else 600)
    finally:
        server.terminate()
        server.wait(10)
    report = {
        "publish_files": len(storage.local_files(src)), "publish_mb": round(total_mb, 1),
        "sequential_s": round(statistics.median(sequential), 2),
        "concurrent_s": round(statistics.median(concurrent), 2),
        "speedup": round(statistics.median(ratios), 2),
        "speedup_min": round(min(ratios), 2), "speedup_max": round(max(ratios), 2),
        "resume_download_bytes": downloaded, "model_dir_bytes": model_dir,
        "resumed_checkpoint_bytes": checkpoint,
        "resume_fraction": round(downloaded / model_dir, 3),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
