// HDF5's error stack as one line of ours.
//
// HDF5 prints its whole error stack (16-40 "HDF5-DIAG" lines) on every failed call unless told not to.
// llamac reports each failure in one line naming the file and the cause (core/error.h), so printing is
// switched off once for the process (h5_silence, called before any HDF5 use), and a failing call's stack
// is turned into the cause: the operating system's message when HDF5 recorded an errno (ENOSPC, EDQUOT,
// EFBIG, EIO), else the innermost HDF5 description.
#pragma once
#include <stddef.h>

// Turns off HDF5's automatic error printing for this process (idempotent).
void h5_silence(void);
// The cause of the HDF5 call that just failed, in buf (empty stack: "unknown HDF5 error"). Returns buf.
const char *h5_cause(char *buf, size_t n);
