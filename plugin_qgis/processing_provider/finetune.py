"""Processing algorithm "Fine-tune": train a CLIP or CoCa model on image-caption pairs."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .. import specs
from ..compat import enum
from .base import WorkerAlgorithm, advanced, result_file

HELP = """<p>Fine-tunes a <b>CLIP</b> (retrieval, localization, classification) or <b>CoCa</b> (captioning)
model on image-caption pairs, in its own rs-vlm worker process (a GPU makes it practical).</p>
<p><b>Training data</b>: a CSV with <i>filepath</i> and <i>caption</i> columns (what Build dataset
exports with <code>rsvlm dataset export --format csv</code>), or WebDataset shards.</p>
<p>A <b>recipe</b> (<code>rsvlm train recipes</code> lists them, e.g. <i>hqrs-clip</i>, <i>rs-coca</i>;
or your own .toml) sets the model and the optimisation; every value given here wins over it, every
value left empty comes from it. <b>LoRA rank</b> trains small adapters instead of every weight.</p>
<p>The run folder keeps checkpoints: cancelling stops at the next step with a checkpoint, and
running the algorithm again with the same run folder continues. When the run finishes,
<b>model.safetensors</b> is ready to use as a model in rs-vlm's settings.</p>"""

TASKS = ("clip", "coca")
DEVICES = ("auto", "cpu", "cuda")


class FineTuneAlgorithm(WorkerAlgorithm):
    persistent_worker = False

    def name(self) -> str:
        return "fine_tune"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune a model"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["training", "fine-tune", "clip", "coca", "lora", "captions"]

    def initAlgorithm(self, config=None):  # noqa: N802
        integer = enum("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
        double = enum("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double")
        self.addParameter(QgsProcessingParameterEnum(
            "TASK", "Model to train", options=["CLIP (image-text embeddings)", "CoCa (captioning)"], defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            "DATA", "Training data (caption CSV or WebDataset shards)",
            fileFilter="Caption tables (*.csv *.tsv);;WebDataset shards (*.tar);;All files (*)"))
        self.addParameter(QgsProcessingParameterString(
            "RECIPE", "Recipe: a shipped name (hqrs-clip, rs-coca, ...) or a .toml file (empty: none)",
            defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "ARCH", "open_clip architecture (e.g. ViT-B-32; empty: the recipe's)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "INIT", "Initial weights: a pretrained tag, a checkpoint file, or none (empty: the recipe's)",
            defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs (empty: the recipe's)", type=integer, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size (empty: the recipe's)", type=integer, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "LR", "Learning rate (empty: the recipe's)", type=double, optional=True, minValue=0.0))
        self.addParameter(QgsProcessingParameterFile(
            "VAL_DATA", "Validation data (caption CSV; optional)", optional=True,
            fileFilter="Caption tables (*.csv *.tsv);;All files (*)"))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue=0))
        self.addParameter(advanced(QgsProcessingParameterFile(
            "MODEL_CONFIG", "open_clip model config (.json) of a custom architecture", optional=True,
            extension="json")))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "LORA_RANK", "LoRA rank (empty: the recipe's; 0: train every weight)", type=integer, optional=True,
            minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "STOP_AFTER_STEPS", "Stop after this many steps (a trial run; continue later)", type=integer,
            optional=True, minValue=1)))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Run folder"))
        self.addOutput(QgsProcessingOutputFile("MODEL", "Trained model (model.safetensors; when finished)"))
        self.addOutput(QgsProcessingOutputNumber("STEPS", "Steps done"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        data = self.parameterAsFile(parameters, "DATA", context).strip()
        if not data:
            raise QgsProcessingException("choose the training data (a caption CSV or WebDataset shards)")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        spec = specs.fine_tune(
            TASKS[self.parameterAsEnum(parameters, "TASK", context)], data, out,
            recipe=self._text(parameters, "RECIPE", context), arch=self._text(parameters, "ARCH", context),
            init=self._text(parameters, "INIT", context),
            model_config=self.parameterAsFile(parameters, "MODEL_CONFIG", context).strip() or None,
            val_data=self.parameterAsFile(parameters, "VAL_DATA", context).strip() or None,
            epochs=self._number(parameters, "EPOCHS", context, int),
            batch_size=self._number(parameters, "BATCH_SIZE", context, int),
            lr=self._number(parameters, "LR", context, float),
            lora_rank=self._number(parameters, "LORA_RANK", context, int),
            stop_after_steps=self._number(parameters, "STOP_AFTER_STEPS", context, int),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
        )
        outcome = self.run_job(spec, feedback)
        summary = outcome.result.summary or {}
        model = summary.get("model") or None
        steps = summary.get("steps")
        if summary.get("finished"):
            feedback.pushInfo(f"finished after {steps} steps: {model}")
        else:
            feedback.pushInfo(f"stopped after {steps} of {summary.get('total_steps', '?')} steps; run again with "
                              f"the same run folder to continue")
        return {"OUTPUT": result_file(outcome, "folder"), "MODEL": model, "STEPS": steps}

    def _text(self, parameters, name: str, context) -> str | None:
        return self.parameterAsString(parameters, name, context).strip() or None

    def _number(self, parameters, name: str, context, kind):
        """An optional number: None when not given (the recipe decides)."""
        if parameters.get(name) in (None, ""):
            return None
        value = self.parameterAsDouble(parameters, name, context)
        return kind(value)
