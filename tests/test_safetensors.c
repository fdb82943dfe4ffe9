// The safetensors container: write/read round trips in F32, F16 and BF16 (exact values after rounding to
// nearest even, inf and NaN), the scalar conversions against an independent rounding reference and
// against PyTorch, and st_open's refusal of every kind of bad header with one line naming the file.
//
// The bad files are written byte by byte here (a length field, a header text, a data region), so each
// case breaks exactly one rule. The same rules seen through `llamac inspect --hf` are in test_hf.c.
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/half.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/safetensors.h"
#include "testutil.h"

#define TMP LLAMAC_TEST_TMP

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// x rounded to a binary format with `mant` fraction bits, smallest normal exponent emin and largest
// finite value maxval, to nearest with ties to even, overflow to inf: computed in double, independently
// of the bit tricks under test.
static double ref_round(double x, int mant, int emin, double maxval) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    frexp(fabs(x), &e);
    int lead = e - 1 < emin ? emin : e - 1;
    double q = ldexp(1.0, lead - mant);
    double r = nearbyint(fabs(x) / q) * q;
    if (r > maxval) r = INFINITY;
    return copysign(r, x);
}
static double ref_f16(double x) { return ref_round(x, 10, -14, 65504.0); }
static double ref_bf16(double x) { return ref_round(x, 7, -126, ldexp(255.0, 120)); }

// ---------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------

// Writes `vals` (n) as one 1-D tensor "x" in dtype d plus a few others, reads "x" back into out.
static void round_trip(const char *path, enum st_dtype d, const float *vals, int n, float *out) {
    float m[12];
    for (int i = 0; i < 12; i++) m[i] = (float)i - 5.5f;
    float scalar = 3.0f;
    struct st_write_tensor w[] = {
        {"matrix", 2, {3, 4}, m},
        {"x", 1, {n}, vals},
        {"scalar", 0, {0}, &scalar},
        {"empty", 2, {0, 7}, NULL},
    };
    cr_assert_eq(st_write(path, w, 4, d, "{\"format\":\"pt\"}"), 0, "st_write: %s", err_msg());
    struct stat st;
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    cr_expect_neq(stat(tmp, &st), 0, "the temporary file must be renamed away");

    struct st_file f;
    cr_assert_eq(st_open(&f, path), 0, "st_open: %s", err_msg());
    cr_expect_eq(f.n, 4);
    cr_expect_eq(f.data_start % 8, 0, "data region must be 8-byte aligned (starts at %llu)", (unsigned long long)f.data_start);
    cr_expect_str_eq(st_metadata(&f, "format"), "pt");
    cr_expect_null(st_metadata(&f, "nope"));
    cr_expect_null(st_find(&f, "missing"));
    const struct st_tensor *tm = st_find(&f, "matrix"), *tx = st_find(&f, "x"), *ts = st_find(&f, "scalar"),
                           *te = st_find(&f, "empty");
    cr_assert(tm && tx && ts && te);
    cr_expect_eq(tm->dtype, d);
    cr_expect(tm->ndim == 2 && tm->shape[0] == 3 && tm->shape[1] == 4);
    cr_expect(tx->ndim == 1 && tx->shape[0] == n);
    cr_expect(ts->ndim == 0 && st_numel(ts) == 1);
    cr_expect(te->ndim == 2 && te->shape[0] == 0 && te->shape[1] == 7 && te->begin == te->end);
    // written in order, back to back, ending at the end of the file
    cr_expect_eq(tm->begin, f.data_start);
    cr_expect_eq(tx->begin, tm->end);
    cr_expect_eq(ts->begin, tx->end);
    cr_expect_eq(tx->end - tx->begin, (uint64_t)n * st_dtype_size(d));
    cr_expect_eq(te->end, f.file_size);

    float mm[12], sc = 0;
    cr_assert_eq(st_read_f32(&f, tm, mm), 0, "%s", err_msg());
    for (int i = 0; i < 12; i++) cr_expect_eq(mm[i], m[i], "matrix[%d] %g != %g", i, mm[i], m[i]);
    cr_assert_eq(st_read_f32(&f, ts, &sc), 0);
    cr_expect_eq(sc, 3.0f);
    cr_assert_eq(st_read_f32(&f, tx, out), 0, "%s", err_msg());
    st_close(&f);
}

