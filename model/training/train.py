"""Train one Transformer for both directions (es->en and en->es) on the splits of `model.training.data`.

    python -m model.training.train --run-dir runs/base --export weights/<name> --max-minutes 60
    torchrun --nproc_per_node=2 -m model.training.train ...        # DDP: gloo on CPU, nccl on CUDA

Label smoothing, warmup, length-bucketed token batches, gradient clipping, a checkpoint every few
minutes (`--resume` picks it up), a wall-clock budget, dev BLEU after each epoch, and the best
model exported as a servable folder whenever dev BLEU improves, so an interrupted run still
leaves its best model behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from model.checkpoint import export, load
from model.search.backend import TorchBackend
from model.tokenizer import TranslationTokenizer, train_bpe
from model.training.data import SplitRow, read_split
from model.training.evaluate import evaluate_rows, limit_per_domain
from model.transformer import Transformer, TransformerConfig

log = logging.getLogger("model.training.train")
CHECKPOINT = "checkpoint.pt"


@dataclass
class Example:
    src: list[int]
    tgt: list[int]  # target tokens followed by </s>
    domain: str


# --- distributed ------------------------------------------------------------------------------


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True if `flag` is true on any rank: every rank must agree on when to stop."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# --- data -------------------------------------------------------------------------------------


def load_tokenizer(args, rows: list[SplitRow]) -> TranslationTokenizer:
    path = args.run / "tokenizer.json"
    if args.tokenizer:
        return TranslationTokenizer.load(args.tokenizer)
    if path.exists():
        return TranslationTokenizer.load(path)
    texts = [t for r in rows for t in (r.en, r.es)]
    tok = TranslationTokenizer(train_bpe(texts, args.vocab_size))
    tok.save(path)
    return tok


def encode_examples(rows: list[SplitRow], tok: TranslationTokenizer, max_tokens: int) -> list[Example]:
    """Both directions of every pair, sentences longer than `max_tokens` dropped."""
    en = tok.encode_batch([r.en for r in rows])
    es = tok.encode_batch([r.es for r in rows])
    examples = []
    for r, e, s in zip(rows, en, es):
        if len(e) >= max_tokens or len(s) >= max_tokens:
            continue
        examples.append(Example([tok.lang_ids["en"], *s, tok.eos_id], [*e, tok.eos_id], r.domain))
        examples.append(Example([tok.lang_ids["es"], *e, tok.eos_id], [*s, tok.eos_id], r.domain))
    return examples


def parse_weights(spec: str) -> dict[str, float]:
    """"conversation=1,bible=0.3" -> per-domain sampling weight (missing domains weigh 1)."""
    out = {}
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out


def sample_epoch(examples: list[Example], weights: dict[str, float], rng: random.Random) -> list[Example]:
    """Up- or down-sample each domain by its weight, so a large domain cannot drown a small one."""
    by_domain: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_domain[ex.domain].append(ex)
    chosen = []
    for domain in sorted(by_domain):
        pool, w = by_domain[domain], weights.get(domain, 1.0)
        whole, frac = int(w), w - int(w)
        chosen += pool * whole
        chosen += rng.sample(pool, int(round(frac * len(pool))))
    return chosen


def token_batches(examples: list[Example], max_tokens: int, rng: random.Random) -> list[list[Example]]:
    """Length-bucketed batches holding at most `max_tokens` padded tokens on either side.

    Sorting by length (with a little noise so batches differ between epochs) keeps padding low;
    shuffling the batches afterwards keeps the order of lengths random.
    """
    keyed = sorted(examples, key=lambda e: (max(len(e.src), len(e.tgt)) + rng.random(), rng.random()))
    batches, current, longest = [], [], 0
    for ex in keyed:
        n = max(len(ex.src), len(ex.tgt) + 1)
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(ex)
        longest = max(longest, n)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(batch: list[Example], pad: int, bos: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(src, decoder input = <s> + target[:-1], labels = target, target token count), right-padded.

    Built in numpy on the CPU while the GPU still runs the previous step (nothing here waits for it).
    """
    s_len = max(len(e.src) for e in batch)
    t_len = max(len(e.tgt) for e in batch)
    src = np.full((len(batch), s_len), pad, dtype=np.int64)
    labels = np.full((len(batch), t_len), pad, dtype=np.int64)
    for i, e in enumerate(batch):
        src[i, : len(e.src)] = e.src
        labels[i, : len(e.tgt)] = e.tgt
    # Shifted right: position t sees <s> and targets before t (a trailing </s> input meets a padded label).
    dec_in = np.concatenate([np.full((len(batch), 1), bos, dtype=np.int64), labels[:, :-1]], axis=1)
    n_tokens = sum(len(e.tgt) for e in batch)
    to = lambda a: torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
    return to(src), to(dec_in), to(labels), n_tokens


