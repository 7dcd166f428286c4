"""The `clcnn` command: devices, summary, train, evaluate, predict, bench, check.

User mistakes end in one line on stderr and a non-zero exit code, never a traceback: every
clcnn error is turned into a click error here.
"""
import functools
import json
import math
import os
import signal
import sys

import click
import numpy as np

import clcnn
from clcnn import datasets, models, recipes, rundir, schedules
from clcnn.errors import ClcnnError

# Files saved without metadata (model.save) are read as LeNet-5's MNIST digits were prepared.
PREPROCESS = {"lenet5": {"pad": 2, "mean": 0.1307, "std": 0.3081},
              "mnist-cnn": {"pad": 0, "mean": 0.1307, "std": 0.3081}}


def user_errors(func):
    """Turn clcnn's errors (and a few of the OS's) into one clear line and exit code 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            raise   # the reader went away (| head): click exits quietly, as Unix tools do
        except (ClcnnError, ValueError, TypeError, KeyError, OSError) as exc:
            if os.environ.get("CLCNN_DEBUG"):  # developers want the traceback
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(message) from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(clcnn.__version__, prog_name="clcnn")
def cli():
    """clcnn: convolutional neural networks in OpenCL kernels."""


@cli.command()
@user_errors
def devices():
    """List OpenCL platforms and devices (the index is what --device P:D takes)."""
    found = clcnn.list_devices()
    if not found:
        raise click.ClickException("no OpenCL device found; install one with: pip install \"pyopencl[pocl]\"")
    default = clcnn.get_device()
    for index, platform, name, kind in found:
        mark = "*" if index == default.index else " "
        click.echo(f"{mark} {index}  {kind:<4} {name}  [{platform}]")
    click.echo("* the default device (set CLCNN_DEVICE or --device to choose another)")


@cli.command()
@click.argument("model")
@click.option("--device", default=None, help="Device spec (pocl, cpu, gpu, P:D, name substring).")
@user_errors
def summary(model, device):
    """Print the layers of MODEL (a model name or a saved .clcnn file): inputs, output shapes and
    parameter counts."""
    if model in models.MODELS:
        build, input_shape = models.MODELS[model]
        build(device=device).summary(input_shape, print_fn=click.echo)
        return
    if not os.path.isfile(model):
        raise click.BadParameter(f"{model!r} is neither a model ({', '.join(sorted(models.MODELS))}) nor a file",
                                 param_hint="MODEL")
    net, meta = _load_checkpoint(model, device)
    shape = meta.get("input_shape")
    if isinstance(net, clcnn.Sequential):
        if not shape:
            raise click.ClickException(f"{model}: the file does not say its input shape; use model.summary((C, H, W))")
        net.summary(tuple(shape), print_fn=click.echo)
    else:
        net.summary(print_fn=click.echo)


@cli.command()
@click.argument("model", type=click.Choice(sorted(models.MODELS)))
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs to train (default per model).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None)
@click.option("--momentum", type=click.FloatRange(min=0), default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="L2 weight decay (default per model).")
@click.option("--schedule", type=click.Choice(["cosine", "step", "none"]), default="cosine", show_default=True)
@click.option("--device", default=None, help="Device spec (pocl, cpu, gpu, P:D, name substring).")
@click.option("--dataset", "dataset_name", default="mnist", show_default=True,
              help="mnist, fashion-mnist, cifar10, a folder of IDX files in MNIST naming, or an image "
                   "folder with one sub-folder of PNG/JPEG files per class.")
@click.option("--data-dir", default=None, help="Where to look for / download Fashion-MNIST and CIFAR-10.")
@click.option("--augment", is_flag=True, help="Random shifts of up to 2 pixels (colour images: random crops "
              "with 4 pixels of padding and horizontal flips).")
@click.option("--out", default=None,
              help="Output folder (default: a new runs/MODEL, runs/MODEL-2, ...; with --resume, the checkpoint's).")
@click.option("--overwrite", is_flag=True, help="Replace the earlier run held in --out.")
@click.option("--resume", "resume_path", default=None, help="Continue from this checkpoint (last.clcnn).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on the first N images only.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--validation-split", type=click.FloatRange(min=0, max=1, max_open=True), default=0.1, show_default=True,
              help="Fraction of the training images held out for validation (best.clcnn is chosen on it); "
                   "0 validates on the test set instead.")
@click.option("--distributed", is_flag=True, help="Data-parallel over MPI: mpiexec -n R clcnn train MODEL "
              "--distributed; --batch-size stays the global batch (needs pip install \"clcnn[mpi]\").")
@click.option("--early-stopping", type=click.IntRange(min=0), default=None, metavar="PATIENCE",
              help="Stop when the validation loss has not improved for PATIENCE epochs.")
@click.option("--reduce-lr-on-plateau", type=click.IntRange(min=0), default=None, metavar="PATIENCE",
              help="Multiply the (scheduled) learning rate by 0.1 when the validation loss has not improved "
                   "for PATIENCE epochs.")
@user_errors
def train(model, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, device, dataset_name, data_dir,
          augment, out, overwrite, resume_path, seed, limit, quiet, validation_split, distributed=False,
          early_stopping=None, reduce_lr_on_plateau=None):
    """Train MODEL (lenet5, mnist-cnn, resnet20, mobilenet-small); writes last/best checkpoints,
    history and curves, then reports the test accuracy of best.clcnn."""
    defaults = recipes.DEFAULTS[model]
    epochs = epochs or defaults["epochs"]
    batch_size = batch_size or defaults["batch_size"]
    optimizer = optimizer or defaults["optimizer"]
    lr = lr or (defaults["lr"] if optimizer == defaults["optimizer"] else {"sgd": 0.05, "adam": 1e-3}[optimizer])
    args = (model, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, device, dataset_name,
            data_dir, augment, out, overwrite, resume_path, seed, limit, quiet, validation_split)
    if distributed:
        _train_distributed(*args)
        return
    out, lock = _claim_out(model, out, overwrite, resume_path)
    try:
        _train(*args[:12], out, *args[13:])
    finally:
        lock.release()


def _train_distributed(*args):
    """Every rank runs _train; rank 0 alone checks and locks the output folder (the others get
    its answer, or its error), and an error on one rank ends them all instead of leaving the
    others waiting in a collective."""
    from clcnn import distributed
    comm = distributed.Communicator()
    model, out, overwrite, resume_path = args[0], args[12], args[13], args[14]
    claimed = []
    out = comm.on_root(lambda: claimed.append(_claim_out(model, out, overwrite, resume_path)) or claimed[0][0],
                       what="claiming the output folder")
    try:
        with comm.guard():
            _train(*args[:12], out, *args[13:], comm=comm)
    finally:
        if claimed:
            claimed[0][1].release()


def _claim_out(model, out, overwrite, resume_path):
    """(output folder, its lock): the checks that need no data, then the folder locked."""
    if resume_path and not os.path.isfile(resume_path):
        raise click.BadParameter(f"no such checkpoint: {resume_path}", param_hint="--resume")
    if resume_path and overwrite:
        raise click.UsageError("--resume continues the run in its folder and --overwrite replaces it; pass one")
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise click.BadParameter(f"{out} is a file, not a folder", param_hint="--out")
    # The output folder is locked before anything slow, so a clash shows at once; the lock
    # goes when this process ends, however it ends.
    if out is None and not resume_path:
        out, lock = rundir.claim_run_dir(os.path.join("runs", model))
    else:
        out = out if out is not None else os.path.dirname(resume_path) or "."
        lock = rundir.FolderLock(out)
        lock.acquire()
    return out, lock


def _train(model, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, device, dataset_name,
           data_dir, augment, out, overwrite, resume_path, seed, limit, quiet, validation_split, comm=None):
    root = comm is None or comm.rank == 0
    echo = click.echo if root else (lambda *args, **kwargs: None)   # rank 0 alone prints and writes
    if comm is None:
        _clear_out(out, overwrite, resume_path)
        dev = clcnn.get_device(device)
    else:
        comm.on_root(lambda: _clear_out(out, overwrite, resume_path), what="checking the output folder")
        dev = comm.device(device)
    clcnn.train.prepare(dev)
    _train_on(model, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, dev, dataset_name,
              data_dir, augment, out, resume_path, seed, limit, quiet, validation_split, comm, root, echo)


def _clear_out(out, overwrite, resume_path):
    if rundir.holds_run(out) and not resume_path:
        if not overwrite:
            raise click.UsageError(f"{out} holds an earlier run; pass --resume {os.path.join(out, 'last.clcnn')} "
                                   "to continue it, --overwrite to replace it, or another --out")
        for name in (*rundir.CHECKPOINT_NAMES, "history.json", "history.csv", "curves.png"):   # never two runs mixed
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))


def _train_on(model, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, dev, dataset_name,
              data_dir, augment, out, resume_path, seed, limit, quiet, validation_split, comm, root, echo):
    train_images, train_labels = recipes.load_split(dataset_name, "train", data_dir)
    test_images, test_labels = recipes.load_split(dataset_name, "test", data_dir)
    prep = recipes.preprocess_for(model, dataset_name, train_images)
    class_names = datasets.class_names(dataset_name)
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    # Prepared lazily: Trainer.fit uploads the uint8 images and normalises each batch on the
    # device; the split (the one Trainer.fit(validation_split=...) takes) only indexes them.
    train_data = (recipes.prepare(train_images, prep), train_labels)
    val_data = None
    if validation_split:
        train_data, val_data = clcnn.train.split_validation(*train_data, validation_split, seed)
    test_data = (recipes.prepare(test_images, prep), test_labels)
    channels, size = train_data[0].shape[1], train_data[0].shape[-1]
    clcnn.seed(seed)
    net = recipes.build_model(model, channels, len(class_names), size, device=dev)
    if weight_decay is None:
        weight_decay = recipes.DEFAULTS[model]["weight_decay"]
    opt = (clcnn.optim.Adam(net, lr=lr, weight_decay=weight_decay) if optimizer == "adam"
           else clcnn.optim.SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay))
    plan = {"cosine": schedules.CosineLR(epochs), "step": schedules.StepLR(max(epochs // 3, 1), 0.1),
            "none": None}[schedule]
    metadata = {"model": model, "dataset": recipes.dataset_id(dataset_name), "limit": limit,
                "augment": bool(augment), "validation_split": validation_split, "preprocess": prep,
                "input_shape": list(train_data[0].shape[1:]), "class_names": list(class_names)}
    trainer = clcnn.Trainer(net, clcnn.losses.SoftmaxCrossEntropy(), opt, schedule=plan, seed=seed,
                            checkpoint_dir=out, progress=not quiet, metadata=metadata,
                            comm=comm, **(recipes.augmentation(channels, prep) if augment else {}))
    if resume_path:
        header = trainer.load_checkpoint(resume_path if comm is None else comm.fetch_file(resume_path))
        _check_resume(resume_path, header, metadata, batch_size)
        if trainer.epoch >= epochs:
            echo(f"nothing to train: {resume_path} already trained {trainer.epoch} of {epochs} epochs; "
                 "pass a larger --epochs to continue it")
            return
        echo(f"resuming from {resume_path} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
    # Every split is checked before the first step: a bad test label must not cost a training run.
    clcnn.train.check_targets(test_labels, (len(class_names),), trainer.loss, "the test set")
    held = f", {len(val_data[0])} held out for validation" if validation_split else ""
    echo(f"training {model} on {dev.name} ({dev.platform.name.strip()}): {len(train_data[0])} images{held}, "
         f"{epochs} epochs, batch {batch_size}, {optimizer} lr {lr}; writing to {out}", err=True)
    val_set = f"validation split ({validation_split:.0%} of train)" if validation_split else "test set"
    history = trainer.fit(train_data, epochs=epochs, batch_size=batch_size,
                          validation_data=val_data if validation_split else test_data,
                          callbacks=_train_callbacks(out if root else None, val_set))
    if not root:   # rank 0 writes the history and tests best.clcnn
        if trainer.interrupted and trainer.interrupt_signal == signal.SIGTERM:
            sys.exit(128 + signal.SIGTERM)
        return
    _write_history(out, history)
    if trainer.interrupted:
        last = os.path.join(out, "last.clcnn")
        what = "terminated (SIGTERM)" if trainer.interrupt_signal == signal.SIGTERM else "interrupted"
        echo(f"{what}: checkpoint saved to {last}; continue with --resume {last}")
        if trainer.interrupt_signal == signal.SIGTERM:
            sys.exit(128 + signal.SIGTERM)   # what a shell reports for a terminated process
        return
    if not history:
        return
    last = history[-1]
    # The test set is evaluated once, at the end, with the checkpoint chosen on validation.
    best_path = os.path.join(out, "best.clcnn")
    best = clcnn.load(best_path, device=dev) if os.path.exists(best_path) else net
    test = clcnn.train.evaluate(best, test_data)
    summary = {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "test_n": test["n"],
               "best_checkpoint": "best.clcnn" if best is not net else "last"}
    _write_json(os.path.join(out, "test.json"), summary)
    where = (f"validation accuracy {100 * last['val_accuracy']:.2f}% (held-out {validation_split:.0%} of train)"
             if validation_split else f"validation on the test set {100 * last['val_accuracy']:.2f}%")
    echo(f"done: train accuracy {100 * last['accuracy']:.2f}% (last epoch's batches); {where}; "
         f"test accuracy of best.clcnn {100 * test['accuracy']:.2f}% "
         f"(loss {test['loss']:.4f}, {test['n']} test images); {last['images_per_second']:,.0f} images/s; "
         f"checkpoints in {out}")


def _write_json(path, value):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_json_safe(value), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _check_resume(path, header, metadata, batch_size):
    """Refuse to resume with other data or batches than the checkpoint's: its epoch and batch
    counters would then mean other images."""
    saved = header.get("metadata") or {}
    settings = header["trainer"].get("settings") or {}
    show = {"limit": lambda v: "all images" if v is None else v, "augment": lambda v: "on" if v else "off",
            "validation_split": lambda v: v}
    for key, option, now in (("dataset", "--dataset", metadata["dataset"]), ("limit", "--limit", metadata["limit"]),
                             ("augment", "--augment", metadata["augment"]),
                             ("validation_split", "--validation-split", metadata["validation_split"])):
        if key in saved and saved[key] != now:
            fmt = show.get(key, str)
            raise click.UsageError(f"--resume {path}: the checkpoint was trained with {option} {fmt(saved[key])}, "
                                   f"this run has {fmt(now)}; resume with the same {option} or start a new run")
    if "batch_size" in settings and settings["batch_size"] != batch_size:
        raise click.UsageError(f"--resume {path}: the checkpoint was trained with --batch-size "
                               f"{settings['batch_size']}, this run has {batch_size}; pass --batch-size "
                               f"{settings['batch_size']} or start a new run")


class _NameSets(clcnn.callbacks.Callback):
    """Writes into each epoch's record which set its val_* figures come from; loss and
    accuracy are always the training batches'."""

    def __init__(self, val_set):
        self.val_set = val_set

    def on_epoch_end(self, epoch, logs=None):
        logs["val_set"] = self.val_set


