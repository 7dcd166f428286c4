"""Same-run ratios of whole steps, clcnn against PyTorch CPU: training (Trainer.train_step on a
host batch, as `clcnn bench` times it) and inference, for a model and batch sizes. clcnn and
PyTorch alternate in rounds so that load from other work on the machine falls on both; the
figure is the median over rounds of each round's ratio, with min and max.

    python benchmarks/step_ratio.py --model lenet5 --batch 64 256 --rounds 5 --repeat 100
    python benchmarks/step_ratio.py --model resnet20 --batch 64 128 --repeat 10 --torch-threads 1

A LeNet-5 step is 1-5 ms: windows of 20 steps moved its figures by 30% between rounds on the
2-core machine, 100 steps by a few percent.
"""
import argparse
import json
import statistics
import sys

from clcnn import bench, models
from clcnn.device import get_device


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    dev = get_device(args.device)
    _, shape = models.MODELS[args.model]
    out = []
    for batch in args.batch:
        train_r, infer_r, rows = [], [], []
        for _ in range(args.rounds):
            train, infer, net = bench.clcnn_steps(dev, args.model, batch, args.repeat)
            torch = bench.torch_steps(net, shape, batch, args.repeat)
            tr = train["images_per_s"] / torch["train_step"]["images_per_s"]
            ir = infer["images_per_s"] / torch["inference"]["images_per_s"]
            train_r.append(tr)
            infer_r.append(ir)
            rows.append((train["images_per_s"], torch["train_step"]["images_per_s"],
                         infer["images_per_s"], torch["inference"]["images_per_s"]))
            print(f"{args.model} b{batch}: train {rows[-1][0]:,.0f} vs {rows[-1][1]:,.0f} img/s ({tr:.2f}x), "
                  f"infer {rows[-1][2]:,.0f} vs {rows[-1][3]:,.0f} ({ir:.2f}x)", file=sys.stderr, flush=True)
        entry = {"model": args.model, "batch": batch,
                 "train_ratio": [statistics.median(train_r), min(train_r), max(train_r)],
                 "infer_ratio": [statistics.median(infer_r), min(infer_r), max(infer_r)], "rounds": rows}
        out.append(entry)
        print(f"{args.model} batch {batch}: train {entry['train_ratio'][0]:.2f}x "
              f"({entry['train_ratio'][1]:.2f}-{entry['train_ratio'][2]:.2f}), infer {entry['infer_ratio'][0]:.2f}x "
              f"({entry['infer_ratio'][1]:.2f}-{entry['infer_ratio'][2]:.2f})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
