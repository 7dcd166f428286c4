"""Same-run ratio of replayed to plain training steps and inference passes (clcnn/replay.py):
two copies of a model, one with replay turned off, alternating in rounds; medians of each
side's per-round step times.

    python benchmarks/replay_ab.py --model lenet5 --batch 64 256
    python benchmarks/replay_ab.py --model resnet20 --batch 64 --repeat 4
"""
import argparse
import statistics
import time

import numpy as np

from clcnn import losses, models, optim
from clcnn.device import get_device
from clcnn.train import Trainer


def _timed(dev, fn, repeat):
    dev.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    dev.synchronize()
    return (time.perf_counter() - start) / repeat * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=sorted(models.MODELS))
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=40, help="steps per round and side")
    args = parser.parse_args()
    dev = get_device(None)
    build, shape = models.MODELS[args.model]
    for batch in args.batch:
        rng = np.random.default_rng(0)
        x = rng.random((batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        sides = {}
        for replay in (False, True):
            model = build(device=dev)
            trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.01, momentum=0.9),
                              progress=False)
            trainer.replay = model.replay = replay
            for _ in range(4):      # the first step, a plain one, the recorded one, a replay
                trainer.train_step(x, y)
            sides[replay] = (model, trainer, {"train": [], "infer": []})
        for _ in range(args.rounds):
            for replay, (model, trainer, times) in sides.items():
                model.train()
                times["train"].append(_timed(dev, lambda: trainer.train_step(x, y), args.repeat))
                model.eval()
                times["infer"].append(_timed(dev, lambda: model.forward(x).get(), args.repeat))
        for what in ("train", "infer"):
            plain = statistics.median(sides[False][2][what])
            replayed = statistics.median(sides[True][2][what])
            print(f"{args.model} batch {batch} {what}: plain {plain:.3f} ms, replayed {replayed:.3f} ms "
                  f"({plain / replayed:.2f}x)")
        assert sides[True][1]._replay.replays > 0, sides[True][1]._replay.refused


if __name__ == "__main__":
    main()
