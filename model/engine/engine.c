/* The Transformer's inference forward pass for x86-64 CPUs with AVX2 and FMA, driven by
   model/engine/binding.py.

   Why C: at the batch sizes a translation server decodes, a PyTorch step spends most of its time
   between operators (bench.profile: 53% of an int8 batch-1 step outside any kernel). Here one call
   runs a whole encoder, or a whole decoder step with the output projection.

   Every number of a row is computed from that row alone, in an order that does not depend on the
   batch: each linear output is one accumulation over k in a fixed order, each attention row reads
   only its own keys, so a sentence gives the same bits alone and among strangers. The file is
   built with fixed flags (-mavx2 -mfma, no -march=native, no -ffast-math), so results do not depend
   on the compiler's guess about the CPU.

   Linear layers, where the time goes, have two kernel families, chosen per model at run time
   (binding.py: the best the CPU has, or TRANSLATE_ENGINE_KERNELS): AVX2_FMA for every CPU the engine
   runs on, AVX512_VNNI (functions compiled for AVX-512 through target attributes) where cpuid shows
   AVX-512 F/BW/VL and VNNI. Both give the same bits: see each kind below. Everything else (norms,
   attention, softmax) has one AVX2 version, so it is the same code whichever family runs.

   Weights are packed per pair of 8-column blocks, 16 output columns side by side:
   - float32: [n/16][k][16]. Each output column is one chain of FMAs over k in order, 8 or 16
     columns per register: the same roundings in either family.
   - int8: weights quantised per output column (w = scale * q, |q| <= 127), packed [n/16][k/4][16][4];
     each input row is quantised on its own onto 7 bits, x = s * q with |q| <= 63 (the input grid of
     PyTorch's own int8 path, fbgemm's reduce_range). The int32 sums are exact in both families, so
     the order they add in does not matter:
     AVX2: maddubs multiplies unsigned by signed bytes, so |q| goes in unsigned and q's sign moves
     onto the weight (sign_epi8). A product is at most 63 * 127, so two maddubs results (four
     products) still fit int16 and are added before the one widening multiply (madd): the AMD EPYC
     (Zen 3) measured issues these multiplies on one port, and this scheme needs three per 64
     products instead of four.
     AVX-512 VNNI: vpdpbusd adds four u8 x s8 products straight into int32, one instruction per 64
     products; the inputs go in as q + 64 (in [1, 127]) and 64 times each column's sum of q is taken
     back off.
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
    int64_t kernels;       /* the kernel family that multiplies it: AVX2_FMA or AVX512_VNNI */
    const float *wf;       /* float32 packed [n/16][k][16] */
    const int8_t *wq;      /* int8 packed [n/16][k/4][16][4] */
    const float *scale;    /* int8: per output column */
    const int32_t *offset; /* int8: per output column, 64 * (sum over k of q), for single rows */
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

int engine_abi(void) { return 7; }

enum { AVX2_FMA = 0, AVX512_VNNI = 1 };  /* Linear.kernels */

