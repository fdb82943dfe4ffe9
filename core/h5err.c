// See h5err.h.
#include "core/h5err.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h5_silence(void) {
    static int done;
    if (done) return;
    done = 1;
    // No clean-up at exit: a checkpoint whose writes failed (EIO, a quota) cannot be closed, and HDF5's
    // atexit handler would try again after MPI_Finalize, inside a finalized MPI, and crash. Every file
    // llamac opens is closed explicitly, so the handler has nothing else to do. Must come before H5open.
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

struct cause { char innermost[256]; char os[256]; int have; };

static herr_t walk(unsigned n, const H5E_error2_t *e, void *user) {
    struct cause *c = user;
    const char *d = e->desc ? e->desc : "";
    if (!c->have && d[0]) {
        snprintf(c->innermost, sizeof(c->innermost), "%s", d);
        c->have = 1;
    }
    // the POSIX and MPI-IO drivers record "..., errno = 28, error message = 'No space left on device', ..."
    const char *m = strstr(d, "error message = '");
    if (!c->os[0] && m) {
        m += 17;
        size_t k = strcspn(m, "'");
        snprintf(c->os, sizeof(c->os), "%.*s", (int)k, m);
    }
    const char *mpi = strstr(d, "MPI error string is '");
    if (!c->os[0] && mpi) {
        mpi += 21;
        snprintf(c->os, sizeof(c->os), "%.*s", (int)strcspn(mpi, "'"), mpi);
    }
    (void)n;
    return 0;
}

const char *h5_cause(char *buf, size_t n) {
    struct cause c = {{0}, {0}, 0};
    hid_t st = H5Eget_current_stack();
    if (st >= 0) {
        H5Ewalk2(st, H5E_WALK_UPWARD, walk, &c);
        H5Eclose_stack(st);
    }
    const char *s = c.os[0] ? c.os : c.have ? c.innermost : "unknown HDF5 error";
    snprintf(buf, n, "%s", s);
    for (char *p = buf; *p; p++)  // one line, printable
        if ((unsigned char)*p < 0x20) *p = ' ';
    return buf;
}
