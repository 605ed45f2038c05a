// emu_driver.cpp — the CUDA driver API entry points FastMM binds (src/FastMM.Cuda/Driver/CudaDriver.cs), served by
// the CPU: one device named "FastMM CUDA emulator (CPU)", device memory is host memory, every stream runs its work when
// it is enqueued (so synchronisation is a no-op), stream capture records kernels, copies and fills into a graph that
// cuGraphLaunch replays in order, and modules ignore their PTX/fatbin images: kernels are found by name among the
// kernels/*.cu entry points compiled into this library. Copies and fills are checked against the allocations they
// touch, and a kernel whose threads deadlock at barriers fails its launch with a message (cuGetErrorString).
#include "emu_runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

using CUresult = int;
constexpr CUresult kSuccess = 0, kInvalidValue = 1, kOutOfMemory = 2, kInvalidDevice = 101, kInvalidHandle = 400,
                   kNotFound = 500, kLaunchFailed = 719, kCaptureUnsupported = 900, kCaptureInvalidated = 901;

std::mutex g_lock;
std::string g_last_failure = "the CUDA emulator failed a launch";

// Device allocations (address → bytes) and pinned host allocations.
std::map<uint64_t, size_t> g_device, g_pinned;

// A device memory size (fastmm_emu_set_memory_limit; 0: none) against which live allocations and what the memory
// pools hold reserved are counted, so that running out of memory, and a pool's reservation causing it, can be tested.
uint64_t g_memory_limit = 0, g_live_bytes = 0;
struct EmuPool
{
    uint64_t release_threshold = 0;
    uint64_t reserved_free = 0;  // freed into the pool and kept (a GPU pool keeps up to its release threshold)
};
std::map<uint64_t, EmuPool*> g_pool_of;  // pool allocations → their pool
std::vector<EmuPool*> g_pools;

uint64_t pools_reserved_free()
{
    uint64_t sum = 0;
    for (EmuPool* p : g_pools) sum += p->reserved_free;
    return sum;
}

bool over_limit(size_t bytes) { return g_memory_limit != 0 && g_live_bytes + pools_reserved_free() + bytes > g_memory_limit; }

/// The allocation holding [address, address + bytes), or false.
bool in_device_memory(uint64_t address, size_t bytes)
{
    auto it = g_device.upper_bound(address);
    if (it == g_device.begin()) return false;
    --it;
    return address >= it->first && address + bytes <= it->first + it->second;
}

struct Node
{
    enum Kind { Kernel, CopyToDevice, CopyToHost, CopyOnDevice, Fill } kind;
    const fastmm_emu::KernelEntry* kernel = nullptr;
    dim3 grid, block;
    unsigned shared_bytes = 0;  // dynamic shared memory
    std::vector<uint8_t> args;
    std::vector<size_t> arg_offsets;
    uint64_t dst = 0, src = 0;
    size_t bytes = 0;
    uint8_t value = 0;
};

struct Graph
{
    std::vector<Node> nodes;
};

struct Stream
{
    Graph* capture = nullptr;
    bool invalidated = false;
};

struct Event
{
    std::chrono::steady_clock::time_point at;
};

// Dynamic shared memory a launch may ask for: 48 KB unless cuFuncSetAttribute raises it, up to the 227 KB of an
// sm_90 block (the attribute the emulated device reports).
constexpr int kDefaultDynamicShared = 48 * 1024, kMaxDynamicShared = 227 * 1024;
constexpr int kAttributeMaxDynamicShared = 8;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

struct Function
{
    const fastmm_emu::KernelEntry* kernel;
    int max_dynamic_shared = kDefaultDynamicShared;
};

Stream g_null_stream;

Stream* stream_of(void* handle) { return handle == nullptr ? &g_null_stream : static_cast<Stream*>(handle); }