Test(safetensors, f32_round_trip_is_bit_exact) {
    const float v[] = {0.0f, -0.0f, 1.0f, -2.5f, 3.14159265f, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f /* subnormal */,
                       INFINITY, -INFINITY, NAN, from_bits(0x7f800001u) /* signalling-style NaN payload */, 1e-30f};
    const int n = sizeof(v) / sizeof(v[0]);
    float out[32];
    round_trip(TMP "/st_f32.safetensors", ST_F32, v, n, out);
    for (int i = 0; i < n; i++)
        cr_expect_eq(bits(out[i]), bits(v[i]), "F32 element %d: wrote 0x%08x, read 0x%08x", i, bits(v[i]), bits(out[i]));
}

struct expect { float in, out; };

static void check_rounding(const char *path, enum st_dtype d, const struct expect *e, int n) {
    float in[64], out[64];
    for (int i = 0; i < n; i++) in[i] = e[i].in;
    round_trip(path, d, in, n, out);
    for (int i = 0; i < n; i++) {
        if (isnan(e[i].out)) {
            cr_expect(isnan(out[i]), "%s: %a must stay NaN, got %a", st_dtype_name(d), (double)e[i].in, (double)out[i]);
            continue;
        }
        cr_expect_eq(bits(out[i]), bits(e[i].out), "%s: %a stored and read back as %a, expected %a", st_dtype_name(d),
                     (double)e[i].in, (double)out[i], (double)e[i].out);
    }
}

Test(safetensors, f16_round_trip_rounds_to_nearest_even) {
    const float u = 0x1p-10f;  // one f16 ulp at 1.0
    const struct expect e[] = {
        {1.0f, 1.0f},
        {1.0f + u / 2, 1.0f},                  // tie: to even (down)
        {1.0f + 3 * u / 2, 1.0f + 2 * u},      // tie: to even (up)
        {1.0f + u / 2 + 0x1p-20f, 1.0f + u},   // above the tie: up
        {-(1.0f + 3 * u / 2), -(1.0f + 2 * u)},
        {65504.0f, 65504.0f},                  // largest finite
        {65519.0f, 65504.0f},
        {65520.0f, INFINITY},                  // the tie above the largest finite rounds to inf
        {-1e10f, -INFINITY},
        {INFINITY, INFINITY},
        {-INFINITY, -INFINITY},
        {0x1p-14f, 0x1p-14f},                  // smallest normal
        {0x1p-14f - 0x1p-25f, 0x1p-14f},       // tie between the largest subnormal and it: to even
        {0x1p-24f, 0x1p-24f},                  // smallest subnormal
        {0x1p-25f, 0.0f},                      // tie with zero: to even (zero)
        {0x1.8p-25f, 0x1p-24f},
        {3 * 0x1p-25f, 0x1p-23f},              // 1.5 subnormal ulps: to even (2)
        {-0.0f, -0.0f},
        {-0x1p-30f, -0.0f},                    // underflow keeps the sign
        {0.1f, 0x1.998p-4f},
        {NAN, NAN},
        {from_bits(0x7f800001u), NAN},         // payload only in the low bits: still NaN, not inf
    };
    check_rounding(TMP "/st_f16.safetensors", ST_F16, e, sizeof(e) / sizeof(e[0]));
    // the stored bits themselves, for a few
    cr_expect_eq(f32_to_f16(1.0f), 0x3c00);
    cr_expect_eq(f32_to_f16(-2.0f), 0xc000);
    cr_expect_eq(f32_to_f16(65504.0f), 0x7bff);
    cr_expect_eq(f32_to_f16(INFINITY), 0x7c00);
    cr_expect_eq(f32_to_f16(0x1p-24f), 0x0001);
    cr_expect_eq(f32_to_f16(NAN) & 0x7e00, 0x7e00);
}

