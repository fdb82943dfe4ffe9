// SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g). gate and up come from one fused matmul whose
// output row is [gate (F) | up (F)].
#include <math.h>

#include "model/ops/cpu/cpu.h"

// out (BT,F), gateup (BT,2F)
void swiglu_forward_cpu(const struct backend *be, dbuf *out_, const dbuf *gateup_, int BT, int F) {
    float *out = F32(out_);
    const float *gu = CF32(gateup_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *g = gu + (size_t)i * 2 * F, *u = g + F;
        float *o = out + (size_t)i * F;
#pragma omp simd
        for (int f = 0; f < F; f++) o[f] = g[f] / (1.0f + expf(-g[f])) * u[f];
    }
}

// dgateup (BT,2F) =: dgate = dout * up * sig(g) * (1 + g (1 - sig(g))), dup = dout * silu(g)
void swiglu_backward_cpu(const struct backend *be, dbuf *dgateup_, const dbuf *dout_, const dbuf *gateup_, int BT, int F) {
    float *dgu = F32(dgateup_);
    const float *dout = CF32(dout_), *gu = CF32(gateup_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *g = gu + (size_t)i * 2 * F, *u = g + F, *d = dout + (size_t)i * F;
        float *dg = dgu + (size_t)i * 2 * F, *du = dg + F;
#pragma omp simd
        for (int f = 0; f < F; f++) {
            float s = 1.0f / (1.0f + expf(-g[f]));
            float gf = g[f], uf = u[f], df = d[f];  // read before write: dgateup may alias gateup
            dg[f] = df * uf * s * (1.0f + gf * (1.0f - s));
            du[f] = df * gf * s;
        }
    }
}
