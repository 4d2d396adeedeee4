/* The Transformer's inference forward pass for x86-64 CPUs with AVX2 and FMA, driven by model/engine.py.

   Why C: at the batch sizes a translation server decodes, a PyTorch step spends most of its time
   between operators (bench.profile: 53% of an int8 batch-1 step outside any kernel). Here one call
   runs a whole encoder, or a whole decoder step with the output projection.

   Every number of a row is computed from that row alone, in an order that does not depend on the
   batch: each linear output is one accumulation over k in a fixed order, each attention row reads
   only its own keys, so a sentence gives the same bits alone and among strangers. The file is
   built with fixed flags (-mavx2 -mfma, no -march=native, no -ffast-math), so an AVX-512 CPU runs
   the same instructions as an AVX2-only one and gives the same results.

   Linear layers come in two kinds:
   - float32: weights packed as [n/8][k][8], eight output columns per AVX register, one FMA each.
   - int8: weights quantised per output column (w = scale * q, |q| <= 127), packed [n/8][k/4][8][4];
     each input row is quantised on its own onto 7 bits, x = s * (u - 64) with u in [1, 127]. maddubs
     multiplies those unsigned bytes by the signed weights; a pair of products stays below
     2 * 127 * 127 < 32768, so nothing saturates, and subtracting 64 * (the column's sum of q) leaves
     the exact integer dot product. It is the input grid of PyTorch's own int8 path (fbgemm's
     reduce_range); full 8-bit inputs need a sign instruction per product pair, and ran 10-35% slower.
   Shape legend as in model/transformer.py: R rows, S source length, D d_model, H heads, E head dim. */

#include <immintrin.h>
#include <omp.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n, k;          /* output and input features; n % 16 == 0, k % 8 == 0 */
    int64_t int8;          /* 1: wq and scale are used, 0: wf */
    const float *wf;       /* float32 packed [n/8][k][8] */
    const int8_t *wq;      /* int8 packed [n/8][k/4][8][4] */
    const float *scale;    /* int8: per output column */
    const int32_t *offset; /* int8: per output column, 64 * sum over k of q */
    const float *bias;     /* per output column, or NULL */
} Linear;

typedef struct { const float *gamma, *beta; } Norm;

typedef struct { Norm norm1; Linear qkv, out; Norm norm2; Linear ff1, ff2; } EncoderLayer;

typedef struct {
    Norm norm1; Linear qkv, self_out;
    Norm norm2; Linear q, kv, cross_out;
    Norm norm3; Linear ff1, ff2;
} DecoderLayer;

#define MAX_LAYERS 16

typedef struct {
    int64_t d, heads, d_ff, vocab, encoder_layers, decoder_layers, max_len, threads;
    float eps, embed_scale;
    const float *embedding;   /* (V, D) */
    const float *positions;   /* (max_len, D) sinusoids */
    EncoderLayer encoder[MAX_LAYERS];
    DecoderLayer decoder[MAX_LAYERS];
    Norm encoder_norm, decoder_norm;
    Linear projection;        /* (V, D), no bias */
} Model;

/* A strided (R, H, T, E) view of keys or values: element (r, h, t, e) is at base[r*sr + h*sh + t*st + e]. */
typedef struct { float *base; int64_t sr, sh, st; } Heads;

int engine_abi(void) { return 2; }

int engine_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* --- small vector helpers (fixed summation order) ------------------------------------------- */

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline float dot(const float *a, const float *b, int64_t n) {  /* n % 8 == 0 */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return hsum(acc);
}

static inline void axpy(float *y, float a, const float *x, int64_t n) {  /* y += a x */
    __m256 va = _mm256_set1_ps(a);
    for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
}

