"""Meta-training speed of MAML implementations on the same tasks, each in a fresh process.

    python benchmarks/maml_speed.py             # the table of the README (about 10 minutes on 2 CPU cores)
    python benchmarks/maml_speed.py --smoke     # tiny sizes, seconds: checks that every variant runs
    python benchmarks/maml_speed.py --repeats 5 --inner-steps 1
    python benchmarks/maml_speed.py --device cuda   # on a GPU (benchmarks/gpu_check.sh runs this)

Variants: ``course_lib`` (its per-task loop), ``course_lib-vmap`` (its batched path), ``course_lib-2proc`` (the
per-task loop with the meta-batch split over 2 processes of 1 thread each, gloo all-reduce, as ``train`` runs
under torchrun; CPU only), ``plain-loop`` (plain torch.func), ``higher`` and ``learn2learn``. The single-process
variants use the threads the header line reports.

Setup (as in the MAML paper's Omniglot experiment): the 4-block conv net, 5-way 1-shot, 15 queries per
class, meta-batch 32, synthetic 28x28 inputs (speed does not depend on the pixels). For every variant, before
timing, the meta-gradient on a shared float64 batch must equal the plain loop's (relative difference < 1e-6).
Reported: tasks per second (median of timed meta-steps after a warm-up), the worker's peak memory above its
memory before the first step (resident memory on the CPU; ``torch.cuda.max_memory_allocated`` on CUDA, where
every timing is bracketed by ``torch.cuda.synchronize``), and achieved GFLOP/s (FLOPs of one meta-step counted by
``torch.utils.flop_counter``) beside this machine's measured convolution throughput.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_lib.data.episodes import Episode
from course_lib.meta import maml_higher, protonet
from course_lib.meta.maml import MAML
from course_lib.models import ConvNet

N_WAY, K_SHOT, N_QUERY, INNER_LR = 5, 1, 15, 0.4


def synthetic_batch(meta_batch_size: int, image_size: int, dtype=torch.float32, seed: int = 0) -> Episode:
    generator = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.rand(meta_batch_size, n, 1, image_size, image_size, generator=generator, dtype=dtype)

    labels = torch.arange(N_WAY)
    return Episode(images(N_WAY * K_SHOT), labels.repeat_interleave(K_SHOT).repeat(meta_batch_size, 1),
                   images(N_WAY * N_QUERY), labels.repeat_interleave(N_QUERY).repeat(meta_batch_size, 1),
                   torch.zeros(meta_batch_size, N_WAY, dtype=torch.long))


def plain_loop_meta_loss(net, batch, inner_steps, first_order):
    """The readable reference: a per-task loop with functional_call and autograd.grad (notebook 03)."""
    losses = []
    for task in range(batch.support_x.shape[0]):
        params = dict(net.named_parameters())
        for _ in range(inner_steps):
            loss = F.cross_entropy(functional_call(net, params, (batch.support_x[task],)), batch.support_y[task])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
            params = {n: p - INNER_LR * g for (n, p), g in zip(params.items(), grads)}
        losses.append(F.cross_entropy(functional_call(net, params, (batch.query_x[task],)), batch.query_y[task]))
    return torch.stack(losses).mean()


def higher_first_order_step(net, batch, inner_steps):
    """First-order MAML with higher: no graph back to theta, so the gradients are copied by hand."""
    import higher

    inner_optimizer = torch.optim.SGD(net.parameters(), lr=INNER_LR)
    params = list(net.parameters())
    total = 0.0
    for task in range(batch.support_x.shape[0]):
        with higher.innerloop_ctx(net, inner_optimizer, track_higher_grads=False) as (fast_net, diff_optimizer):
            for _ in range(inner_steps):
                diff_optimizer.step(F.cross_entropy(fast_net(batch.support_x[task]), batch.support_y[task]))
            fast_params = [p.detach().requires_grad_() for p in fast_net.parameters()]
            loss = F.cross_entropy(torch.func.functional_call(net, dict(zip(dict(net.named_parameters()), fast_params)),
                                                              (batch.query_x[task],)), batch.query_y[task])
            for p, g in zip(params, torch.autograd.grad(loss, fast_params)):
                p.grad = g / batch.support_x.shape[0] if p.grad is None else p.grad + g / batch.support_x.shape[0]
            total += loss.item()
    return total


def make_step(variant: str, net: torch.nn.Module, inner_steps: int, first_order: bool):
    """A function that runs one meta-step's forward and backward (gradients left on ``net``)."""
    if variant in ("course_lib", "course_lib-vmap"):
        learner = MAML(net, inner_lr=INNER_LR, inner_steps=inner_steps, first_order=first_order,
                       batched=variant == "course_lib-vmap")
        return lambda batch: learner.meta_loss(batch)[0].backward()
    if variant == "plain-loop":
        return lambda batch: plain_loop_meta_loss(net, batch, inner_steps, first_order).backward()
    if variant == "higher" and first_order:
        return lambda batch: higher_first_order_step(net, batch, inner_steps)
    if variant == "higher":
        return lambda batch: maml_higher.meta_loss(net, batch, INNER_LR, inner_steps).backward()
    if variant == "learn2learn":
        import learn2learn  # noqa: F401  (its PyPI release does not build on Python 3.11)
    raise ValueError(f"unknown variant {variant!r}")


