// Loss curves to PNG (see plot.h): a canvas, a bitmap font, anti-aliased lines, nice ticks, and a
// PNG encoder. Drawing order: background, grid, curves, axes box, tick labels, legend, title.
#include "train/plot.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fs.h"

// ---------------------------------------------------------------------------------------------------
// Canvas
// ---------------------------------------------------------------------------------------------------

struct rgb { unsigned char r, g, b; };

static const struct rgb COL_BG = {255, 255, 255};
static const struct rgb COL_GRID = {225, 225, 225};
static const struct rgb COL_AXIS = {60, 60, 60};
static const struct rgb COL_TEXT = {30, 30, 30};
static const struct rgb COL_TRAIN = {31, 119, 180};   // matplotlib's tab:blue
static const struct rgb COL_VAL = {255, 127, 14};     // tab:orange
static const struct rgb COL_LEGEND_EDGE = {190, 190, 190};

struct canvas {
    int w, h;
    unsigned char *px;  // (h, w, 3)
};

static void put(struct canvas *c, int x, int y, struct rgb col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    unsigned char *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = col.r; p[1] = col.g; p[2] = col.b;
}

// Mixes col into the pixel with weight a in [0, 1].
static void blend(struct canvas *c, int x, int y, struct rgb col, float a) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || a <= 0) return;
    if (a >= 1) { put(c, x, y, col); return; }
    unsigned char *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = (unsigned char)lrintf(p[0] + (col.r - p[0]) * a);
    p[1] = (unsigned char)lrintf(p[1] + (col.g - p[1]) * a);
    p[2] = (unsigned char)lrintf(p[2] + (col.b - p[2]) * a);
}

static void fill_rect(struct canvas *c, int x0, int y0, int x1, int y1, struct rgb col) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(c, x, y, col);
}

static void hline(struct canvas *c, int x0, int x1, int y, struct rgb col) { fill_rect(c, x0, y, x1, y, col); }
static void vline(struct canvas *c, int x, int y0, int y1, struct rgb col) { fill_rect(c, x, y0, x, y1, col); }

// ---------------------------------------------------------------------------------------------------
// Font: printable ASCII 32..126, 5 columns of 8 bits each (bit 0 the top row, rows 7 for descenders)
// ---------------------------------------------------------------------------------------------------

static const unsigned char FONT5X8[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00}, // space ! "
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62}, // # $ %
    {0x36, 0x49, 0x56, 0x20, 0x50}, {0x00, 0x00, 0x07, 0x00, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00}, // & ' (
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x2A, 0x1C, 0x7F, 0x1C, 0x2A}, {0x08, 0x08, 0x3E, 0x08, 0x08}, // ) * +
    {0x00, 0x80, 0x70, 0x30, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x00, 0x60, 0x60, 0x00}, // , - .
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00}, // / 0 1
    {0x72, 0x49, 0x49, 0x49, 0x46}, {0x21, 0x41, 0x49, 0x4D, 0x33}, {0x18, 0x14, 0x12, 0x7F, 0x10}, // 2 3 4
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x31}, {0x41, 0x21, 0x11, 0x09, 0x07}, // 5 6 7
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x46, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x00, 0x14, 0x00, 0x00}, // 8 9 :
    {0x00, 0x40, 0x34, 0x00, 0x00}, {0x00, 0x08, 0x14, 0x22, 0x41}, {0x14, 0x14, 0x14, 0x14, 0x14}, // ; < =
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x59, 0x09, 0x06}, {0x3E, 0x41, 0x5D, 0x59, 0x4E}, // > ? @
    {0x7C, 0x12, 0x11, 0x12, 0x7C}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22}, // A B C
    {0x7F, 0x41, 0x41, 0x41, 0x3E}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x09, 0x01}, // D E F
    {0x3E, 0x41, 0x41, 0x51, 0x73}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00}, // G H I
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40}, // J K L
    {0x7F, 0x02, 0x1C, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E}, // M N O
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46}, // P Q R
    {0x26, 0x49, 0x49, 0x49, 0x32}, {0x03, 0x01, 0x7F, 0x01, 0x03}, {0x3F, 0x40, 0x40, 0x40, 0x3F}, // S T U
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, {0x63, 0x14, 0x08, 0x14, 0x63}, // V W X
    {0x03, 0x04, 0x78, 0x04, 0x03}, {0x61, 0x59, 0x49, 0x4D, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x41}, // Y Z [
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x41, 0x7F}, {0x04, 0x02, 0x01, 0x02, 0x04}, // \ ] ^
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78}, // _ ` a
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x28}, {0x38, 0x44, 0x44, 0x48, 0x7F}, // b c d
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x18, 0xA4, 0xA4, 0xA4, 0x7C}, // e f g
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x40, 0x80, 0x84, 0x7D, 0x00}, // h i j
    {0x7F, 0x10, 0x28, 0x44, 0x00}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78}, // k l m
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0xFC, 0x24, 0x24, 0x24, 0x18}, // n o p
    {0x18, 0x24, 0x24, 0x24, 0xFC}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x24}, // q r s
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C}, // t u v
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x1C, 0xA0, 0xA0, 0xA0, 0x7C}, // w x y
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x7F, 0x00, 0x00}, // z { |
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x08, 0x04, 0x08, 0x10, 0x08},                                  // } ~
};