CUresult execute(const Node& n)
{
    switch (n.kind)
    {
        case Node::Kernel:
        {
            std::vector<void*> params(n.arg_offsets.size());
            for (size_t i = 0; i < params.size(); i++) params[i] = const_cast<uint8_t*>(n.args.data() + n.arg_offsets[i]);
            std::string failure = fastmm_emu::run_grid(*n.kernel, n.grid, n.block, n.shared_bytes, params.data());
            if (!failure.empty())
            {
                g_last_failure = "the CUDA emulator: " + failure;
                std::fprintf(stderr, "%s\n", g_last_failure.c_str());
                return kLaunchFailed;
            }
            return kSuccess;
        }
        case Node::CopyToDevice: std::memcpy(reinterpret_cast<void*>(n.dst), reinterpret_cast<const void*>(n.src), n.bytes); return kSuccess;
        case Node::CopyToHost: std::memcpy(reinterpret_cast<void*>(n.dst), reinterpret_cast<const void*>(n.src), n.bytes); return kSuccess;
        case Node::CopyOnDevice: std::memmove(reinterpret_cast<void*>(n.dst), reinterpret_cast<const void*>(n.src), n.bytes); return kSuccess;
        case Node::Fill: std::memset(reinterpret_cast<void*>(n.dst), n.value, n.bytes); return kSuccess;
    }
    return kInvalidValue;
}

/// Runs the node now, or records it when the stream is capturing.
CUresult enqueue(void* stream, Node n)
{
    Stream* s = stream_of(stream);
    if (s->capture != nullptr)
    {
        s->capture->nodes.push_back(std::move(n));
        return kSuccess;
    }
    return execute(n);
}

Node memory_node(Node::Kind kind, uint64_t dst, uint64_t src, size_t bytes, uint8_t value = 0)
{
    Node n{kind};
    n.dst = dst;
    n.src = src;
    n.bytes = bytes;
    n.value = value;
    return n;
}

CUresult check_device_range(uint64_t address, size_t bytes)
{
    if (bytes == 0) return kSuccess;
    if (!in_device_memory(address, bytes))
    {
        char text[160];
        std::snprintf(text, sizeof text, "the CUDA emulator: %zu bytes at 0x%llx are outside every device allocation", bytes,
                      (unsigned long long)address);
        g_last_failure = text;
        return kInvalidValue;
    }
    return kSuccess;
}

const char* error_name(CUresult r)
{
    switch (r)
    {
        case kSuccess: return "CUDA_SUCCESS";
        case kInvalidValue: return "CUDA_ERROR_INVALID_VALUE";
        case kOutOfMemory: return "CUDA_ERROR_OUT_OF_MEMORY";
        case kInvalidDevice: return "CUDA_ERROR_INVALID_DEVICE";
        case kInvalidHandle: return "CUDA_ERROR_INVALID_HANDLE";
        case kNotFound: return "CUDA_ERROR_NOT_FOUND";
        case kLaunchFailed: return "CUDA_ERROR_LAUNCH_FAILED";
        case kCaptureUnsupported: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
        case kCaptureInvalidated: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
        default: return nullptr;
    }
}

}  // namespace

#define API extern "C" __attribute__((visibility("default")))
#define LOCKED std::lock_guard<std::mutex> guard(g_lock)

API CUresult cuGetErrorName(CUresult r, const char** out)
{
    const char* name = error_name(r);
    if (name == nullptr) return kInvalidValue;
    *out = name;
    return kSuccess;
}

API CUresult cuGetErrorString(CUresult r, const char** out)
{
    LOCKED;
    switch (r)
    {
        case kSuccess: *out = "no error"; return kSuccess;
        case kLaunchFailed:
        case kInvalidValue: *out = g_last_failure.c_str(); return kSuccess;
        case kNotFound: *out = "named symbol not found (not a kernels/*.cu entry point compiled into the emulator)"; return kSuccess;
        case kCaptureUnsupported: *out = "operation not permitted when stream is capturing"; return kSuccess;
        default: return error_name(r) != nullptr ? (*out = error_name(r), kSuccess) : kInvalidValue;
    }
}

API CUresult cuInit(unsigned) { return kSuccess; }
API CUresult cuDriverGetVersion(int* v) { *v = 12080; return kSuccess; }
API CUresult cuDeviceGetCount(int* n) { *n = 1; return kSuccess; }
API CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return kInvalidDevice; *d = 0; return kSuccess; }

API CUresult cuDeviceGetName(char* name, int length, int device)
{
    if (device != 0) return kInvalidDevice;
    std::snprintf(name, (size_t)length, "%s", "FastMM CUDA emulator (CPU)");
    return kSuccess;
}

