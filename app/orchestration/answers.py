"""Answers as docs/api.md shapes them, from decoded hypotheses: texts, tokens, steps and attention maps.

The three attentions of the Transformer come back in one shape, `{"kind", "layers", "reduction",
"weights"}`, every row summing to 1:
- `attention` (cross): a row per generated token, a column per source token;
- `encoder_attention`: a row and a column per source token;
- `decoder_attention`: a row per generated token, whose query is the decoder input of that step
  (`<s>` first, then the tokens before it), and a column per decoder input; the causal mask makes
  every entry right of the diagonal exactly 0.
A text split into segments carries each map per segment, and at the top level their block-diagonal
concatenation, so that the top level keeps every invariant too.
"""

from __future__ import annotations

import math

import torch

from app.orchestration.job import Job, Layout
from model.search.records import Hypothesis, Step
from model.text import align, compose

EncoderMaps = dict[int, list]  # layer -> [head][query][key] over one source


def answers(job: Job, results: list[list[Hypothesis]], encoder: list[EncoderMaps | None]) -> list[dict]:
    """One entry of `translations` per input text, from the hypotheses and encoder maps of each decoded source."""
    pieces = [translation(job, ids, hyps, maps) for ids, hyps, maps in zip(job.source_ids, results, encoder)]
    links = [_aligned(job, text, hyps[0]) if job.align_layer is not None else None
             for text, hyps in zip(job.source_texts, results)]
    entries, next_piece = [], 0
    for layout in job.layouts:
        if layout is None:
            entry = pieces[next_piece]
            if job.output.alignment:
                entry["alignment"] = alignment_answer(links[next_piece])
            entries.append(entry)
            next_piece += 1
        else:
            entries.append(_composed(job, layout, pieces, links))
            next_piece += sum(i is not None for i in layout.sources)
    return [_with_notes(entry, notes) for entry, notes in zip(entries, job.language_notes)]


def translation(job: Job, source_ids: list[int], hyps: list[Hypothesis], encoder: EncoderMaps | None = None) -> dict:
    """One entry of `translations` from a text's n-best hypotheses (best first) and its encoder maps."""
    tok, best = job.loaded.tokenizer, hyps[0]
    answer = {
        "text": tok.decode(best.ids),
        "source_tokens": tok.tokens(source_ids),
        "tokens": tok.tokens(best.ids),
        "score": best.score,
        "finish_reason": "stop" if best.finished else "length",
        "alternatives": [{"text": tok.decode(h.ids), "score": h.score} for h in hyps[1:]],
    }
    if job.output.steps:
        answer["steps"] = [_step(tok, step) for step in best.steps]
    if job.cross_layers:
        weights = [_reduced([_cross_row(step, layer, job) for step in best.steps], job) for layer in job.cross_layers]
        answer["attention"] = {**_header(job, "cross"), "weights": weights}
    if job.encoder_layers:
        weights = [_reduced_heads(encoder[layer], job) for layer in job.encoder_layers]
        answer["encoder_attention"] = {**_header(job, "encoder"), "weights": weights}
    if job.decoder_layers:
        n = len(best.steps)
        weights = [_reduced([_history_row(step, layer, n, job) for step in best.steps], job)
                   for layer in job.decoder_layers]
        answer["decoder_attention"] = {**_header(job, "decoder"), "weights": weights}
    return answer