/* Can this CPU run the kernel family? AVX2_FMA is the engine's floor. */
int engine_kernels_supported(int64_t family) {
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (family == AVX2_FMA) return avx2;
    if (family == AVX512_VNNI)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    return 0;
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

/* --- memory ----------------------------------------------------------------------------------- */

/* Per calling thread, buffers that only grow: a decoder step reuses the last step's memory instead
   of asking malloc for megabytes that come back as fresh pages, faulted in and cleared every step
   (4% of a beam-4 batch-32 profile). */
typedef struct { void *p; size_t size; } Reused;
static __thread Reused activations, quantised_inputs;

static void *reused(Reused *r, size_t size) {
    if (size > r->size) {
        free(r->p);
        r->p = malloc(size);
        r->size = size;
    }
    return r->p;
}

/* --- linear layers ----------------------------------------------------------------------------- */

enum { STORE = 0, RELU = 1, ADD = 2 };  /* what the epilogue does with x W^T + b: y =, y = max(0, .), y += */

static inline void epilogue(float *y, __m256 v, const float *bias, int mode) {
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
    if (mode == RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (mode == ADD) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
}

/* Rows m0..m0+MR-1 against the 16 columns of blocks nb, nb+1, MR = 1, 2, 4 or 6. The accumulators
   are named variables (ROWS<MR> expands a statement per row): held in an array, GCC stored all of
   them to the stack every iteration. Every row gets the same arithmetic whatever MR. */
#define ROWS1(S) S(0)
#define ROWS2(S) ROWS1(S) S(1)
#define ROWS4(S) ROWS2(S) S(2) S(3)
#define ROWS6(S) ROWS4(S) S(4) S(5)
#define ROW_ZERO(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0;
#define ROW_FMA(r)                                                                                 \
    {                                                                                              \
        __m256 xb = _mm256_broadcast_ss(x + (m0 + r) * k + i);                                     \
        c##r##0 = _mm256_fmadd_ps(xb, a, c##r##0);                                                 \
        c##r##1 = _mm256_fmadd_ps(xb, b, c##r##1);                                                 \
    }
#define ROW_STORE(r)                                                                               \
    epilogue(y + (m0 + r) * ldy + nb * 8, c##r##0, bias, mode);                                    \
    epilogue(y + (m0 + r) * ldy + nb * 8 + 8, c##r##1, bias ? bias + 8 : NULL, mode);
#define FLOAT_TILE(MR)                                                                             \
    static void float_tile_##MR(const Linear *L, const float *x, int64_t m0, int64_t nb, float *y, \
                                int64_t ldy, int mode) {                                          \
        const int64_t k = L->k;                                                                    \
        const float *w = L->wf + nb * k * 8;                                                       \
        ROWS##MR(ROW_ZERO)                                                                         \
        for (int64_t i = 0; i < k; i++) {                                                          \
            __m256 a = _mm256_loadu_ps(w + i * 16), b = _mm256_loadu_ps(w + i * 16 + 8);           \
            ROWS##MR(ROW_FMA)                                                                      \
        }                                                                                          \
        const float *bias = L->bias ? L->bias + nb * 8 : NULL;                                    \
        ROWS##MR(ROW_STORE)                                                                        \
    }
FLOAT_TILE(6)  /* 12 accumulators, the most 16 AVX2 registers hold beside the weights: 18-28% over 4 rows */
FLOAT_TILE(4)
FLOAT_TILE(2)
FLOAT_TILE(1)

/* The int8 epilogue of one row: y = acc * column scale * row scale (+ bias), then `mode`. */
static inline void int8_store(const Linear *L, int64_t nb, __m256i acc0, __m256i acc1, float row_scale, float *yr, int mode) {
    const float *bias = L->bias ? L->bias + nb * 8 : NULL;
    __m256 rs = _mm256_set1_ps(row_scale);
    __m256 d0 = _mm256_cvtepi32_ps(acc0), d1 = _mm256_cvtepi32_ps(acc1);
    epilogue(yr, _mm256_mul_ps(_mm256_mul_ps(d0, _mm256_loadu_ps(L->scale + nb * 8)), rs), bias, mode);
    epilogue(yr + 8, _mm256_mul_ps(_mm256_mul_ps(d1, _mm256_loadu_ps(L->scale + nb * 8 + 8)), rs), bias ? bias + 8 : NULL, mode);
}

static inline int32_t quad(const void *p) {  /* four bytes as one int32, for a broadcast */
    int32_t four;
    memcpy(&four, p, 4);
    return four;
}

static inline __m256i broadcast4(const int8_t *p) { return _mm256_set1_epi32(quad(p)); }

/* Weights stream from memory when a few rows are multiplied (they outgrow the last-level cache, and
   small matrices end before the hardware prefetcher gets going), and waiting for them took as long
   as the arithmetic: the first row tile of a column pair fetches the weights of the pair PREFETCH_PAIRS
   ahead, as many bytes as it reads. The arithmetic is the same with or without. */
#define PREFETCH_PAIRS 4
#define PREFETCH2(p) (_mm_prefetch((const char *)(p), _MM_HINT_T0), _mm_prefetch((const char *)(p) + 64, _MM_HINT_T0))

/* One row's 8 inputs k..k+7 (two quads, broadcast: x0, x1 and their magnitudes m0, m1) against one
   block's weights for them (w0, w1): the 8 columns' partial dot products, added into acc. */
#define DOT8(acc, x0, m0, x1, m1, w0, w1)                                                             \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16(                                  \
        _mm256_maddubs_epi16(m0, _mm256_sign_epi8(w0, x0)), _mm256_maddubs_epi16(m1, _mm256_sign_epi8(w1, x1))), ones))

/* Rows m0..m0+MR-1 (MR <= 2 here, named accumulators so that GCC keeps them in registers) against
   the 16 columns of blocks nb, nb+1; every row gets the same arithmetic whatever the tile. */
static void int8_tile_2(const Linear *L, const int8_t *xq, const float *xs, int64_t m0, int64_t nb,
                        float *y, int64_t ldy, int mode, const int8_t *ahead) {
    const int64_t k = L->k;
    const int8_t *w = L->wq + nb * k * 8, *r0 = xq + m0 * k, *r1 = r0 + k;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
    for (int64_t i = 0; i < k; i += 8) {
        if (ahead) PREFETCH2(ahead + i * 16);
        /* inputs i..i+3 then i+4..i+7, each 64 bytes: block nb's 8 columns, then block nb + 1's */
        __m256i wa0 = _mm256_loadu_si256((const __m256i *)(w + i * 16)), wb0 = _mm256_loadu_si256((const __m256i *)(w + i * 16 + 32));
        __m256i wa1 = _mm256_loadu_si256((const __m256i *)(w + i * 16 + 64)), wb1 = _mm256_loadu_si256((const __m256i *)(w + i * 16 + 96));
        __m256i x0 = broadcast4(r0 + i), x1 = broadcast4(r0 + i + 4), m0 = _mm256_abs_epi8(x0), m1 = _mm256_abs_epi8(x1);
        DOT8(a00, x0, m0, x1, m1, wa0, wa1);
        DOT8(a01, x0, m0, x1, m1, wb0, wb1);
        x0 = broadcast4(r1 + i), x1 = broadcast4(r1 + i + 4), m0 = _mm256_abs_epi8(x0), m1 = _mm256_abs_epi8(x1);
        DOT8(a10, x0, m0, x1, m1, wa0, wa1);
        DOT8(a11, x0, m0, x1, m1, wb0, wb1);
    }
    int8_store(L, nb, a00, a01, xs[m0], y + m0 * ldy + nb * 8, mode);
    int8_store(L, nb, a10, a11, xs[m0 + 1], y + (m0 + 1) * ldy + nb * 8, mode);
}