API CUresult cuDeviceGetAttribute(int* value, int attribute, int device)
{
    if (device != 0) return kInvalidDevice;
    switch (attribute)
    {
        case 16: *value = 132; return kSuccess;  // multiprocessors: an H200's, so split counts match the real device's
        case 75: *value = 9; return kSuccess;    // compute capability 9.0
        case 76: *value = 0; return kSuccess;
        default: return kInvalidValue;
    }
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, int device)
{
    if (device != 0) return kInvalidDevice;
    *bytes = size_t{16} << 30;
    return kSuccess;
}

static int g_context_token;
API CUresult cuDevicePrimaryCtxRetain(void** ctx, int device) { if (device != 0) return kInvalidDevice; *ctx = &g_context_token; return kSuccess; }
API CUresult cuDevicePrimaryCtxRelease_v2(int device) { return device == 0 ? kSuccess : kInvalidDevice; }
API CUresult cuCtxSetCurrent(void*) { return kSuccess; }
API CUresult cuCtxPushCurrent_v2(void*) { return kSuccess; }
API CUresult cuCtxPopCurrent_v2(void** ctx) { if (ctx != nullptr) *ctx = &g_context_token; return kSuccess; }

API CUresult cuStreamCreate(void** stream, unsigned) { LOCKED; *stream = new Stream(); return kSuccess; }
API CUresult cuStreamDestroy_v2(void* stream) { LOCKED; if (stream != nullptr) delete static_cast<Stream*>(stream); return kSuccess; }
API CUresult cuStreamSynchronize(void*) { return kSuccess; }

API CUresult cuStreamBeginCapture_v2(void* stream, int)
{
    LOCKED;
    Stream* s = stream_of(stream);
    if (s->capture != nullptr) return kCaptureUnsupported;
    s->capture = new Graph();
    s->invalidated = false;
    return kSuccess;
}

API CUresult cuStreamEndCapture(void* stream, void** graph)
{
    LOCKED;
    Stream* s = stream_of(stream);
    if (s->capture == nullptr) return kInvalidValue;
    Graph* g = s->capture;
    s->capture = nullptr;
    if (s->invalidated) { delete g; *graph = nullptr; return kCaptureInvalidated; }
    *graph = g;
    return kSuccess;
}

API CUresult cuEventCreate(void** event, unsigned) { *event = new Event(); return kSuccess; }
API CUresult cuEventDestroy_v2(void* event) { delete static_cast<Event*>(event); return kSuccess; }
API CUresult cuEventSynchronize(void*) { return kSuccess; }

API CUresult cuEventRecord(void* event, void* stream)
{
    LOCKED;
    if (stream_of(stream)->capture != nullptr) { stream_of(stream)->invalidated = true; return kCaptureUnsupported; }
    static_cast<Event*>(event)->at = std::chrono::steady_clock::now();
    return kSuccess;
}

API CUresult cuEventElapsedTime(float* ms, void* start, void* end)
{
    *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(end)->at - static_cast<Event*>(start)->at).count();
    return kSuccess;
}

static int g_module_token;
API CUresult cuModuleLoadData(void** module, const void* image) { if (image == nullptr) return kInvalidValue; *module = &g_module_token; return kSuccess; }
API CUresult cuModuleUnload(void*) { return kSuccess; }

API CUresult cuModuleGetFunction(void** function, void*, const char* name)
{
    LOCKED;
    const fastmm_emu::KernelEntry* k = fastmm_emu::find_kernel(name);
    if (k == nullptr) return kNotFound;
    *function = new Function{k};  // one per lookup, for the life of the process (a few dozen)
    return kSuccess;
}

API CUresult cuFuncSetAttribute(void* function, int attribute, int value)
{
    LOCKED;
    if (function == nullptr) return kInvalidHandle;
    if (attribute != kAttributeMaxDynamicShared || value < 0 || value > kMaxDynamicShared) return kInvalidValue;
    static_cast<Function*>(function)->max_dynamic_shared = value;
    return kSuccess;
}

API CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared_bytes, void* stream, void** params, void** extra)
{
    LOCKED;
    if (function == nullptr || extra != nullptr) return kInvalidValue;
    const auto* f = static_cast<Function*>(function);
    if (shared_bytes > (unsigned)f->max_dynamic_shared)
    {
        g_last_failure = "the CUDA emulator: " + f->kernel->name + " asks for " + std::to_string(shared_bytes) +
                         " bytes of dynamic shared memory, over its limit of " + std::to_string(f->max_dynamic_shared) +
                         " (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)";
        return kInvalidValue;
    }
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || (size_t)bx * by * bz > 1024 || gy > 65535 || gz > 65535)
    {
        g_last_failure = "the CUDA emulator: invalid launch configuration";
        return kInvalidValue;
    }
    const auto* k = f->kernel;
    Node n{Node::Kernel};
    n.kernel = k;
    n.grid = dim3{gx, gy, gz};
    n.block = dim3{bx, by, bz};
    n.shared_bytes = shared_bytes;
    // Copy the arguments (each params[i] points at a value of the kernel's i-th parameter type), 8-byte aligned.
    for (size_t i = 0; i < k->param_sizes.size(); i++)
    {
        const size_t at = (n.args.size() + 7) & ~size_t{7};
        n.args.resize(at + k->param_sizes[i]);
        std::memcpy(n.args.data() + at, params[i], k->param_sizes[i]);
        n.arg_offsets.push_back(at);
    }
    return enqueue(stream, std::move(n));
}

namespace {
/// A fresh allocation of `bytes`, `reused` of which come out of a pool's reservation (not counted again).
CUresult allocate(uint64_t* address, size_t bytes, EmuPool* pool, uint64_t reused)
{
    if (bytes == 0) return kInvalidValue;
    if (over_limit(bytes - reused)) return kOutOfMemory;
    void* p = std::aligned_alloc(256, (bytes + 255) & ~size_t{255});
    if (p == nullptr) return kOutOfMemory;
    *address = reinterpret_cast<uint64_t>(p);
    g_device[*address] = bytes;
    g_live_bytes += bytes;
    if (pool != nullptr)
    {
        pool->reserved_free -= reused;
        g_pool_of[*address] = pool;
    }
    return kSuccess;
}

CUresult release(uint64_t address)
{
    auto it = g_device.find(address);
    if (it == g_device.end()) return kInvalidValue;
    g_live_bytes -= it->second;
    auto pool = g_pool_of.find(address);
    if (pool != g_pool_of.end())
    {
        EmuPool* owner = pool->second;
        owner->reserved_free += it->second;
        if (owner->reserved_free > owner->release_threshold) owner->reserved_free = owner->release_threshold;  // as if synchronised
        g_pool_of.erase(pool);
    }
    std::free(reinterpret_cast<void*>(address));
    g_device.erase(it);
    return kSuccess;
}
}  // namespace

API CUresult cuMemAlloc_v2(uint64_t* address, size_t bytes)
{
    LOCKED;
    return allocate(address, bytes, nullptr, 0);
}

API CUresult cuMemFree_v2(uint64_t address)
{
    LOCKED;
    if (g_pool_of.count(address) != 0) return kInvalidValue;  // pool memory goes back through cuMemFreeAsync
    return release(address);
}


API CUresult cuMemFreeAsync(uint64_t address, void* stream)
{
    if (stream_of(stream)->capture != nullptr) return kCaptureUnsupported;
    LOCKED;
    return release(address);
}

// Memory pools: what a pool's allocations free stays reserved by it, up to its release threshold (streams here are
// synchronous, so every free has completed and been "synchronised"), until cuMemPoolTrimTo.
API CUresult cuMemPoolCreate(void** pool, const void* props)
{
    if (pool == nullptr || props == nullptr) return kInvalidValue;
    LOCKED;
    g_pools.push_back(new EmuPool());
    *pool = g_pools.back();
    return kSuccess;
}

API CUresult cuMemPoolDestroy(void* pool)
{
    LOCKED;
    auto it = std::find(g_pools.begin(), g_pools.end(), static_cast<EmuPool*>(pool));
    if (it == g_pools.end()) return kInvalidValue;
    for (auto& [address, owner] : g_pool_of)
        if (owner == *it) return kInvalidValue;  // the emulator does not defer the release: free first
    delete *it;
    g_pools.erase(it);
    return kSuccess;
}

