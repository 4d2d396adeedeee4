"""The ctypes binding of `engine.c`: its structures field for field, and `Engine`, the packed weights
of one model with the C calls that use them.

A PyTorch decoding step at the batch sizes a server sees is mostly time between operators: the
profile of an int8 batch-1 step had 53% of its wall time outside any kernel. The engine packs the
weights of a trained `Transformer` once; then an encoder pass or a cached decoder step is one C
call, with every row computed on its own (results never depend on the batch).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import fields

import torch

from model.checkpoint import weight_map
from model.engine.build import EngineUnavailable, build
from model.quantize import int8_weight
from model.transformer import Transformer, check_positions, padding_mask

MAX_LAYERS = 16
ABI = 7
# Kernel families of the linear layers (engine.c), by the names TRANSLATE_ENGINE_KERNELS takes.
KERNELS = {"avx2": 0, "avx512": 1}
c_float_p, c_int8_p, c_int64_p = (
    ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int64))


# --- the C structures (model/engine/engine.c), field for field --------------------------------------


class _Linear(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int64), ("k", ctypes.c_int64), ("int8", ctypes.c_int64), ("kernels", ctypes.c_int64),
                ("wf", c_float_p),
                ("wq", c_int8_p), ("scale", c_float_p), ("offset", ctypes.POINTER(ctypes.c_int32)), ("bias", c_float_p)]


class _Norm(ctypes.Structure):
    _fields_ = [("gamma", c_float_p), ("beta", c_float_p)]


class _EncoderLayer(ctypes.Structure):
    _fields_ = [("norm1", _Norm), ("qkv", _Linear), ("out", _Linear),
                ("norm2", _Norm), ("ff1", _Linear), ("ff2", _Linear)]


class _DecoderLayer(ctypes.Structure):
    _fields_ = [("norm1", _Norm), ("qkv", _Linear), ("self_out", _Linear), ("norm2", _Norm), ("q", _Linear),
                ("kv", _Linear), ("cross_out", _Linear), ("norm3", _Norm), ("ff1", _Linear), ("ff2", _Linear)]


class _Model(ctypes.Structure):
    _fields_ = [("d", ctypes.c_int64), ("heads", ctypes.c_int64), ("d_ff", ctypes.c_int64), ("vocab", ctypes.c_int64),
                ("encoder_layers", ctypes.c_int64), ("decoder_layers", ctypes.c_int64), ("max_len", ctypes.c_int64),
                ("threads", ctypes.c_int64), ("eps", ctypes.c_float), ("embed_scale", ctypes.c_float),
                ("embedding", c_float_p), ("positions", c_float_p),
                ("encoder", _EncoderLayer * MAX_LAYERS), ("decoder", _DecoderLayer * MAX_LAYERS),
                ("encoder_norm", _Norm), ("decoder_norm", _Norm), ("projection", _Linear)]


class _Heads(ctypes.Structure):
    _fields_ = [("base", c_float_p), ("sr", ctypes.c_int64), ("sh", ctypes.c_int64), ("st", ctypes.c_int64)]


# --- building and loading the library --------------------------------------------------------


_library: ctypes.CDLL | None = None
_failure: str | None = None


def library() -> ctypes.CDLL:
    """The loaded engine; raises EngineUnavailable (and remembers why) where it cannot run."""
    global _library, _failure
    if _library is not None:
        return _library
    if _failure is not None:
        raise EngineUnavailable(_failure)
    try:
        if sys.platform != "linux" or os.uname().machine != "x86_64":
            raise EngineUnavailable(f"the engine is for x86-64 Linux, not {sys.platform} {os.uname().machine}")
        lib = ctypes.CDLL(str(build()))
        if lib.engine_abi() != ABI:
            raise EngineUnavailable("a stale engine library: its ABI differs from model/engine/binding.py")
        if not lib.engine_kernels_supported(KERNELS["avx2"]):
            raise EngineUnavailable("this CPU lacks AVX2 or FMA")
    except (EngineUnavailable, OSError) as exc:
        _failure = str(exc)
        raise EngineUnavailable(_failure) from None
    lib.engine_encode.argtypes = [ctypes.c_void_p, c_int64_p, ctypes.c_int64, ctypes.c_int64, c_int64_p, c_float_p,
                                  ctypes.POINTER(c_float_p)]
    lib.engine_encode_cross.argtypes = [ctypes.c_void_p, c_int64_p, ctypes.c_int64, c_int64_p, ctypes.POINTER(_Heads),
                                        ctypes.POINTER(_Heads), ctypes.c_int64]
    lib.engine_cross_kv.argtypes = [ctypes.c_void_p, ctypes.c_int64, c_float_p, ctypes.c_int64, c_float_p]
    lib.engine_decode_step.argtypes = [ctypes.c_void_p, c_int64_p, c_int64_p, c_int64_p, ctypes.c_int64,
                                       ctypes.POINTER(_Heads), ctypes.POINTER(_Heads), ctypes.POINTER(_Heads),
                                       ctypes.POINTER(_Heads), ctypes.POINTER(c_float_p), ctypes.c_int64,
                                       ctypes.POINTER(c_float_p), ctypes.c_int64, c_float_p, c_int64_p, ctypes.c_int64,
                                       c_int64_p, c_float_p]
    lib.engine_gather_rows.argtypes = [c_float_p, c_float_p, c_int64_p] + [ctypes.c_int64] * 9
    lib.engine_topk.argtypes = [c_float_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, c_float_p,
                                c_int64_p, ctypes.c_int64]
    lib.engine_kernels_supported.argtypes = [ctypes.c_int64]
    _keep_freed_memory()
    lib.engine_linear.argtypes = [ctypes.POINTER(_Linear), c_float_p, ctypes.c_int64, c_float_p, ctypes.c_int64]
    _library = lib
    return lib


def _keep_freed_memory() -> None:
    """glibc: serve blocks up to 32 MiB from the heap and keep freed memory there.

    A decoder step's tensors (a beam-4 batch-32 step's log-probabilities are 8 MiB) would otherwise
    be mapped fresh and unmapped again every step: the page faults and page clearing were about a
    tenth of such a step, and steps went 15-20% faster without them. The price is a process that
    keeps its high-water mark of memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its own allocator's defaults stand
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 512 << 20)