def _train_callbacks(out, val_set):
    """The callbacks of `clcnn train`: the set names, --early-stopping and --reduce-lr-on-plateau
    (read from the command's options, so the long argument chain of _train stays as it is) and
    history.csv after every epoch (out None: a rank that writes nothing)."""
    from clcnn import callbacks
    options = click.get_current_context().params
    chosen = [_NameSets(val_set)]
    if options.get("early_stopping") is not None:
        chosen.append(callbacks.EarlyStopping("val_loss", patience=options["early_stopping"]))
    if options.get("reduce_lr_on_plateau") is not None:
        chosen.append(callbacks.ReduceLROnPlateau("val_loss", factor=0.1, patience=options["reduce_lr_on_plateau"]))
    if out is not None:
        chosen.append(callbacks.CSVLogger(os.path.join(out, "history.csv")))
    return chosen


def _write_history(out, history):
    from clcnn.callbacks import write_csv
    from clcnn.plot import plot_history
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, ".history.json.tmp")
    with open(tmp, "w") as f:
        json.dump(history, f, indent=1)
    os.replace(tmp, os.path.join(out, "history.json"))
    write_csv(os.path.join(out, "history.csv"), history)
    if history:
        plot_history(history, os.path.join(out, "curves.png"))


def _load_checkpoint(path, device):
    """(model, metadata dict) of a checkpoint, model file or .onnx file, or one clear error."""
    if str(path).lower().endswith(".onnx"):
        return _load_onnx(path, device)
    header, _ = clcnn.serialization.read_archive(path)
    if not header.get("architecture"):
        raise click.ClickException(f"{path}: the saved model has no layers; nothing to run")
    meta = header.get("metadata") or {}
    if not isinstance(meta, dict):
        raise click.ClickException(f"{path}: corrupt header: 'metadata' must be an object, got "
                                   f"{type(meta).__name__}; use a checkpoint written by clcnn train")
    return clcnn.load(path, device=device), meta   # load refuses an architecture of the wrong shape