def joined_translation(job: Job, segments: list[dict], text: str) -> dict:
    """The entry of a text that was split: its segments, and their concatenation at the top level.

    Top-level `tokens`, `steps` and `source_tokens` are the segments' in order, and each attention
    map is block-diagonal (each segment's tokens attend only to its own tokens), so every invariant
    of the contract holds for the whole entry as it does for each segment. `text` is the whole
    translation, rebuilt by the text's plan (model/text/compose.py).
    """
    lengths = [len(seg["tokens"]) for seg in segments]
    entry = {
        "text": text,
        "source_tokens": [t for seg in segments for t in seg["source_tokens"]],
        "tokens": [t for seg in segments for t in seg["tokens"]],
        "score": sum(seg["score"] * n for seg, n in zip(segments, lengths)) / max(sum(lengths), 1),
        "finish_reason": "length" if any(seg["finish_reason"] == "length" for seg in segments) else "stop",
        "alternatives": [],
        "segments": segments,
    }
    if job.output.steps:
        entry["steps"] = [step for seg in segments for step in seg["steps"]]
    if job.output.alignment:
        entry["alignment"] = _joined_alignment([seg["alignment"] for seg in segments])
    if not segments:
        return entry
    for field, kind, columns in (("attention", "cross", "source_tokens"),
                                 ("encoder_attention", "encoder", "source_tokens"),
                                 ("decoder_attention", "decoder", "tokens")):
        if field in segments[0]:
            widths = [len(seg[columns]) for seg in segments]
            maps = [seg[field]["weights"] for seg in segments]
            entry[field] = {**_header(job, kind), "weights": _block_diagonal(maps, widths, job)}
    return entry


def alignment_answer(aligned: compose.Aligned) -> dict:
    """`alignment` of one decoded text: the words of the model's input and output, and the links."""
    return {
        "source_words": [w.text for w in aligned.source_words],
        "target_words": [w.text for w in aligned.target_words],
        "links": [{"target": t, "source": s} for t, s in aligned.links],
        "rule": align.BEST.describe(),
    }


def _aligned(job: Job, source_text: str, best: Hypothesis) -> compose.Aligned:
    """The model's input and output words for one source, and the links between them."""
    tok = job.loaded.tokenizer
    text, target_words = align.target_words(tok, best.ids)
    source_words = align.source_words(tok, source_text)
    rows = {job.align_layer: [step.cross_attention[job.align_layer] for step in best.steps]}
    links = align.align(rows, job.loaded.config.decoder_layers, source_words, target_words)
    return compose.Aligned(text, source_words, target_words, links)


def _composed(job: Job, layout: Layout, pieces: list[dict], links: list[compose.Aligned | None]) -> dict:
    """A planned text's entry: each unit finished (markup, terms, protected spans back), then rebuilt."""
    empty = compose.Aligned("", [], [], [])
    outputs, dropped = [], []
    for unit, index in zip(layout.plan.units, layout.sources):
        decoded = empty if index is None else links[index] or compose.Aligned(pieces[index]["text"], [], [], [])
        outputs.append(compose.finish(unit, decoded))
        dropped.extend(unit.dropped)
        if index is not None:
            pieces[index]["text"] = outputs[-1]
            if job.output.alignment:
                pieces[index]["alignment"] = alignment_answer(links[index])
    text = layout.plan.rebuild(outputs)
    decoded = [i for i in layout.sources if i is not None]
    if layout.plan.split or not decoded:
        entry = joined_translation(job, [pieces[i] for i in decoded], text)
    else:
        entry = pieces[decoded[0]] | {"text": text}
    if dropped:
        names = ", ".join(sorted({f"U+{ord(c):04X}" for c in "".join(dropped)}))
        entry["warnings"] = [f"control or invisible formatting characters were left out: {names}"]
    return entry


def _with_notes(entry: dict, notes: dict) -> dict:
    """The entry with its language notes; warnings from both are kept."""
    merged = entry | notes
    if "warnings" in entry and "warnings" in notes:
        merged["warnings"] = notes["warnings"] + entry["warnings"]
    return merged


def _joined_alignment(parts: list[dict]) -> dict:
    """Segments' alignments as one: words concatenated, link indices shifted past earlier segments'."""
    joined = {"source_words": [], "target_words": [], "links": [], "rule": align.BEST.describe()}
    for part in parts:
        s0, t0 = len(joined["source_words"]), len(joined["target_words"])
        joined["links"] += [{"target": l["target"] + t0, "source": l["source"] + s0} for l in part["links"]]
        joined["source_words"] += part["source_words"]
        joined["target_words"] += part["target_words"]
    return joined