Test(safetensors, bf16_round_trip_rounds_to_nearest_even) {
    const float u = 0x1p-7f;  // one bf16 ulp at 1.0
    const struct expect e[] = {
        {1.0f, 1.0f},
        {1.0f + u / 2, 1.0f},                   // tie: to even (down)
        {1.0f + 3 * u / 2, 1.0f + 2 * u},       // tie: to even (up)
        {1.0f + u / 2 + 0x1p-20f, 1.0f + u},    // above the tie
        {-(1.0f + 3 * u / 2), -(1.0f + 2 * u)},
        {from_bits(0x7f7f0000u), from_bits(0x7f7f0000u)},  // largest finite bf16
        {FLT_MAX, INFINITY},                    // above the last tie: overflows to inf
        {-FLT_MAX, -INFINITY},
        {INFINITY, INFINITY},
        {-INFINITY, -INFINITY},
        {from_bits(0x00018000u), from_bits(0x00020000u)},  // subnormal tie to even (up)
        {from_bits(0x00008000u), 0.0f},                    // subnormal tie to even (down, to zero)
        {-0.0f, -0.0f},
        {0.1f, from_bits(0x3dcd0000u)},
        {NAN, NAN},
        {from_bits(0x7f800001u), NAN},          // payload only in the low bits: rounding must not make it inf
        {from_bits(0xffffffffu), NAN},          // would carry out of the exponent
    };
    check_rounding(TMP "/st_bf16.safetensors", ST_BF16, e, sizeof(e) / sizeof(e[0]));
    cr_expect_eq(f32_to_bf16(1.0f), 0x3f80);
    cr_expect_eq(f32_to_bf16(-1.0f), 0xbf80);
    cr_expect_eq(f32_to_bf16(INFINITY), 0x7f80);
    cr_expect_eq(f32_to_bf16(from_bits(0xffffffffu)) & 0xffc0, 0xffc0, "negative NaN stays a negative quiet NaN");
}

// Every 16-bit pattern decodes to the value its fields say, and encodes back to itself.
Test(safetensors, every_f16_and_bf16_value_decodes_exactly_and_encodes_back) {
    for (uint32_t h = 0; h < 65536; h++) {
        int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
        float f = f16_to_f32((uint16_t)h);
        if (exp == 31) {
            cr_assert(man ? isnan(f) : isinf(f), "f16 0x%04x", h);
            cr_assert(man ? isnan(bf16_to_f32(f32_to_bf16(f))) : 1);
        } else {
            double want = exp ? ldexp(1.0 + man / 1024.0, exp - 15) : ldexp((double)man, -24);
            if (sign) want = -want;
            cr_assert_eq((double)f, want, "f16 0x%04x decodes to %a, expected %a", h, (double)f, want);
            cr_assert_eq(!!signbit(f), sign, "f16 0x%04x sign", h);
        }
        uint16_t back = f32_to_f16(f);
        if (isnan(f)) cr_assert(((back >> 10) & 0x1f) == 31 && (back & 0x3ff), "f16 NaN 0x%04x re-encodes as 0x%04x", h, back);
        else cr_assert_eq(back, h, "f16 0x%04x re-encodes as 0x%04x", h, back);

        float b = bf16_to_f32((uint16_t)h);
        cr_assert_eq(bits(b), h << 16);
        uint16_t bb = f32_to_bf16(b);
        if (isnan(b)) cr_assert(isnan(bf16_to_f32(bb)), "bf16 NaN 0x%04x", h);
        else cr_assert_eq(bb, h, "bf16 0x%04x re-encodes as 0x%04x", h, bb);
    }
}

