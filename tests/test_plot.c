// train/plot: the PNG is a valid file (signature, IHDR, every CRC, the zlib stream inflates to the rows
// PNG expects), the curves are drawn in their colors, and degenerate inputs (one point, flat curves,
// NaN/Inf, nothing at all) give a picture rather than a crash.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "train/plot.h"

#define TMP LLAMAC_TEST_TMP "/plot_"

struct image { int w, h; unsigned char *rgb; };  // rgb (h, w, 3)

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Reads and checks a PNG the way a strict decoder would; fills img with its pixels.
static void read_png(const char *path, struct image *img) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s was not written", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    cr_assert(fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    cr_assert(n > 8 && memcmp(b, sig, 8) == 0, "%s: bad PNG signature", path);
    long pos = 8;
    int chunks = 0, seen_end = 0;
    unsigned char *idat = NULL;
    size_t idat_n = 0;
    while (pos < n && !seen_end) {
        cr_assert(pos + 12 <= n, "%s: truncated chunk", path);
        uint32_t len = rd32(b + pos);
        cr_assert(pos + 12 + (long)len <= n, "%s: chunk runs past the end", path);
        const unsigned char *type = b + pos + 4, *data = b + pos + 8;
        uint32_t crc = (uint32_t)crc32(crc32(0L, type, 4), data, len);
        cr_assert_eq(crc, rd32(data + len), "%s: CRC of chunk %.4s is wrong", path, (const char *)type);
        if (chunks == 0) {
            cr_assert(!memcmp(type, "IHDR", 4) && len == 13, "%s: the first chunk must be a 13-byte IHDR", path);
            img->w = (int)rd32(data);
            img->h = (int)rd32(data + 4);
            cr_assert(data[8] == 8 && data[9] == 2 && data[10] == 0 && data[11] == 0 && data[12] == 0,
                      "%s: expected 8-bit RGB, deflate, no interlace", path);
        } else if (!memcmp(type, "IDAT", 4)) {
            idat = realloc(idat, idat_n + len);
            memcpy(idat + idat_n, data, len);
            idat_n += len;
        } else if (!memcmp(type, "IEND", 4)) {
            cr_assert(len == 0);
            seen_end = 1;
        }
        chunks++;
        pos += 12 + (long)len;
    }
    cr_assert(seen_end && pos == n, "%s: no IEND, or bytes after it", path);
    cr_assert(img->w == PLOT_WIDTH && img->h == PLOT_HEIGHT, "%s: size %dx%d", path, img->w, img->h);
    size_t row = (size_t)img->w * 3, want = (row + 1) * img->h;
    uLongf got = want + 16;  // room to notice a stream that inflates to more than it should
    unsigned char *raw = malloc(got);
    cr_assert_eq(uncompress(raw, &got, idat, idat_n), Z_OK, "%s: IDAT does not inflate", path);
    cr_assert_eq(got, want, "%s: inflated %lu bytes, expected width*height*3+height = %zu", path,
                 (unsigned long)got, want);
    img->rgb = malloc(row * img->h);
    for (int y = 0; y < img->h; y++) {
        cr_assert(raw[y * (row + 1)] <= 4, "%s: row %d has filter type %d", path, y, raw[y * (row + 1)]);
        cr_assert(raw[y * (row + 1)] == 0, "this reader only undoes filter 0, which the writer uses");
        memcpy(img->rgb + y * row, raw + y * (row + 1) + 1, row);
    }
    free(raw); free(idat); free(b);
}

// Pixels of exactly this color, and the rows they span.
static long count_color(const struct image *img, int r, int g, int b, int *ymin, int *ymax) {
    long k = 0;
    *ymin = img->h;
    *ymax = -1;
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            const unsigned char *p = img->rgb + ((size_t)y * img->w + x) * 3;
            if (p[0] == r && p[1] == g && p[2] == b) {
                k++;
                if (y < *ymin) *ymin = y;
                if (y > *ymax) *ymax = y;
            }
        }
    return k;
}

static long count_train(const struct image *img, int *ymin, int *ymax) { return count_color(img, 31, 119, 180, ymin, ymax); }
static long count_val(const struct image *img, int *ymin, int *ymax) { return count_color(img, 255, 127, 14, ymin, ymax); }

Test(plot, writes_a_valid_png_with_both_curves) {
    enum { N = 500, NV = 10 };
    double x[N], y[N], vx[NV], vy[NV];
    for (int i = 0; i < N; i++) { x[i] = i + 1; y[i] = 2 + 8 * exp(-i / 80.0) + 0.05 * sin(i * 0.7); }
    for (int i = 0; i < NV; i++) { vx[i] = 50 * (i + 1); vy[i] = 2.1 + 8 * exp(-vx[i] / 80.0); }
    const char *path = TMP "both.png";
    cr_assert(plot_loss_png(path, x, y, N, vx, vy, NV, "tiny-1m: loss") == 0, "%s", err_msg());
    cr_expect(access(TMP "both.png.tmp", F_OK) != 0, "the temporary file must be renamed away");
    struct image img;
    read_png(path, &img);
    int y0, y1, v0, v1, w0, w1;
    long train_px = count_train(&img, &y0, &y1), val_px = count_val(&img, &v0, &v1);
    cr_expect(train_px > 500, "train line: %ld pixels of its blue", train_px);
    cr_expect(val_px > 100, "validation line: %ld pixels of its orange", val_px);
    // the training curve spans most of the plot's height (from loss 10 down to 2)
    cr_expect(y1 - y0 > PLOT_HEIGHT / 2, "train line spans rows %d..%d", y0, y1);
    long white = count_color(&img, 255, 255, 255, &w0, &w1);
    cr_expect(white > (long)PLOT_WIDTH * PLOT_HEIGHT / 2, "the background is white (%ld white pixels)", white);
    long grid = count_color(&img, 225, 225, 225, &w0, &w1), axis = count_color(&img, 60, 60, 60, &w0, &w1);
    cr_expect(grid > 1000 && axis > 1000, "grid %ld and axis %ld pixels", grid, axis);
    free(img.rgb);
}