def _load_onnx(path, device):
    """An ONNX file and its metadata: what clcnn export stored, else the input shape from the
    graph and MNIST's normalisation, padded from 28x28 digits up to the input size."""
    net = clcnn.onnx.load(path, device=device)
    meta = dict(clcnn.onnx.read_metadata(path))
    shape = list(net.input_shapes[0])
    meta.setdefault("input_shape", shape)
    if "preprocess" not in meta and len(shape) == 3:
        meta["preprocess"] = {"pad": max((shape[-1] - 28) // 2, 0), "mean": 0.1307, "std": 0.3081}
    return net, meta


def _preprocess(meta, path):
    """The pad, mean and std images were trained with; a file saved without metadata (model.save)
    gets LeNet-5's MNIST ones."""
    model = meta.get("model")
    prep = meta.get("preprocess", PREPROCESS[model] if isinstance(model, str) and model in PREPROCESS
                    else PREPROCESS["lenet5"])
    missing = [key for key in ("pad", "mean", "std") if not isinstance(prep, dict) or key not in prep]
    if missing:
        raise click.ClickException(f"{path}: its metadata 'preprocess' lacks {', '.join(missing)}; "
                                   "use a checkpoint written by clcnn train")
    return prep


def _json_safe(value):
    """value with NaN and Inf as None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@cli.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", "dataset_name", default=None, help="mnist, fashion-mnist or a folder (default: the training set's).")
@click.option("--data-dir", default=None)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", "with_plot", is_flag=True,
              help="Also draw confusion.png (a heat map) and misclassified.png (the most confident mistakes).")
@click.option("--out", "plot_dir", default=None, help="Folder for the --plot pictures (default: the checkpoint's).")
@user_errors
def evaluate(checkpoint, dataset_name, data_dir, device, as_json, with_plot=False, plot_dir=None):
    """Loss, accuracy, per-class accuracy and confusion matrix of CHECKPOINT on a test set."""
    net, meta = _load_checkpoint(checkpoint, device)
    net.freeze()    # fixed weights: folds and packs made once, not per batch
    prep = _preprocess(meta, checkpoint)
    images, labels = datasets.dataset(dataset_name or meta.get("dataset", "mnist"), "test", data_dir=data_dir)
    x = datasets.prepare_images(images, pad=prep["pad"], mean=prep["mean"], std=prep["std"])
    metrics = clcnn.train.evaluate(net, (x, labels))
    confusion = metrics.pop("confusion")
    per_class = (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).tolist()
    metrics.update(per_class_accuracy=per_class, confusion=confusion.tolist())
    names = _class_labels(meta, len(confusion))
    if with_plot:
        metrics["pictures"] = _evaluate_pictures(net, x, labels, confusion, names, plot_dir or
                                                 os.path.dirname(os.path.abspath(checkpoint)))
    if as_json:
        click.echo(json.dumps(_json_safe(metrics), allow_nan=False))
        return
    click.echo(f"n {metrics['n']}  loss {metrics['loss']:.4f}  accuracy {100 * metrics['accuracy']:.2f}%")
    click.echo("per-class accuracy: " + "  ".join(f"{n}:{100 * a:.1f}%" for n, a in zip(names, per_class)))
    click.echo("confusion matrix (rows true, columns predicted):")
    for row in confusion:
        click.echo(" ".join(f"{v:5d}" for v in row))
    for path in metrics.get("pictures", []):
        click.echo(f"wrote {path}")


def _evaluate_pictures(net, x, labels, confusion, names, folder):
    """confusion.png and misclassified.png in folder; returns their paths."""
    from clcnn import plot
    os.makedirs(folder, exist_ok=True)
    logits = clcnn.train.predict(net, x).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    paths = [os.path.join(folder, "confusion.png"), os.path.join(folder, "misclassified.png")]
    plot.plot_confusion(confusion, names, paths[0])
    plot.plot_misclassified(x, np.asarray(labels), probs, names, paths[1])
    return paths


def _input_spec(meta, checkpoint):
    """(channels, (H, W) of the image before padding, pad, mean, std) from a checkpoint's
    metadata; a model saved without metadata is taken as an MNIST digit model, as LeNet-5."""
    if not isinstance(meta, dict):
        raise click.ClickException(f"{checkpoint}: its metadata is not a table; use a checkpoint written by clcnn train")
    prep = meta.get("preprocess", PREPROCESS["lenet5"])
    try:
        channels, height, width = (int(n) for n in meta.get("input_shape", [1, 32, 32]))
        pad = int(prep["pad"])
        mean = np.asarray(prep["mean"], np.float32).reshape(-1, 1, 1)
        std = np.asarray(prep["std"], np.float32).reshape(-1, 1, 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(f"{checkpoint}: its metadata does not describe the input (need input_shape "
                                   f"[C, H, W] and preprocess pad, mean, std; {type(exc).__name__}: {exc}); "
                                   f"use a checkpoint written by clcnn train") from None
    if (channels not in (1, 3) or pad < 0 or min(height, width) - 2 * pad < 1 or mean.size not in (1, channels)
            or std.size not in (1, channels) or not (std > 0).all()):
        raise click.ClickException(f"{checkpoint}: its metadata holds an unusable input description "
                                   f"(input_shape {meta.get('input_shape')}, preprocess {prep})")
    return channels, (height - 2 * pad, width - 2 * pad), pad, mean, std


def _class_labels(meta, classes):
    names = meta.get("class_names")
    if isinstance(names, list) and len(names) == classes:
        return [str(n) for n in names]
    return [str(c) for c in range(classes)]


@cli.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Classes listed per image.")
@click.option("--resize", type=click.Choice(["refuse", "nearest", "bilinear", "bicubic", "lanczos", "stretch"]),
              default="refuse", show_default=True,
              help="Images of another size: refuse, resize with a filter (aspect ratio within 5%), or stretch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", default=None)
@user_errors
def predict(checkpoint, images, top, resize, as_json, device):
    """Class and top probabilities for each image file or folder of images (PNG, JPEG, BMP, GIF,
    TIFF, PGM/PPM or .npy), converted to the model's channels; digits are white on black."""
    from clcnn.imageio import list_images, read_image
    net, meta = _load_checkpoint(checkpoint, device)
    net.freeze()
    channels, size, pad, mean, std = _input_spec(meta, checkpoint)
    paths = list_images(images)
    batch = np.stack([read_image(path, channels=channels, size=size, resize=resize) for path in paths])
    # Padding with 0 before normalising, as datasets.prepare_images does for training.
    x = (np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad))) - mean) / std
    logits = clcnn.train.predict(net, x.astype(np.float32)).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = _class_labels(meta, probs.shape[1])
    rows = []
    for path, p in zip(paths, probs):
        best = [int(c) for c in np.argsort(-p, kind="stable")[:top]]
        rows.append({"file": path, "class": best[0], "label": labels[best[0]], "probability": float(p[best[0]]),
                     "top": [{"class": c, "label": labels[c], "probability": float(p[c])} for c in best]})
    if as_json:
        click.echo(json.dumps({"checkpoint": checkpoint, "predictions": rows}, indent=1))
        return
    width = max(len("file"), *(len(r["file"]) for r in rows))
    label_width = max(len("class"), *(len(r["label"]) for r in rows))
    click.echo(f"{'file':<{width}}  {'class':<{label_width}}  probability  top {min(top, len(labels))}")
    for r in rows:
        click.echo(f"{r['file']:<{width}}  {r['label']:<{label_width}}  {r['probability']:11.3f}  "
                   + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"]))


@cli.group()
def show():
    """Pictures of what a trained network learnt (PNG files, drawn with matplotlib)."""


@show.command("filters")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, help="PNG to write (default: filters.png beside CHECKPOINT).")
@click.option("--device", default=None)
@user_errors
def show_filters(checkpoint, out, device):
    """The first convolution's kernels of CHECKPOINT as an image grid."""
    from clcnn import plot
    net, _ = _load_checkpoint(checkpoint, device)
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "filters.png")
    plot.plot_filters(net, out)
    click.echo(f"wrote {out}")


