"""`rsvlm train clip|coca`: fine-tune open_clip CLIP and CoCa models; `rsvlm train recipes` lists recipes.

Settings come from three layers: TrainConfig's defaults, then ``--recipe``, then the options given.
``--nproc N`` starts N processes through torchrun on this machine; for several machines, run
torchrun yourself (docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys

from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig

log = logging.getLogger("rs_vlm_app.train")

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
#: the parser of each `train TASK` command, to turn a namespace back into options for torchrun
_PARSERS: dict[str, argparse.ArgumentParser] = {}


def register(tree) -> None:
    for task, what in (("clip", "a CLIP model (contrastive loss)"),
                       ("coca", "a CoCa captioner (caption + contrastive loss)")):
        parser = tree.command(
            f"train {task}", _run, help=f"fine-tune {what} on image-caption pairs",
            description=f"Fine-tune {what} on a caption CSV (filepath,caption) or WebDataset shards.\n"
                        "Run the same command again to continue an interrupted run; see docs/training.md.",
        )
        parser.set_defaults(task=task)
        _add_options(parser, task)
        _PARSERS[task] = parser
    tree.command("train recipes", _list_recipes, help="list the shipped training recipes")


def _d(name: str) -> str:
    """' (default: X)' for help texts."""
    value = _DEFAULTS.get(name)
    return f" (default: {value})" if value not in (None, "") else ""


def _add_options(parser: argparse.ArgumentParser, task: str) -> None:
    S = argparse.SUPPRESS  # options not given stay out of the namespace, so recipes can fill them
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="CSV|SHARDS", help="training data: a caption CSV (filepath,caption), or "
                      "WebDataset shards (a .tar, a folder of .tar, a glob or name-{000..009}.tar)")
    data.add_argument("--val", dest="val_data", default=S, metavar="CSV", help="validation caption CSV: retrieval R@K and loss")
    data.add_argument("--val-zeroshot", default=S, metavar="CSV", help="zero-shot evaluation CSV with filepath,label columns")
    data.add_argument("--val-selo", default=S, metavar="DIR",
                      help="semantic-localization folder (imgs/, annotations/anno.json): Rsu, Ras, Rda, Rmi at each evaluation")
    data.add_argument("--zeroshot-templates", default=S, metavar="SET|FILE",
                      help="prompt templates: a shipped set (remote_sensing, the default; clip_resisc45, clip_eurosat, "
                      "clip_benchmark_resisc45) or a file, one per line with {} for the class")
    data.add_argument("--csv-img-key", dest="csv_image_key", default=S, metavar="COLUMN", help="image column" + _d("csv_image_key"))
    data.add_argument("--csv-caption-key", default=S, metavar="COLUMN", help="caption column" + _d("csv_caption_key"))
    data.add_argument("--no-augment", dest="augment", action="store_false", default=S,
                      help="no random crops (open_clip's training transform is the default)")

    model = parser.add_argument_group("model")
    model.add_argument("--recipe", default=S, metavar="NAME|FILE", help="a shipped recipe (see `rsvlm train recipes`) or a .toml file")
    model.add_argument("--model", default=S, metavar="ARCH", help="open_clip architecture" + _d("model"))
    model.add_argument("--model-config", default=S, metavar="JSON", help="open_clip model config of a custom "
                       "architecture (its file stem is the model name)")
    model.add_argument("--init", default=S, metavar="none|TAG|FILE", help="initial weights: none, an open_clip pretrained tag (openai, "
                       "laion2b_s13b_b90k, ...) or a checkpoint file" + _d("init"))
    gelu = model.add_mutually_exclusive_group()
    gelu.add_argument("--quick-gelu", dest="quick_gelu", action="store_true", default=S,
                      help="use QuickGELU (automatic for --init openai)")
    gelu.add_argument("--no-quick-gelu", dest="quick_gelu", action="store_false", default=S)

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=S, metavar="N", help="epochs" + _d("epochs"))
    opt.add_argument("--batch-size", type=int, default=S, metavar="N", help="batch size per process" + _d("batch_size"))
    opt.add_argument("--lr", type=float, default=S, help="peak learning rate" + _d("lr"))
    opt.add_argument("--wd", type=float, default=S, help="weight decay" + _d("wd"))
    opt.add_argument("--warmup", type=int, default=S, metavar="N", help="linear warmup steps" + _d("warmup"))
    opt.add_argument("--schedule", choices=("cosine", "const"), default=S, help="after warmup" + _d("schedule"))
    opt.add_argument("--beta1", type=float, default=S, help=argparse.SUPPRESS)
    opt.add_argument("--beta2", type=float, default=S, help=argparse.SUPPRESS)
    opt.add_argument("--eps", type=float, default=S, help=argparse.SUPPRESS)
    opt.add_argument("--grad-accum", type=int, default=S, metavar="N",
                     help="micro-batches per optimizer step (the contrastive loss sees them all)" + _d("grad_accum"))
    opt.add_argument("--grad-clip-norm", type=float, default=S, metavar="NORM", help="clip the gradient norm")
    opt.add_argument("--precision", choices=("auto", "fp32", "amp", "amp_bf16"), default=S,
                     help="auto: fp16 AMP on a GPU, float32 on a CPU" + _d("precision"))
    opt.add_argument("--grad-checkpointing", action="store_true", default=S, help="trade compute for memory")
    if task == "coca":
        opt.add_argument("--caption-loss-weight", type=float, default=S, help=_d("caption_loss_weight").strip())
        opt.add_argument("--contrastive-loss-weight", type=float, default=S,
                         help=_d("contrastive_loss_weight").strip())

    peft = parser.add_argument_group("parameter-efficient fine-tuning")
    peft.add_argument("--lock-image", action="store_true", default=S, help="freeze the image tower (LiT)")
    peft.add_argument("--lock-image-unlocked-groups", type=int, default=S, metavar="N",
                      help="leave the last N layer groups of the locked image tower trainable")
    peft.add_argument("--lora", dest="lora_rank", type=int, default=S, metavar="RANK",
                      help="train only LoRA adapters of this rank on the attention projections")
    peft.add_argument("--lora-alpha", type=float, default=S, metavar="ALPHA", help="LoRA scale numerator (default: 2 x rank)")
    peft.add_argument("--lora-towers", type=_towers, default=S, metavar="LIST",
                      help="comma-separated: image, text, decoder (default: image,text)")

    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output", dest="output_dir", required=True, metavar="RUNDIR",
                     help="run directory: checkpoints, models, logs")
    run.add_argument("--resume", action="store_true", default=S,
                     help="continue the run in RUNDIR (also automatic when its settings match)")
    run.add_argument("--nproc", type=int, default=1, metavar="N", help="processes (GPUs) on this machine, started via torchrun")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default=S, help=_d("device").strip())
    run.add_argument("--workers", type=int, default=S, metavar="N", help="data-loading processes per process" + _d("workers"))
    run.add_argument("--seed", type=int, default=S, metavar="N", help=_d("seed").strip())
    run.add_argument("--log-every", type=int, default=S, metavar="N", help="steps between log lines" + _d("log_every"))
    run.add_argument("--save-every", type=int, default=S, metavar="N",
                     help="steps between checkpoints, 0: epoch ends only" + _d("save_every"))
    run.add_argument("--keep-checkpoints", type=int, default=S, metavar="N", help=_d("keep_checkpoints").strip())
    run.add_argument("--eval-every", type=int, default=S, metavar="N",
                     help="steps between evaluations, 0: epoch ends only" + _d("eval_every"))
    run.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)
    run.add_argument("--stop-after-steps", type=int, default=S, metavar="N",
                     help="stop (resumably) once the run reaches this many optimizer steps")
    add_json_option(parser)


def _towers(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- recipe <- given options (rs_vlm_app.training.recipes.resolve_config)."""
    from rs_vlm_app.training.recipes import resolve_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return resolve_config(args.task, given)