// f32 -> f16 / bf16 on a million values of every magnitude, against the double-precision reference.
Test(safetensors, f32_to_half_matches_exact_rounding_reference) {
    struct rng r;
    rng_seed(&r, 7);
    int bad16 = 0, badb = 0;
    for (int i = 0; i < 1000000; i++) {
        float x;
        if (i & 1) x = from_bits((uint32_t)rng_u64(&r));  // any bit pattern
        else x = ldexpf(rng_normal(&r), (int)(rng_u64(&r) % 60) - 40);  // around f16's range
        if (isnan(x)) continue;
        double h = f16_to_f32(f32_to_f16(x)), b = bf16_to_f32(f32_to_bf16(x));
        double rh = ref_f16(x), rb = ref_bf16(x);
        if (h != rh || signbit(h) != signbit(rh)) {
            if (bad16++ < 5) cr_expect(0, "f16(%a) = %a, reference %a", (double)x, h, rh);
        }
        if (b != rb || signbit(b) != signbit(rb)) {
            if (badb++ < 5) cr_expect(0, "bf16(%a) = %a, reference %a", (double)x, b, rb);
        }
    }
    cr_expect_eq(bad16, 0, "%d f16 mismatches", bad16);
    cr_expect_eq(badb, 0, "%d bf16 mismatches", badb);
}

// PyTorch (the format's home) agrees on every converted byte, and we read what it writes.
Test(safetensors, conversions_match_pytorch) {
    enum { N = 4096 };
    static float x[N];
    struct rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N; i++) x[i] = ldexpf(rng_normal(&r), (int)(rng_u64(&r) % 50) - 30);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65520.0f, 1e-8f, FLT_MAX, 1.0f + 0x1p-8f,
                             1.0f + 0x1p-11f, 0x1p-25f};
    memcpy(x, special, sizeof(special));
    FILE *fp = fopen(TMP "/st_torch_in.f32", "wb");
    cr_assert(fp);
    fwrite(x, 4, N, fp);
    fclose(fp);
    struct st_write_tensor w = {"x", 2, {64, 64}, x};
    cr_assert_eq(st_write(TMP "/st_ours_f16.safetensors", &w, 1, ST_F16, NULL), 0, "%s", err_msg());
    cr_assert_eq(st_write(TMP "/st_ours_bf16.safetensors", &w, 1, ST_BF16, NULL), 0, "%s", err_msg());

    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/ref/safetensors_torch.py %s 2>&1", LLAMAC_PYTHON, LLAMAC_SOURCE_DIR, TMP);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char out[4096] = "";
    size_t len = fread(out, 1, sizeof(out) - 1, p);
    out[len] = '\0';
    int status = pclose(p);
    cr_assert_eq(status, 0, "PyTorch check failed:\n%s", out);

    // The files PyTorch wrote: x converted by torch (F16 / BF16), and torch's own upcast to F32 beside it
    for (int k = 0; k < 2; k++) {
        const char *path = k ? TMP "/st_torch_bf16.safetensors" : TMP "/st_torch_f16.safetensors";
        struct st_file f;
        cr_assert_eq(st_open(&f, path), 0, "%s", err_msg());
        const struct st_tensor *h = st_find(&f, "x"), *up = st_find(&f, "x_f32");
        cr_assert(h && up);
        cr_expect_eq(h->dtype, k ? ST_BF16 : ST_F16);
        cr_expect(h->ndim == 2 && h->shape[0] == 64 && h->shape[1] == 64);
        static float a[N], b[N];
        cr_assert_eq(st_read_f32(&f, h, a), 0);
        cr_assert_eq(st_read_f32(&f, up, b), 0);
        int bad = 0;
        for (int i = 0; i < N; i++)
            if (!(isnan(a[i]) && isnan(b[i])) && bits(a[i]) != bits(b[i])) bad++;
        cr_expect_eq(bad, 0, "%s: %d values differ from torch's upcast", path, bad);
        st_close(&f);
    }
}

// ---------------------------------------------------------------------------------------------------
// Bad headers: st_open fails with one line naming the file and the problem
// ---------------------------------------------------------------------------------------------------