@show.command("features")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, help="PNG to write (default: features-IMAGE.png beside CHECKPOINT).")
@click.option("--resize", type=click.Choice(["refuse", "nearest", "bilinear", "bicubic", "lanczos", "stretch"]),
              default="refuse", show_default=True, help="Images of another size, as for predict.")
@click.option("--device", default=None)
@user_errors
def show_features(checkpoint, image, out, resize, device):
    """The feature maps of every conv and pooling layer of CHECKPOINT for IMAGE (read and
    prepared as predict does)."""
    from clcnn import plot
    from clcnn.imageio import read_image
    net, meta = _load_checkpoint(checkpoint, device)
    net.freeze()
    channels, size, pad, mean, std = _input_spec(meta, checkpoint)
    pixels = read_image(image, channels=channels, size=size, resize=resize)
    x = ((np.pad(pixels, ((0, 0), (pad, pad), (pad, pad))) - mean) / std).astype(np.float32)
    logits = clcnn.train.predict(net, x[None])[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    label = _class_labels(meta, len(probs))[int(probs.argmax())]
    stem = os.path.splitext(os.path.basename(image))[0]
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"features-{stem}.png")
    plot.plot_features(net, x, out, title=f"Feature maps for {os.path.basename(image)} "
                                          f"(predicted {label}, {probs.max():.2f})")
    click.echo(f"wrote {out}")