static void layer_norm(const float *x, int64_t rows, int64_t d, Norm norm, float eps, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        __m256 s = _mm256_setzero_ps();
        for (int64_t i = 0; i < d; i += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(xr + i));
        float mean = hsum(s) / (float)d;
        __m256 vm = _mm256_set1_ps(mean), q = _mm256_setzero_ps();
        for (int64_t i = 0; i < d; i += 8) {
            __m256 c = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vm);
            q = _mm256_fmadd_ps(c, c, q);
        }
        __m256 inv = _mm256_set1_ps(1.0f / sqrtf(hsum(q) / (float)d + eps));
        for (int64_t i = 0; i < d; i += 8) {
            __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), inv);
            _mm256_storeu_ps(yr + i, _mm256_fmadd_ps(c, _mm256_loadu_ps(norm.gamma + i), _mm256_loadu_ps(norm.beta + i)));
        }
    }
}

/* --- linear layers ----------------------------------------------------------------------------- */

enum { STORE = 0, RELU = 1, ADD = 2 };  /* what the epilogue does with x W^T + b: y =, y = max(0, .), y += */

static inline void epilogue(float *y, __m256 v, const float *bias, int mode) {
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
    if (mode == RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (mode == ADD) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
}

/* Rows m0..m0+MR-1 against the 16 columns of blocks nb, nb+1. MR is a compile-time constant, so the
   compiler keeps the 2*MR accumulators in registers; every row gets the same arithmetic whatever MR. */
#define FLOAT_TILE(MR)                                                                                     \
    static void float_tile_##MR(const Linear *L, const float *x, int64_t m0, int64_t nb, float *y,         \
                                int64_t ldy, int mode) {                                                  \
        const int64_t k = L->k;                                                                            \
        const float *w0 = L->wf + nb * k * 8, *w1 = w0 + k * 8;                                             \
        __m256 acc[MR][2];                                                                                 \
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();                          \
        for (int64_t i = 0; i < k; i++) {                                                                  \
            __m256 a = _mm256_loadu_ps(w0 + i * 8), b = _mm256_loadu_ps(w1 + i * 8);                       \
            for (int r = 0; r < MR; r++) {                                                                 \
                __m256 xb = _mm256_broadcast_ss(x + (m0 + r) * k + i);                                     \
                acc[r][0] = _mm256_fmadd_ps(xb, a, acc[r][0]);                                             \
                acc[r][1] = _mm256_fmadd_ps(xb, b, acc[r][1]);                                             \
            }                                                                                              \
        }                                                                                                  \
        const float *bias = L->bias ? L->bias + nb * 8 : NULL;                                            \
        for (int r = 0; r < MR; r++) {                                                                     \
            float *yr = y + (m0 + r) * ldy + nb * 8;                                                       \
            epilogue(yr, acc[r][0], bias, mode);                                                           \
            epilogue(yr + 8, acc[r][1], bias ? bias + 8 : NULL, mode);                                     \
        }                                                                                                  \
    }
FLOAT_TILE(4)
FLOAT_TILE(1)

#define INT8_TILE(MR)                                                                                      \
    static void int8_tile_##MR(const Linear *L, const uint8_t *xq, const float *xs, int64_t m0, int64_t nb, \
                               float *y, int64_t ldy, int mode) {                                         \
        const int64_t k = L->k, quads = k / 4;                                                             \
        const int8_t *w0 = L->wq + nb * k * 8, *w1 = w0 + k * 8;                                            \
        const __m256i ones = _mm256_set1_epi16(1);                                                         \
        __m256i acc[MR][2];                                                                                \
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();                       \
        for (int64_t i = 0; i < quads; i++) {                                                              \
            __m256i a = _mm256_loadu_si256((const __m256i *)(w0 + i * 32));                                 \
            __m256i b = _mm256_loadu_si256((const __m256i *)(w1 + i * 32));                                 \
            for (int r = 0; r < MR; r++) {                                                                 \
                int32_t four;                                                                              \
                memcpy(&four, xq + (m0 + r) * k + i * 4, 4);                                               \
                __m256i xb = _mm256_set1_epi32(four);                                                      \
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, a), ones)); \
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, b), ones)); \
            }                                                                                              \
        }                                                                                                  \
        const float *bias = L->bias ? L->bias + nb * 8 : NULL;                                            \
        __m256 s0 = _mm256_loadu_ps(L->scale + nb * 8), s1 = _mm256_loadu_ps(L->scale + nb * 8 + 8);       \
        __m256i o0 = _mm256_loadu_si256((const __m256i *)(L->offset + nb * 8));                             \
        __m256i o1 = _mm256_loadu_si256((const __m256i *)(L->offset + nb * 8 + 8));                         \
        for (int r = 0; r < MR; r++) {                                                                     \
            __m256 rs = _mm256_set1_ps(xs[m0 + r]);                                                        \
            float *yr = y + (m0 + r) * ldy + nb * 8;                                                       \
            __m256 d0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][0], o0));                               \
            __m256 d1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][1], o1));                               \
            epilogue(yr, _mm256_mul_ps(_mm256_mul_ps(d0, s0), rs), bias, mode);                            \
            epilogue(yr + 8, _mm256_mul_ps(_mm256_mul_ps(d1, s1), rs), bias ? bias + 8 : NULL, mode);      \
        }                                                                                                  \
    }
