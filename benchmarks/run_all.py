"""Run every benchmark of clcnn and write benchmarks/results.md.

    python benchmarks/run_all.py [--repeat 20] [--out benchmarks/results.md] [--quick]

1. the NumPy float32 sgemm 1024^3 rate, as the machine's ceiling, measured in the same run;
2. `clcnn bench` of LeNet-5 at batch 64 and 256 (per-op, training step, inference, vs PyTorch);
3. single Conv2D layers, forward and backward, vs PyTorch's conv and the sgemm ceiling;
4. start-up: a fresh `clcnn train lenet5` process to its first trained batch, with empty
   program caches (cold) and with filled ones (warm).
Every figure is a median of repeated runs; clcnn's per-op figures are device (kernel) time
from OpenCL event profiling, the whole-step and PyTorch figures wall time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import clcnn
from clcnn import bench, opspec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (label, x shape, weight shape, pads): the issue's reference layer, LeNet-5's three convs at
# batch 64, and 3x3 / 5x5 "same" convs at 64 and 128 channels.
CONV_SWEEP = [
    ("64x16x32x32 32x3x3 pad 1", (64, 16, 32, 32), (32, 16, 3, 3), (1, 1, 1, 1)),
    ("LeNet conv1 64x1x32x32 6x5x5", (64, 1, 32, 32), (6, 1, 5, 5), (0, 0, 0, 0)),
    ("LeNet conv2 64x6x14x14 16x5x5", (64, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)),
    ("LeNet conv3 64x16x5x5 120x5x5", (64, 16, 5, 5), (120, 16, 5, 5), (0, 0, 0, 0)),
    ("32x64x16x16 64x3x3 pad 1", (32, 64, 16, 16), (64, 64, 3, 3), (1, 1, 1, 1)),
    ("32x128x16x16 128x3x3 pad 1", (32, 128, 16, 16), (128, 128, 3, 3), (1, 1, 1, 1)),
    ("32x64x16x16 64x5x5 pad 2", (32, 64, 16, 16), (64, 64, 5, 5), (2, 2, 2, 2)),
    ("32x128x16x16 128x5x5 pad 2", (32, 128, 16, 16), (128, 128, 5, 5), (2, 2, 2, 2)),
]


def log(text):
    print(f"run_all: {text}", file=sys.stderr, flush=True)


def _sgemm_operands():
    return tuple(np.random.default_rng(i).standard_normal((1024, 1024)).astype(np.float32) for i in (0, 1))


def sgemm_ceiling(repeat):
    a, b = _sgemm_operands()
    stats = bench.time_host(lambda: a @ b, repeat)
    # A ceiling: the fastest run, the one least disturbed by other work on the machine.
    return {**stats, "gflops": 2 * 1024**3 / (stats["min_ms"] * 1e-3) * 1e-9}


def sgemm_share_rounds(dev, flops, batch=256, rounds=7, steps=300):
    """LeNet-5's model GFLOP/s at `batch` as a share of the sgemm ceiling, in alternating
    rounds: each round times the sgemm (fastest of 10) and then `steps` training steps
    (`Trainer.train_step` with host batches, as clcnn bench; their median), and divides the
    two. A busy spell on the shared machine then falls on both sides of one round, where the
    whole run's fastest sgemm against a median step taken minutes apart mixes a calm moment
    with a busy one (the share moved between 46% and 57% across runs of the same code).
    dev: a device without profiling, as users run it. Returns the rounds' shares in percent."""
    trainer, x, y = bench.benched_trainer(dev, "lenet5", batch)
    a, b = _sgemm_operands()
    shares = []
    for _ in range(rounds):
        sgemm = 2 * 1024**3 / (bench.time_host(lambda: a @ b, 10)["min_ms"] * 1e-3)
        step = bench.time_host(lambda: trainer.train_step(x, y), steps)["median_ms"] * 1e-3
        dev.queue.finish()
        shares.append(100 * flops / step / sgemm)
    return shares


