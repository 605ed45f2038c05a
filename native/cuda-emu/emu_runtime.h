// emu_runtime.h — what the emulated driver (emu_driver.cpp) needs from the kernel runtime (emu_runtime.cpp), and the
// registration of kernels/*.cu entry points (each generated unit includes one .cu file and registers its extern "C"
// kernels by name, with their parameter sizes so that a launch recorded into a graph can copy its arguments).
#pragma once

#include "cuda_emu.h"

#include <string>
#include <utility>
#include <vector>

namespace fastmm_emu {

struct KernelEntry
{
    std::string name;
    void (*thunk)(void* function, void** params);
    void* function;
    std::vector<size_t> param_sizes;
};

void register_kernel(KernelEntry entry);
const KernelEntry* find_kernel(const char* name);

/// Runs every block of the grid with `dynamic_shared_bytes` of dynamic shared memory (poisoned with 0xff bytes
/// before each block, as a GPU leaves it undefined); returns an empty string, or what went wrong (a deadlock
/// between barriers).
std::string run_grid(const KernelEntry& kernel, dim3 grid, dim3 block, unsigned dynamic_shared_bytes, void** params);

template <class... A, size_t... I>
void call_kernel(void (*f)(A...), void** params, std::index_sequence<I...>)
{
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}

template <class... A>
void kernel_thunk(void* function, void** params)
{
    call_kernel(reinterpret_cast<void (*)(A...)>(function), params, std::index_sequence_for<A...>{});
}

template <class... A>
KernelEntry kernel_entry(const char* name, void (*f)(A...))
{
    return KernelEntry{name, &kernel_thunk<A...>, reinterpret_cast<void*>(f), {sizeof(A)...}};
}

struct Registrar
{
    explicit Registrar(KernelEntry entry) { register_kernel(std::move(entry)); }
};

}  // namespace fastmm_emu
