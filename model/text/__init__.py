"""Torch-free text handling: sentences, markup, protected spans, glossaries, alignment, language ID."""
