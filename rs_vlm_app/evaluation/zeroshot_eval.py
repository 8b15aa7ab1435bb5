"""`rsvlm eval zeroshot`: zero-shot scene classification on a folder of class sub-folders.

The classifier is the template ensemble of rs_vlm_app.evaluation.zeroshot over the class names;
outputs: zeroshot.json (everything), zeroshot.csv (per class), confusion.csv and confusion.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.image_data import ClassFolders, encode_image_files, scan_class_folders
from rs_vlm_app.reporting import NullReporter, Reporter
from rs_vlm_app.tasks.classes import ClassList, humanize, load_classes, load_templates

RESULT_JSON = "zeroshot.json"
RESULT_CSV = "zeroshot.csv"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"


def match_classes(data: ClassFolders, classes: str | Path | None) -> tuple[ClassList, np.ndarray]:
    """The class list (given, or the sub-folder names) and each image's index into it."""
    if classes is None:
        class_list = ClassList(data.folders, tuple(humanize(f) for f in data.folders), str(data.root))
        if len(class_list) < 2:
            raise UserError("needs at least two class sub-folders", path=data.root)
        return class_list, data.labels
    class_list = load_classes(classes)
    mapping = []
    for folder in data.folders:
        index = class_list.index_of(folder)
        if index is None:
            raise UserError(f"sub-folder {folder!r} matches no class of {class_list.source} "
                            f"(e.g. {', '.join(class_list.labels[:3])}, ...)", path=data.root)
        mapping.append(index)
    return class_list, np.array(mapping, dtype=np.int64)[data.labels]


def evaluate_zeroshot(data_dir: Path, encoder, out_dir: Path, *, classes: str | Path | None = None,
                      templates: str | Path | None = None, reporter: Reporter | None = None) -> dict:
    """Top-1 / top-5 accuracy, per-class accuracy and confusion matrix; writes the files into out_dir."""
    from rs_vlm_app.evaluation.confusion_plot import render_confusion
    from rs_vlm_app.evaluation.report_files import write_csv, write_json
    from rs_vlm_app.evaluation.zeroshot import zeroshot_metrics
    from rs_vlm_app.tasks.zeroshot_classifier import build_classifier

    reporter = reporter or NullReporter()
    data = scan_class_folders(Path(data_dir))
    class_list, labels = match_classes(data, classes)
    template_list = load_templates(templates)
    out_dir = Path(out_dir)
    image_embeddings = encode_image_files(encoder, data.images, reporter)
    reporter.progress("encode class prompts", 0, len(class_list))
    classifier = build_classifier(encoder.encode_texts, list(class_list.prompt_names), list(template_list))
    reporter.progress("encode class prompts", len(class_list), len(class_list))
    ks = (1, 5) if len(class_list) > 5 else (1,)
    result = zeroshot_metrics(image_embeddings, classifier, labels, ks=ks)
    support = result.confusion.sum(axis=1)
    report = {
        "data": str(data.root), "model": encoder.display_name, "images": len(data.images),
        "classes": list(class_list.labels), "class_source": class_list.source,
        "prompt_names": list(class_list.prompt_names), "templates": list(template_list),
        "top1": result.top_k[1], "top5": result.top_k.get(5), "mean_per_class": result.mean_per_class,
        "per_class": {label: {"images": int(n), "accuracy": float(a)}
                      for label, n, a in zip(class_list.labels, support, result.per_class, strict=True)},
        "confusion": result.confusion.tolist(),
        "units": "accuracies in percent; confusion[true][predicted] counts images",
    }
    rows = [[label, int(n), float(a)] for label, n, a in zip(class_list.labels, support, result.per_class, strict=True)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / RESULT_CSV, ["class", "images", "accuracy"], rows)
    write_csv(out_dir / CONFUSION_CSV, ["true \\ predicted", *class_list.labels],
              [[label, *map(int, row)] for label, row in zip(class_list.labels, result.confusion, strict=True)])
    render_confusion(result.confusion, class_list.labels, out_dir / CONFUSION_PNG,
                     title=f"{report['model']}: top-1 {result.top1:.1f}% on {len(data.images)} images")
    write_json(out_dir / RESULT_JSON, report)
    return report
