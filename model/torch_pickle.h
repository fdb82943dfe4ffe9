// torch.save files (such as Meta's consolidated.NN.pth) read without Python and without running the
// pickle: a zip archive (model/zip.h) holding PREFIX/data.pkl, the pickled state dict, and one entry
// PREFIX/data/KEY per tensor storage (raw little-endian elements).
//
// data.pkl is parsed by a restricted unpickler that builds values instead of calling anything. It
// accepts the opcodes of protocols 2 to 5 that a state dict uses (containers, strings, integers, floats,
// None/booleans, memo, MARK/TUPLE, REDUCE, BUILD, BINPERSID, SETITEM(S), APPEND(S)) and only these
// globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.<T>Storage. REDUCE may
// apply only OrderedDict (to no arguments) and _rebuild_tensor_v2 (storage, offset, size, stride,
// requires_grad, hooks[, metadata]); BUILD may set only a dict's state (the _metadata torch attaches),
// which is ignored; BINPERSID accepts only ('storage', torch.<T>Storage, KEY, LOCATION, NUMEL). Any
// other global is refused when the GLOBAL/STACK_GLOBAL opcode names it, before anything could use it:
// "PATH: pickle global 'os.system' is not allowed ...". The result must be a dict of name -> tensor.
//
// Tensors must be contiguous row-major (strides of size-1 dimensions are free), lie inside their
// storage, and have dtype float32, float16 or bfloat16 (other storages are named and refused); the
// storage entry must hold exactly NUMEL elements.
#pragma once
#include <stdint.h>

#include "model/safetensors.h"  // enum st_dtype
#include "model/zip.h"

#define PTH_MAX_NDIM 4
#define PTH_MAX_PICKLE (64u << 20)  // data.pkl of a 70B shard is well under 1 MB
#define PTH_MAX_VALUES 4000000     // values the unpickler may build (about 20 per tensor are needed)

struct pth_tensor {
    char name[128];
    enum st_dtype dtype;
    int ndim;
    int64_t shape[PTH_MAX_NDIM];
    uint64_t offset;                  // in elements, into the storage
    const struct zip_entry *storage;  // PREFIX/data/KEY; holds storage_numel elements
    uint64_t storage_numel;
};

struct pth_file {
    struct zip_file z;
    int n;
    struct pth_tensor *t;  // (n) in the order of the state dict
    int *by_name;          // (n) indices sorted by name
};

// Opens PATH, validates the archive, unpickles the state dict and checks every tensor against its
// storage entry; no tensor data is read. -1 with err_set("PATH: problem").
int pth_open(struct pth_file *f, const char *path);
void pth_close(struct pth_file *f);
const struct pth_tensor *pth_find(const struct pth_file *f, const char *name);
int64_t pth_numel(const struct pth_tensor *t);
// Reads tensor t as fp32 into out (numel floats), converting F16/BF16 exactly; the storage entry's
// CRC-32 is checked. -1 with err_set naming the file and the tensor.
int pth_read_f32(const struct pth_file *f, const struct pth_tensor *t, float *out);