INT8_TILE(4)
INT8_TILE(1)

/* Each row scaled by its own largest magnitude onto [-63, 63], rounded to nearest (even), plus 64. */
static void quantize_rows(const float *x, int64_t rows, int64_t k, uint8_t *q, float *scale) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        __m256 m = _mm256_setzero_ps();
        const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        for (int64_t i = 0; i < k; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xr + i), abs_mask));
        float lanes[8], amax = 0.0f;
        _mm256_storeu_ps(lanes, m);
        for (int i = 0; i < 8; i++) amax = lanes[i] > amax ? lanes[i] : amax;
        float s = amax > 0.0f ? amax / 63.0f : 1.0f;
        scale[r] = s;
        __m256 inv = _mm256_set1_ps(1.0f / s);
        const __m256i zero_point = _mm256_set1_epi32(64);
        for (int64_t i = 0; i < k; i += 8) {
            __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + i), inv)), zero_point);
            __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64((__m128i *)(q + r * k + i), _mm_packus_epi16(w, w));  /* 1..127 */
        }
    }
}

/* y (rows, n) with row stride ldy = x (rows, k) W^T + b, then `mode`. Threads split the columns. */
static void linear(const Linear *L, const float *x, int64_t rows, float *y, int64_t ldy, int mode, int threads) {
    const int64_t pairs = L->n / 16;
    if (L->int8) {
        uint8_t *xq = malloc((size_t)(rows * L->k));
        float *xs = malloc((size_t)rows * sizeof(float));
        quantize_rows(x, rows, L->k, xq, xs);
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t p = 0; p < pairs; p++) {
            int64_t m = 0;
            for (; m + 4 <= rows; m += 4) int8_tile_4(L, xq, xs, m, 2 * p, y, ldy, mode);
            for (; m < rows; m++) int8_tile_1(L, xq, xs, m, 2 * p, y, ldy, mode);
        }
        free(xq);
        free(xs);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < pairs; p++) {
        int64_t m = 0;
        for (; m + 4 <= rows; m += 4) float_tile_4(L, x, m, 2 * p, y, ldy, mode);
        for (; m < rows; m++) float_tile_1(L, x, m, 2 * p, y, ldy, mode);
    }
}

/* --- attention ----------------------------------------------------------------------------- */

/* One query row q (E) against keys/values 0..n-1 of one head: out (E) = softmax(q K^T / sqrt(E)) V.
   The weights go to `weights` (n) when it is not NULL. */
static void attend(const float *q, const float *k, const float *v, int64_t st, int64_t n, int64_t e,
                   float *scores, float *out, float *weights) {
    const float scale = 1.0f / sqrtf((float)e);
    float top = -INFINITY, total = 0.0f;
    for (int64_t t = 0; t < n; t++) {
        scores[t] = dot(q, k + t * st, e) * scale;
        top = scores[t] > top ? scores[t] : top;
    }
    for (int64_t t = 0; t < n; t++) {
        scores[t] = expf(scores[t] - top);
        total += scores[t];
    }
    const float inv = 1.0f / total;
    memset(out, 0, (size_t)e * sizeof(float));
    for (int64_t t = 0; t < n; t++) {
        scores[t] *= inv;
        axpy(out, scores[t], v + t * st, e);
    }
    if (weights) memcpy(weights, scores, (size_t)n * sizeof(float));
}