# --- optimisation -----------------------------------------------------------------------------


def learning_rate(args, step: int, budget_fraction: float | None) -> float:
    """Linear warmup, then cosine decay over the wall-clock budget (or inverse sqrt without one).

    Decaying by elapsed time rather than by steps lets a run of any length end at a low rate,
    which is where most of the final quality comes from.
    """
    warm = min(1.0, (step + 1) / args.warmup)
    if budget_fraction is None:
        return args.lr * warm * min(1.0, math.sqrt(args.warmup / (step + 1)))
    return args.lr * warm * (args.min_lr_ratio
                             + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(budget_fraction, 1.0))))


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, pad: int, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1), ignore_index=pad,
                           label_smoothing=smoothing)


# --- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: Transformer, opt, state: dict) -> None:
    """Model, optimiser and progress; written to a temp file first so a kill never corrupts it."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, model: Transformer, opt, device) -> dict:
    ckpt = torch.load(path, map_location=device, weights_only=True)  # tensors and numbers only
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    return ckpt["state"]


def parameters_digest(model: Transformer) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


# --- the loop ---------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return f"{world} process(es) x {torch.get_num_threads()} thread(s) on {cpu_model()} ({os.cpu_count()} cores)"


def cpu_model() -> str:
    """The CPU's model name (as lscpu shows it): figures differ between the CPUs of one kind of machine."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Trainer:
    def __init__(self, args):
        self.args = args
        self.device = pick_device(args.device)
        self.rank, self.world = setup_distributed(self.device)
        self.main = self.rank == 0
        args.run.mkdir(parents=True, exist_ok=True)
        splits = args.data
        train_rows = [r for r in read_split(splits / "train.tsv")
                      if not args.only_sources or r.source.split(":")[0] in args.only_sources.split(",")]
        self.dev_rows = limit_per_domain(read_split(splits / "dev.tsv"), args.dev_limit)
        start = load(args.init_from) if args.init_from else None
        if start is not None:
            args.tokenizer = start.path / "tokenizer.json"  # its embeddings only fit its own vocabulary
        self.tok = self._shared_tokenizer(train_rows)
        self.examples = encode_examples(train_rows, self.tok, args.max_sentence_tokens)
        self.weights = parse_weights(args.domain_weights)
        if start is not None:  # its architecture, with this run's dropout
            cfg = TransformerConfig(**{**start.config.to_dict(), "dropout": args.dropout})
        else:
            cfg = TransformerConfig(
                vocab_size=self.tok.vocab_size, d_model=args.d_model, n_heads=args.heads, d_ff=args.d_ff,
                encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers, dropout=args.dropout,
                max_len=args.max_len, norm_first=not args.post_norm, pad_id=self.tok.pad_id,
            )
        torch.manual_seed(args.seed)  # identical initial weights on every rank
        self.model = Transformer(cfg).to(self.device)
        if start is not None:
            self.model.load_state_dict(start.model.state_dict())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9,
                                     weight_decay=args.weight_decay, fused=self.device.type == "cuda")
        self.state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best_bleu": -1.0, "history": []}
        ckpt = args.run / CHECKPOINT
        if args.resume and ckpt.exists():
            self.state = load_checkpoint(ckpt, self.model, self.opt, self.device)
            if self.main:
                log.info("resumed from %s at epoch %d, step %d", ckpt, self.state["epoch"], self.state["step"])
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world > 1 else self.model
        )
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and not args.fp32
                         else nullcontext())
        if self.main:
            log.info("%d training examples (both directions), %s parameters, %s", len(self.examples),
                     f"{self.model.num_parameters():,}", hardware(self.device, self.world))

    def _shared_tokenizer(self, rows) -> TranslationTokenizer:
        # Rank 0 trains the tokenizer; the others wait and read the same file.
        if self.main:
            tok = load_tokenizer(self.args, rows)
        if self.world > 1:
            dist.barrier()
        return tok if self.main else load_tokenizer(self.args, rows)

    def budget_fraction(self) -> float | None:
        return self.state["elapsed"] / (self.args.max_minutes * 60) if self.args.max_minutes else None

    def out_of_time(self) -> bool:
        return bool(self.args.max_minutes) and self.state["elapsed"] >= self.args.max_minutes * 60

    def epoch_batches(self, epoch: int) -> list[list[Example]]:
        rng = random.Random(self.args.seed * 1000 + epoch)
        batches = token_batches(sample_epoch(self.examples, self.weights, rng), self.args.batch_tokens, rng)
        per_rank = len(batches) // self.world  # equal counts, or DDP ranks would wait on each other
        return batches[self.rank : per_rank * self.world : self.world]

    def train_step(self, batch: list[Example]) -> tuple[torch.Tensor, int]:
        """One optimiser step; returns the loss as a tensor so the GPU is never waited on here."""
        src, dec_in, labels, n_tokens = collate(batch, self.tok.pad_id, self.tok.bos_id, self.device)
        lr = learning_rate(self.args, self.state["step"], self.budget_fraction())
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.autocast:
            logits = self.ddp(src, dec_in)
        loss = loss_fn(logits, labels, self.tok.pad_id, self.args.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip)
        self.opt.step()
        self.state["step"] += 1
        return loss.detach(), n_tokens

    def run(self) -> None:
        last_ckpt = time.monotonic()
        if self.main and self.args.init_from and self.state["step"] == 0:
            self.evaluate_and_export(0.0)  # the starting point: what the run has to beat
        while self.state["epoch"] < self.args.epochs and not self.out_of_time():
            epoch = self.state["epoch"]
            batches = self.epoch_batches(epoch)
            bar = tqdm(total=len(batches), initial=self.state["batch"], desc=f"epoch {epoch + 1}",
                       disable=not self.main, mininterval=1 if sys.stderr.isatty() else 30, file=sys.stderr)
            self.model.train()
            tokens, started = 0, time.monotonic()
            stopped = False
            for i in range(self.state["batch"], len(batches)):
                t0 = time.monotonic()
                loss, n = self.train_step(batches[i])
                self.state["elapsed"] += time.monotonic() - t0
                self.state["batch"] = i + 1
                tokens += n * self.world
                rate = tokens / max(time.monotonic() - started, 1e-6)
                bar.update(1)
                if i % 20 == 0:  # reading the loss waits for the GPU, so only now and then
                    bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{rate:,.0f}", eta=self.eta(len(batches) - i - 1))
                since_eval = self.state["elapsed"] - self.state.get("last_eval", 0.0)
                if self.main and self.args.eval_every_minutes and since_eval > self.args.eval_every_minutes * 60:
                    self.evaluate_and_export(rate)
                    self.state["last_eval"] = self.state["elapsed"]
                if self.main and time.monotonic() - last_ckpt > self.args.checkpoint_minutes * 60:
                    save_checkpoint(self.args.run / CHECKPOINT, self.model, self.opt, self.state)
                    last_ckpt = time.monotonic()
                if any_rank(self.out_of_time() or (self.args.max_steps and self.state["step"] >= self.args.max_steps),
                            self.world, self.device):
                    stopped = True
                    break
            bar.close()
            if not stopped:
                self.state["epoch"] += 1
                self.state["batch"] = 0
            if self.main and (stopped or self.state["epoch"] % self.args.eval_every == 0
                              or self.state["epoch"] >= self.args.epochs):
                self.evaluate_and_export(tokens / max(time.monotonic() - started, 1e-6))
            if self.main:
                save_checkpoint(self.args.run / CHECKPOINT, self.model, self.opt, self.state)
                last_ckpt = time.monotonic()
            if stopped:
                break
        self.finish()

    def eta(self, batches_left: int) -> str:
        if self.args.max_minutes:
            left = max(self.args.max_minutes * 60 - self.state["elapsed"], 0)
            return f"{int(left // 60)}m{int(left % 60):02d}s (budget)"
        return f"{batches_left} batches"

    def evaluate_and_export(self, tokens_per_s: float) -> None:
        if not self.dev_rows:
            return
        with self.autocast:
            scores = evaluate_rows(TorchBackend(self.model), self.tok, self.dev_rows, ["greedy"],
                                   batch_size=self.args.eval_batch_size)
        bleu = (scores["es-en"]["greedy"]["bleu"] + scores["en-es"]["greedy"]["bleu"]) / 2
        record = {"epoch": self.state["epoch"], "step": self.state["step"],
                  "minutes": round(self.state["elapsed"] / 60, 2),
                  "dev_bleu_es_en": scores["es-en"]["greedy"]["bleu"],
                  "dev_bleu_en_es": scores["en-es"]["greedy"]["bleu"],
                  "dev_domains": scores["domains"], "tokens_per_s": round(tokens_per_s)}
        self.state["history"].append(record)
        log.info("epoch %d step %d: dev BLEU es-en %.2f en-es %.2f (best %.2f)", record["epoch"], record["step"],
                 record["dev_bleu_es_en"], record["dev_bleu_en_es"], max(self.state["best_bleu"], bleu))
        if bleu > self.state["best_bleu"] and self.args.export:
            self.state["best_bleu"] = bleu
            export(self.model, self.tok, self.args.export, self.args.name or self.args.export.name, self.card(record))
        self.model.train()

    def card(self, best: dict) -> dict:
        manifest_path = self.args.data.parent / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        return {
            "data": manifest,
            "training": {
                "command": "python -m model.training.train " + " ".join(sys.argv[1:]),
                "hardware": hardware(self.device, self.world),
                "minutes": round(self.state["elapsed"] / 60, 2),
                "epochs_completed": self.state["epoch"],
                "steps": self.state["step"],
                "best_dev": {k: v for k, v in best.items() if k != "dev_domains"},
                "dev_domains_at_best": best.get("dev_domains"),
                "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
                "torch": torch.__version__,
            },
        }

    def finish(self) -> None:
        if self.world > 1:
            # Proof for tests and operators that DDP kept every replica identical.
            (self.args.run / f"params-rank{self.rank}.sha256").write_text(parameters_digest(self.model) + "\n")
            dist.barrier()
            dist.destroy_process_group()
        if self.main:
            (self.args.run / "history.json").write_text(json.dumps(self.state["history"], indent=2) + "\n")
            log.info("done: %d steps, %.1f minutes, best dev BLEU %.2f", self.state["step"], self.state["elapsed"] / 60,
                     self.state["best_bleu"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", type=Path, default=Path("data/splits"),
      help="folder with train/dev/test.tsv from `python -m model.training.data`")
    a("--run-dir", dest="run", type=Path, default=Path("runs/base"),
      help="folder for the tokenizer, checkpoint and history")
    a("--export", type=Path, default=None, help="model folder to write the best model to, e.g. weights/es-en-tatoeba")
    a("--name", default=None, help="model name recorded in the folder (default: the folder's name)")
    a("--resume", action="store_true", help="continue from RUN/checkpoint.pt if it exists")
    a("--tokenizer", type=Path, default=None, help="existing tokenizer.json (default: train one into RUN)")
    a("--init-from", type=Path, default=None,
      help="model folder to continue from (its weights, architecture and tokenizer; a fresh optimiser)")
    a("--vocab-size", type=int, default=16000)
    a("--d-model", type=int, default=384)
    a("--heads", type=int, default=6)
    a("--d-ff", type=int, default=1536)
    a("--encoder-layers", type=int, default=6)
    a("--decoder-layers", type=int, default=3)
    a("--dropout", type=float, default=0.1)
    a("--post-norm", action="store_true", help="the paper's post-norm instead of pre-norm")
    a("--max-len", type=int, default=256, help="positions the model supports")
    a("--max-sentence-tokens", type=int, default=128, help="drop training sentences longer than this")
    a("--batch-tokens", type=int, default=6000, help="padded tokens per batch and process")
    a("--lr", type=float, default=7e-4, help="peak learning rate")
    a("--min-lr-ratio", type=float, default=0.02)
    a("--warmup", type=int, default=1000, help="warmup steps")
    a("--weight-decay", type=float, default=0.0)
    a("--label-smoothing", type=float, default=0.1)
    a("--clip", type=float, default=1.0, help="gradient norm clip")
    a("--epochs", type=int, default=1000)
    a("--max-minutes", type=float, default=None, help="wall-clock training budget; the schedule decays over it")
    a("--max-steps", type=int, default=None)
    a("--checkpoint-minutes", type=float, default=5.0)
    a("--eval-every", type=int, default=1, help="epochs between dev evaluations")
    a("--eval-every-minutes", type=float, default=None,
      help="also evaluate (and export when better) every N minutes of training, for runs shorter than an epoch")
    a("--dev-limit", type=int, default=500, help="dev sentences per domain for the per-epoch BLEU")
    a("--eval-batch-size", type=int, default=128)
    a("--only-sources", default="", help='train on these sources of the split only, e.g. "tatoeba"')
    a("--domain-weights", default="", help='per-domain sampling weights, e.g. "conversation=1,bible=0.3"')
    a("--device", default="auto", help="auto, cpu or cuda")
    a("--threads", type=int, default=None, help="CPU threads per process")
    a("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    a("--seed", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "train.tsv").is_file():
        raise SystemExit(f"{args.data / 'train.tsv'} not found: run `python -m model.training.data` first")
    Trainer(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
