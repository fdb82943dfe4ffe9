// Loss curves as a PNG a person can open: run_dir/loss.png, redrawn by the trainer after each eval.
//
// One linear chart: x = step, y = loss; the training loss as a blue line, the validation loss as an
// orange line with a marker at each point, a legend, a gray grid at "nice" ticks (1, 2, 5 x 10^k) with
// labels, and a title. Points whose x or y is NaN/Inf are skipped and break the line. Long runs are
// drawn through a per-pixel-column min/max reduction, so a million noisy points cost about as much as a
// thousand and still show the whole band.
//
// Self-contained: a built-in 5x7 bitmap font (printable ASCII) and a PNG encoder over zlib. The file
// is written to PATH.tmp and renamed, so a reader never sees half a picture.
#pragma once

enum { PLOT_WIDTH = 960, PLOT_HEIGHT = 600 };

// Draws the curves (either may be empty: n = 0, pointers may then be NULL); title may be NULL.
// Returns -1 with err_set when the counts are negative or the file cannot be written.
int plot_loss_png(const char *path, const double *train_x, const double *train_y, int n_train,
                  const double *val_x, const double *val_y, int n_val, const char *title);

// An 8-bit RGB image (pixels: h rows of w*3 bytes) as a PNG file, via PATH.tmp and rename. -1 with
// err_set on an I/O error.
int png_write_rgb(const char *path, const unsigned char *pixels, int w, int h);
