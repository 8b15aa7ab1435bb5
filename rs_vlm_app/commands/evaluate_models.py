"""`rsvlm eval zeroshot | retrieval | caption`: the standard model evaluations of the papers."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option

ZEROSHOT_EPILOG = """\
DATA holds one sub-folder of images per class (the AID, RESISC45, EuroSAT layout). Class names come
from the sub-folder names ("DenseResidential" and "dense_residential" are prompted as "dense
residential"), or from --classes, whose labels the sub-folders must match (case, "_", "-" and spaces
ignored). Each class vector averages the prompts of all templates.

outputs in OUT: zeroshot.json (top-1, top-5, mean per-class accuracy, per class, confusion matrix),
zeroshot.csv (per class), confusion.csv and confusion.png (rows: true class). Accuracies in percent.
"""

RETRIEVAL_EPILOG = """\
CSV: a header with filepath and caption (or title) columns, one row per caption; an image with
several captions has several rows (RSICD, RSITMD and UCM-captions have five). Image paths are relative
to the CSV's folder. Tab-separated files (.tsv, or a tab in the header) work too.

outputs in OUT: retrieval.json and retrieval.csv: R@1, R@5, R@10 image->text (an image is found when
any of its captions is within the first K) and text->image, and their mean (mR), in percent.
"""

CAPTION_EPILOG = """\
PRED: the captions to score, one per image: JSON {"image id": "caption"} or [{"image_id", "caption"}]
(COCO results), or CSV with image_id (or filepath) and caption columns.
REFS: the reference captions: JSON {"image id": ["caption", ...]} or a COCO annotation file
({"annotations": [{"image_id", "caption"}]}), or CSV rows image_id (or filepath),caption, several per image.
Ids must match exactly.

Scored by pycocoevalcap (the COCO caption evaluation): BLEU-1..4, METEOR, ROUGE-L, CIDEr (CIDEr-D),
and SPICE when Java and the Stanford CoreNLP jars are present (otherwise skipped with a note).
outputs in OUT: caption_metrics.json, caption_metrics.csv, caption_metrics_per_image.csv.
"""


def register(tree) -> None:
    parser = tree.command("eval zeroshot", run_zeroshot, help="zero-shot classification accuracy on class folders")
    parser.epilog = ZEROSHOT_EPILOG
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="folder of class sub-folders")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="output folder")
    parser.add_argument("--classes", metavar="aid|resisc45|eurosat|FILE.txt",
                        help="class list to evaluate against (default: the sub-folder names)")
    parser.add_argument("--templates", metavar="SET|FILE.txt",
                        help="prompt templates: a shipped set (remote_sensing, the default; clip_resisc45, clip_eurosat, "
                        "clip_benchmark_resisc45) or a file, one per line with {} for the class")
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_json_option(parser)

    parser = tree.command("eval retrieval", run_retrieval, help="image-text retrieval recall (R@1/5/10, mR)")
    parser.epilog = RETRIEVAL_EPILOG
    parser.add_argument("--data", type=Path, required=True, metavar="CSV", help="filepath,caption rows")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="output folder")
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_json_option(parser)

    parser = tree.command("eval caption", run_caption, help="caption metrics: BLEU, METEOR, ROUGE-L, CIDEr (SPICE)")
    parser.epilog = CAPTION_EPILOG
    parser.add_argument("--pred", type=Path, required=True, metavar="PRED", help="predicted captions (JSON or CSV)")
    parser.add_argument("--refs", type=Path, required=True, metavar="REFS", help="reference captions (JSON or CSV)")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="output folder")
    parser.add_argument("--no-spice", action="store_true", help="skip SPICE even where it could run (it is slow)")
    add_json_option(parser)


def run_zeroshot(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.evaluation.report_files import format_table
    from rs_vlm_app.jobs.kinds.eval_zeroshot import ZeroshotEvalSpec

    spec = ZeroshotEvalSpec(data=args.data, out=args.out, model=model_spec_from_args(args), classes=args.classes,
                            templates=args.templates)
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    report = outcome.result.summary
    rows = [[label, v["images"], v["accuracy"]] for label, v in report["per_class"].items()]
    print(format_table(["class", "images", "accuracy %"], rows, digits=2))
    summary = [["top-1", report["top1"]], ["mean per class", report["mean_per_class"]]]
    if report["top5"] is not None:
        summary.insert(1, ["top-5", report["top5"]])
    print()
    print(format_table([f"{report['images']} images, {len(report['classes'])} classes", "%"], summary, digits=2))
    print(f"written: {args.out / 'zeroshot.json'}, zeroshot.csv, confusion.csv, confusion.png")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.evaluation.report_files import format_table
    from rs_vlm_app.jobs.kinds.eval_retrieval import RetrievalEvalSpec

    outcome = run_spec(RetrievalEvalSpec(data=args.data, out=args.out, model=model_spec_from_args(args)), args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    report = outcome.result.summary
    ks = list(report["image_to_text"])
    rows = [["image -> text", *report["image_to_text"].values()], ["text -> image", *report["text_to_image"].values()]]
    print(format_table(["direction", *ks], rows, digits=2))
    print(f"mean recall (mR): {report['mean_recall']:.2f}  ({report['images']} images, {report['captions']} captions)")
    print(f"written: {args.out / 'retrieval.json'}, retrieval.csv")
    return 0


def run_caption(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import run_spec
    from rs_vlm_app.evaluation.caption_metrics import METRICS
    from rs_vlm_app.evaluation.report_files import format_table
    from rs_vlm_app.jobs.kinds.eval_caption import CaptionEvalSpec

    outcome = run_spec(CaptionEvalSpec(pred=args.pred, refs=args.refs, out=args.out, spice=not args.no_spice), args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    rows = [[m, s["metrics"][m]] for m in METRICS if m in s["metrics"]]
    print(format_table([f"{s['images']} images", "score"], rows, digits=4))
    for metric, reason in s["skipped"].items():
        print(f"note: {metric}: {reason}")
    print(f"written: {args.out / 'caption_metrics.json'}, caption_metrics.csv, caption_metrics_per_image.csv")
    return 0