enum { GLYPH_W = 5, GLYPH_H = 8, GLYPH_ADVANCE = 6 };

static int text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (n * GLYPH_ADVANCE - 1) * scale : 0;
}

// Draws s with its top-left corner at (x, y); characters outside printable ASCII show as '?'.
static void draw_text(struct canvas *c, int x, int y, const char *s, int scale, struct rgb col) {
    for (; *s; s++, x += GLYPH_ADVANCE * scale) {
        unsigned ch = (unsigned char)*s;
        const unsigned char *g = FONT5X8[(ch >= 32 && ch <= 126 ? ch : '?') - 32];
        for (int cx = 0; cx < GLYPH_W; cx++)
            for (int cy = 0; cy < GLYPH_H; cy++)
                if (g[cx] >> cy & 1) fill_rect(c, x + cx * scale, y + cy * scale, x + cx * scale + scale - 1,
                                               y + cy * scale + scale - 1, col);
    }
}

// ---------------------------------------------------------------------------------------------------
// Anti-aliased strokes: each series draws into a coverage mask (the max over its segments, so joints
// are not darkened twice), which is then blended onto the canvas in the series' color.
// ---------------------------------------------------------------------------------------------------

struct mask {
    int x0, y0, x1, y1;  // the clip rectangle (the plot area), inclusive
    int w;
    float *a;            // (y1-y0+1, w)
};

static void mask_stamp(struct mask *m, int x, int y, float a) {
    if (x < m->x0 || x > m->x1 || y < m->y0 || y > m->y1) return;
    float *p = &m->a[(size_t)(y - m->y0) * m->w + (x - m->x0)];
    if (a > *p) *p = a > 1 ? 1 : a;
}

// A segment of width `width` from (ax, ay) to (bx, by) in pixel coordinates (pixel centers at integers).
static void mask_segment(struct mask *m, double ax, double ay, double bx, double by, double width) {
    double r = width / 2;
    int x0 = (int)floor(fmin(ax, bx) - r - 1), x1 = (int)ceil(fmax(ax, bx) + r + 1);
    int y0 = (int)floor(fmin(ay, by) - r - 1), y1 = (int)ceil(fmax(ay, by) + r + 1);
    if (x0 < m->x0) x0 = m->x0;
    if (x1 > m->x1) x1 = m->x1;
    if (y0 < m->y0) y0 = m->y0;
    if (y1 > m->y1) y1 = m->y1;
    double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double t = len2 > 0 ? ((x - ax) * dx + (y - ay) * dy) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = x - (ax + t * dx), ey = y - (ay + t * dy);
            double d = sqrt(ex * ex + ey * ey);
            mask_stamp(m, x, y, (float)(r + 0.5 - d));
        }
}

