"""rs-vlm: ask questions of georeferenced remote-sensing imagery, build and fine-tune the models."""

__version__ = "0.1.0"
