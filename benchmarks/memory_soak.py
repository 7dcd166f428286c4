"""Device and host memory over many epochs of a graph model (issue: the layer graph).

Trains `--model` (default resnet20) for `--epochs` epochs on `--images` Fashion-MNIST images
(the embedded MNIST when Fashion-MNIST is not found) with a checkpoint every epoch, and prints
per epoch: the memory pool's bytes held and active on the device, the number of programs built,
and the process's resident set size. Flat columns from the second epoch on mean no leak.

    python benchmarks/memory_soak.py --model resnet20 --epochs 20 --images 512
"""
import argparse
import resource
import tempfile
import time

import numpy as np

import clcnn
from clcnn import datasets, models


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(models.MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    try:
        images, labels = datasets.dataset("fashion-mnist", "train")
        name = "fashion-mnist"
    except clcnn.ClcnnError:
        images, labels = datasets.mnist("train")
        name = "mnist"
    x = datasets.prepare_images(images[:args.images], pad=2 if args.model == "lenet5" else 0,
                                mean=0.2860, std=0.3530)
    y = labels[:args.images]
    dev = clcnn.get_device(args.device)
    build = models.MODELS[args.model][0]
    clcnn.seed(0)
    model = build(device=dev) if args.model in ("lenet5", "mnist-cnn") else build(
        in_channels=1, input_size=x.shape[-1], device=dev)
    opt = clcnn.optim.SGD(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    with tempfile.TemporaryDirectory() as out:
        trainer = clcnn.Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), opt, checkpoint_dir=out,
                                progress=False)
        print(f"{args.model} on {name}, {len(x)} images of {x.shape[1:]}, batch {args.batch_size}, {dev.name}")
        print("epoch  loss    pool held MiB  pool active MiB  programs  RSS MiB  seconds")
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            history = trainer.fit((x, y), epochs=epoch, batch_size=args.batch_size)
            dev.synchronize()
            print(f"{epoch:5d}  {history[-1]['loss']:.4f}  {dev.pool.managed_bytes / 2**20:13.2f}"
                  f"  {dev.pool.active_bytes / 2**20:15.2f}  {len(dev._programs):8d}  {rss_mib():7.1f}"
                  f"  {time.perf_counter() - start:7.1f}", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