def available() -> bool:
    try:
        library()
    except EngineUnavailable:
        return False
    return True


def why_unavailable() -> str | None:
    return None if available() else _failure


def kernels_here() -> list[str]:
    """The kernel families this CPU can run, the engine's floor (avx2) first."""
    return [name for name, family in KERNELS.items() if library().engine_kernels_supported(family)]


def chosen_kernels(asked: str | None = None) -> str:
    """The family an engine runs: `asked`, else TRANSLATE_ENGINE_KERNELS, else the best this CPU has.
    Asking for a family the CPU lacks is an error, not a silent fallback: a forced family is a test's."""
    asked = asked or os.environ.get("TRANSLATE_ENGINE_KERNELS") or "auto"
    here = kernels_here()
    if asked == "auto":
        return here[-1]
    if asked not in KERNELS:
        raise ValueError(f"unknown engine kernels {asked!r}: auto, {', '.join(KERNELS)}")
    if asked not in here:
        raise EngineUnavailable(f"this CPU cannot run the {asked} kernels (it has {', '.join(here)})")
    return asked


# --- threads ---------------------------------------------------------------------------------

_here = threading.local()


def set_threads(n: int | None) -> None:
    """Threads the engine's calls made from this thread use; None: torch's thread count, read per call
    (the server decodes on threads of its own). The server's decode lanes run batches side by side
    with one thread each rather than meeting at a barrier per layer (app/scheduling/batching.py)."""
    _here.threads = n


def threads_here() -> int:
    return getattr(_here, "threads", None) or torch.get_num_threads()


# --- packed weights ------------------------------------------------------------------------------


def _ptr(t: torch.Tensor | None, kind=c_float_p):
    return ctypes.cast(t.data_ptr(), kind) if t is not None else None


