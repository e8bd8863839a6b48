"""TEST DOUBLE of ``python3 -m ais_bench`` (ais_bench/infer/__main__.py): same options, same file layout.

Outputs ``<input stem>_<i>.bin`` under ``--output/--output_dirname`` (or a timestamp dir) and
``<that dir>_summary.json``. Inference runs the .om double's ONNX with onnxruntime on the CPU; the timing
numbers in the summary are fixed made-up values ("double": true), never Ascend results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np
from _reid_ascend_double import OmModel, double_batch_ms, dropped_stems, npu_devices

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(levelname)s] %(message)s")
logger = logging.getLogger("ais_bench")
PADDING = "padding_infer_fake_file"


def positive(v: str) -> int:
    i = int(v)
    if i <= 0:
        raise argparse.ArgumentTypeError(f"{v} is an invalid positive int value")
    return i


def nonnegative(v: str) -> int:
    i = int(v)
    if i < 0:
        raise argparse.ArgumentTypeError(f"{v} is an invalid nonnegative int value")
    return i


def str2bool(v: str) -> bool:
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def device(v: str) -> int:
    i = int(v)
    if not 0 <= i <= 255:
        raise argparse.ArgumentTypeError(f"device:{i} is invalid. valid value range is [0, 255]")
    return i


def get_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ais_bench")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", type=str, default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=positive, default=1)
    p.add_argument("--debug", type=str2bool, default=False)
    p.add_argument("--device", "-d", type=device, default=0)
    p.add_argument("--batchsize", type=positive, default=None)
    p.add_argument("--pure_data_type", type=str, default="zero", choices=["zero", "random"])
    p.add_argument("--run_mode", type=str, default="array", choices=["array", "files", "tensor", "full"])
    p.add_argument("--display_all_summary", type=str2bool, default=False)
    p.add_argument("--warmup_count", type=nonnegative, default=1)
    args = p.parse_args(argv)
    if args.output is None and args.output_dirname is not None:
        logger.error(
            "parameter --output_dirname cann't be used alone. Please use it together with the parameter --output!\n"
        )
        raise RuntimeError("error bad parameters --output_dirname")
    return args


def natural_sort(names: list[str]) -> list[str]:
    def key(s: str) -> list:
        return [int(t) if t.isdigit() else t.lower() for t in re.split("([0-9]+)", s)]

    return sorted(names, key=key)


def files_from_dir(d: str) -> list[str]:
    if not os.path.isdir(d):
        logger.error(f"dir:{d} not exist")
        raise RuntimeError()
    files = [os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith((".bin", ".npy"))]
    if not files:
        logger.error(f"{d} of input args not find valid file,valid file format:[*.npy *.NPY *.bin *.BIN]")
        raise RuntimeError()
    return natural_sort(sorted(files))


def main(argv: list[str]) -> int:
    args = get_args(argv)
    logger.info("TEST DOUBLE of ais_bench (tests/doubles): CPU onnxruntime, made-up timings")
    if args.device not in npu_devices():
        logger.error(f"open device {args.device} failed (TEST DOUBLE devices: {npu_devices()})")
        return 1
    logger.info(f"open device {args.device} success")
    try:
        model = OmModel(args.model)
    except (OSError, ValueError) as exc:
        logger.error(f"load model from file failed, model file is {args.model}: {exc}")
        return 1
    logger.info(f"load model {args.model} success")
    bs = model.batch
    if args.batchsize is not None and args.batchsize != bs:
        logger.warning(f"--batchsize {args.batchsize} differs from the model batch {bs}")
    batchsize = args.batchsize or bs
    prefix = None
    if args.output is not None:
        name = args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
        prefix = os.path.join(args.output, name)
        os.makedirs(prefix, 0o755, exist_ok=True)
        logger.info(f"output path:{prefix}")
    if args.input is None:
        batches = [["pure_infer_data"] * 1]
        per_batch = 1
    else:
        files = []
        for d in args.input.split(","):
            files += files_from_dir(d) if os.path.isdir(d) else [d]
        size = os.path.getsize(files[0])
        if size == 0 or model.input_bytes % size:
            logger.error(f"arg0 tensorsize: {model.input_bytes} filesize: {size} not match")
            raise RuntimeError()
        per_batch = model.input_bytes // size
        batches = [files[i : i + per_batch] for i in range(0, len(files), per_batch)]
        batches[-1] = batches[-1] + [PADDING] * (per_batch - len(batches[-1]))
        logger.info(
            f"get filesperbatch files0 size:{size} tensor0size:{model.input_bytes} "
            f"filesperbatch:{per_batch} runcount:{len(batches)}"
        )

    def load(batch: list[str]) -> np.ndarray:
        if batch[0] == "pure_infer_data":
            if args.pure_data_type == "random":
                return np.random.default_rng(0).standard_normal(model.shape, dtype=np.float32)
            return np.zeros(model.shape, dtype=np.float32)
        parts = [np.fromfile(batch[0] if f == PADDING else f, dtype=np.uint8) for f in batch]
        data = np.concatenate(parts)
        if data.nbytes != model.input_bytes:
            logger.error(f"ndata size:{data.nbytes} not match {model.input_bytes}")
            raise RuntimeError()
        return data.view(np.float32)

    for _ in range(args.warmup_count):
        model.run(load(batches[0]))
    logger.info(f"warm up {args.warmup_count} done")
    drop = dropped_stems()
    times: list[float] = []
    filesinfo: dict[int, dict] = {}
    for index, batch in enumerate(batches):
        y = None
        for _ in range(args.loop):
            y = model.run(load(batch))
            times.append(double_batch_ms(bs))
        if prefix is None or y is None:
            continue
        subs = np.array_split(y, per_batch, axis=0)
        for j, f in enumerate(batch):
            if f == PADDING:
                continue
            stem = os.path.basename(f).split(".")[0]
            if stem in drop:
                continue
            out = os.path.join(prefix, f"{stem}_0.{args.outfmt.lower()}")
            sid = index * per_batch + j
            filesinfo[sid] = {"infiles": [f], "outfiles": [out]}
            if args.outfmt == "NPY":
                np.save(out, subs[j])
            else:
                subs[j].tofile(out)
    arr = np.asarray(times)

    def stats(a: np.ndarray) -> dict:
        return {
            "min": float(a.min()),
            "max": float(a.max()),
            "mean": float(a.mean()),
            "median": float(np.median(a)),
            "percentile(99%)": float(np.percentile(a, 99)),
            "count": int(a.size),
        }

    throughput = 1000 * batchsize / float(arr.mean())
    logger.info("-----------------Performance Summary------------------")
    s = stats(arr)
    logger.info(
        f"NPU_compute_time (ms): min = {s['min']}, max = {s['max']}, mean = {s['mean']}, "
        f"median = {s['median']}, percentile(99%) = {s['percentile(99%)']}"
    )
    logger.info(f"throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({s['mean']}): {throughput}")
    logger.info("------------------------------------------------------")
    if prefix is not None:
        summary = {
            "filesinfo": filesinfo,
            "args": [sys.argv[0], *argv],
            "NPU_compute_time": s,
            "H2D_latency": stats(np.full(arr.size, 0.5)),
            "D2H_latency": stats(np.full(arr.size, 0.1)),
            "throughput": throughput,
            "npu_compute_time_list": times,
            "pid": os.getpid(),
            "double": True,
        }
        with open(prefix + "_summary.json", "w") as f:
            json.dump(summary, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