Test(plot, degenerate_inputs_still_give_a_picture) {
    struct image img;
    int a, b;
    double one_x = 7, one_y = 3.5;
    cr_assert(plot_loss_png(TMP "one.png", &one_x, &one_y, 1, NULL, NULL, 0, "one point") == 0, "%s", err_msg());
    read_png(TMP "one.png", &img);
    cr_expect(count_train(&img, &a, &b) > 5, "a single point is drawn as a dot");
    free(img.rgb);

    double fx[4] = {1, 2, 3, 4}, fy[4] = {2, 2, 2, 2};
    cr_assert(plot_loss_png(TMP "flat.png", fx, fy, 4, fx, fy, 4, NULL) == 0, "%s", err_msg());
    read_png(TMP "flat.png", &img);
    cr_expect(count_train(&img, &a, &b) + count_val(&img, &a, &b) > 50, "a flat curve is drawn");
    free(img.rgb);

    cr_assert(plot_loss_png(TMP "empty.png", NULL, NULL, 0, NULL, NULL, 0, "no points yet") == 0, "%s", err_msg());
    read_png(TMP "empty.png", &img);
    cr_expect(count_train(&img, &a, &b) == 0 && count_val(&img, &a, &b) == 0, "no series, no curve colors");
    free(img.rgb);

    double nx[3] = {1, 2, 3}, ny[3] = {NAN, NAN, NAN};
    cr_assert(plot_loss_png(TMP "allnan.png", nx, ny, 3, nx, ny, 3, "all NaN") == 0, "%s", err_msg());
    read_png(TMP "allnan.png", &img);
    cr_expect(count_train(&img, &a, &b) == 0, "NaN points are not drawn");
    free(img.rgb);
}

Test(plot, nonfinite_points_are_skipped_without_stretching_the_axes) {
    enum { N = 200 };
    double x[N], y[N];
    for (int i = 0; i < N; i++) { x[i] = i; y[i] = 4 - 2.0 * i / N; }
    y[50] = NAN;
    y[51] = INFINITY;
    y[120] = -INFINITY;
    x[150] = NAN;
    cr_assert(plot_loss_png(TMP "nan.png", x, y, N, NULL, NULL, 0, "NaN in the middle") == 0, "%s", err_msg());
    struct image img;
    read_png(TMP "nan.png", &img);
    int y0, y1;
    cr_expect(count_train(&img, &y0, &y1) > 300);
    // had the Inf counted, the finite points would collapse onto one row
    cr_expect(y1 - y0 > PLOT_HEIGHT / 2, "the finite points span rows %d..%d", y0, y1);
    free(img.rgb);
}

Test(plot, long_runs_are_fast_and_keep_the_band) {
    enum { N = 400000 };
    double *x = malloc(N * sizeof(double)), *y = malloc(N * sizeof(double));
    for (int i = 0; i < N; i++) { x[i] = i; y[i] = 3 + ((i * 2654435761u) >> 16 & 1023) / 1023.0; }  // noise in [3, 4]
    cr_assert(plot_loss_png(TMP "long.png", x, y, N, NULL, NULL, 0, "400k steps") == 0, "%s", err_msg());
    struct image img;
    read_png(TMP "long.png", &img);
    int y0, y1;
    long k = count_train(&img, &y0, &y1);
    cr_expect(k > (long)PLOT_WIDTH * PLOT_HEIGHT / 4, "the noise band is filled (%ld pixels)", k);
    free(img.rgb); free(x); free(y);
}

Test(plot, bad_arguments_and_unwritable_paths_are_errors) {
    double x = 1, y = 1;
    cr_expect(plot_loss_png(TMP "neg.png", &x, &y, -1, NULL, NULL, 0, NULL) == -1);
    cr_expect(strstr(err_msg(), "negative") != NULL, "%s", err_msg());
    cr_expect(plot_loss_png(TMP "null.png", NULL, &y, 1, NULL, NULL, 0, NULL) == -1);
    const char *bad = LLAMAC_TEST_TMP "/no_such_dir/loss.png";
    cr_expect(plot_loss_png(bad, &x, &y, 1, NULL, NULL, 0, NULL) == -1);
    cr_expect(strstr(err_msg(), "no_such_dir/loss.png") != NULL && strchr(err_msg(), '\n') == NULL,
              "one line naming the file: %s", err_msg());
}
