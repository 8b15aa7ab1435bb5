"""`rsvlm eval retrieval`: image-text retrieval recall on a CSV of image-caption rows.

Several captions per image (RSICD, RSITMD, UCM-captions have five) are grouped by image; recall is
computed by rs_vlm_app.evaluation.retrieval (R@1/5/10 both ways, mean recall, in percent).
Outputs: retrieval.json and retrieval.csv.
"""

from __future__ import annotations

from pathlib import Path

from rs_vlm_app.evaluation.image_data import encode_image_files, read_caption_csv
from rs_vlm_app.reporting import NullReporter, Reporter

RESULT_JSON = "retrieval.json"
RESULT_CSV = "retrieval.csv"


def evaluate_retrieval(csv_path: Path, encoder, out_dir: Path, *, reporter: Reporter | None = None) -> dict:
    """Recall at 1, 5, 10 image->text and text->image and their mean; writes the files into out_dir."""
    from rs_vlm_app.evaluation.report_files import write_csv, write_json
    from rs_vlm_app.evaluation.retrieval import retrieval_metrics

    reporter = reporter or NullReporter()
    data = read_caption_csv(Path(csv_path))
    images = encode_image_files(encoder, data.images, reporter)
    reporter.progress("encode captions", 0, len(data.captions))
    texts = encoder.encode_texts(list(data.captions))
    reporter.progress("encode captions", len(data.captions), len(data.captions))
    result = retrieval_metrics(images, texts, data.text_image)
    report = {
        "data": str(data.path), "model": encoder.display_name, "images": result.n_images,
        "captions": result.n_texts,
        "image_to_text": {f"R@{k}": v for k, v in result.image_to_text.items()},
        "text_to_image": {f"R@{k}": v for k, v in result.text_to_image.items()},
        "mean_recall": result.mean_recall,
        "units": "percent; an image counts as found when any of its captions is within the first K",
    }
    ks = list(result.image_to_text)
    rows = [["image_to_text", *(result.image_to_text[k] for k in ks)],
            ["text_to_image", *(result.text_to_image[k] for k in ks)]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / RESULT_CSV, ["direction", *(f"R@{k}" for k in ks), "mean_recall"],
              [*(row + [""] for row in rows), ["mean", *[""] * len(ks), result.mean_recall]])
    write_json(out_dir / RESULT_JSON, report)
    return report
