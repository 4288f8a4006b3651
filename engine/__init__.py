"""ToPT engine: task-oriented urban region embeddings (SREL + Prompt4RE). Never imports QGIS."""

__version__ = "0.1.0"
