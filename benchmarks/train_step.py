"""Samples/s of the training data pipeline alone and of the training step alone, to see which one limits.

    python benchmarks/train_step.py                      # generated fixture shards, tiny CPU model
    python benchmarks/train_step.py --shards 'tol/shard-{000000..000159}.tar' --captions captions.parquet \\
        --model ViT-B-16 --batch 256                     # real data and model on a GPU

The pipeline figure is shard reading + decode + validation + augmentation + tokenisation (one process);
with DataLoader workers (`--num-workers 0 2 4`: the same batches whatever the count) it is timed per count;
the step figure is forward + loss + backward + AdamW on a fixed batch already on the device.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from biobench.train import data as data_mod
from biobench.train import model as model_mod
from biobench.train.fixture import make_tol_shards
from biobench.train.loop import param_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards")
    ap.add_argument("--captions")
    ap.add_argument("--model", default=model_mod.TINY)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--num-workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time the pipeline with")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shards is None:
        fx = make_tol_shards(Path(tempfile.mkdtemp(prefix="tol-bench-")), per_shard=200)
        args.shards, args.captions = fx["shards"], fx["captions"]
    model, train_tf, _, tokenizer, _ = model_mod.build(args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    captions = data_mod.read_captions(Path(args.captions))
    scfg = data_mod.StreamConfig(data_mod.expand_shards(args.shards), shuffle_buffer=256)
    data_rates: dict[int, float] = {}
    for workers in args.num_workers:
        counts = data_mod.SkipCounts()
        n, epoch, batches = 0, 0, []
        t0 = time.perf_counter()
        while n < args.batch * args.steps:
            kw = dict(per_device=args.batch, accum=1, transform=train_tf, tokenizer=tokenizer, counts=counts, num_workers=workers)
            got = 0
            for (b,) in data_mod.steps(scfg, captions, epoch, **kw):
                batches.append(b)
                n += args.batch
                got += 1
                if n >= args.batch * args.steps:
                    break
            if got == 0:
                raise SystemExit("Too few samples for one batch; lower --batch.")
            epoch += 1
        data_rates[workers] = n / (time.perf_counter() - t0)
    data_s = max(data_rates.values())

    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-4)
    bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    b = batches[0]
    x, names, caps = b.images.to(device), b.names.to(device), b.captions.to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model_mod.dual_loss(model(x, names, caps), 1.0)["loss"]
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = args.batch * args.steps / (time.perf_counter() - t0)
    print(f"model {args.model} on {device}, batch {args.batch}, {args.steps} batches; skipped {counts.as_dict()}")
    for workers, rate in data_rates.items():
        print(f"data pipeline, {workers} workers: {rate:,.0f} samples/s ({rate / data_rates[args.num_workers[0]]:.2f}x)")
    print(f"train step:    {step_s:,.0f} samples/s")
    print(f"limit: {'data pipeline' if data_s < step_s else 'train step'}")


if __name__ == "__main__":
    main()