def _run(args: argparse.Namespace) -> int:
    config = build_config(args)
    _cheap_checks(config)
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_torchrun(args)
    if args.nproc < 1:
        raise UserError("--nproc must be at least 1")
    if "LOCAL_RANK" in os.environ:  # one of the processes torchrun started: report as plain log lines
        from rs_vlm_app.training.loop import train

        reporter = _CliReporter()
        with reporter.handling_signals():
            train(config, reporter=reporter)
        return 0
    from rs_vlm_app.commands.jobrun import run_spec
    from rs_vlm_app.jobs.kinds.fine_tune import FineTuneSpec

    outcome = run_spec(FineTuneSpec.from_train_config(config), args,
                       stopping="stop requested: finishing the current step and writing a checkpoint")
    if outcome.result is not None and not args.json:
        s = outcome.result.summary
        state = "finished" if s["finished"] else "stopped"
        print(f"{s['run_dir']}: {state} at step {s['steps']} of {s['total_steps']}"
              + (f"; model {s['model']}" if s["model"] else ""))
    return outcome.exit_code


def _cheap_checks(config: TrainConfig) -> None:
    """Input mistakes answered before torch loads (seconds)."""
    from rs_vlm_app.training.recipes import check_inputs

    check_inputs(config)


def _launch_torchrun(args: argparse.Namespace) -> int:
    """Start ``args.nproc`` copies of this command under torchrun on this machine; return its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "rs_vlm_app", *(["-v"] if getattr(args, "verbose", False) else []),
               "train", args.task, *_options_of(args)]
    log.info("starting %d processes: torchrun --standalone --nproc_per_node=%d -m rs_vlm_app train %s ...",
             args.nproc, args.nproc, args.task)
    process = subprocess.Popen(command)
    # Ctrl-C reaches torchrun and its workers through the terminal's process group; pass SIGTERM on
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _frame: process.send_signal(signum))}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _options_of(args: argparse.Namespace) -> list[str]:
    """The given options of ``args`` as command-line words (without --nproc)."""
    words: list[str] = []
    for action in _PARSERS[args.task]._actions:
        if not action.option_strings or action.dest in ("help", "nproc", "json") or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if action.nargs == 0:  # a flag: store_true / store_false
            if value == action.const:
                words.append(action.option_strings[-1])
        elif isinstance(value, list):
            words += [action.option_strings[-1], ",".join(value)]
        elif value is not None:
            words += [action.option_strings[-1], str(value)]
    return words


class _CliReporter:
    """Log lines to stderr; the first Ctrl-C or SIGTERM asks the run to stop at the next step."""

    def __init__(self) -> None:
        self._cancel = False

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        pass  # the loop's log lines carry the progress of a training run

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.WARNING if level == "warning" else logging.ERROR if level == "error" else logging.INFO,
                message)

    def cancel_requested(self) -> bool:
        return self._cancel

    def handling_signals(self):
        import contextlib

        @contextlib.contextmanager
        def handlers():
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

            def request(signum, _frame):
                if self._cancel and signum == signal.SIGINT:
                    raise KeyboardInterrupt
                self._cancel = True
                log.warning("stop requested: finishing the current step and writing a checkpoint "
                            "(Ctrl-C again to abort at once)")

            for sig in previous:
                signal.signal(sig, request)
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        return handlers()


def _list_recipes(_args: argparse.Namespace) -> int:
    from rs_vlm_app.training.recipes import list_recipes, load_recipe

    for name, description in list_recipes().items():
        recipe = load_recipe(name)
        print(f"{name:12s} rsvlm train {recipe.get('task', '?')} --recipe {name}   {description}")
    return 0