API CUresult cuMemPoolSetAttribute(void* pool, int attribute, void* value)
{
    constexpr int kReleaseThreshold = 4;  // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, a cuuint64_t
    if (pool == nullptr || value == nullptr || attribute != kReleaseThreshold) return kInvalidValue;
    LOCKED;
    static_cast<EmuPool*>(pool)->release_threshold = *static_cast<uint64_t*>(value);
    return kSuccess;
}

API CUresult cuMemPoolTrimTo(void* pool, size_t keep)
{
    if (pool == nullptr) return kInvalidValue;
    LOCKED;
    auto* p = static_cast<EmuPool*>(pool);
    if (p->reserved_free > keep) p->reserved_free = keep;
    return kSuccess;
}

API CUresult cuMemAllocFromPoolAsync(uint64_t* address, size_t bytes, void* pool, void* stream)
{
    if (pool == nullptr) return kInvalidValue;
    if (stream_of(stream)->capture != nullptr) return kCaptureUnsupported;
    LOCKED;
    auto* p = static_cast<EmuPool*>(pool);
    return allocate(address, bytes, p, std::min<uint64_t>(p->reserved_free, bytes));
}

API CUresult cuCtxSynchronize() { return kSuccess; }  // every stream operation has already run

/// Device memory size for the out-of-memory checks (0: unlimited, the default).
API void fastmm_emu_set_memory_limit(uint64_t bytes)
{
    LOCKED;
    g_memory_limit = bytes;
}

API CUresult cuMemAllocHost_v2(void** p, size_t bytes)
{
    LOCKED;
    *p = std::aligned_alloc(256, (bytes + 255) & ~size_t{255});
    if (*p == nullptr) return kOutOfMemory;
    g_pinned[reinterpret_cast<uint64_t>(*p)] = bytes;
    return kSuccess;
}

API CUresult cuMemFreeHost(void* p)
{
    LOCKED;
    if (g_pinned.erase(reinterpret_cast<uint64_t>(p)) == 0) return kInvalidValue;
    std::free(p);
    return kSuccess;
}

API CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t bytes, void* stream)
{
    LOCKED;
    if (CUresult r = check_device_range(dst, bytes)) return r;
    Node n = memory_node(Node::CopyToDevice, dst, reinterpret_cast<uint64_t>(src), bytes);
    Stream* s = stream_of(stream);
    if (s->capture != nullptr && g_pinned.count(reinterpret_cast<uint64_t>(src)) == 0)
    {
        // Pageable source: the driver stages the bytes at the call, so the graph must hold its own copy.
        auto* copy = new uint8_t[bytes];  // lives as long as the process (captures from pageable memory are rare)
        std::memcpy(copy, src, bytes);
        n.src = reinterpret_cast<uint64_t>(copy);
    }
    return enqueue(stream, std::move(n));
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t bytes, void* stream)
{
    LOCKED;
    if (CUresult r = check_device_range(src, bytes)) return r;
    return enqueue(stream, memory_node(Node::CopyToHost, reinterpret_cast<uint64_t>(dst), src, bytes));
}

API CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void* stream)
{
    LOCKED;
    if (CUresult r = check_device_range(dst, bytes)) return r;
    if (CUresult r = check_device_range(src, bytes)) return r;
    return enqueue(stream, memory_node(Node::CopyOnDevice, dst, src, bytes));
}

API CUresult cuMemsetD8Async(uint64_t dst, unsigned char value, size_t bytes, void* stream)
{
    LOCKED;
    if (CUresult r = check_device_range(dst, bytes)) return r;
    return enqueue(stream, memory_node(Node::Fill, dst, 0, bytes, value));
}

API CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long)
{
    LOCKED;
    if (graph == nullptr) return kInvalidValue;
    *exec = new Graph(*static_cast<Graph*>(graph));
    return kSuccess;
}

API CUresult cuGraphLaunch(void* exec, void* stream)
{
    LOCKED;
    if (exec == nullptr) return kInvalidValue;
    if (stream_of(stream)->capture != nullptr) return kCaptureUnsupported;
    for (const Node& n : static_cast<Graph*>(exec)->nodes)
        if (CUresult r = execute(n)) return r;
    return kSuccess;
}

API CUresult cuGraphDestroy(void* graph) { LOCKED; delete static_cast<Graph*>(graph); return kSuccess; }
API CUresult cuGraphExecDestroy(void* exec) { LOCKED; delete static_cast<Graph*>(exec); return kSuccess; }