/* A single row (greedy search at batch 1) is bound by the weights' bytes, not by multiplies, and
   does better with fewer instructions per weight: its inputs go in as q + 64, in [1, 127] and so
   unsigned, straight into maddubs, and 64 * (the column's sum of q) is taken off the exact sum.
   Same integers as int8_tile_2, so the same bits. */
static void int8_tile_1(const Linear *L, const int8_t *xq, const float *xs, int64_t m0, int64_t nb,
                        float *y, int64_t ldy, int mode, const int8_t *ahead) {
    const int64_t k = L->k;
    const int8_t *w = L->wq + nb * k * 8, *r0 = xq + m0 * k;
    const __m256i ones = _mm256_set1_epi16(1), shift = _mm256_set1_epi8(64);
    __m256i a00 = _mm256_setzero_si256(), a01 = a00;
    for (int64_t i = 0; i < k; i += 4) {
        if (ahead) _mm_prefetch((const char *)(ahead + i * 16), _MM_HINT_T0);
        __m256i u = _mm256_add_epi8(broadcast4(r0 + i), shift);
        a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w + i * 16))), ones));
        a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w + i * 16 + 32))), ones));
    }
    a00 = _mm256_sub_epi32(a00, _mm256_loadu_si256((const __m256i *)(L->offset + nb * 8)));
    a01 = _mm256_sub_epi32(a01, _mm256_loadu_si256((const __m256i *)(L->offset + nb * 8 + 8)));
    int8_store(L, nb, a00, a01, xs[m0], y + m0 * ldy + nb * 8, mode);
}

/* Each row scaled by its own largest magnitude onto [-63, 63], rounded to nearest (even), stored plus
   `shift` (64: the unsigned form the VNNI kernels read). */
static void quantize_rows(const float *x, int64_t rows, int64_t k, int8_t shift, int8_t *q, float *scale) {
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
        for (int64_t i = 0; i < k; i += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + i), inv));  /* |v| <= 63 */
            __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64((__m128i *)(q + r * k + i), _mm_add_epi8(_mm_packs_epi16(w, w), _mm_set1_epi8(shift)));
        }
    }
}

/* --- AVX512_VNNI kernels -------------------------------------------------------------------
   One 16-column pair per 512-bit register; MR rows (up to 12) share each weight load. Per output
   the arithmetic is that of the AVX2 kernels above (see the file's head), so the bits are too. */

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define ROWS8(S) ROWS6(S) S(6) S(7)
#define ROWS12(S) ROWS8(S) S(8) S(9) S(10) S(11)

static inline AVX512_TARGET void epilogue16(float *y, __m512 v, const float *bias, int mode) {
    if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias));
    if (mode == RELU) v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (mode == ADD) v = _mm512_add_ps(v, _mm512_loadu_ps(y));
    _mm512_storeu_ps(y, v);
}

#define F16_ZERO(r) __m512 c##r = _mm512_setzero_ps();
#define F16_FMA(r) c##r = _mm512_fmadd_ps(_mm512_set1_ps(x[(m0 + r) * k + i]), w, c##r);
#define F16_STORE(r) epilogue16(y + (m0 + r) * ldy + p * 16, c##r, bias, mode);
#define FLOAT16_TILE(MR)                                                                           \
    static AVX512_TARGET void float16_tile_##MR(const Linear *L, const float *x, int64_t m0, int64_t p,  \
                                                float *y, int64_t ldy, int mode) {                 \
        const int64_t k = L->k;                                                                    \
        const float *wp = L->wf + p * 16 * k;                                                      \
        ROWS##MR(F16_ZERO)                                                                         \
        for (int64_t i = 0; i < k; i++) {                                                          \
            __m512 w = _mm512_loadu_ps(wp + i * 16);                                               \
            ROWS##MR(F16_FMA)                                                                      \
        }                                                                                          \
        const float *bias = L->bias ? L->bias + p * 16 : NULL;                                    \
        ROWS##MR(F16_STORE)                                                                        \
    }
FLOAT16_TILE(12)
FLOAT16_TILE(8)
FLOAT16_TILE(4)
FLOAT16_TILE(2)
FLOAT16_TILE(1)

/* u holds each row's inputs as q + 64 (unsigned bytes); `ahead` (or NULL): weights to prefetch. */
#define V_ZERO(r) __m512i a##r = _mm512_setzero_si512();
#define V_DOT(r) a##r = _mm512_dpbusd_epi32(a##r, _mm512_set1_epi32(quad(u + (m0 + r) * k + i)), w);
#define V_STORE(r) int8_store16(L, p, a##r, xs[m0 + r], y + (m0 + r) * ldy + p * 16, mode);
#define INT8_VNNI_TILE(MR)                                                                         \
    static AVX512_TARGET void int8_vnni_tile_##MR(const Linear *L, const uint8_t *u, const float *xs,   \
                                                  int64_t m0, int64_t p, float *y, int64_t ldy, int mode, \
                                                  const int8_t *ahead) {                           \
        const int64_t k = L->k;                                                                    \
        const int8_t *wp = L->wq + p * 16 * k;                                                     \
        ROWS##MR(V_ZERO)                                                                           \
        for (int64_t i = 0; i < k; i += 4) {                                                       \
            if (ahead) _mm_prefetch((const char *)(ahead + i * 16), _MM_HINT_T0);                  \
            __m512i w = _mm512_loadu_si512((const void *)(wp + i * 16));                           \
            ROWS##MR(V_DOT)                                                                        \
        }                                                                                          \
        ROWS##MR(V_STORE)                                                                          \
    }