def build_net(variant: str, image_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return ConvNet(n_classes=N_WAY, image_size=image_size, explicit_batch_norm=variant == "course_lib-vmap")


def meta_gradient(variant, image_size, inner_steps, first_order, device) -> torch.Tensor:
    net = build_net(variant, image_size).double().to(device)
    net.zero_grad()
    make_step(variant, net, inner_steps, first_order)(synthetic_batch(2, image_size, torch.float64, seed=1).to(device))
    return torch.cat([p.grad.flatten() for p in net.parameters()]).cpu()


def conv_throughput_gflops(device: torch.device, repeats: int = 5) -> float:
    """This machine's convolution speed: forward+backward of a large 64->64 3x3 conv, GFLOP/s."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.rand(256, 64, 14, 14, requires_grad=True, device=device)
    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    times = []
    for _ in range(repeats):
        started = clock(device)
        conv(x).sum().backward()
        times.append(clock(device) - started)
    return counter.get_total_flops() / sorted(times)[len(times) // 2] / 1e9


def clock(device: torch.device) -> float:
    """Seconds, read once the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: tensors allocated on a CUDA device, else this process's resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> dict:
    """Runs in a fresh process: check the gradient, then time the meta-step."""
    if args.variant == "protonet":
        return protonet_worker(args)
    if args.variant == TWO_PROCESSES:
        return two_process_worker(args)
    device = torch.device(args.device)
    gradient = meta_gradient(args.variant, args.image_size, args.inner_steps, args.first_order, device)
    torch.save(gradient, args.gradient_file)
    net = build_net(args.variant, args.image_size).to(device)
    step = make_step(args.variant, net, args.inner_steps, args.first_order)
    batch = synthetic_batch(args.meta_batch_size, args.image_size).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_memory_mb(device)
    with FlopCounterMode(display=False) as counter:
        step(batch)
    times = []
    for _ in range(args.repeats):
        net.zero_grad()
        started = clock(device)
        step(batch)
        times.append(clock(device) - started)
    seconds = sorted(times)[len(times) // 2]
    return {"tasks_per_s": args.meta_batch_size / seconds, "seconds_per_step": seconds,
            "peak_extra_mb": peak_memory_mb(device) - before, "gflops": counter.get_total_flops() / seconds / 1e9}


TWO_PROCESSES = "course_lib-2proc"   # course_lib's per-task loop, the meta-batch split over 2 processes of 1 thread


def two_process_worker(args) -> dict:
    """``course_lib-2proc``: the meta-step as ``train`` takes it under ``torchrun --nproc_per_node 2``, each
    process with 1 thread adapting to its half of the meta-batch, the meta-gradients averaged by one
    all-reduce over gloo (``course_lib.distributed``); timed on rank 0 from a barrier to the all-reduced
    gradient. Peak memory is one process's; GFLOP/s counts both halves."""
    if torch.device(args.device).type != "cpu":
        raise SystemExit(f"{TWO_PROCESSES} runs on the CPU only (one GPU per process is torchrun's own business)")
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        mp.spawn(two_process_rank, args=(port, args, str(result_file)), nprocs=2, join=True)
        return json.loads(result_file.read_text())


def two_process_rank(rank: int, port: int, args, result_file: str) -> None:
    import os

    from course_lib import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    ranks = distributed.process_group(device)

    def meta_step(net, batch):
        share, fraction = distributed.share_of_batch(batch, ranks)
        make_step("course_lib", net, args.inner_steps, args.first_order)(share)
        distributed.all_reduce_gradients(net.parameters(), fraction)

    net = build_net("course_lib", args.image_size).double()
    meta_step(net, synthetic_batch(2, args.image_size, torch.float64, seed=1))
    if ranks.is_main:
        torch.save(torch.cat([p.grad.flatten() for p in net.parameters()]), args.gradient_file)
    net = build_net("course_lib", args.image_size)
    batch = synthetic_batch(args.meta_batch_size, args.image_size)
    before = peak_memory_mb(device)
    with FlopCounterMode(display=False) as counter:
        meta_step(net, batch)
    times = []
    for _ in range(args.repeats):
        net.zero_grad()
        distributed.barrier(ranks)
        started = time.perf_counter()
        meta_step(net, batch)
        times.append(time.perf_counter() - started)
    seconds = sorted(times)[len(times) // 2]
    if ranks.is_main:
        Path(result_file).write_text(json.dumps({
            "tasks_per_s": args.meta_batch_size / seconds, "seconds_per_step": seconds,
            "peak_extra_mb": peak_memory_mb(device) - before,
            "gflops": counter.get_total_flops() * ranks.world_size / seconds / 1e9}))


def protonet_worker(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = ConvNet(image_size=args.image_size).to(device)
    batch = synthetic_batch(1, args.image_size).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_memory_mb(device)
    times = []
    for _ in range(args.repeats + 1):
        started = clock(device)
        net.zero_grad()
        protonet.loss(net, batch)[0].backward()
        times.append(clock(device) - started)
    seconds = sorted(times[1:])[len(times[1:]) // 2]
    return {"tasks_per_s": 1 / seconds, "seconds_per_step": seconds, "peak_extra_mb": peak_memory_mb(device) - before,
            "gflops": float("nan")}


def run_variant(args, variant: str, inner_steps: int, first_order: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        gradient_file = Path(folder) / "gradient.pt"
        command = [sys.executable, __file__, "--worker", variant, "--inner-steps", str(inner_steps),
                   "--meta-batch-size", str(args.meta_batch_size), "--image-size", str(args.image_size),
                   "--repeats", str(args.repeats), "--gradient-file", str(gradient_file), "--device", args.device]
        command += ["--first-order"] * first_order
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            if "No module named 'learn2learn'" in reason:
                reason = "not installed (its PyPI release does not build on Python 3.11)"
            return {"error": reason}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if gradient_file.exists():
            result["gradient"] = torch.load(gradient_file, weights_only=True)
        return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that everything runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed meta-steps per variant (median reported)")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--variants", nargs="+", default=["course_lib", "course_lib-vmap", TWO_PROCESSES, "plain-loop", "higher",
                                 "learn2learn"])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where every variant runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--first-order", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gradient-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} was asked for, but CUDA is not available here")
    if args.worker:
        args.variant, args.inner_steps = args.worker, args.inner_steps[0]
        print(json.dumps(worker(args)))
        return
    if args.smoke:
        args.repeats, args.inner_steps, args.meta_batch_size, args.image_size = 1, [1], 2, 16
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}); conv throughput "
          f"{conv_throughput_gflops(device):.1f} GFLOP/s (64->64 3x3 conv, forward+backward)")
    print(f"MAML, 4-block conv net, {N_WAY}-way {K_SHOT}-shot, {N_QUERY} queries/class, meta-batch {args.meta_batch_size}, "
          f"{args.repeats} timed steps per variant, each variant in a fresh process\n")
    header = f"{'order':<7} {'inner':>5}  {'variant':<18} {'tasks/s':>8} {'s/step':>7} {'peak MB':>8} {'GFLOP/s':>8}  gradient"
    print(header)
    print("-" * len(header))
    for inner_steps in args.inner_steps:
        for first_order in (False, True):
            order = "first" if first_order else "second"
            reference = None
            for variant in ["plain-loop"] + [v for v in args.variants if v != "plain-loop"]:
                result = run_variant(args, variant, inner_steps, first_order)
                if "error" in result:
                    print(f"{order:<7} {inner_steps:>5}  {variant:<18} {'-':>8} {'-':>7} {'-':>8} {'-':>8}  {result['error'][:80]}")
                    continue
                if reference is None:
                    reference = result["gradient"]
                difference = ((result["gradient"] - reference).norm() / reference.norm()).item()
                verdict = "same" if difference < 1e-6 else f"DIFFERS ({difference:.1e})"
                print(f"{order:<7} {inner_steps:>5}  {variant:<18} {result['tasks_per_s']:>8.2f} {result['seconds_per_step']:>7.2f} "
                      f"{result['peak_extra_mb']:>8.0f} {result['gflops']:>8.1f}  {verdict}")
    result = run_variant(args, "protonet", 0, False)
    if "error" not in result:
        print(f"\nProtoNet, {N_WAY}-way {K_SHOT}-shot episode: {result['tasks_per_s']:.1f} episodes/s, "
              f"peak {result['peak_extra_mb']:.0f} MB")


if __name__ == "__main__":
    main()
