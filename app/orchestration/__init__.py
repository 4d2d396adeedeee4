"""From a checked request to its answer: `prepare` makes a `Job`, `decoding` runs it through the
schedulers, `answers` and `streaming` shape what comes back; `translator.Translator` composes them."""