/* As int8_store: y = (acc - 64 * column sum) * column scale * row scale (+ bias), then `mode`. */
static inline AVX512_TARGET void int8_store16(const Linear *L, int64_t p, __m512i acc, float row_scale, float *yr,
                                              int mode) {
    acc = _mm512_sub_epi32(acc, _mm512_loadu_si512((const void *)(L->offset + p * 16)));
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(L->scale + p * 16)),
                             _mm512_set1_ps(row_scale));
    epilogue16(yr, v, L->bias ? L->bias + p * 16 : NULL, mode);
}

INT8_VNNI_TILE(12)
INT8_VNNI_TILE(8)
INT8_VNNI_TILE(4)
INT8_VNNI_TILE(2)
INT8_VNNI_TILE(1)

/* Rows in tiles of 12, then 8, 4, 2, 1 against one column pair; the first tile prefetches. */
static AVX512_TARGET void linear_avx512_pair(const Linear *L, const float *x, const uint8_t *u, const float *xs,
                                             int64_t rows, int64_t p, float *y, int64_t ldy, int mode,
                                             const int8_t *ahead) {
    int64_t m = 0;
    if (L->int8) {
        for (; m + 12 <= rows; m += 12, ahead = NULL) int8_vnni_tile_12(L, u, xs, m, p, y, ldy, mode, ahead);
        if (m + 8 <= rows) int8_vnni_tile_8(L, u, xs, m, p, y, ldy, mode, ahead), m += 8, ahead = NULL;
        if (m + 4 <= rows) int8_vnni_tile_4(L, u, xs, m, p, y, ldy, mode, ahead), m += 4, ahead = NULL;
        if (m + 2 <= rows) int8_vnni_tile_2(L, u, xs, m, p, y, ldy, mode, ahead), m += 2, ahead = NULL;
        if (m < rows) int8_vnni_tile_1(L, u, xs, m, p, y, ldy, mode, ahead);
        return;
    }
    for (; m + 12 <= rows; m += 12) float16_tile_12(L, x, m, p, y, ldy, mode);
    if (m + 8 <= rows) float16_tile_8(L, x, m, p, y, ldy, mode), m += 8;
    if (m + 4 <= rows) float16_tile_4(L, x, m, p, y, ldy, mode), m += 4;
    if (m + 2 <= rows) float16_tile_2(L, x, m, p, y, ldy, mode), m += 2;
    if (m < rows) float16_tile_1(L, x, m, p, y, ldy, mode);
}

/* Below this many multiply-adds a layer that the threads would share runs on the calling thread
   alone (calls with many rows split them instead, see engine_decode_step). A parallel region costs
   waking the other threads and a barrier: on the 2-vCPU AMD EPYC (Zen 4) measured, more than a
   single sentence's layers take, and now and then far more (one greedy batch-1 run in three fell
   from ~200 to ~15 sentences/s). Which thread computes a column never changes its bits. */
#define PARALLEL_MACS (1 << 24)

static inline int team(int64_t work, int threads) { return work < PARALLEL_MACS ? 1 : threads; }

/* y (rows, n) with row stride ldy = x (rows, k) W^T + b, then `mode`. Threads split the columns. */
static void linear(const Linear *L, const float *x, int64_t rows, float *y, int64_t ldy, int mode, int threads) {
    const int64_t pairs = L->n / 16;
    threads = team(rows * L->n * L->k, threads);
    int8_t *xq = NULL;
    float *xs = NULL;
    if (L->int8) {
        xs = reused(&quantised_inputs, (size_t)rows * (sizeof(float) + (size_t)L->k));
        xq = (int8_t *)(xs + rows);
        quantize_rows(x, rows, L->k, L->kernels == AVX512_VNNI ? 64 : 0, xq, xs);
    }
    if (L->kernels == AVX512_VNNI) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t p = 0; p < pairs; p++)
            linear_avx512_pair(L, x, (const uint8_t *)xq, xs, rows, p, y, ldy, mode,
                               xq && p + PREFETCH_PAIRS < pairs ? L->wq + (p + PREFETCH_PAIRS) * 16 * L->k : NULL);
    } else if (L->int8) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t p = 0; p < pairs; p++) {
            const int8_t *ahead = p + PREFETCH_PAIRS < pairs ? L->wq + (p + PREFETCH_PAIRS) * 16 * L->k : NULL;
            int64_t m = 0;
            for (; m + 2 <= rows; m += 2, ahead = NULL) int8_tile_2(L, xq, xs, m, 2 * p, y, ldy, mode, ahead);
            for (; m < rows; m++, ahead = NULL) int8_tile_1(L, xq, xs, m, 2 * p, y, ldy, mode, ahead);
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t p = 0; p < pairs; p++) {
            int64_t m = 0;
            for (; m + 6 <= rows; m += 6) float_tile_6(L, x, m, 2 * p, y, ldy, mode);
            if (m + 4 <= rows) float_tile_4(L, x, m, 2 * p, y, ldy, mode), m += 4;
            if (m + 2 <= rows) float_tile_2(L, x, m, 2 * p, y, ldy, mode), m += 2;
            if (m < rows) float_tile_1(L, x, m, 2 * p, y, ldy, mode);
        }
    }
}

/* e^x for 8 floats: Cephes' expf (range reduction by ln 2, degree-5 polynomial), within 2 ulp.
   Used for the output softmax, where libm's scalar expf would cost more than the projection. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f)));
    x = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    x = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* In place, the first n values of a row become log_softmax of themselves. */