// Writes an 8-byte length (len_field, or the header's real length when < 0), the header, and data_len
// zero bytes.
static void write_raw(const char *path, const char *header, long long len_field, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    uint64_t n = len_field < 0 ? strlen(header) : (uint64_t)len_field;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(n >> (8 * i));
    fwrite(lb, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++) fputc(0, fp);
    fclose(fp);
}

struct bad_case {
    const char *what, *header;
    long long len_field;  // < 0: the header's length
    size_t data_len;
    const char *expect;   // a substring of the message
};

#define E(name, dtype, shape, b, e) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static const struct bad_case bad_cases[] = {
    {"header length beyond the file", "{}", 1000, 0, "larger than the rest of the file"},
    {"header length above the cap", "{}", 200000000, 0, "exceeds the limit"},
    {"header not starting with {", " {}", -1, 0, "does not start with '{'"},
    {"malformed JSON", "{\"a\":{\"dtype\":\"F32\",", -1, 0, "not valid JSON"},
    {"not UTF-8", "{\"a\xff\":{}}", -1, 0, "not valid UTF-8"},
    {"control byte", "{\"a\x01\":{}}", -1, 0, "not valid UTF-8"},
    {"bytes after the object", "{}  x", -1, 0, "bytes after the JSON object"},
    {"entry not an object", "{\"a\":[1,2]}", -1, 0, "entry is not an object"},
    {"unknown dtype", "{" E("a", "Q4", "[2]", 0, 8) "}", -1, 8, "unknown dtype 'Q4'"},
    {"unsupported dtype I8", "{" E("a", "I8", "[8]", 0, 8) "}", -1, 8, "dtype I8, which llamac does not read"},
    {"unsupported dtype F64", "{" E("a", "F64", "[1]", 0, 8) "}", -1, 8, "dtype F64"},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "dtype"},
    {"shape not a list of integers", "{" E("a", "F32", "[2.5]", 0, 8) "}", -1, 8, "non-negative integers"},
    {"negative dimension", "{" E("a", "F32", "[-2]", 0, 8) "}", -1, 8, "non-negative integers"},
    {"five dimensions", "{" E("a", "F32", "[1,1,1,1,2]", 0, 8) "}", -1, 8, "5 dimensions"},
    {"shape overflows", "{" E("a", "F32", "[4294967296,4294967296,4294967296]", 0, 8) "}", -1, 8, "overflows"},
    {"size does not match offsets", "{" E("a", "F32", "[3]", 0, 8) "}", -1, 8, "needs 12 bytes"},
    {"begin after end", "{" E("a", "F32", "[0]", 8, 0) "}", -1, 8, "begin <= end"},
    {"fractional offset", "{" E("a", "F32", "[2]", 0.5, 8.5) "}", -1, 9, "data_offsets"},
    {"negative offset", "{" E("a", "F32", "[2]", -8, 0) "}", -1, 8, "data_offsets"},
    {"offsets past the end (truncated)", "{" E("a", "F32", "[4]", 0, 16) "}", -1, 12, "extend past the end"},
    {"overlapping offsets", "{" E("a", "F32", "[4]", 0, 16) "," E("b", "F32", "[4]", 8, 24) "}", -1, 24, "overlap"},
    {"gap between tensors", "{" E("a", "F32", "[2]", 0, 8) "," E("b", "F32", "[2]", 16, 24) "}", -1, 24,
     "belong to no tensor"},
    {"data not covered at the end", "{" E("a", "F32", "[2]", 0, 8) "}", -1, 16, "cover only 8"},
    {"duplicate name", "{" E("a", "F32", "[2]", 0, 8) "," E("a", "F32", "[2]", 8, 16) "}", -1, 16,
     "duplicate tensor name 'a'"},
    {"duplicate name with a newline in it", "{" E("a\\nb", "F32", "[2]", 0, 8) "," E("a\\nb", "F32", "[2]", 8, 16) "}",
     -1, 16, "duplicate tensor name 'a?b'"},
    {"metadata, then a bad entry", "{\"__metadata__\":{\"format\":\"pt\"}," E("a", "Q4", "[2]", 0, 8) "}", -1, 8,
     "unknown dtype"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", -1, 0, "duplicate \"__metadata__\""},
    {"metadata value not a string", "{\"__metadata__\":{\"format\":1}}", -1, 0, "must map strings to strings"},
    {"metadata not an object", "{\"__metadata__\":[]}", -1, 0, "not an object"},
    {"name too long", "{" E("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                            "F32", "[2]", 0, 8) "}", -1, 8, "longer than 127"},
};

