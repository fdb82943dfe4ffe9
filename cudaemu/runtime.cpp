// cudaemu's runtime API (cudaemu/include/cuda_runtime.h): one emulated device whose memory is host
// memory. Every call completes its work before returning, so streams and events only keep their
// bookkeeping (events record the host time, for cudaEventElapsedTime). Errors follow the CUDA runtime:
// a failing call returns its error and records it for cudaGetLastError; launch configuration errors are
// recorded by the launcher (cudaemu.cpp).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <unordered_map>

#include "internal.h"

namespace cudaemu {

static thread_local cudaError_t last_error = cudaSuccess;

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cudaemu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

cudaError_t record(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
    return e;
}

static std::mutex registry_lock;  // guards the two maps below
static std::unordered_map<void *, size_t> allocations;
static std::unordered_map<const void *, size_t> smem_limits;

size_t max_dynamic_smem(const void *kernel) {
    std::lock_guard<std::mutex> lock(registry_lock);
    auto it = smem_limits.find(kernel);
    return it == smem_limits.end() ? SMEM_DEFAULT : it->second;
}

static int device_count() {
    const char *d = getenv("CUDAEMU_DEVICES");
    return d && atoi(d) == 0 ? 0 : 1;
}

static size_t host_memory(int which) { return (size_t)sysconf(which) * (size_t)sysconf(_SC_PAGESIZE); }

// CUDAEMU_MEMORY_MB: a device of that many MiB (totalGlobalMem, cudaMemGetInfo, and cudaMalloc failing
// past it), so that out-of-memory paths can be tested; 0 or unset: the host's memory.
static size_t device_memory_limit() {
    const char *m = getenv("CUDAEMU_MEMORY_MB");
    return m && atoll(m) > 0 ? (size_t)atoll(m) << 20 : 0;
}
static size_t allocated_bytes;  // by cudaMalloc, under registry_lock

static void *alloc_nan(size_t size) {
    void *p = aligned_alloc(256, (size + 255) / 256 * 256 + 256);
    if (p) memset(p, 0xff, size);
    return p;
}

}  // namespace cudaemu

using namespace cudaemu;

// ---------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorUnknown: return "cudaErrorUnknown";
    }
    return "unrecognized error code";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorUnknown: return "unknown error";
    }
    return "unrecognized error code";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

// ---------------------------------------------------------------------------------------------------
// Device: an H200-like description; memory sizes are the host's, since that is what cudaMalloc gets
// ---------------------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int *count) {
    *count = device_count();
    return *count ? cudaSuccess : record(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
    return device >= 0 && device < device_count() ? cudaSuccess : record(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *device) {
    if (!device_count()) return record(cudaErrorNoDevice);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device < 0 || device >= device_count()) return record(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cudaemu (CPU emulation)");
    p->totalGlobalMem = device_memory_limit() ? device_memory_limit() : host_memory(_SC_PHYS_PAGES);
    p->sharedMemPerBlock = SMEM_DEFAULT;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->memPitch = 0x7fffffff;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->concurrentKernels = 1;
    p->l2CacheSize = 50 * 1024 * 1024;
    p->maxThreadsPerMultiProcessor = 2048;
    p->sharedMemPerMultiprocessor = 228 * 1024;
    p->regsPerMultiprocessor = 65536;
    p->sharedMemPerBlockOptin = SMEM_OPTIN;
    p->memoryBusWidth = 6144;
    p->unifiedAddressing = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return cudaErrorInvalidDevice;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *value = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default: return record(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

// ---------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void **devPtr, size_t size) {
    if (!devPtr) return record(cudaErrorInvalidValue);
    size_t limit = device_memory_limit();
    {
        std::lock_guard<std::mutex> lock(registry_lock);
        if (limit && size > limit - allocated_bytes) return record(cudaErrorMemoryAllocation);
    }
    void *p = alloc_nan(size);
    if (!p) return record(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(registry_lock);
    allocations[p] = size;
    allocated_bytes += size;
    *devPtr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *devPtr) {
    if (!devPtr) return cudaSuccess;
    std::lock_guard<std::mutex> lock(registry_lock);
    auto it = allocations.find(devPtr);
    if (it == allocations.end()) return record(cudaErrorInvalidValue);  // not from cudaMalloc, or freed twice
    allocated_bytes -= it->second;
    allocations.erase(it);
    free(devPtr);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size) {
    if (!ptr) return record(cudaErrorInvalidValue);
    *ptr = alloc_nan(size);
    return *ptr ? cudaSuccess : record(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind) {
    if ((unsigned)kind > cudaMemcpyDefault) return record(cudaErrorInvalidMemcpyDirection);
    if (count && (!dst || !src)) return record(cudaErrorInvalidValue);
    if (count) memmove(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, count, kind);
}

cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
    if (count && !devPtr) return record(cudaErrorInvalidValue);
    if (count) memset(devPtr, value, count);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t) {
    return cudaMemset(devPtr, value, count);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    if (size_t limit = device_memory_limit()) {
        std::lock_guard<std::mutex> lock(registry_lock);
        *free_bytes = limit - allocated_bytes;
        *total = limit;
        return cudaSuccess;
    }
    *free_bytes = host_memory(_SC_AVPHYS_PAGES);
    *total = host_memory(_SC_PHYS_PAGES);
    return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------------
// Streams and events
// ---------------------------------------------------------------------------------------------------
struct CUstream_st {
    unsigned flags;
};

struct CUevent_st {
    unsigned flags;
    bool recorded;
    std::chrono::steady_clock::time_point when;
};

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    if (!stream) return record(cudaErrorInvalidValue);
    *stream = new CUstream_st{flags};
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream) return record(cudaErrorInvalidResourceHandle);
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned int) {
    return event ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    if (!event) return record(cudaErrorInvalidValue);
    *event = new CUevent_st{flags, false, {}};
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
    if (!event) return record(cudaErrorInvalidResourceHandle);
    event->recorded = true;
    event->when = std::chrono::steady_clock::now();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return event ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return event ? cudaSuccess : record(cudaErrorInvalidResourceHandle); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event) return record(cudaErrorInvalidResourceHandle);
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start || !end || !start->recorded || !end->recorded || (start->flags & cudaEventDisableTiming) ||
        (end->flags & cudaEventDisableTiming))
        return record(cudaErrorInvalidResourceHandle);
    *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
    return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------------
// Kernel attributes
// ---------------------------------------------------------------------------------------------------
cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value) {
    if (!func) return record(cudaErrorInvalidDeviceFunction);
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > SMEM_OPTIN)
        return record(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(registry_lock);
    smem_limits[func] = (size_t)value;
    return cudaSuccess;
}