static void log_softmax_row(float *x, int64_t n) {
    const int64_t whole = n / 8 * 8;
    float m = -INFINITY, tail[8];
    __m256 top = _mm256_set1_ps(-INFINITY);
    for (int64_t i = 0; i < whole; i += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(x + i));
    _mm256_storeu_ps(tail, top);
    for (int i = 0; i < 8; i++) m = tail[i] > m ? tail[i] : m;
    for (int64_t i = whole; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 vm = _mm256_set1_ps(m), total = _mm256_setzero_ps();
    for (int64_t i = 0; i < whole; i += 8) total = _mm256_add_ps(total, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    for (int i = 0; i < 8; i++) tail[i] = whole + i < n ? x[whole + i] - m : -INFINITY;  /* exp8 clamps: ~1e-38 */
    total = _mm256_add_ps(total, exp8(_mm256_loadu_ps(tail)));
    const float shift = m + logf(hsum(total));
    for (int64_t i = 0; i < whole; i += 8) _mm256_storeu_ps(x + i, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(shift)));
    for (int64_t i = whole; i < n; i++) x[i] -= shift;
}

/* --- attention ----------------------------------------------------------------------------- */

/* x[0..n-1] = e^(x - top) in place; returns their sum (at least 1: top is among them). 8 at a time
   through exp8, the tail padded with -inf (exp8 clamps it to ~1e-38, too little to change the sum). */
static float exp_shifted(float *x, int64_t n, float top) {
    const int64_t whole = n / 8 * 8;
    const __m256 shift = _mm256_set1_ps(top);
    __m256 total = _mm256_setzero_ps();
    for (int64_t t = 0; t < whole; t += 8) {
        __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + t), shift));
        _mm256_storeu_ps(x + t, v);
        total = _mm256_add_ps(total, v);
    }
    if (whole < n) {
        float tail[8];
        for (int i = 0; i < 8; i++) tail[i] = whole + i < n ? x[whole + i] : -INFINITY;
        __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), shift));
        _mm256_storeu_ps(tail, v);
        for (int64_t i = 0; whole + i < n; i++) x[whole + i] = tail[i];
        total = _mm256_add_ps(total, v);
    }
    return hsum(total);
}

/* One query row q (E) against keys/values 0..n-1 of one head: out (E) = softmax(q K^T / sqrt(E)) V.
   The weights go to `weights` (n) when it is not NULL. The weighted sum of values runs over the
   keys once per 32 output features, which stay in registers meanwhile. */
static void attend(const float *q, const float *k, const float *v, int64_t st, int64_t n, int64_t e,
                   float *scores, float *out, float *weights) {
    const float scale = 1.0f / sqrtf((float)e);
    float top = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        scores[t] = dot(q, k + t * st, e) * scale;
        top = scores[t] > top ? scores[t] : top;
    }
    const float inv = 1.0f / exp_shifted(scores, n, top);
    for (int64_t t = 0; t < n; t++) scores[t] *= inv;
    int64_t j = 0;
    for (; j + 32 <= e; j += 32) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int64_t t = 0; t < n; t++) {
            const float *vt = v + t * st + j;
            __m256 w = _mm256_set1_ps(scores[t]);
            o0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt), o0);
            o1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 8), o1);
            o2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 16), o2);
            o3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 24), o3);
        }
        _mm256_storeu_ps(out + j, o0), _mm256_storeu_ps(out + j + 8, o1);
        _mm256_storeu_ps(out + j + 16, o2), _mm256_storeu_ps(out + j + 24, o3);
    }
    for (; j < e; j += 8) {
        __m256 o = _mm256_setzero_ps();
        for (int64_t t = 0; t < n; t++) o = _mm256_fmadd_ps(_mm256_set1_ps(scores[t]), _mm256_loadu_ps(v + t * st + j), o);
        _mm256_storeu_ps(out + j, o);
    }
    if (weights) memcpy(weights, scores, (size_t)n * sizeof(float));
}

/* The activations of one pass over `rows` rows: residual stream, normalised input, fused QKV,
   attention context, feed-forward hidden layer, and per thread `width` attention scores. */
typedef struct { float *x, *hn, *qkv, *ctx, *ff, *scores; } Scratch;

/* The calling thread's activation buffers for `rows` rows, valid until its next call. */
static Scratch scratch_new(const Model *M, int64_t rows, int64_t width) {
    const int64_t d = M->d, row = rows;
    float *base = reused(&activations, (size_t)(row * (6 * d + M->d_ff) + M->threads * width) * sizeof(float));
    Scratch s = {base, base + row * d, base + 2 * row * d, base + 5 * row * d, base + 6 * row * d,
                 base + row * (6 * d + M->d_ff)};
    return s;
}

/* --- encoder ------------------------------------------------------------------------------- */

/* The encoder over the valid tokens of every source, packed: `starts[b]` is the first packed row of
   source b and `lengths[b]` its token count, so padding is never computed. Source b's token s is
   ids[b * id_stride + s] (id_stride 0: ids are packed too, ids[starts[b] + s]). Leaves the final,
   normalised rows in buffers->hn, and when weights[l] is not NULL writes the self-attention weights
   of layer l, (B, H, width, width). */