Test(safetensors, bad_headers_fail_with_one_line_naming_the_file) {
    const char *path = TMP "/st_bad.safetensors";
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        write_raw(path, c->header, c->len_field, c->data_len);
        struct st_file f;
        err_clear();
        int rc = st_open(&f, path);
        cr_expect_eq(rc, -1, "%s: st_open must fail", c->what);
        if (rc == 0) {
            st_close(&f);
            continue;
        }
        const char *m = err_msg();
        cr_expect(!strncmp(m, path, strlen(path)), "%s: message must start with the path: %s", c->what, m);
        cr_expect(strstr(m, c->expect) != NULL, "%s: message '%s' should mention '%s'", c->what, m, c->expect);
        cr_expect(strchr(m, '\n') == NULL, "%s: message must be one line: %s", c->what, m);
        cr_expect_eq(f.fd, -1, "%s: a failed open leaves no file open", c->what);
    }
}

Test(safetensors, tiny_and_missing_files_fail_cleanly) {
    const char *path = TMP "/st_tiny.safetensors";
    FILE *fp = fopen(path, "wb");
    fwrite("\x02\0\0", 1, 3, fp);
    fclose(fp);
    struct st_file f;
    cr_expect_eq(st_open(&f, path), -1);
    cr_expect(strstr(err_msg(), "too short") && strstr(err_msg(), path), "%s", err_msg());
    cr_expect_eq(st_open(&f, TMP "/st_does_not_exist.safetensors"), -1);
    cr_expect(strstr(err_msg(), "cannot open"), "%s", err_msg());
    cr_expect_eq(st_open(&f, TMP), -1, "a directory is not a safetensors file");
}

Test(safetensors, valid_edge_cases_are_accepted) {
    const char *path = TMP "/st_edge.safetensors";
    struct st_file f;
    // no tensors at all, trailing padding spaces, metadata, a zero-size tensor at the end
    write_raw(path, "{\"__metadata__\":{\"format\":\"pt\"}}     ", -1, 0);
    cr_assert_eq(st_open(&f, path), 0, "%s", err_msg());
    cr_expect_eq(f.n, 0);
    cr_expect_str_eq(st_metadata(&f, "format"), "pt");
    st_close(&f);
    write_raw(path, "{" E("b", "BF16", "[2,2]", 0, 8) "," E("a", "F16", "[0]", 8, 8) "}  ", -1, 8);
    cr_assert_eq(st_open(&f, path), 0, "%s", err_msg());
    cr_expect_eq(f.n, 2);
    cr_expect_eq(st_find(&f, "a")->dtype, ST_F16);
    cr_expect_eq(st_find(&f, "b")->dtype, ST_BF16);
    st_close(&f);
}

// A file that shrinks after it was opened: the read fails with a message, it does not crash.
Test(safetensors, short_read_after_open_is_an_error) {
    const char *path = TMP "/st_shrink.safetensors";
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = (float)i;
    struct st_write_tensor w = {"x", 1, {256}, x};
    cr_assert_eq(st_write(path, &w, 1, ST_BF16, NULL), 0);
    struct st_file f;
    cr_assert_eq(st_open(&f, path), 0);
    cr_assert_eq(truncate(path, (off_t)(f.file_size - 100)), 0);
    float out[256];
    cr_expect_eq(st_read_f32(&f, st_find(&f, "x"), out), -1);
    cr_expect(strstr(err_msg(), "short read") && strstr(err_msg(), path), "%s", err_msg());
    st_close(&f);
}

