// emu_runtime.cpp — CUDA threads as fibers (x86-64): a block's threads run on the calling OS thread and switch only at
// barriers and warp operations, so a block behaves as if its threads ran in lockstep between barriers. Blocks run one
// after another.
#include "emu_runtime.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <cstdlib>
#include <map>
#include <memory>

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

namespace fastmm_emu {

thread_local ThreadContext* current;
thread_local uint3 block_idx;
thread_local dim3 block_dim, grid_dim;

namespace {
// The running launch's dynamic shared memory (blocks run one after another, so one buffer serves them all).
thread_local unsigned char* dynamic_shared_base;
thread_local unsigned dynamic_shared_size;
}  // namespace

unsigned char* dynamic_shared() { return dynamic_shared_base; }
unsigned dynamic_shared_bytes() { return dynamic_shared_size; }

namespace {

// ---- registry ----
std::map<std::string, KernelEntry>& registry()
{
    static std::map<std::string, KernelEntry> kernels;
    return kernels;
}

}  // namespace

void register_kernel(KernelEntry entry) { registry()[entry.name] = std::move(entry); }

const KernelEntry* find_kernel(const char* name)
{
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : &it->second;
}

}  // namespace fastmm_emu

// ---- the switch: saves the callee-saved registers and the FP control words on the current stack, stores its stack
// pointer in *save, and continues on the stack `load` (as left by an earlier switch, or prepared by new_fiber) ----
extern "C" void fastmm_emu_switch(void** save, void* load);
extern "C" void fastmm_emu_trampoline();
extern "C" void fastmm_emu_fiber_main();

asm(R"(
    .text
    .globl fastmm_emu_switch
    .type fastmm_emu_switch, @function
fastmm_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fastmm_emu_switch, .-fastmm_emu_switch

    .globl fastmm_emu_trampoline
    .type fastmm_emu_trampoline, @function
fastmm_emu_trampoline:
    call fastmm_emu_fiber_main@PLT
    ud2
    .size fastmm_emu_trampoline, .-fastmm_emu_trampoline
)");

namespace fastmm_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kScratchWords = 8;  // per lane, for the warp operations

enum class State : uint8_t { Ready, WaitBlock, WaitWarp, Done };

/// One cp.async in flight: done when a wait lets its group complete (the source is read then, as a GPU may).
struct AsyncCopy
{
    void* dst;
    const void* src;
    int bytes, src_bytes;
};

struct Fiber
{
    ThreadContext context;
    void* sp;
    State state;
    std::vector<AsyncCopy> open_group;              // issued since the last commit
    std::deque<std::vector<AsyncCopy>> committed;   // oldest first
};

/// A thread's stack: mapped once per OS thread and reused, with a guard page below it.
struct Stack
{
    char* base = nullptr;
    size_t bytes = 0;
    Stack() = default;
    Stack(const Stack&) = delete;
    ~Stack()
    {
        if (base != nullptr) munmap(base, bytes);
    }
};

struct BlockRun
{
    std::vector<Fiber> fibers;
    void* scheduler_sp = nullptr;
    int live = 0, waiting_block = 0;
    std::vector<int> warp_live, warp_waiting;
    std::vector<uint64_t> scratch;  // warps × 32 lanes × kScratchWords
    const KernelEntry* kernel = nullptr;
    void** params = nullptr;
    std::string fault;  // the first illegal operation a thread attempted (the launch fails with it, as a GPU's would)
};

/// Threads run from the highest index down instead of from 0 up: a kernel that reads what another thread wrote
/// without a barrier between them sees it in one of the two orders only, so running the checks in both finds it.
std::atomic<int> reverse_order{[] {
    const char* v = getenv("FASTMM_CUDA_EMU_ORDER");
    return v != nullptr && strcmp(v, "reverse") == 0 ? 1 : 0;
}()};

thread_local BlockRun* run;
thread_local Fiber* running;
thread_local std::vector<std::unique_ptr<Stack>> stacks;