static void encoder_pass(const Model *M, const int64_t *ids, int64_t id_stride, int64_t batch, int64_t width,
                         const int64_t *starts, const int64_t *lengths, int64_t total, Scratch *buffers, float **weights) {
    const int64_t d = M->d, h = M->heads, e = d / h, threads = M->threads;
    float *x = buffers->x, *hn = buffers->hn, *qkv = buffers->qkv, *ctx = buffers->ctx, *ff = buffers->ff, *scores = buffers->scores;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t s = 0; s < lengths[b]; s++) {
            float *xr = x + (starts[b] + s) * d;
            const float *emb = M->embedding + ids[(id_stride ? b * id_stride : starts[b]) + s] * d, *pos = M->positions + s * d;
            for (int64_t i = 0; i < d; i++) xr[i] = emb[i] * M->embed_scale + pos[i];
        }
    for (int64_t l = 0; l < M->encoder_layers; l++) {
        const EncoderLayer *L = &M->encoder[l];
        layer_norm(x, total, d, L->norm1, M->eps, hn);
        linear(&L->qkv, hn, total, qkv, 3 * d, STORE, threads);
        float *w = weights ? weights[l] : NULL;
#pragma omp parallel for schedule(static) num_threads(team(2 * total * width * d, threads))
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
}

static int64_t *packed_starts(const int64_t *lengths, int64_t batch, int64_t *total) {
    int64_t *starts = malloc((size_t)batch * sizeof(int64_t));
    *total = 0;
    for (int64_t b = 0; b < batch; b++) { starts[b] = *total; *total += lengths[b]; }
    return starts;
}

/* engine_encode (below) on the calling thread's share of the sources. */
static void encode_rows(const Model *M, const int64_t *ids, int64_t batch, int64_t width, const int64_t *lengths,
                        float *memory, float **weights) {
    const int64_t d = M->d;
    int64_t total;
    int64_t *starts = packed_starts(lengths, batch, &total);
    Scratch buffers = scratch_new(M, total, width);
    encoder_pass(M, ids, width, batch, width, starts, lengths, total, &buffers, weights);
    memset(memory, 0, (size_t)(batch * width * d) * sizeof(float));
    for (int64_t b = 0; b < batch; b++)
        memcpy(memory + b * width * d, buffers.hn + starts[b] * d, (size_t)(lengths[b] * d) * sizeof(float));
    free(starts);
}

/* engine_encode_cross (below) on the calling thread's share of the sources. */
static void encode_cross_rows(const Model *M, const int64_t *ids, int64_t batch, const int64_t *lengths,
                              const Heads *cross_k, const Heads *cross_v, int64_t first_row) {
    const int64_t d = M->d, h = M->heads, e = d / h;
    int64_t total, width = 1;
    int64_t *starts = packed_starts(lengths, batch, &total);
    for (int64_t b = 0; b < batch; b++) width = lengths[b] > width ? lengths[b] : width;
    Scratch buffers = scratch_new(M, total, width);
    encoder_pass(M, ids, 0, batch, width, starts, lengths, total, &buffers, NULL);
    float *kv = malloc((size_t)(total * 2 * d) * sizeof(float));
    for (int64_t l = 0; l < M->decoder_layers; l++) {
        linear(&M->decoder[l].kv, buffers.hn, total, kv, 2 * d, STORE, M->threads);
        const Heads ck = cross_k[l], cv = cross_v[l];
        for (int64_t b = 0; b < batch; b++)
            for (int64_t s = 0; s < lengths[b]; s++)
                for (int64_t head = 0; head < h; head++) {
                    const float *row = kv + (starts[b] + s) * 2 * d + head * e;
                    int64_t r = first_row + b;
                    memcpy(ck.base + r * ck.sr + head * ck.sh + s * ck.st, row, (size_t)e * sizeof(float));
                    memcpy(cv.base + r * cv.sr + head * cv.sh + s * cv.st, row + d, (size_t)e * sizeof(float));
                }
    }
    free(kv);
    free(starts);
}

/* Cross-attention keys and values of decoder layer `layer` for memory (R, S, D): kv (R, S, 2D),
   keys in [:D], values in [D:], head h at h*E within each. */
int engine_cross_kv(const Model *M, int64_t layer, const float *memory, int64_t rows, float *kv) {
    linear(&M->decoder[layer].kv, memory, rows, kv, 2 * M->d, STORE, M->threads);
    return 0;
}

/* --- one decoder step ---------------------------------------------------------------------- */

/* The column of the largest of x[0..n-1], the first of equals; -1 when every value is -inf. */
static int64_t argmax(const float *x, int64_t n) {
    float top = -INFINITY;
    int64_t at = -1;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > top) top = x[i], at = i;
    return at;
}

/* Row r feeds token ids[r] at position pos[r]: its key and value go into the self-attention cache at
   pos[r], it attends to its positions 0..pos[r] and to its first src_len[r] source positions, and
   its log-probabilities (V, log_softmax of the logits) go to logits[r]. self_w[l] / cross_w[l], when not NULL, receive the layer's weights
   as (R, H, self_width) / (R, H, cross_width), zero past each row's own length.
   Greedy search's own work, when `best` is not NULL (the running batch, model/search/greedy.py): the
   `forbidden` tokens' log-probabilities become -inf, best[r] gets row r's argmax (the first of
   equals) and best_logp[r] its log-probability, and pos[r] advances by one. `best` may be `ids`:
   the chosen tokens are the next step's input. */