def _block_diagonal(maps: list[list], widths: list[int], job: Job) -> list:
    """Per layer, the segments' maps stacked row-wise, each shifted right past the columns of those before it."""
    width, offsets = sum(widths), [sum(widths[:k]) for k in range(len(widths))]

    def stacked(per_segment: list[list[list[float]]]) -> list[list[float]]:
        return [[0.0] * off + row + [0.0] * (width - off - len(row))
                for rows, off in zip(per_segment, offsets) for row in rows]

    layers = []
    for li in range(len(maps[0])):
        if job.output.attention == "heads":
            layers.append([stacked([m[li][h] for m in maps]) for h in range(len(maps[0][li]))])
        else:
            layers.append(stacked([m[li] for m in maps]))
    return layers


def token_event(job: Job, index: int, step: Step) -> dict:
    """A streamed token: its step, and this step's row of each attention asked for."""
    event = {"index": index, **_step(job.loaded.tokenizer, step)}
    if job.cross_layers:
        event["attention"] = [_reduce_row(_cross_row(step, layer, job), job) for layer in job.cross_layers]
    if job.decoder_layers:
        # Only the positions seen so far; the rest of the row (the future) is 0 by the causal mask.
        event["decoder_attention"] = [_reduce_row(_normalised(step.self_attention[layer], job), job)
                                      for layer in job.decoder_layers]
    return event


def attention_headers(job: Job) -> dict:
    """For the stream's `start` event: what each attention kind's rows will hold."""
    headers = {"attention": _header(job, "cross") if job.cross_layers else None}
    if job.decoder_layers:
        headers["decoder_attention"] = _header(job, "decoder")
    return headers


def _step(tok, step: Step) -> dict:
    top_tokens = tok.tokens([t.id for t in step.top])
    # The chosen token's probability is computed twice by model.search (float64 for the step, float32
    # for the top list); report one number, so that greedy's probability equals top[0] exactly.
    top = [{"token": s, "id": t.id, "probability": step.probability if t.id == step.id else t.probability}
           for s, t in zip(top_tokens, step.top)]
    out = {"token": tok.tokens([step.id])[0], "id": step.id, "probability": step.probability, "top": top}
    if step.forced:
        out["forced"] = True
    return out


def _header(job: Job, kind: str) -> dict:
    layers = {"cross": job.cross_layers, "encoder": job.encoder_layers, "decoder": job.decoder_layers}[kind]
    return {"kind": kind, "layers": layers, "reduction": job.output.attention}


def _normalised(heads: list[list[float]], job: Job) -> list[list[float]]:
    if job.loaded.dtype != torch.float32:
        # A bf16/fp16 softmax row sums to 1 only within ~0.4%; clients are promised rows that sum to 1.
        return [[w / math.fsum(row) for w in row] for row in heads]
    return heads


def _cross_row(step: Step, layer: int, job: Job) -> list[list[float]]:
    return _normalised(step.cross_attention[layer], job)  # [head][source token]


def _history_row(step: Step, layer: int, n: int, job: Job) -> list[list[float]]:
    """[head][decoder input], padded with the zeros of the masked future to all `n` inputs."""
    return [row + [0.0] * (n - len(row)) for row in _normalised(step.self_attention[layer], job)]


def _reduce_row(heads: list[list[float]], job: Job) -> list:
    """One query's row: [head][key] for `heads`, [key] averaged over heads for `mean`."""
    return heads if job.output.attention == "heads" else [sum(column) / len(heads) for column in zip(*heads)]


def _reduced(rows: list[list[list[float]]], job: Job) -> list:
    """Rows [query][head][key] as the reduction asks: [head][query][key] or [query][key]."""
    if job.output.attention == "heads":
        return [list(per_head) for per_head in zip(*rows)]
    return [_reduce_row(heads, job) for heads in rows]


def _reduced_heads(heads: list[list[list[float]]], job: Job) -> list:
    """A [head][query][key] map as the reduction asks."""
    return _reduced([list(rows) for rows in zip(*heads)], job)  # -> [query][head][key] first