/* --- encoder ------------------------------------------------------------------------------- */

/* The valid tokens of every source, packed: `starts[b]` is the first packed row of source b and
   `lengths[b]` its token count; padding is never computed. Writes memory (B, S, D), zero on padding,
   and when weights[l] is not NULL the self-attention weights of layer l, (B, H, S, S). */
int engine_encode(const Model *M, const int64_t *ids, int64_t batch, int64_t width, const int64_t *lengths,
                  float *memory, float **weights) {
    const int64_t d = M->d, h = M->heads, e = d / h, threads = M->threads;
    int64_t total = 0;
    int64_t *starts = malloc((size_t)batch * sizeof(int64_t));
    for (int64_t b = 0; b < batch; b++) { starts[b] = total; total += lengths[b]; }
    float *x = malloc((size_t)(total * d) * sizeof(float));
    float *hn = malloc((size_t)(total * d) * sizeof(float));
    float *qkv = malloc((size_t)(total * 3 * d) * sizeof(float));
    float *ctx = malloc((size_t)(total * d) * sizeof(float));
    float *ff = malloc((size_t)(total * M->d_ff) * sizeof(float));
    float *scores = malloc((size_t)(threads * width) * sizeof(float));
    for (int64_t b = 0; b < batch; b++)
        for (int64_t s = 0; s < lengths[b]; s++) {
            float *xr = x + (starts[b] + s) * d;
            const float *emb = M->embedding + ids[b * width + s] * d, *pos = M->positions + s * d;
            for (int64_t i = 0; i < d; i++) xr[i] = emb[i] * M->embed_scale + pos[i];
        }
    for (int64_t l = 0; l < M->encoder_layers; l++) {
        const EncoderLayer *L = &M->encoder[l];
        layer_norm(x, total, d, L->norm1, M->eps, hn);
        linear(&L->qkv, hn, total, qkv, 3 * d, STORE, threads);
        float *w = weights ? weights[l] : NULL;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t bh = 0; bh < batch * h; bh++) {
            int64_t b = bh / h, head = bh % h, n = lengths[b];
            float *sc = scores + (int64_t)omp_get_thread_num() * width;
            const float *base = qkv + starts[b] * 3 * d + head * e;
            for (int64_t i = 0; i < n; i++)
                attend(base + i * 3 * d, base + d, base + 2 * d, 3 * d, n, e, sc,
                       ctx + (starts[b] + i) * d + head * e, w ? w + ((b * h + head) * width + i) * width : NULL);
        }
        linear(&L->out, ctx, total, x, d, ADD, threads);
        layer_norm(x, total, d, L->norm2, M->eps, hn);
        linear(&L->ff1, hn, total, ff, M->d_ff, RELU, threads);
        linear(&L->ff2, ff, total, x, d, ADD, threads);
    }
    layer_norm(x, total, d, M->encoder_norm, M->eps, hn);
    memset(memory, 0, (size_t)(batch * width * d) * sizeof(float));
    for (int64_t b = 0; b < batch; b++)
        memcpy(memory + b * width * d, hn + starts[b] * d, (size_t)(lengths[b] * d) * sizeof(float));
    free(starts); free(x); free(hn); free(qkv); free(ctx); free(ff); free(scores);
    return 0;
}

/* Cross-attention keys and values of decoder layer `layer` for memory (R, S, D): kv (R, S, 2D),
   keys in [:D], values in [D:], head h at h*E within each. */
int engine_cross_kv(const Model *M, int64_t layer, const float *memory, int64_t rows, float *kv) {
    linear(&M->decoder[layer].kv, memory, rows, kv, 2 * M->d, STORE, M->threads);
    return 0;
}

/* --- one decoder step ---------------------------------------------------------------------- */

/* Row r feeds token ids[r] at position pos[r]: its key and value go into the self-attention cache at
   pos[r], it attends to its positions 0..pos[r] and to its first src_len[r] source positions, and
   its logits (V) go to logits[r]. self_w[l] / cross_w[l], when not NULL, receive the layer's weights
   as (R, H, self_width) / (R, H, cross_width), zero past each row's own length. */