static void decode_rows(const Model *M, int64_t *ids, int64_t *pos, const int64_t *src_len, int64_t rows,
                        const Heads *self_k, const Heads *self_v, const Heads *cross_k, const Heads *cross_v,
                        float **self_w, int64_t self_width, float **cross_w, int64_t cross_width, float *logits,
                        const int64_t *forbidden, int64_t n_forbidden, int64_t *best, float *best_logp) {
    const int64_t d = M->d, h = M->heads, e = d / h, threads = M->threads;
    int64_t longest = 1;
    for (int64_t r = 0; r < rows; r++) {
        longest = pos[r] + 1 > longest ? pos[r] + 1 : longest;
        longest = src_len[r] > longest ? src_len[r] : longest;
    }
    Scratch buffers = scratch_new(M, rows, longest);
    float *x = buffers.x, *hn = buffers.hn, *qkv = buffers.qkv, *ctx = buffers.ctx, *ff = buffers.ff, *scores = buffers.scores;
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
#pragma omp parallel for schedule(static) num_threads(team(2 * rows * longest * d, threads))
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
#pragma omp parallel for schedule(static) num_threads(team(2 * rows * longest * d, threads))
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
#pragma omp parallel for schedule(static) num_threads(team(8 * rows * M->vocab, threads))  /* ~8 flops an exp */
    for (int64_t r = 0; r < rows; r++) {
        float *row = logits + r * M->projection.n;
        log_softmax_row(row, M->vocab);
        if (!best) continue;
        for (int64_t i = 0; i < n_forbidden; i++) row[forbidden[i]] = -INFINITY;
        int64_t at = argmax(row, M->vocab);
        best_logp[r] = at >= 0 ? row[at] : -INFINITY;
        best[r] = at;  /* after every read of ids[r] (the embedding, above): best may be ids */
    }
    if (best)
        for (int64_t r = 0; r < rows; r++) pos[r] += 1;
}

/* --- splitting a call's rows between threads ---------------------------------------------------

   With enough rows, each of the threads runs a whole decoder step (or encoder pass) on its share
   of the rows, one thread per share: one fork and one join per call instead of one per layer, and
   a thread slowed by something else on its core holds the others once, not at every layer. A row's
   numbers never depend on which rows share its call, so the bits are those of one call. */
#define SPLIT_MIN_ROWS 8  /* rows per thread below which the call runs on one thread (large layers aside, see PARALLEL_MACS) */

static int64_t shares(const Model *M, int64_t rows) {
    return M->threads > 1 && rows >= SPLIT_MIN_ROWS * M->threads ? M->threads : 1;
}

/* Rows r0.. of a strided per-layer view. */
static void heads_from(const Heads *all, int64_t layers, int64_t r0, Heads *out) {
    for (int64_t l = 0; l < layers; l++) out[l] = all[l], out[l].base += r0 * all[l].sr;
}

/* Rows r0.. of per-layer attention weights, `per_row` floats a row; NULL stays NULL. */
static float **weights_from(float **all, int64_t layers, int64_t offset, float **out) {
    if (!all) return NULL;
    for (int64_t l = 0; l < layers; l++) out[l] = all[l] ? all[l] + offset : NULL;
    return out;
}

/* bounds[0] = 0 < bounds[1] < ... < bounds[parts] = batch: sentences in `parts` runs of about equal
   tokens, none empty (batch >= parts). */
static void split_sentences(const int64_t *lengths, int64_t batch, int64_t parts, int64_t *bounds) {
    int64_t total = 0, seen = 0, b = 0;
    for (int64_t i = 0; i < batch; i++) total += lengths[i];
    bounds[0] = 0;
    for (int64_t p = 1; p < parts; p++) {
        do seen += lengths[b++];
        while (b < batch - (parts - p) && seen * parts < total * p);
        bounds[p] = b;
    }
    bounds[parts] = batch;
}

/* Sources (B, width) right-padded, `lengths[b]` tokens each: memory (B, width, D), zero on padding,
   and the self-attention weights (B, H, width, width) of the layers l whose weights[l] is not NULL. */
int engine_encode(const Model *M, const int64_t *ids, int64_t batch, int64_t width, const int64_t *lengths,
                  float *memory, float **weights) {
    const int64_t parts = shares(M, batch), d = M->d, h = M->heads;
    if (parts == 1) {
        encode_rows(M, ids, batch, width, lengths, memory, weights);
        return 0;
    }
    Model one = *M;
    one.threads = 1;
    int64_t bounds[parts + 1];
    split_sentences(lengths, batch, parts, bounds);
#pragma omp parallel for schedule(static) num_threads((int)parts)
    for (int64_t p = 0; p < parts; p++) {
        const int64_t b0 = bounds[p];
        float *w[MAX_LAYERS];
        encode_rows(&one, ids + b0 * width, bounds[p + 1] - b0, width, lengths + b0, memory + b0 * width * d,
                    weights_from(weights, M->encoder_layers, b0 * h * width * width, w));
    }
    return 0;
}

/* The running batch's join (model/search/greedy.py) in one call: sources packed one after another
   (`lengths[b]` tokens each) are encoded, and every decoder layer's cross-attention keys and values
   of source b go straight to row first_row + b of cross_k[l] / cross_v[l], positions 0..lengths[b]-1. */
