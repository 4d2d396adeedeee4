"""Corpus, splits, training, evaluation and export; the service never imports this package."""