void* stack_top(size_t index)
{
    while (stacks.size() <= index)
    {
        auto s = std::make_unique<Stack>();
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        s->bytes = kStackBytes + page;
        void* p = mmap(nullptr, s->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        s->base = static_cast<char*>(p);
        mprotect(s->base, page, PROT_NONE);  // an overflowing kernel faults instead of corrupting its neighbour
        stacks.push_back(std::move(s));
    }
    return stacks[index]->base + stacks[index]->bytes;
}

/// A fresh stack laid out as fastmm_emu_switch leaves one: control words, six registers, then the trampoline as
/// the return address, with the trampoline entered on a 16-byte aligned stack as the ABI expects before a call.
void* new_fiber_stack(void* top)
{
    uintptr_t sp = (reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15}) - 16;
    auto* words = reinterpret_cast<uint64_t*>(sp);
    words[-1] = reinterpret_cast<uint64_t>(&fastmm_emu_trampoline);
    for (int i = 2; i <= 7; i++) words[-i] = 0;  // rbp rbx r12 r13 r14 r15
    auto* control = reinterpret_cast<uint32_t*>(sp - 64);
    control[0] = 0x1f80;  // MXCSR: round to nearest, all exceptions masked, no flush-to-zero (as .NET)
    control[1] = 0x037f;  // x87 control word: the default
    return reinterpret_cast<void*>(sp - 64);
}

void yield_to_scheduler() { fastmm_emu_switch(&running->sp, run->scheduler_sp); }

void release_block()
{
    for (auto& f : run->fibers)
        if (f.state == State::WaitBlock) f.state = State::Ready;
    run->waiting_block = 0;
}

void release_warp(int warp)
{
    const int begin = warp * 32, end = std::min<int>(begin + 32, (int)run->fibers.size());
    for (int i = begin; i < end; i++)
        if (run->fibers[i].state == State::WaitWarp) run->fibers[i].state = State::Ready;
    run->warp_waiting[warp] = 0;
}

}  // namespace

void sync_block()
{
    running->state = State::WaitBlock;
    if (++run->waiting_block == run->live) { release_block(); return; }
    yield_to_scheduler();
}

void sync_warp()
{
    const int w = running->context.warp;
    running->state = State::WaitWarp;
    if (++run->warp_waiting[w] == run->warp_live[w]) { release_warp(w); return; }
    yield_to_scheduler();
}

uint64_t* warp_scratch() { return run->scratch.data() + (size_t)running->context.warp * 32 * kScratchWords; }

uint64_t warp_exchange(uint64_t value, int source_lane)
{
    uint64_t* s = warp_scratch();
    s[current->lane * kScratchWords] = value;
    sync_warp();
    const uint64_t r = s[source_lane * kScratchWords];
    sync_warp();  // nobody overwrites a slot before every lane has read
    return r;
}