Test(safetensors, writer_refuses_bad_input_and_keeps_the_old_file) {
    const char *path = TMP "/st_keep.safetensors";
    float x[2] = {1, 2};
    struct st_write_tensor w[2] = {{"x", 1, {2}, x}, {"x", 1, {2}, x}};
    cr_assert_eq(st_write(path, w, 1, ST_F32, NULL), 0);
    cr_expect_eq(st_write(path, w, 2, ST_F32, NULL), -1, "duplicate names");
    cr_expect(strstr(err_msg(), "duplicate"), "%s", err_msg());
    cr_expect_eq(st_write(path, w, 1, ST_F32, "{\"format\":3}"), -1, "metadata values must be strings");
    cr_expect_eq(st_write(TMP "/no/such/dir/x.safetensors", w, 1, ST_F32, NULL), -1);
    struct st_file f;
    cr_assert_eq(st_open(&f, path), 0, "the first file is intact: %s", err_msg());
    cr_expect_eq(f.n, 1);
    st_close(&f);
}

// Random damage to a valid file (header bytes, the length field, truncation): st_open either refuses it
// with one line naming the file or accepts a header whose every tensor then reads in full. Never a crash.
Test(safetensors, random_corruptions_are_refused_or_read_never_crash) {
    const char *good = TMP "/st_fuzz_good.safetensors", *path = TMP "/st_fuzz.safetensors";
    float x[96];
    for (int i = 0; i < 96; i++) x[i] = (float)i / 7;
    struct st_write_tensor w[] = {{"a.weight", 2, {4, 8}, x}, {"b", 1, {32}, x + 32}, {"c.bias", 3, {2, 2, 8}, x + 64}};
    cr_assert_eq(st_write(good, w, 3, ST_BF16, "{\"format\":\"pt\"}"), 0);
    FILE *fp = fopen(good, "rb");
    unsigned char orig[4096];
    size_t size = fread(orig, 1, sizeof(orig), fp);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | orig[i];
    struct rng r;
    rng_seed(&r, 99);
    int opened = 0, refused = 0;
    static unsigned char buf[4096];
    static float out[1 << 16];
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, size);
        size_t n = size;
        int kind = (int)(rng_u64(&r) % 4);
        if (kind == 0 || kind == 3) {  // header bytes: digits, punctuation, anything
            int k = 1 + (int)(rng_u64(&r) % 3);
            const char alphabet[] = "0123456789{}[],:\" -eE.FBI";
            for (int j = 0; j < k; j++) {
                size_t at = 8 + rng_u64(&r) % hlen;
                buf[at] = rng_u64(&r) % 2 ? (unsigned char)alphabet[rng_u64(&r) % (sizeof(alphabet) - 1)]
                                          : (unsigned char)rng_u64(&r);
            }
        }
        if (kind == 1) {  // the length field
            uint64_t v = rng_u64(&r) % 3 ? hlen + (rng_u64(&r) % 33) - 16 : rng_u64(&r);
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
        }
        if (kind == 2 || kind == 3) n = rng_u64(&r) % (size + 1);  // truncated anywhere
        fp = fopen(path, "wb");
        fwrite(buf, 1, n, fp);
        fclose(fp);
        struct st_file f;
        if (st_open(&f, path) != 0) {
            refused++;
            cr_assert(!strncmp(err_msg(), path, strlen(path)) && !strchr(err_msg(), '\n'), "iteration %d: %s", it, err_msg());
            continue;
        }
        opened++;
        for (int i = 0; i < f.n; i++) {
            cr_assert_leq(st_numel(&f.t[i]), 1 << 16, "an accepted tensor fits in the file");
            cr_assert_eq(st_read_f32(&f, &f.t[i], out), 0, "iteration %d: accepted but unreadable: %s", it, err_msg());
        }
        st_close(&f);
    }
    cr_expect_gt(refused, 1000, "most damage must be caught (%d refused, %d opened)", refused, opened);
    cr_expect_gt(opened, 10, "some damage is harmless (a changed value in a name or the metadata)");
}
