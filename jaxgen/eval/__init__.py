"""Evaluation: sample-quality metrics, feature extractors and the jaxgen-eval program."""