class Engine:
    """The packed weights of one model and the C calls that use them (see the module docstring).

    `int8`: linear layers, the output projection included, hold int8 weights, one scale per output
    column, and each input row is quantised on its own (7 bits, as fbgemm's reduce_range); float32
    otherwise. The embedding lookup always reads the float32 matrix.
    """

    def __init__(self, model: Transformer, int8: bool, kernels: str | None = None):
        cfg = model.cfg
        if not cfg.norm_first:
            raise EngineUnavailable("the engine runs pre-norm models only")
        if max(cfg.encoder_layers, cfg.decoder_layers) > MAX_LAYERS:
            raise EngineUnavailable(f"the engine runs at most {MAX_LAYERS} layers per stack")
        if cfg.d_model % 16 or cfg.d_ff % 16 or cfg.head_dim % 8:
            raise EngineUnavailable("the engine needs d_model and d_ff divisible by 16, head_dim by 8")
        self.lib = library()
        self.cfg, self.int8, self.kernels = cfg, int8, chosen_kernels(kernels)
        self._keep: list[torch.Tensor] = []  # every tensor the C structures point into
        with torch.no_grad():
            self.struct = self._model_struct(model)
        self._here = threading.local()

    def _hold(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu").contiguous()
        self._keep.append(t)
        return t

    def _linear(self, weight: torch.Tensor, bias: torch.Tensor | None) -> _Linear:
        n, k = weight.shape
        w = weight.float()
        spec = _Linear(n=n, k=k, int8=int(self.int8), kernels=KERNELS[self.kernels],
                       bias=_ptr(self._hold(bias.float())) if bias is not None else None)
        if self.int8:
            q, scale = int8_weight(w)
            spec.wq = _ptr(self._hold(q.view(n // 16, 16, k // 4, 4).permute(0, 2, 1, 3)), c_int8_p)
            spec.scale = _ptr(self._hold(scale))
            # Inputs that go in as q + 64 (a single row's on AVX2, all on AVX-512; model/engine/engine.c): 64
            # times each column's sum is taken back off.
            spec.offset = _ptr(self._hold(64 * q.sum(dim=1, dtype=torch.int32)), ctypes.POINTER(ctypes.c_int32))
        else:
            spec.wf = _ptr(self._hold(w.view(n // 16, 16, k).transpose(1, 2)))
        return spec

    def _of(self, linear) -> _Linear:
        return self._linear(linear.weight, linear.bias)

    def _norm(self, norm) -> _Norm:
        return _Norm(gamma=_ptr(self._hold(norm.weight.float())), beta=_ptr(self._hold(norm.bias.float())))

    def _pack(self, module) -> _Linear | _Norm:
        return self._norm(module) if isinstance(module, torch.nn.LayerNorm) else self._of(module)

    def _model_struct(self, model: Transformer) -> _Model:
        cfg, weights = model.cfg, weight_map(model)
        s = _Model(d=cfg.d_model, heads=cfg.n_heads, d_ff=cfg.d_ff, vocab=cfg.vocab_size,
                   encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers, max_len=cfg.max_len,
                   threads=1, eps=weights.eps, embed_scale=model.embedding.scale)
        s.embedding = _ptr(self._hold(weights.embedding.float()))
        s.positions = _ptr(self._hold(weights.positions.float()))
        # The C structures name their fields as the weight map names the roles.
        for i, layer in enumerate(weights.encoder):
            s.encoder[i] = _EncoderLayer(**{f.name: self._pack(getattr(layer, f.name)) for f in fields(layer)})
        for i, layer in enumerate(weights.decoder):
            s.decoder[i] = _DecoderLayer(**{f.name: self._pack(getattr(layer, f.name)) for f in fields(layer)})
        s.encoder_norm, s.decoder_norm = self._norm(weights.encoder_norm), self._norm(weights.decoder_norm)
        # Tied to the embeddings; padded with zero rows to whole 16-column tiles, logits sliced back.
        self.vocab_tiles = -(-cfg.vocab_size // 16) * 16
        weight = weights.embedding
        s.projection = self._linear(
            torch.cat([weight, weight.new_zeros(self.vocab_tiles - cfg.vocab_size, cfg.d_model)]), None)
        return s

    def _call(self, name: str, *args) -> None:
        """engine_<name>(model, *args); named for torch.profiler, which cannot see inside C."""
        struct = self._struct_here()
        struct.threads = threads_here()
        call = getattr(self.lib, f"engine_{name}")
        if not torch.autograd._profiler_enabled():  # record_function costs tens of microseconds
            call(ctypes.byref(struct), *args)
            return
        with torch.profiler.record_function(f"engine.{name}"):
            call(ctypes.byref(struct), *args)

    def _struct_here(self) -> _Model:
        """This thread's copy of the model structure (the same weight pointers), so that threads
        calling at once can each give their own thread count."""
        struct = getattr(self._here, "struct", None)
        if struct is None:
            struct = self._here.struct = _Model.from_buffer_copy(self.struct)
        return struct

    # --- the calls the search makes, through model.engine.backend.EngineBackend -------------------

    def encode(self, src: torch.Tensor, layers: frozenset[int] = frozenset()):
        """Transformer.encode: memory (B, S, D), its key mask, and the self-attention weights of `layers`."""
        src = src.contiguous()
        b, s = src.shape
        self._check_ids(src, s)
        lengths = (src != self.cfg.pad_id).sum(dim=1).contiguous()
        memory = torch.empty(b, s, self.cfg.d_model)
        weights = {l: torch.zeros(b, self.cfg.n_heads, s, s) for l in sorted(layers)}
        pointers = (c_float_p * self.cfg.encoder_layers)(
            *[_ptr(weights.get(l)) for l in range(self.cfg.encoder_layers)])
        self._call("encode", _ptr(src, c_int64_p), b, s, _ptr(lengths, c_int64_p), _ptr(memory), pointers)
        return memory, padding_mask(src, self.cfg.pad_id), weights

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the cross-attention keys and values (R, H, S, E) of `memory`: strided views."""
        memory = memory.contiguous()
        r, s, d = memory.shape
        h, e = self.cfg.n_heads, self.cfg.head_dim
        out = []
        for layer in range(self.cfg.decoder_layers):
            kv = torch.empty(r, s, 2 * d)
            self._call("cross_kv", layer, _ptr(memory), r * s, _ptr(kv))
            out.append((kv[..., :d].view(r, s, h, e).transpose(1, 2), kv[..., d:].view(r, s, h, e).transpose(1, 2)))
        return out

    def decode_step(self, tgt, src_mask, cache, offset, self_layers, cross_layers):
        """Transformer.decode for one cached step whose cross K/V are in `cache`: log-probabilities
        (R, 1, V) (log_softmax is applied in C), and the attention weights asked for."""
        rows, tgt = tgt.size(0), tgt.contiguous()  # held here: C reads its memory
        pos = (offset.to(torch.int64).contiguous() if torch.is_tensor(offset)
               else torch.full((rows,), int(offset), dtype=torch.int64))
        src_len = self._lengths_of(src_mask)
        self_kv = cache.self_kv()
        last = int(pos.max()) if rows else 0
        if last >= self_kv[0].size(3):
            raise ValueError(f"position {last} is past the cache's {self_kv[0].size(3)} positions")
        self._check_ids(tgt, last + 1)
        sk, sv = (self._heads_of(buffer) for buffer in self_kv)
        cross = [cache.cross(l) for l in range(self.cfg.decoder_layers)]
        ck, cv = self._heads_of([k for k, _ in cross]), self._heads_of([v for _, v in cross])
        self_width = last + 1 if self_layers else 0
        self_w = {l: torch.zeros(rows, self.cfg.n_heads, 1, self_width) for l in sorted(self_layers)}
        cross_w = {l: torch.zeros(rows, self.cfg.n_heads, 1, src_mask.size(-1)) for l in sorted(cross_layers)}
        logits = torch.empty(rows, 1, self.vocab_tiles)
        self._call(
            "decode_step", _ptr(tgt, c_int64_p), _ptr(pos, c_int64_p), _ptr(src_len, c_int64_p), rows,
            sk, sv, ck, cv, self._weight_pointers(self_w), self_width, self._weight_pointers(cross_w),
            src_mask.size(-1),
            _ptr(logits), None, 0, None, None)
        return logits[..., : self.cfg.vocab_size], self_w, cross_w

    def encode_into(
        self, sources: list[list[int]], cross_k: torch.Tensor, cross_v: torch.Tensor, first_row: int
    ) -> None:
        """The running batch's join in one C call: `sources` (token ids, no padding) are encoded and
        each decoder layer's cross-attention keys/values of source b are written to row first_row + b
        of `cross_k` / `cross_v` (L, rows, H, S, E), positions 0..len(source)-1."""
        flat, lengths = [t for ids in sources for t in ids], [len(ids) for ids in sources]
        check_positions(max(lengths), self.cfg.max_len)
        if min(flat) < 0 or max(flat) >= self.cfg.vocab_size:
            raise IndexError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        if first_row + len(sources) > cross_k.size(1) or max(lengths) > cross_k.size(3):
            raise ValueError("the sources do not fit the cross-attention buffers")
        ids, lengths = torch.tensor(flat, dtype=torch.int64), torch.tensor(lengths, dtype=torch.int64)
        self._call("encode_cross", _ptr(ids, c_int64_p), len(sources), _ptr(lengths, c_int64_p),
                   self._heads_of(cross_k), self._heads_of(cross_v), first_row)

    def greedy_step(self, cache, forbidden: torch.Tensor, self_layers: frozenset[int], cross_layers: frozenset[int]):
        """One step of the running batch (model.search.cache.RowCache) in one C call: log-probabilities
        (R, V) as `decode_step` gives them, except that C also sets the `forbidden` tokens to -inf,
        writes each row's best token over `cache.tokens_in_use` (its next input) and its
        log-probability into `cache.best_logp_in_use`, and advances `cache.lengths_in_use`.

        The C arguments are built once per set of rows (`cache.prepared`, reset when rows join or
        leave). The tokens are <s> or the engine's own choices, so only the positions are checked.
        """
        check_positions(cache.end, self.cfg.max_len)
        if cache.end > cache.k.size(3):
            raise ValueError(f"position {cache.end - 1} is past the cache's {cache.k.size(3)} positions")
        if cache.prepared is None:
            rows, cross = cache.n, [cache.cross(l) for l in range(self.cfg.decoder_layers)]
            logits = torch.empty(rows, self.vocab_tiles)
            heads = (*(self._heads_of(buffer) for buffer in cache.self_kv()),
                     self._heads_of([k for k, _ in cross]), self._heads_of([v for _, v in cross]))
            tokens = _ptr(cache.tokens_in_use, c_int64_p)
            rows_in = (tokens, _ptr(cache.lengths_in_use, c_int64_p),
                       _ptr(cache.source_lengths_in_use, c_int64_p), rows)
            cache.prepared = (logits, (*rows_in, *heads), (_ptr(logits), tokens, _ptr(cache.best_logp_in_use)))
        logits, rows_and_heads, (logits_ptr, tokens, best_logp) = cache.prepared
        rows, width = cache.n, cache.width
        self_width = cache.end if self_layers else 0
        self_w = {l: torch.zeros(rows, self.cfg.n_heads, 1, self_width) for l in sorted(self_layers)}
        cross_w = {l: torch.zeros(rows, self.cfg.n_heads, 1, width) for l in sorted(cross_layers)}
        self._call("decode_step", *rows_and_heads, self._weight_pointers(self_w), self_width,
                   self._weight_pointers(cross_w), width, logits_ptr, _ptr(forbidden, c_int64_p), forbidden.numel(),
                   tokens, best_logp)
        return logits[:, : self.cfg.vocab_size], self_w, cross_w

    def gather_rows(
        self, src: torch.Tensor, index: torch.Tensor, n: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """For a KV cache (L, R, H, T, E): rows `index` of `src`, their first `n` positions copied (in C,
        one copy, all threads) into `out` (reused when its shape fits, else a new buffer)."""
        layers, src_rows, heads, cap, e = src.shape
        shape = (layers, len(index), heads, cap, e)
        if out is None or out.shape != shape:
            out = src.new_empty(shape)
        index = index.to(torch.int64).contiguous()
        self.lib.engine_gather_rows(_ptr(src), _ptr(out), _ptr(index, c_int64_p), len(index), layers, src_rows, heads,
                                    cap, cap, n, e, threads_here())
        return out

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`x.topk(k, dim=-1)` for float32 (R, V) with a contiguous last dimension, in C: largest first,
        the first column winning ties; columns that are -inf throughout come back as -1."""
        if x.dtype != torch.float32 or x.stride(-1) != 1 or x.dim() != 2:
            return x.topk(k, dim=-1)
        rows, n = x.shape
        values, ids = torch.empty(rows, k), torch.empty(rows, k, dtype=torch.int64)
        self.lib.engine_topk(_ptr(x), rows, n, x.stride(0), k, _ptr(values), _ptr(ids, c_int64_p), threads_here())
        return values, ids

    def linear(self, spec: _Linear, x: torch.Tensor) -> torch.Tensor:
        """One packed linear layer (e.g. `self.struct.projection`) applied to x (rows, k): for tests and benchmarks."""
        x = x.float().contiguous()
        y = torch.empty(x.size(0), spec.n)
        self.lib.engine_linear(ctypes.byref(spec), _ptr(x), x.size(0), _ptr(y), threads_here())
        return y

    def _heads_of(self, layers) -> ctypes.Array:
        """The C view of keys or values: one (L, R, H, T, E) buffer, or a list of (R, H, T, E) per layer.

        Kept while the same buffers come back (a beam search alternates between two, the running
        batch keeps its own), as building the ctypes array costs more per step than the C attention
        that reads it. The key is what the C view holds, addresses and strides: a view that only
        covers fewer rows or positions of the same buffer has the same C view.
        """
        tensors = [layers[l] for l in range(len(layers))] if not torch.is_tensor(layers) else None
        key = (layers.data_ptr(), layers.size(0), layers.stride()) if tensors is None else \
            tuple((t.data_ptr(), t.stride()) for t in tensors)
        views = getattr(self._here, "views", None)
        if views is None or len(views) > 16:
            views = self._here.views = {}  # per thread: the server's decode lanes each have their own buffers
        found = views.get(key)
        if found is None:
            parts = tensors if tensors is not None else [layers[l] for l in range(layers.size(0))]
            found = views[key] = (_Heads * len(parts))(*[_heads(t) for t in parts])
        return found

    def _check_ids(self, ids: torch.Tensor, positions: int) -> None:
        """What PyTorch's embedding and positional table would refuse; C would read past its arrays."""
        check_positions(positions, self.cfg.max_len)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            raise IndexError(f"token ids must lie in [0, {self.cfg.vocab_size})")

    def _weight_pointers(self, weights: dict[int, torch.Tensor]):
        if not weights:
            return None
        return (c_float_p * self.cfg.decoder_layers)(*[_ptr(weights.get(l)) for l in range(self.cfg.decoder_layers)])

    def _lengths_of(self, src_mask: torch.Tensor) -> torch.Tensor:
        """Source lengths from a key mask, kept while the same mask comes back (every step of one run)."""
        mask, lengths = getattr(self._here, "source_lengths", (None, None))
        if mask is not src_mask:
            lengths = (src_mask[:, 0, 0, :] == 0).sum(dim=-1).to(torch.int64).contiguous()
            self._here.source_lengths = (src_mask, lengths)  # the mask itself is held, so its identity cannot be reused
        return lengths


def _heads(t: torch.Tensor) -> _Heads:
    """A (R, H, T, E) keys or values tensor whose last dimension is contiguous, as the C side reads it."""
    if t.stride(-1) != 1 or t.dtype != torch.float32:
        raise ValueError("engine keys/values must be float32 with a contiguous last dimension")
    return _Heads(base=_ptr(t), sr=t.stride(0), sh=t.stride(1), st=t.stride(2))