int engine_decode_step(const Model *M, const int64_t *ids, const int64_t *pos, const int64_t *src_len, int64_t rows,
                       const Heads *self_k, const Heads *self_v, const Heads *cross_k, const Heads *cross_v,
                       float **self_w, int64_t self_width, float **cross_w, int64_t cross_width, float *logits) {
    const int64_t d = M->d, h = M->heads, e = d / h, threads = M->threads;
    int64_t longest = 1;
    for (int64_t r = 0; r < rows; r++) {
        longest = pos[r] + 1 > longest ? pos[r] + 1 : longest;
        longest = src_len[r] > longest ? src_len[r] : longest;
    }
    float *x = malloc((size_t)(rows * d) * sizeof(float));
    float *hn = malloc((size_t)(rows * d) * sizeof(float));
    float *qkv = malloc((size_t)(rows * 3 * d) * sizeof(float));
    float *ctx = malloc((size_t)(rows * d) * sizeof(float));
    float *ff = malloc((size_t)(rows * M->d_ff) * sizeof(float));
    float *scores = malloc((size_t)(threads * longest) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const float *emb = M->embedding + ids[r] * d, *pe = M->positions + pos[r] * d;
        for (int64_t i = 0; i < d; i++) x[r * d + i] = emb[i] * M->embed_scale + pe[i];
    }
    for (int64_t l = 0; l < M->decoder_layers; l++) {
        const DecoderLayer *L = &M->decoder[l];
        const Heads sk = self_k[l], sv = self_v[l], ck = cross_k[l], cv = cross_v[l];
        layer_norm(x, rows, d, L->norm1, M->eps, hn);
        linear(&L->qkv, hn, rows, qkv, 3 * d, STORE, threads);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t head = 0; head < h; head++) {
                memcpy(sk.base + r * sk.sr + head * sk.sh + pos[r] * sk.st, qkv + r * 3 * d + d + head * e, (size_t)e * sizeof(float));
                memcpy(sv.base + r * sv.sr + head * sv.sh + pos[r] * sv.st, qkv + r * 3 * d + 2 * d + head * e, (size_t)e * sizeof(float));
            }
        float *w = self_w ? self_w[l] : NULL;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t rh = 0; rh < rows * h; rh++) {
            int64_t r = rh / h, head = rh % h;
            attend(qkv + r * 3 * d + head * e, sk.base + r * sk.sr + head * sk.sh, sv.base + r * sv.sr + head * sv.sh,
                   sk.st, pos[r] + 1, e, scores + (int64_t)omp_get_thread_num() * longest, ctx + r * d + head * e,
                   w ? w + rh * self_width : NULL);
        }
        linear(&L->self_out, ctx, rows, x, d, ADD, threads);
        layer_norm(x, rows, d, L->norm2, M->eps, hn);
        linear(&L->q, hn, rows, qkv, d, STORE, threads);
        w = cross_w ? cross_w[l] : NULL;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t rh = 0; rh < rows * h; rh++) {
            int64_t r = rh / h, head = rh % h;
            attend(qkv + r * d + head * e, ck.base + r * ck.sr + head * ck.sh, cv.base + r * cv.sr + head * cv.sh,
                   ck.st, src_len[r], e, scores + (int64_t)omp_get_thread_num() * longest, ctx + r * d + head * e,
                   w ? w + rh * cross_width : NULL);
        }
        linear(&L->cross_out, ctx, rows, x, d, ADD, threads);
        layer_norm(x, rows, d, L->norm3, M->eps, hn);
        linear(&L->ff1, hn, rows, ff, M->d_ff, RELU, threads);
        linear(&L->ff2, ff, rows, x, d, ADD, threads);
    }
    layer_norm(x, rows, d, M->decoder_norm, M->eps, hn);
    linear(&M->projection, hn, rows, logits, M->projection.n, STORE, threads);  /* n: vocab padded to whole tiles */
    free(x); free(hn); free(qkv); free(ctx); free(ff); free(scores);
    return 0;
}