@cli.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out")
@click.option("--device", default=None)
@user_errors
def export_onnx(checkpoint, out, device):
    """Write CHECKPOINT as ONNX (opset 17, dynamic batch) to OUT, with its preprocessing and class
    names in the file's metadata (clcnn evaluate / predict read them back)."""
    net, meta = _load_checkpoint(checkpoint, device)
    shape = meta.get("input_shape") or (None if isinstance(net, clcnn.Sequential) else net.input_shapes[0])
    if not shape:
        raise click.ClickException(f"{checkpoint}: the file does not say its input shape; export from Python "
                                   "with clcnn.onnx.export(model, path, input_shape=(C, H, W))")
    keep = ("model", "dataset", "preprocess", "input_shape", "class_names")
    clcnn.onnx.export(net.eval(), out, input_shape=tuple(shape), metadata={k: meta[k] for k in keep if k in meta})
    click.echo(f"wrote {out} (ONNX opset 17, input N x {'x'.join(map(str, shape))})")


@cli.command()
@click.option("--device", "device_spec", default=None, help='Device spec, or "all" to compare every device.')
@click.option("--model", type=click.Choice(sorted(models.MODELS)), default="lenet5", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--repeat", type=click.IntRange(min=3), default=20, show_default=True,
              help="Timed runs per figure (after warm-up); medians are reported.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def bench(device_spec, model, batch_size, repeat, as_json):
    """Per-op and whole-step timings of MODEL, against NumPy (and PyTorch when installed)."""
    from clcnn import bench as benchmark
    report = benchmark.run(device_spec, model=model, batch_size=batch_size, repeat=repeat,
                           progress=not as_json)
    click.echo(json.dumps(report, indent=1) if as_json else benchmark.format_report(report))


@cli.command()
@click.option("--device", "device_spec", default=None, help="Device spec (pocl, cpu, gpu, P:D, name substring).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def check(device_spec, as_json):
    """Run every kernel on the device against the NumPy oracle; exit 1 on any failure."""
    from clcnn import check as checker
    report = checker.run(device_spec)
    click.echo(json.dumps(report, indent=1) if as_json else checker.format_report(report))
    if not report["passed"]:
        sys.exit(1)


def main():
    cli(prog_name="clcnn")


if __name__ == "__main__":
    sys.exit(main())
