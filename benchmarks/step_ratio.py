"""Same-run ratios of whole steps, clcnn against PyTorch CPU (or, with --against-device, against
clcnn on a second OpenCL device): training (Trainer.train_step on a host batch, as `clcnn
bench` times it) and inference, for a model and batch sizes. The two sides alternate in rounds
so that load from other work on the machine falls on both; the figure is the median over
rounds of each round's ratio, with min and max.

    python benchmarks/step_ratio.py --model lenet5 --batch 64 256 --rounds 5 --repeat 100
    python benchmarks/step_ratio.py --model resnet20 --batch 64 128 --repeat 10 --torch-threads 1
    python benchmarks/step_ratio.py --device 0:0 --against-device 1:0 --repeat 100
                                    # e.g. Debian's PoCL 3.1 against pip's 3.0 (`clcnn devices`)

A LeNet-5 step is 1-5 ms: windows of 20 steps moved its figures by 30% between rounds on the
2-core machine, 100 steps by a few percent.
"""
import argparse
import json
import statistics
import sys

from clcnn import bench, models
from clcnn.device import get_device


def _baseline(args, net, shape, batch):
    """(train, infer) images/s of the other side: PyTorch mirroring net, or clcnn on the second device."""
    if args.against is not None:
        train, infer, _ = bench.clcnn_steps(args.against, args.model, batch, args.repeat)
        return train["images_per_s"], infer["images_per_s"]
    torch = bench.torch_steps(net, shape, batch, args.repeat)
    return torch["train_step"]["images_per_s"], torch["inference"]["images_per_s"]


def _spread(ratios):
    return [statistics.median(ratios), min(ratios), max(ratios)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's thread count (default its own); on a loaded machine its OpenMP "
                             "threads stall each other, and 1 thread shows what it can still do")
    parser.add_argument("--device", default=None, help="device spec as `clcnn --device` takes it (default: the best)")
    parser.add_argument("--against-device", default=None, metavar="D",
                        help="compare with clcnn on this device instead of PyTorch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    dev = get_device(args.device)
    args.against = None if args.against_device is None else get_device(args.against_device)
    if args.against is dev:
        parser.error(f"--device and --against-device name the same device, {dev}")
    other = "PyTorch" if args.against is None else str(args.against)
    _, shape = models.MODELS[args.model]
    out = []
    for batch in args.batch:
        train_r, infer_r, rows = [], [], []
        for _ in range(args.rounds):
            train, infer, net = bench.clcnn_steps(dev, args.model, batch, args.repeat)
            base_train, base_infer = _baseline(args, net, shape, batch)
            rows.append((train["images_per_s"], base_train, infer["images_per_s"], base_infer))
            train_r.append(rows[-1][0] / base_train)
            infer_r.append(rows[-1][2] / base_infer)
            print(f"{args.model} b{batch}: train {rows[-1][0]:,.0f} vs {base_train:,.0f} img/s ({train_r[-1]:.2f}x), "
                  f"infer {rows[-1][2]:,.0f} vs {base_infer:,.0f} ({infer_r[-1]:.2f}x)", file=sys.stderr, flush=True)
        entry = {"model": args.model, "batch": batch, "device": str(dev), "against": other,
                 "train_ratio": _spread(train_r), "infer_ratio": _spread(infer_r), "rounds": rows}
        out.append(entry)
        t, i = entry["train_ratio"], entry["infer_ratio"]
        print(f"{args.model} batch {batch}, against {other}: train {t[0]:.2f}x ({t[1]:.2f}-{t[2]:.2f}), "
              f"infer {i[0]:.2f}x ({i[1]:.2f}-{i[2]:.2f})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
