"""Same-run ratios of whole clcnn steps on two OpenCL devices: training (Trainer.train_step on
a host batch, as `clcnn bench` times it) and inference, the devices alternating in rounds so
that load from other work on the machine falls on both; the figure is the median over rounds
of each round's ratio (second device / first), with min and max. For instance pip's PoCL 3.0
against Debian's PoCL 3.1 where both are installed (`clcnn devices` lists them):

    python benchmarks/device_ratio.py --devices 1:0 0:0 --model lenet5 --batch 64 256
    python benchmarks/device_ratio.py --devices 1:0 0:0 --model resnet20 --batch 64 --repeat 10
"""
import argparse
import json
import statistics
import sys

from clcnn import bench
from clcnn.device import get_device


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs=2, required=True, metavar="D",
                        help="two device specs as `clcnn --device` takes them")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devs = [get_device(spec) for spec in args.devices]
    if devs[0] is devs[1]:
        parser.error(f"--devices {args.devices[0]} and {args.devices[1]} name the same device")
    out = []
    for batch in args.batch:
        rows = []
        for _ in range(args.rounds):
            rates = []
            for dev in devs:
                train, infer, _ = bench.clcnn_steps(dev, args.model, batch, args.repeat)
                rates.append((train["images_per_s"], infer["images_per_s"]))
            rows.append(rates)
            print(f"{args.model} b{batch}: train {rates[0][0]:,.0f} / {rates[1][0]:,.0f} img/s, "
                  f"infer {rates[0][1]:,.0f} / {rates[1][1]:,.0f}", file=sys.stderr, flush=True)
        entry = {"model": args.model, "batch": batch, "devices": [str(d) for d in devs], "rounds": rows}
        for k, name in enumerate(("train", "infer")):
            ratios = [r[1][k] / r[0][k] for r in rows]
            entry[name + "_ratio"] = [statistics.median(ratios), min(ratios), max(ratios)]
        out.append(entry)
        print(f"{args.model} batch {batch}: {args.devices[1]} / {args.devices[0]}: train "
              f"{entry['train_ratio'][0]:.2f}x ({entry['train_ratio'][1]:.2f}-{entry['train_ratio'][2]:.2f}), "
              f"infer {entry['infer_ratio'][0]:.2f}x ({entry['infer_ratio'][1]:.2f}-{entry['infer_ratio'][2]:.2f})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
