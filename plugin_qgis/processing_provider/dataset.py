"""Processing algorithm "Build dataset": captions for training, from annotated imagery (MpGI)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from .. import specs
from .base import WorkerAlgorithm, advanced, result_file

HELP = """<p>Builds (or resumes) a captioned image dataset for training CLIP and CoCa models, with the
multi-perspective generation and integration method (MpGI): rule sentences from the annotations,
then descriptions from a multimodal model and their integration by a language model, then quality
checks.</p>
<p>Everything is described by a <b>build configuration</b> (YAML: sources, model back ends, stages;
see rs-vlm's docs/dataset.md and docs/examples/dataset_build.yaml). Every model reply is committed to
the dataset's manifest at once, so a cancelled or failed build continues where it stopped when run
again with the same configuration.</p>
<p><b>Output folder</b>: leave it empty to use the configuration's <i>output</i>. <b>Shard</b>
(<i>I/N</i>) builds one part of N, for several machines.</p>
<p>The build runs in its own rs-vlm worker process (not the one the panel keeps), so cancelling it
never disturbs other work. Export the result with <code>rsvlm dataset export</code>.</p>"""


class BuildDatasetAlgorithm(WorkerAlgorithm):
    persistent_worker = False

    def name(self) -> str:
        return "dataset_build"

    def displayName(self) -> str:  # noqa: N802
        return "Build dataset"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["dataset", "captions", "training data", "mpgi", "mllm", "llm"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "CONFIG", "Build configuration (YAML)", fileFilter="YAML files (*.yaml *.yml);;All files (*)"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT", "Dataset folder (empty: the configuration's output)", optional=True, createByDefault=False))
        self.addParameter(advanced(QgsProcessingParameterString(
            "SHARD", "Shard I/N: build only part I of N (e.g. 2/4)", defaultValue="", optional=True)))
        self.addOutput(QgsProcessingOutputFile("MANIFEST", "Manifest (SQLite)"))
        self.addOutput(QgsProcessingOutputNumber("IMAGES", "Images in the dataset"))
        self.addOutput(QgsProcessingOutputNumber("CAPTIONS", "Captions"))
        self.addOutput(QgsProcessingOutputString("STATUS", "Status (completed or incomplete)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        config = self.parameterAsFile(parameters, "CONFIG", context).strip()
        if not config or not Path(config).is_file():
            raise QgsProcessingException(f"{config or 'the build configuration'}: file not found")
        out = self.parameterAsString(parameters, "OUTPUT", context).strip()
        if out:
            out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        shard = self.parameterAsString(parameters, "SHARD", context).strip() or None
        outcome = self.run_job(specs.dataset_build(config, out=out or None, shard=shard or None), feedback)
        summary = outcome.result.summary or {}
        folder = result_file(outcome, "folder")
        feedback.pushInfo(f"dataset {folder}: {summary.get('images', '?')} images, {summary.get('captions', '?')} "
                          f"captions, {summary.get('status', '?')}")
        if summary.get("failed_units"):
            feedback.reportError(f"{summary['failed_units']} unit(s) failed; run the algorithm again to retry them",
                                 False)
        return {"OUTPUT": folder, "MANIFEST": result_file(outcome, "file", (".sqlite",)),
                "IMAGES": summary.get("images"), "CAPTIONS": summary.get("captions"),
                "STATUS": summary.get("status")}
