"""ctcurate: curation toolkit for the COVID-CT dataset and datasets laid out like it."""

__version__ = "0.1.0"