def torch_conv_fns(x_shape, w_shape, pads):
    """PyTorch's conv2d forward (under no_grad) and backward (input, weight and bias gradients)
    as {"forward": fn, "backward": fn}, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(x_shape).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal(w_shape).astype(np.float32)).requires_grad_()
    b = torch.zeros(w_shape[0], requires_grad=True)
    padding = (pads[0], pads[2])

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, b, 1, padding)
    y = torch.nn.functional.conv2d(x, w, b, 1, padding)
    gy = torch.ones_like(y)
    return {"forward": forward,
            "backward": lambda: torch.autograd.grad(y, (x, w, b), gy, retain_graph=True)}


def torch_conv(fns, repeat):
    """PyTorch's wall ms of torch_conv_fns' passes."""
    import torch
    return {"forward": bench.time_host(fns["forward"], repeat), "backward": bench.time_host(fns["backward"], repeat),
            "version": torch.__version__, "threads": torch.get_num_threads()}


# Warm-up of each side of a round, in seconds. PyTorch's OpenMP threads spin for some
# milliseconds after its last call before they sleep, on the cores PoCL's workers need: with two
# warm-up calls, clcnn's LeNet conv2 forward timed right after PyTorch's ran 0.25-0.26 ms
# against 0.19-0.21 after 200 calls (ratio 0.87-0.89 against 1.05, same process).
_ROUND_WARMUP_S = 0.05


def alternating_ratios(dev, case, torch_fns, rounds, repeat):
    """PyTorch's wall time over clcnn's, forward and backward, per round of clcnn's calls then
    PyTorch's (medians of `repeat` calls each, after _ROUND_WARMUP_S of warm-up calls): a load
    from other work on the machine falls on both sides of a round, where one side timed after
    the other can meet a calm and a busy minute (single runs of one layer moved by 2x)."""
    d = {k: dev.to_device(v, dtype=v.dtype) for k, v in case.make_inputs(np.random.default_rng(0)).items()}
    out = case.forward(dev, d)
    clcnn_fns = {"forward": lambda: (case.forward(dev, d), dev.queue.finish()),
                 "backward": lambda: (case.backward(dev, d, out), dev.queue.finish())}
    ratios = {"forward": [], "backward": []}
    for _ in range(rounds):
        for p in ratios:
            ours = bench.time_host(clcnn_fns[p], repeat, warmup_s=_ROUND_WARMUP_S)["median_ms"]
            theirs = bench.time_host(torch_fns[p], repeat, warmup_s=_ROUND_WARMUP_S)["median_ms"]
            ratios[p].append(theirs / ours)
    return ratios


def conv_sweep(dev, repeat, rounds=5):
    rows = []
    for label, x_shape, w_shape, pads in CONV_SWEEP:
        log(f"conv {label}")
        case = opspec.conv2d(x_shape, w_shape, pads=pads)
        result = bench.bench_case(dev, case, repeat)
        fns = torch_conv_fns(x_shape, w_shape, pads)
        rows.append({"label": label, "clcnn": result, "torch": torch_conv(fns, repeat) if fns else None,
                     "ratios": alternating_ratios(dev, case, fns, rounds, max(3, repeat // 2)) if fns else None})
    return rows


STARTUP_CHILD = r"""
import json, os, sys, time
t0 = float(sys.argv[1])
import pyopencl as cl
spent = {"build_s": 0.0, "builds": 0}
_build = cl.Program.build
def build(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return _build(self, *args, **kwargs)
    finally:
        spent["build_s"] += time.perf_counter() - start
        spent["builds"] += 1
cl.Program.build = build
import clcnn.train
from clcnn.cli.main import main
t_import = time.time()
_step = clcnn.train.Trainer.train_step
def step(self, x, y, *args, **kwargs):
    t_step, before = time.time(), dict(spent)
    _step(self, x, y, *args, **kwargs)
    # The step returns with its kernels still queued: wait for them, so that the figure is a
    # trained batch and PoCL has compiled (and cached) every kernel of the step before exit.
    self.model.device.synchronize()
    t_end = time.time()
    print("STARTUP " + json.dumps({"import_s": t_import - t0, "to_first_step_s": t_step - t0,
          "first_step_s": t_end - t_step, "total_s": t_end - t0, "build_s": spent["build_s"],
          "builds": spent["builds"], "builds_in_first_step": spent["builds"] - before["builds"]}), flush=True)
    import atexit
    atexit._run_exitfuncs()     # as a normal exit would: clcnn queues program binaries for writing
    os._exit(0)
clcnn.train.Trainer.train_step = step
sys.argv = ["clcnn", "train", "lenet5", "--epochs", "1", "--quiet", "--out", sys.argv[2]]
main()
"""


def startup_once(cache_dir, out_dir):
    # pyopencl keeps binaries under $XDG_CACHE_HOME/pyopencl (and pytools' caches beside
    # them); PoCL its compiled kernels under $POCL_CACHE_DIR (else $XDG_CACHE_HOME/pocl).
    # clcnn its program binaries under $XDG_CACHE_HOME/clcnn/programs (CLCNN_CACHE_DIR unset).
    env = dict(os.environ, XDG_CACHE_HOME=cache_dir, POCL_CACHE_DIR=os.path.join(cache_dir, "pocl"))
    env.pop("CLCNN_CACHE_DIR", None)
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", STARTUP_CHILD, repr(start), out_dir], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("STARTUP ")), None)
    if line is None:
        raise RuntimeError(f"start-up run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(line[len("STARTUP "):])


def startup(runs=2, warm=1):
    # clcnn keeps a program's binary when it is built the second time (in a later process),
    # so the second start with a cache fills it and the third is the steady warm start.
    result = {"cold": [], "second": [], "warm": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as cache:
                for kind in ["cold", "second"] + ["warm"] * warm:
                    if kind == "warm" and result["second"] and len(result["warm"]) % warm == 0:
                        # the first warm start of this cache folder waits for the binaries
                        result.setdefault("binaries_written_s", []).append(wait_for_binary_writers())
                    log(f"start-up, {kind}")
                    result[kind].append(startup_once(cache, out))
    return result


def wait_for_binary_writers(limit=600):
    """Seconds until the detached processes writing program binaries (started when the second
    run exits) are done: a warm start is one made after they finish, as a user's third run
    usually is; started at once, it would race them for the cores and find binaries missing."""
    start = time.time()
    while time.time() - start < limit:
        found = subprocess.run(["pgrep", "-f", "clcnn.device --store-binaries"], capture_output=True, text=True)
        if not found.stdout.strip():
            break
        time.sleep(0.5)
    return round(time.time() - start, 1)


# -- markdown ----------------------------------------------------------------------------------
def _ms(stats):
    return f"{stats['median_ms']:.3f} ({stats['min_ms']:.3f}-{stats['max_ms']:.3f})"


def _gf(flops, stats):
    return flops / (stats["median_ms"] * 1e-3) * 1e-9


def model_section(reports, ceiling, shares=None):
    out = ["## LeNet-5: training step and inference", "",
           "clcnn and PyTorch run the same network (same weights) and the same SGD (lr 0.01, momentum 0.9) "
           "on the same random batch; each clcnn step takes the batch from the host without waiting, "
           "as `Trainer.train_step` with NumPy input does, and from the third step on replays the "
           "recorded launches of the second (`clcnn/replay.py`; on PoCL's CPU device the kernels read the "
           "batch where the host copied it). Steps are timed for at least 1 s each (medians). Model "
           "GFLOP/s = forward + backward FLOPs of the convs and dense layers / step time.", "",
           "| batch | clcnn train img/s | torch train img/s | clcnn/torch | NumPy oracle img/s | clcnn/oracle "
           "| clcnn model GFLOP/s | % of sgemm | kernels % of step | clcnn infer img/s | torch infer img/s "
           "| clcnn/torch |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        t = r["torch"]
        flops = sum(op["flops"]["forward"] + op["flops"]["backward"] for op in r["ops"])
        gflops = _gf(flops, r["train_step"])
        kernels = r["ops_total_ms"]["forward"] + r["ops_total_ms"]["backward"]
        torch_train = f"{t['train_step']['images_per_s']:,.0f}" if t["available"] else "absent"
        torch_infer = f"{t['inference']['images_per_s']:,.0f}" if t["available"] else "absent"
        out.append(
            f"| {r['batch_size']} | {r['train_step']['images_per_s']:,.0f} | {torch_train} | "
            f"{t.get('clcnn_train_ratio', float('nan')):.2f} | {r['numpy_train_step']['images_per_s']:,.0f} | "
            f"{r['numpy_train_step']['clcnn_speedup']:.1f}x | {gflops:.1f} | {100 * gflops / ceiling:.1f}% | "
            f"{100 * kernels / r['train_step']['median_ms']:.0f}% | {r['inference']['images_per_s']:,.0f} | "
            f"{torch_infer} | {t.get('clcnn_inference_ratio', float('nan')):.2f} |")
    if shares:
        out += ["", f"Model GFLOP/s at batch 256 as a share of the sgemm in {len(shares)} alternating rounds "
                "(each round: the sgemm's fastest of 10 runs, then 300 training steps; the steps' median "
                "rate over the round's sgemm rate): median **{:.1f}%** (rounds {}).".format(
                    statistics.median(shares), ", ".join(f"{v:.1f}" for v in shares))]
    for r in reports:
        out += ["", f"### Per op, batch {r['batch_size']} (device time from event profiling; host = wall "
                "time of the call + queue.finish())", "",
                "| layer | op | fwd ms | fwd rate | fwd host ms | bwd ms | bwd rate | bwd host ms | check vs oracle |",
                "|---|---|---|---|---|---|---|---|---|"]
        for op in r["ops"]:
            cells = []
            for p in ("forward", "backward"):
                e = op[p]
                if e is None:
                    cells += ["-", "-", "-"]
                else:
                    rate = (f"{e['gflops']:.1f} GFLOP/s" if "gflops" in e
                            else f"{e['gbs']:.2f} GB/s" if "gbs" in e else "-")
                    cells += [_ms(e), rate, f"{e['host']['median_ms']:.3f}"]
            check = f"{'ok' if op['check']['ok'] else 'FAILED'} (max err {op['check']['max_error']:.1e})"
            layer = "" if op["layer"] is None else op["layer"]
            out.append(f"| {layer} | {op['name']} | " + " | ".join(cells) + f" | {check} |")
        out.append(f"| | all kernels | {r['ops_total_ms']['forward']:.3f} | | | {r['ops_total_ms']['backward']:.3f} | | | |")
        out.append(f"\nWhole step: train {_ms(r['train_step'])} ms ({r['train_step']['runs']} runs), inference "
                   f"{_ms(r['inference'])} ms ({r['inference']['runs']} runs), "
                   f"NumPy oracle train {_ms(r['numpy_train_step'])} ms ({r['numpy_train_step']['runs']} runs)"
                   + (f", PyTorch train {_ms(r['torch']['train_step'])} ms ({r['torch']['train_step']['runs']} runs), "
                      f"inference {_ms(r['torch']['inference'])} ms ({r['torch']['inference']['runs']} runs, "
                      f"{r['torch']['threads']} threads)."
                      if r["torch"]["available"] else "; PyTorch absent."))
    return out


def conv_section(rows, ceiling):
    out = ["## Single Conv2D layers", "",
           "Stride 1, bias, no activation. FLOPs = 2*N*O*C*KH*KW*OH*OW forward, twice that backward "
           "(input and weight gradients). clcnn kernel = device time from event profiling; clcnn wall = "
           "call + queue.finish(); PyTorch = wall time (conv2d forward under no_grad; autograd.grad for "
           "x, w, b). The ratio to PyTorch is PyTorch's wall time over clcnn's (like for like), taken in "
           "alternating rounds of each side's calls: the median of the rounds' ratios, their range in "
           "brackets. The gradients of the layers "
           "of 64 channels and more, and the forward of the 5x5 ones and of the 3x3 ones from 128 channels "
           "or on 16x16 planes, run as "
           "Winograd convolutions (clcnn/ops/winograd.py), which multiply 4-6x less: their rates count the "
           "direct form's FLOPs, so they can pass the sgemm ceiling.", ""]
    for p, name in (("forward", "Forward"), ("backward", "Backward")):
        out += [f"### {name}", "",
                "| layer | GFLOP | clcnn kernel ms | clcnn kernel GFLOP/s | clcnn wall GFLOP/s | torch GFLOP/s "
                "| clcnn / torch (rounds) | clcnn kernel / sgemm | check |", "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            c, t, r = row["clcnn"], row["torch"], row.get("ratios")
            flops = c["flops"][p]
            wall = _gf(flops, c[p]["host"])
            torch_rate = _gf(flops, t[p]) if t else None
            out.append(
                f"| {row['label']} | {flops * 1e-9:.3f} | {_ms(c[p])} | {c[p]['gflops']:.1f} | {wall:.1f} | "
                + (f"{torch_rate:.1f} | {statistics.median(r[p]):.2f} ({min(r[p]):.2f}-{max(r[p]):.2f})"
                   if t else "absent | -")
                + f" | {100 * c[p]['gflops'] / ceiling:.0f}% | {'ok' if c['check']['ok'] else 'FAILED'} |")
        out.append("")
    return out


def startup_section(result):
    out = ["## Start-up: fresh `clcnn train lenet5` process to its first trained batch", "",
           "Cold: empty pyopencl and PoCL caches (XDG_CACHE_HOME and POCL_CACHE_DIR pointed at a new "
           "temporary folder); second: the same folder again (PoCL's cache filled; clcnn stores the "
           "binaries of programs built a second time); warm: the third start, every program loaded from "
           "its binary. import = interpreter start to "
           "clcnn and its CLI imported; to first step = includes loading MNIST (train and test; the cache "
           "folder also keeps the decoded arrays as .npy, so cold starts decompress and later ones map them), "
           "uploading the uint8 training images (normalised on the device, batch by batch) "
           "and building the model; build = time inside pyopencl's Program.build (compile, or "
           "load from cache); first step = the first train_step until its kernels have run on the device "
           "(it returns with them queued), which also holds PoCL's lazy per-work-group-size "
           "compiles. The warm starts begin once the detached process that writes "
           "the binaries (started as the second run exits) is done: "
           f"{', '.join(f'{t:.0f}' for t in result.get('binaries_written_s', [])) or '-'} s after that exit. "
           "Seconds; each run listed.", "",
           "| caches | total s | import s | to first step s | program build s (count) | first step s |",
           "|---|---|---|---|---|---|"]
    for kind in ("cold", "second", "warm"):
        for r in result.get(kind, []):
            out.append(f"| {kind} | {r['total_s']:.2f} | {r['import_s']:.2f} | {r['to_first_step_s']:.2f} | "
                       f"{r['build_s']:.2f} ({r['builds']}) | {r['first_step_s']:.2f} |")
    for kind in ("cold", "second", "warm"):
        runs = result.get(kind, [])
        if len(runs) > 1:
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            out.append(f"| **{kind}, median of {len(runs)}** | **{med['total_s']:.2f}** | {med['import_s']:.2f} | "
                       f"{med['to_first_step_s']:.2f} | {med['build_s']:.2f} | {med['first_step_s']:.2f} |")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(HERE, "results.md"))
    parser.add_argument("--quick", action="store_true", help="3 runs per figure, no start-up runs (smoke test)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's thread count (default its own); on a loaded machine its OpenMP "
                             "threads stall each other by 10-40x, and 1 thread is the fair comparison")
    parser.add_argument("--startup-only", type=int, metavar="WARM", default=None,
                        help="only the start-up figures: 2 cache folders, each a cold, a second and WARM warm "
                             "starts; the table goes to stdout and results.md is left as it is")
    args = parser.parse_args()
    if args.startup_only is not None:
        print("\n".join(startup_section(startup(2, max(args.startup_only, 1)))))
        return
    if args.torch_threads:
        try:
            import torch
            torch.set_num_threads(args.torch_threads)
        except ImportError:
            pass
    repeat = 3 if args.quick else args.repeat
    started = time.time()
    load_start = os.getloadavg()
    dev = clcnn.get_device(None, profiling=True)
    log("sgemm ceiling")
    ceiling = sgemm_ceiling(repeat)
    reports = []
    for batch in (64, 256):
        log(f"lenet5 batch {batch}")
        reports.append(bench.run_device(dev.index, "lenet5", batch, repeat, progress=True))
    log("lenet5 batch 256, share of the sgemm in alternating rounds")
    lenet_flops = sum(op["flops"]["forward"] + op["flops"]["backward"] for op in reports[-1]["ops"])
    shares = sgemm_share_rounds(clcnn.get_device(dev.index), lenet_flops, rounds=3 if args.quick else 7)
    rows = conv_sweep(dev, min(repeat, 10))
    ceiling_end = sgemm_ceiling(repeat)
    start = None if args.quick else startup()
    r0 = reports[0]
    d, h = r0["device"], r0["host"]
    t = r0["torch"]
    lines = [
        "# clcnn benchmark results", "",
        f"Written by `python benchmarks/run_all.py` on {time.strftime('%Y-%m-%d %H:%M')} in "
        f"{(time.time() - started) / 60:.1f} minutes; medians of {repeat} runs (min-max in brackets) "
        "after warm-up.", "",
        "**The machine is shared and noisy**: other jobs ran on the same cores during this run, so absolute "
        "figures move by tens of percent between runs (PyTorch's OpenMP threads suffer most from it). "
        "Compare ratios taken within one run, not figures across runs. Load average (1, 5, 15 min) at the "
        f"start: {', '.join(f'{v:.1f}' for v in load_start)}; at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (on {os.cpu_count()} cores).", "",
        "## Machine", "",
        f"- host: {h['cpu']}, {h['cores']} cores ({h['usable_cores']} usable); {h['os']}",
        f"- OpenCL device {d['index']}: {d['name']} ({d['type']}, {d['compute_units']} compute units), "
        f"platform {d['platform']} {d['platform_version']}, driver {d['driver_version']}, {d['opencl_version']}",
        f"- Python {h['python']}, NumPy {h['numpy']}, pyopencl {h['pyopencl']}, "
        + (f"PyTorch {t['version']} ({t['threads']} threads)" if t["available"] else "PyTorch absent"),
        f"- ceiling: NumPy float32 sgemm 1024^3, fastest of {ceiling['runs']} runs: {ceiling['gflops']:.0f} GFLOP/s "
        f"at the start of the run, {ceiling_end['gflops']:.0f} GFLOP/s after the conv sweep (medians "
        f"{2 * 1024**3 / ceiling['median_ms'] * 1e-6:.0f} and {2 * 1024**3 / ceiling_end['median_ms'] * 1e-6:.0f}); "
        f"ratios use the higher, **{max(ceiling['gflops'], ceiling_end['gflops']):.0f} GFLOP/s**.", ""]
    peak = max(ceiling["gflops"], ceiling_end["gflops"])
    lines += model_section(reports, peak, shares) + [""]
    lines += conv_section(rows, peak)
    if start:
        lines += startup_section(start)
    raw = os.path.splitext(args.out)[0] + ".json"     # results.md -> results.json, and so on
    lines += ["", f"Raw figures: {os.path.basename(raw)} beside this file."]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(raw, "w") as f:
        json.dump({"sgemm": [ceiling, ceiling_end], "lenet5": reports, "lenet5_256_sgemm_share_rounds": shares,
                   "conv_sweep": rows, "startup": start}, f, indent=1)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