static void mask_apply(struct canvas *c, struct mask *m, struct rgb col) {
    for (int y = m->y0; y <= m->y1; y++)
        for (int x = m->x0; x <= m->x1; x++) blend(c, x, y, col, m->a[(size_t)(y - m->y0) * m->w + (x - m->x0)]);
}

// ---------------------------------------------------------------------------------------------------
// Axes: data ranges and nice ticks
// ---------------------------------------------------------------------------------------------------

struct range { double lo, hi; int any; };

static void range_add(struct range *r, const double *x, int n) {
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        if (!r->any || x[i] < r->lo) r->lo = x[i];
        if (!r->any || x[i] > r->hi) r->hi = x[i];
        r->any = 1;
    }
}

// Widens an empty or zero-width range, then pads it by `pad` of its width on each side.
static void range_finish(struct range *r, double pad) {
    if (!r->any) { r->lo = 0; r->hi = 1; }
    if (r->hi - r->lo <= 1e-12 * fmax(fabs(r->lo), fabs(r->hi))) {
        double d = r->lo != 0 ? 0.1 * fabs(r->lo) : 1.0;
        r->lo -= d;
        r->hi += d;
    }
    double w = r->hi - r->lo;
    r->lo -= pad * w;
    r->hi += pad * w;
}

// The 1, 2 or 5 x 10^k step that puts about `target` ticks across [lo, hi].
static double nice_step(double lo, double hi, int target) {
    double raw = (hi - lo) / target, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

// Tick label of v for ticks `step` apart: as few decimals as the step needs; steps of 1000s as "k",
// millions as "M" (x axes of long runs).
static void tick_label(char *out, size_t n, double v, double step) {
    if (fabs(v) < 1e-9 * step) {  // no "-0" or "0k"
        snprintf(out, n, "0");
        return;
    }
    double div = 1;
    const char *unit = "";
    if (step >= 1e6 && fmod(step, 1e5) == 0) { div = 1e6; unit = "M"; }
    else if (step >= 1e3 && fmod(step, 1e2) == 0) { div = 1e3; unit = "k"; }
    double s = step / div;
    int dec = s >= 1 ? 0 : (int)ceil(-log10(s) - 1e-9);
    if (dec > 0 && fabs(s * pow(10, dec) - round(s * pow(10, dec))) > 1e-6) dec++;  // 0.25-style steps
    if (dec > 10) dec = 10;
    snprintf(out, n, "%.*f%s", dec, v / div, unit);
}

struct axes {
    int x0, y0, x1, y1;  // plot area in pixels, inclusive
    struct range xr, yr;
};

static double px_x(const struct axes *a, double x) { return a->x0 + (x - a->xr.lo) / (a->xr.hi - a->xr.lo) * (a->x1 - a->x0); }
static double px_y(const struct axes *a, double y) { return a->y1 - (y - a->yr.lo) / (a->yr.hi - a->yr.lo) * (a->y1 - a->y0); }

// ---------------------------------------------------------------------------------------------------
// Series
// ---------------------------------------------------------------------------------------------------

static int finite_pt(const double *x, const double *y, int i) { return isfinite(x[i]) && isfinite(y[i]); }

// The line through the finite points of a series, broken at non-finite ones. When there are many more
// points than pixel columns, each column's run of points is reduced to its vertical extent, joined to
// the next column's first point: the same picture at a cost bounded by the image size.
static void draw_series_line(struct mask *m, const struct axes *a, const double *x, const double *y, int n,
                             double width) {
    int many = n > 2 * (a->x1 - a->x0 + 1);
    int have_prev = 0, have_col = 0;
    double px = 0, py = 0;             // previous point drawn
    long col = 0;
    double col_last = 0, col_min = 0, col_max = 0;
    for (int i = 0; i < n; i++) {
        if (!finite_pt(x, y, i)) {
            if (have_col) mask_segment(m, (double)col, col_min, (double)col, col_max, width);
            have_prev = have_col = 0;
            continue;
        }
        double qx = px_x(a, x[i]), qy = px_y(a, y[i]);
        if (!many) {
            if (have_prev) mask_segment(m, px, py, qx, qy, width);
            px = qx; py = qy; have_prev = 1;
            continue;
        }
        long c = lround(qx);
        if (have_col && c == col) {
            col_last = qy;
            col_min = fmin(col_min, qy);
            col_max = fmax(col_max, qy);
            continue;
        }
        if (have_col) {
            mask_segment(m, (double)col, col_min, (double)col, col_max, width);
            mask_segment(m, (double)col, col_last, (double)c, qy, width);
        }
        col = c; col_last = col_min = col_max = qy; have_col = 1;
    }
    if (have_col) mask_segment(m, (double)col, col_min, (double)col, col_max, width);
}

// A dot at every finite point (markers), or only at points with no finite neighbour (which a line
// would not show).
static void draw_series_dots(struct mask *m, const struct axes *a, const double *x, const double *y, int n,
                             double diameter, int isolated_only) {
    for (int i = 0; i < n; i++) {
        if (!finite_pt(x, y, i)) continue;
        if (isolated_only && ((i > 0 && finite_pt(x, y, i - 1)) || (i + 1 < n && finite_pt(x, y, i + 1)))) continue;
        double qx = px_x(a, x[i]), qy = px_y(a, y[i]);
        mask_segment(m, qx, qy, qx, qy, diameter);
    }
}

static int all_integers(const double *x, const double *y, int n) {
    for (int i = 0; i < n; i++)
        if (finite_pt(x, y, i) && x[i] != floor(x[i])) return 0;
    return 1;
}

static int count_finite(const double *x, const double *y, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += finite_pt(x, y, i);
    return k;
}

// ---------------------------------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------------------------------

enum { FONT_SCALE = 2, TICK_LEN = 5, MAX_TICKS = 64 };

static int ticks_of(double *t, const struct range *r, double step) {
    int k = 0;
    for (double v = ceil(r->lo / step - 1e-9) * step; v <= r->hi + 1e-9 * step && k < MAX_TICKS; v += step)
        t[k++] = v;
    return k;
}

int plot_loss_png(const char *path, const double *train_x, const double *train_y, int n_train,
                  const double *val_x, const double *val_y, int n_val, const char *title) {
    if (n_train < 0 || n_val < 0)
        return err_set("%s: plot: negative point counts (train %d, validation %d)", path, n_train, n_val);
    if ((n_train > 0 && (!train_x || !train_y)) || (n_val > 0 && (!val_x || !val_y)))
        return err_set("%s: plot: points given without their x or y values", path);

    struct canvas c = {PLOT_WIDTH, PLOT_HEIGHT, xmalloc((size_t)PLOT_WIDTH * PLOT_HEIGHT * 3)};
    memset(c.px, 255, (size_t)c.w * c.h * 3);

    // Ranges over the finite points of both series: x padded 2%, y 5% (curves never touch the frame).
    struct axes a = {0};
    for (int i = 0; i < n_train; i++)
        if (finite_pt(train_x, train_y, i)) { range_add(&a.xr, &train_x[i], 1); range_add(&a.yr, &train_y[i], 1); }
    for (int i = 0; i < n_val; i++)
        if (finite_pt(val_x, val_y, i)) { range_add(&a.xr, &val_x[i], 1); range_add(&a.yr, &val_y[i], 1); }
    range_finish(&a.xr, 0.02);
    range_finish(&a.yr, 0.05);

    double xt[MAX_TICKS], yt[MAX_TICKS];
    double xstep = nice_step(a.xr.lo, a.xr.hi, 8), ystep = nice_step(a.yr.lo, a.yr.hi, 6);
    if (xstep < 1 && all_integers(train_x, train_y, n_train) && all_integers(val_x, val_y, n_val))
        xstep = 1;  // steps are whole numbers: no ticks at step 4.5
    int nxt = ticks_of(xt, &a.xr, xstep), nyt = ticks_of(yt, &a.yr, ystep);
    char label[64];
    int label_w = 0;
    for (int i = 0; i < nyt; i++) {
        tick_label(label, sizeof label, yt[i], ystep);
        int w = text_width(label, FONT_SCALE);
        if (w > label_w) label_w = w;
    }
    const int char_h = 7 * FONT_SCALE;  // cap height (rows 0..6)
    a.x0 = 16 + label_w + 8 + TICK_LEN;
    a.x1 = c.w - 28;
    a.y0 = title && title[0] ? 58 : 34;
    a.y1 = c.h - (12 + char_h + 10 + char_h + 16);

    // Grid
    for (int i = 0; i < nxt; i++) vline(&c, (int)lround(px_x(&a, xt[i])), a.y0, a.y1, COL_GRID);
    for (int i = 0; i < nyt; i++) hline(&c, a.x0, a.x1, (int)lround(px_y(&a, yt[i])), COL_GRID);

    // Curves: training first, validation over it.
    struct mask m = {a.x0, a.y0, a.x1, a.y1, a.x1 - a.x0 + 1, NULL};
    size_t mask_n = (size_t)m.w * (a.y1 - a.y0 + 1);
    m.a = xcalloc(mask_n, sizeof(float));
    int n_train_ok = count_finite(train_x, train_y, n_train), n_val_ok = count_finite(val_x, val_y, n_val);
    if (n_train_ok) {
        draw_series_line(&m, &a, train_x, train_y, n_train, 2.0);
        draw_series_dots(&m, &a, train_x, train_y, n_train, 6.0, 1);
        mask_apply(&c, &m, COL_TRAIN);
    }
    if (n_val_ok) {
        memset(m.a, 0, mask_n * sizeof(float));
        draw_series_line(&m, &a, val_x, val_y, n_val, 2.5);
        draw_series_dots(&m, &a, val_x, val_y, n_val, 7.0, n_val_ok > 100);
        mask_apply(&c, &m, COL_VAL);
    }
    free(m.a);

    // Axes box, ticks and their labels
    hline(&c, a.x0, a.x1, a.y0, COL_AXIS);
    hline(&c, a.x0, a.x1, a.y1, COL_AXIS);
    vline(&c, a.x0, a.y0, a.y1, COL_AXIS);
    vline(&c, a.x1, a.y0, a.y1, COL_AXIS);
    for (int i = 0; i < nxt; i++) {
        int x = (int)lround(px_x(&a, xt[i]));
        vline(&c, x, a.y1, a.y1 + TICK_LEN, COL_AXIS);
        tick_label(label, sizeof label, xt[i], xstep);
        draw_text(&c, x - text_width(label, FONT_SCALE) / 2, a.y1 + TICK_LEN + 6, label, FONT_SCALE, COL_TEXT);
    }
    for (int i = 0; i < nyt; i++) {
        int y = (int)lround(px_y(&a, yt[i]));
        hline(&c, a.x0 - TICK_LEN, a.x0, y, COL_AXIS);
        tick_label(label, sizeof label, yt[i], ystep);
        draw_text(&c, a.x0 - TICK_LEN - 6 - text_width(label, FONT_SCALE), y - char_h / 2, label, FONT_SCALE,
                  COL_TEXT);
    }
    draw_text(&c, (a.x0 + a.x1 - text_width("step", FONT_SCALE)) / 2, a.y1 + TICK_LEN + 6 + char_h + 12, "step",
              FONT_SCALE, COL_TEXT);
    draw_text(&c, a.x0, a.y0 - char_h - 8, "loss", FONT_SCALE, COL_TEXT);

    // Legend, top right inside the plot (loss curves fall from the top left)
    const char *names[2] = {"train", "validation"};
    struct rgb cols[2] = {COL_TRAIN, COL_VAL};
    int shown[2] = {n_train_ok > 0, n_val_ok > 0}, rows = shown[0] + shown[1];
    if (rows) {
        int sample = 28, pad = 10, row_h = char_h + 10;
        int lw = pad + sample + 8 + text_width("validation", FONT_SCALE) + pad, lh = pad * 2 + rows * row_h - 10;
        int lx = a.x1 - 12 - lw, ly = a.y0 + 12;
        fill_rect(&c, lx, ly, lx + lw, ly + lh, COL_BG);
        hline(&c, lx, lx + lw, ly, COL_LEGEND_EDGE);
        hline(&c, lx, lx + lw, ly + lh, COL_LEGEND_EDGE);
        vline(&c, lx, ly, ly + lh, COL_LEGEND_EDGE);
        vline(&c, lx + lw, ly, ly + lh, COL_LEGEND_EDGE);
        int y = ly + pad;
        for (int k = 0; k < 2; k++) {
            if (!shown[k]) continue;
            fill_rect(&c, lx + pad, y + char_h / 2 - 1, lx + pad + sample, y + char_h / 2 + 1, cols[k]);
            draw_text(&c, lx + pad + sample + 8, y, names[k], FONT_SCALE, COL_TEXT);
            y += row_h;
        }
    }

    // Title, centered, drawn twice one pixel apart for weight
    if (title && title[0]) {
        int tw = text_width(title, FONT_SCALE) + 1;
        int tx = (c.w - tw) / 2;
        if (tx < 4) tx = 4;
        draw_text(&c, tx, 16, title, FONT_SCALE, COL_TEXT);
        draw_text(&c, tx + 1, 16, title, FONT_SCALE, COL_TEXT);
    }

    int rc = png_write_rgb(path, c.px, c.w, c.h);
    free(c.px);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// PNG: signature, IHDR (8-bit RGB, no interlace), one IDAT (zlib stream of rows, each led by filter
// byte 0), IEND; every chunk is length (big-endian), type, data, CRC-32 of type and data.
// ---------------------------------------------------------------------------------------------------

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static int png_chunk(FILE *f, const char *type, const unsigned char *data, uint32_t n) {
    unsigned char head[8], tail[4];
    be32(head, n);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, n);
    be32(tail, (uint32_t)crc);
    return fwrite(head, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

int png_write_rgb(const char *path, const unsigned char *pixels, int w, int h) {
    CHECK(w > 0 && h > 0);
    size_t row = (size_t)w * 3, raw_n = (row + 1) * h;
    unsigned char *raw = xmalloc(raw_n);
    for (int y = 0; y < h; y++) {
        raw[y * (row + 1)] = 0;
        memcpy(raw + y * (row + 1) + 1, pixels + y * row, row);
    }
    uLongf z_n = compressBound(raw_n);
    unsigned char *z = xmalloc(z_n);
    int zrc = compress2(z, &z_n, raw, raw_n, Z_DEFAULT_COMPRESSION);
    free(raw);
    CHECKF(zrc == Z_OK, "zlib compress2 failed (%d)", zrc);

    unsigned char ihdr[13];
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;   // bit depth
    ihdr[9] = 2;   // color type: RGB
    ihdr[10] = 0;  // compression: deflate
    ihdr[11] = 0;  // filter method 0
    ihdr[12] = 0;  // no interlace
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

    char *tmp = fs_printf("%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(z);
        err_set("%s: cannot write the plot: %s", tmp, strerror(e));
        free(tmp);
        return -1;
    }
    int ok = fwrite(sig, 1, 8, f) == 8 && png_chunk(f, "IHDR", ihdr, 13) &&
             png_chunk(f, "IDAT", z, (uint32_t)z_n) && png_chunk(f, "IEND", NULL, 0);
    int e = errno;
    free(z);
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    int rc;
    if (!ok) {
        remove(tmp);
        rc = err_set("%s: cannot write the plot: %s", tmp, strerror(e));
    } else {
        rc = fs_publish(tmp, path);
    }
    free(tmp);
    return rc;
}