void mma_m16n8k16_f16_f32(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    uint64_t* s = warp_scratch();
    const int lane = current->lane;
    for (int i = 0; i < 4; i++) s[lane * kScratchWords + i] = a[i];
    s[lane * kScratchWords + 4] = b0;
    s[lane * kScratchWords + 5] = b1;
    sync_warp();
    // A[row][col] sits in lane 4·(row % 8) + (col % 8) / 2, register (row ≥ 8) + 2·(col ≥ 8), low half for even col;
    // B[k][n] in lane 4n + (k % 8) / 2, register (k ≥ 8), low half for even k.
    auto half_of = [](uint64_t word, int high) { return half_bits_to_float((uint16_t)(high ? word >> 16 : word)); };
    auto A = [&](int row, int col) {
        return half_of(s[((row % 8) * 4 + (col % 8) / 2) * kScratchWords + (row >= 8) + 2 * (col >= 8)], col % 2);
    };
    auto B = [&](int k, int n) { return half_of(s[(n * 4 + (k % 8) / 2) * kScratchWords + 4 + (k >= 8)], k % 2); };
    const int g = lane / 4, t = lane % 4;
    float out[4];
    for (int e = 0; e < 4; e++)
    {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float sum = d[e];
        for (int k = 0; k < 16; k++) sum += A(row, k) * B(k, col);
        out[e] = sum;
    }
    sync_warp();
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

namespace {
/// Lane's row address for ldmatrix, which a GPU requires to be 16-byte aligned (else the launch faults).
void share_matrix_row(const void* row_address, const char* instruction)
{
    if (reinterpret_cast<uintptr_t>(row_address) % 16 != 0 && run->fault.empty())
        run->fault = std::string(instruction) + ": lane " + std::to_string(current->lane) + " gave a row address that is not 16-byte aligned";
    warp_scratch()[current->lane * kScratchWords] = reinterpret_cast<uint64_t>(row_address);
    sync_warp();
}
}  // namespace

void fail_launch(const char* why)
{
    if (run->fault.empty()) run->fault = std::string("__trap: ") + why;
}

void cp_async(void* dst, const void* src, int bytes, int src_bytes)
{
    if ((reinterpret_cast<uintptr_t>(dst) % bytes != 0 || reinterpret_cast<uintptr_t>(src) % bytes != 0 || src_bytes < 0 || src_bytes > bytes) &&
        run->fault.empty())
        run->fault = "cp.async: thread " + std::to_string(current->thread_idx.x) + " copies " + std::to_string(bytes) +
                     " bytes between addresses not aligned to them (or reads " + std::to_string(src_bytes) + " of them)";
    std::memset(dst, 0xff, bytes);
    running->open_group.push_back(AsyncCopy{dst, src, bytes, src_bytes});
}

void cp_async_commit()
{
    running->committed.push_back(std::move(running->open_group));
    running->open_group.clear();
}

void cp_async_wait(int n)
{
    while ((int)running->committed.size() > n)
    {
        for (const AsyncCopy& c : running->committed.front())
        {
            std::memcpy(c.dst, c.src, c.src_bytes);
            std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
        }
        running->committed.pop_front();
    }
}

void ldmatrix_x4(uint32_t r[4], const void* row_address)
{
    uint64_t* s = warp_scratch();
    share_matrix_row(row_address, "ldmatrix.x4");
    // Lane 4g + t receives elements (row g, cols 2t and 2t + 1) of matrix j.
    const int g = current->lane / 4, t = current->lane % 4;
    uint32_t out[4];
    for (int j = 0; j < 4; j++)
    {
        const auto* row = reinterpret_cast<const uint16_t*>(s[(j * 8 + g) * kScratchWords]);
        out[j] = (uint32_t)row[2 * t] | ((uint32_t)row[2 * t + 1] << 16);
    }
    sync_warp();
    for (int j = 0; j < 4; j++) r[j] = out[j];
}

void ldmatrix_x4_trans(uint32_t r[4], const void* row_address)
{
    uint64_t* s = warp_scratch();
    const int lane = current->lane;
    share_matrix_row(row_address, "ldmatrix.x4.trans");
    // Transposed: lane 4g + t receives elements (row 2t, col g) and (row 2t + 1, col g) of matrix j.
    const int g = lane / 4, t = lane % 4;
    uint32_t out[4];
    for (int j = 0; j < 4; j++)
    {
        const auto* row0 = reinterpret_cast<const uint16_t*>(s[(j * 8 + 2 * t) * kScratchWords]);
        const auto* row1 = reinterpret_cast<const uint16_t*>(s[(j * 8 + 2 * t + 1) * kScratchWords]);
        out[j] = (uint32_t)row0[g] | ((uint32_t)row1[g] << 16);
    }
    sync_warp();
    for (int j = 0; j < 4; j++) r[j] = out[j];
}

std::string run_grid(const KernelEntry& kernel, dim3 grid, dim3 block, unsigned dynamic_shared_bytes, void** params)
{
    // 128-byte aligned, as a GPU's shared window; at least one line so the pointer is never null.
    std::unique_ptr<unsigned char, decltype(&std::free)> shared(
        static_cast<unsigned char*>(std::aligned_alloc(128, (dynamic_shared_bytes + 127) / 128 * 128 + 128)), &std::free);
    if (shared == nullptr) return "could not allocate " + std::to_string(dynamic_shared_bytes) + " bytes of dynamic shared memory";
    dynamic_shared_base = shared.get();
    dynamic_shared_size = dynamic_shared_bytes;
    const int threads = (int)(block.x * block.y * block.z), warps = (threads + 31) / 32;
    BlockRun b;
    b.kernel = &kernel;
    b.params = params;
    b.fibers.resize(threads);
    b.warp_live.resize(warps);
    b.warp_waiting.resize(warps);
    b.scratch.assign((size_t)warps * 32 * kScratchWords, 0);
    for (int i = 0; i < threads; i++)
        if (stack_top(i) == nullptr) return "could not map stacks for " + std::to_string(threads) + " threads";
    run = &b;
    grid_dim = grid;
    block_dim = block;
    // Blocks run one after another, in the reverse order too when warps do (a kernel whose last block to finish
    // does extra work, such as merging the others' results, then has that done by a different block).
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    const bool reverse_blocks = reverse_order.load(std::memory_order_relaxed) != 0;
    for (unsigned long long n = 0; n < blocks; n++)
    {
        const unsigned long long linear = reverse_blocks ? blocks - 1 - n : n;
        block_idx = uint3{(unsigned)(linear % grid.x), (unsigned)(linear / grid.x % grid.y), (unsigned)(linear / grid.x / grid.y)};
        std::memset(shared.get(), 0xff, dynamic_shared_bytes);  // undefined at a block's start: reading it before writing shows as NaN
        b.live = threads;
        b.waiting_block = 0;
        for (int w = 0; w < warps; w++) { b.warp_live[w] = std::min(32, threads - 32 * w); b.warp_waiting[w] = 0; }
        for (int i = 0; i < threads; i++)
        {
            Fiber& f = b.fibers[i];
            f.context.thread_idx = uint3{(unsigned)(i % block.x), (unsigned)(i / block.x % block.y), (unsigned)(i / (block.x * block.y))};
            f.context.warp = i / 32;
            f.context.lane = i % 32;
            f.state = State::Ready;
            f.open_group.clear();
            f.committed.clear();
            f.sp = new_fiber_stack(stack_top(i));
        }
        int done = 0;
        while (done < threads)
        {
            // Warp by warp: each warp runs until all its threads wait at __syncthreads or have exited,
            // before the next warp starts (a legal GPU schedule, and the one in which a missing barrier
            // between two warps' accesses shows: one warp's whole phase lands before the other's).
            bool ran = false;
            const bool reverse = reverse_order.load(std::memory_order_relaxed) != 0;
            for (int wi = 0; wi < warps; wi++)
            {
                const int w = reverse ? warps - 1 - wi : wi;
                const int first = w * 32, count = std::min(32, threads - first);
                for (bool warp_ran = true; warp_ran;)
                {
                    warp_ran = false;
                    for (int k = 0; k < count; k++)
                    {
                        Fiber& f = b.fibers[first + (reverse ? count - 1 - k : k)];
                        if (f.state != State::Ready) continue;
                        ran = warp_ran = true;
                        running = &f;
                        current = &f.context;
                        fastmm_emu_switch(&b.scheduler_sp, f.sp);
                        if (f.state == State::Done) done++;
                    }
                }
            }
            if (!b.fault.empty())
            {
                run = nullptr;
                return b.fault + " (" + kernel.name + " block (" + std::to_string(block_idx.x) + ", " + std::to_string(block_idx.y) + ", " +
                       std::to_string(block_idx.z) + "))";
            }
            if (!ran && done < threads)
            {
                int at_block = 0, at_warp = 0;
                for (auto& f : b.fibers) { at_block += f.state == State::WaitBlock; at_warp += f.state == State::WaitWarp; }
                run = nullptr;
                return "deadlock in " + kernel.name + " block (" + std::to_string(block_idx.x) + ", " + std::to_string(block_idx.y) + ", " +
                       std::to_string(block_idx.z) + "): " + std::to_string(at_block) + " threads wait at __syncthreads, " +
                       std::to_string(at_warp) + " at a warp operation, " + std::to_string(done) +
                       " have exited (threads of one block or warp reach different barriers)";
            }
        }
    }
    run = nullptr;
    return "";
}

}  // namespace fastmm_emu

/// Where every fiber starts: run the kernel as this thread, then leave the block and never come back.
extern "C" void fastmm_emu_fiber_main()
{
    using namespace fastmm_emu;
    run->kernel->thunk(run->kernel->function, run->params);
    Fiber* self = running;
    const int w = self->context.warp;
    self->state = State::Done;
    run->live--;
    run->warp_live[w]--;
    // An exited thread no longer counts at barriers: the others may all be waiting already.
    if (run->warp_live[w] > 0 && run->warp_waiting[w] == run->warp_live[w]) release_warp(w);
    if (run->live > 0 && run->waiting_block == run->live) release_block();
    yield_to_scheduler();
    __builtin_unreachable();
}

/// 1: run each block's threads from the highest index down (FASTMM_CUDA_EMU_ORDER=reverse sets it at load); 0: from 0 up.
extern "C" __attribute__((visibility("default"))) void fastmm_emu_set_thread_order(int reverse)
{
    fastmm_emu::reverse_order.store(reverse != 0 ? 1 : 0);
}