int engine_encode_cross(const Model *M, const int64_t *ids, int64_t batch, const int64_t *lengths,
                        const Heads *cross_k, const Heads *cross_v, int64_t first_row) {
    const int64_t parts = shares(M, batch);
    if (parts == 1) {
        encode_cross_rows(M, ids, batch, lengths, cross_k, cross_v, first_row);
        return 0;
    }
    Model one = *M;
    one.threads = 1;
    int64_t bounds[parts + 1], first_id[parts + 1];
    split_sentences(lengths, batch, parts, bounds);
    first_id[0] = 0;
    for (int64_t p = 0; p < parts; p++) {
        first_id[p + 1] = first_id[p];
        for (int64_t b = bounds[p]; b < bounds[p + 1]; b++) first_id[p + 1] += lengths[b];
    }
#pragma omp parallel for schedule(static) num_threads((int)parts)
    for (int64_t p = 0; p < parts; p++)
        encode_cross_rows(&one, ids + first_id[p], bounds[p + 1] - bounds[p], lengths + bounds[p], cross_k, cross_v,
                          first_row + bounds[p]);
    return 0;
}

/* One decoder step of `rows` rows: decode_rows (above) on all of them, or on each thread's share. */
int engine_decode_step(const Model *M, int64_t *ids, int64_t *pos, const int64_t *src_len, int64_t rows,
                       const Heads *self_k, const Heads *self_v, const Heads *cross_k, const Heads *cross_v,
                       float **self_w, int64_t self_width, float **cross_w, int64_t cross_width, float *logits,
                       const int64_t *forbidden, int64_t n_forbidden, int64_t *best, float *best_logp) {
    const int64_t parts = shares(M, rows), layers = M->decoder_layers, h = M->heads, n = M->projection.n;
    if (parts == 1) {
        decode_rows(M, ids, pos, src_len, rows, self_k, self_v, cross_k, cross_v, self_w, self_width, cross_w,
                    cross_width, logits, forbidden, n_forbidden, best, best_logp);
        return 0;
    }
    Model one = *M;
    one.threads = 1;
#pragma omp parallel for schedule(static) num_threads((int)parts)
    for (int64_t p = 0; p < parts; p++) {
        const int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
        Heads sk[MAX_LAYERS], sv[MAX_LAYERS], ck[MAX_LAYERS], cv[MAX_LAYERS];
        float *sw[MAX_LAYERS], *cw[MAX_LAYERS];
        heads_from(self_k, layers, r0, sk), heads_from(self_v, layers, r0, sv);
        heads_from(cross_k, layers, r0, ck), heads_from(cross_v, layers, r0, cv);
        decode_rows(&one, ids + r0, pos + r0, src_len + r0, r1 - r0, sk, sv, ck, cv,
                    weights_from(self_w, layers, r0 * h * self_width, sw), self_width,
                    weights_from(cross_w, layers, r0 * h * cross_width, cw), cross_width, logits + r0 * n,
                    forbidden, n_forbidden, best ? best + r0 : NULL, best_logp ? best_logp + r0 : NULL);
    }
    return 0;
}

/* One linear layer on its own: y (rows, n) = x (rows, k) W^T + b. For tests and measurements. */
int engine_linear(const Linear *L, const float *x, int64_t rows, float *y, int64_t threads) {
    linear(L, x, rows, y, L->n, STORE, (int)threads);
    return 0;
}

/* Beam search's cache reorder: dst[l, r] = src[l, index[r]] for r < rows, positions 0..n-1 only, where
   src is (L, src_rows, H, src_cap, E) and dst (L, rows, H, dst_cap, E). One copy of what was written,
   not of the whole preallocated buffer. */
int engine_gather_rows(const float *src, float *dst, const int64_t *index, int64_t rows, int64_t layers, int64_t src_rows,
                       int64_t heads, int64_t src_cap, int64_t dst_cap, int64_t n, int64_t e, int64_t threads) {
#pragma omp parallel for schedule(static) num_threads((int)threads)
    for (int64_t lr = 0; lr < layers * rows; lr++) {
        int64_t l = lr / rows, r = lr % rows;
        for (int64_t h = 0; h < heads; h++)
            memcpy(dst + ((l * rows + r) * heads + h) * dst_cap * e, src + ((l * src_rows + index[r]) * heads + h) * src_cap * e,
                   (size_t)(n * e) * sizeof(float));
    }
    return 0;
}

/* Per row of x (rows, n, row stride ld): its k largest values, largest first, and their columns; of
   equal values the first column wins. A scan against the current k-th value, 8 columns at a time,
   touches the short list only when a column beats it (PyTorch's topk sorts far more). */
int engine_topk(const float *x, int64_t rows, int64_t n, int64_t ld, int64_t k, float *values, int64_t *ids, int64_t threads) {
#pragma omp parallel for schedule(static) num_threads((int)threads)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        float *v = values + r * k;
        int64_t *id = ids + r * k, filled = 0;
        for (int64_t i = 0; i < k; i++) { v[i] = -INFINITY; id[i] = -1; }
        for (int64_t i = 0; i < n; i += 8) {
            if (i + 8 <= n && filled == k) {
                __m256 beats = _mm256_cmp_ps(_mm256_loadu_ps(xr + i), _mm256_set1_ps(v[k - 1]), _CMP_GT_OQ);
                if (!_mm256_movemask_ps(beats)) continue;
            }
            for (int64_t j = i; j < i + 8 && j < n; j++) {
                float value = xr[j];
                if (filled == k && !(value > v[k - 1])) continue;
                int64_t at = filled < k ? filled++ : k - 1;
                while (at > 0 && value > v[at - 1]) { v[at] = v[at - 1]; id[at] = id[at - 1]; at--; }
                v[at] = value;
                id[at] = j;
            }
        }
    }
    return 0;
}
