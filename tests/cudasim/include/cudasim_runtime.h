// cudasim device runtime: runs CUDA kernel source on the CPU, one fiber per CUDA thread.
//
// Included (first) by the translation unit tests/cudasim/compiler.py builds from a kernel source.
// Design:
//   * Every CUDA thread is a fiber with its own mmap'd stack; one OS thread runs a whole launch,
//     so a run is deterministic for a given resume order.
//   * Scheduling is cooperative and in rounds: every runnable fiber, in the selected order
//     (forward, reverse, or a per-round shuffle), runs until it reaches a synchronising intrinsic
//     (__syncwarp, shuffles, votes, __syncthreads, grid.sync) or exits.
//   * Barriers are strict, like a GPU: a warp op completes only when every lane of its mask has
//     arrived with the same mask at the same call site (file and line come from __builtin_LINE),
//     __syncthreads when every live thread of the block has arrived at the same site, grid.sync
//     when every live thread of the grid has. Mismatches, lanes exiting while others wait on
//     them, and deadlocks abort the launch with a message (cudasim::LaunchError); never a hang.
//   * Non-cooperative launches run block after block (in the selected order); cooperative
//     launches keep every fiber of the grid live, so grid.sync is a real barrier.
//   * Shared memory: the compile step rewrites only the __shared__ declarations into calls of
//     dynamic_shared<T>() / static_shared<T>(id) below; both areas are poisoned with 0xff bytes
//     (a NaN for floats and doubles) at each launch; a canary after the dynamic area is checked
//     when the block ends.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) alignas(n)
// __restrict__ is a g++ keyword already.

using std::sqrt; using std::fmax; using std::fmin; using std::fabs; using std::isfinite;
using std::isnan; using std::isinf; using std::exp; using std::log; using std::pow; using std::floor;
using std::ceil; using std::fma;

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
constexpr int warpSize = 32;

namespace cudasim {

// ---- context switch (x86-64 System V: callee-saved registers, MXCSR and x87 control word) ----
extern "C" void cudasim_switch_context(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl cudasim_switch_context
    .hidden cudasim_switch_context
    .type cudasim_switch_context,@function
cudasim_switch_context:
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
    .size cudasim_switch_context, .-cudasim_switch_context
)");

constexpr std::size_t kStackBytes = 128 * 1024;  // per fiber, plus one guard page below
constexpr std::size_t kGuardBytes = 4096;
constexpr std::size_t kCanaryBytes = 256;
constexpr unsigned char kCanaryByte = 0xa5;

enum class State { Runnable, Waiting, Exited };
enum class Wait { Warp, Block, Grid };   // what a Waiting fiber waits in

struct Fiber {
    void* sp = nullptr;
    State state = State::Exited;
    unsigned block = 0;     // linear block index
    unsigned thread = 0;    // linear thread index in the block
    unsigned slot_base = 0; // index in Launch::fibers of thread 0 of this block
    unsigned warp_slot = 0; // index in Launch::warps
    Wait wait = Wait::Warp;
    uint3 thread_idx{}, block_idx{};
    // pending warp op of this lane
    unsigned long long value = 0, result = 0;
    unsigned mask = 0;
    int param = 0;
};

struct Site {
    const char* file = nullptr;
    int line = 0;
    bool same(const Site& o) const { return line == o.line && std::strcmp(file, o.file) == 0; }
};

enum class WarpOp { None, Sync, ShflIdx, ShflXor, ShflDown, ShflUp, Ballot, Any, All };

struct Warp {
    WarpOp op = WarpOp::None;
    Site site;
    unsigned mask = 0, arrived = 0, live = 0;
    int width = 32;
};

struct Block {
    unsigned live = 0, arrived = 0;
    unsigned slot_base = 0;                      // its fibers in Launch::fibers
    Site site;
    std::vector<unsigned char> dynamic_shared;   // dynamic bytes + canary
    std::vector<std::vector<unsigned char>> static_areas;
    std::vector<void*> static_slots;             // per declaration id
    std::size_t static_bytes = 0;
};

struct LaunchConfig {        // filled by Python (ctypes), field order matters
    unsigned grid[3];
    unsigned block[3];
    unsigned long long dynamic_shared_bytes;
    unsigned long long shared_limit_bytes;   // static + dynamic must fit
    int cooperative;
    int order;                               // 0 forward, 1 reverse, 2 random
    unsigned long long seed;
};

struct Launch {
    const LaunchConfig* cfg = nullptr;
    const char* kernel = "";
    std::function<void()> body;
    std::vector<Fiber> fibers;     // live set: one block, or the whole grid when cooperative
    std::vector<Warp> warps;
    std::vector<Block> blocks;     // indexed by linear block id
    unsigned threads_per_block = 0, warps_per_block = 0;
    Fiber* current = nullptr;
    void* scheduler_sp = nullptr;
    bool failed = false;
    std::string error;
    // grid barrier
    unsigned grid_live = 0, grid_arrived = 0;
    Site grid_site;
};

inline Launch* g_launch = nullptr;
inline uint3 g_thread_idx{}, g_block_idx{};
inline dim3 g_block_dim{}, g_grid_dim{};
inline std::vector<void*> g_stacks;   // reused across launches

inline std::string where(const Fiber& f) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "block %u thread %u (warp %u lane %u)", f.block, f.thread,
                  f.thread / 32, f.thread % 32);
    return buf;
}

inline std::string at(const Site& s) {
    return std::string(s.file ? s.file : "?") + ":" + std::to_string(s.line);
}

inline void yield_to_scheduler() {
    Launch* L = g_launch;
    cudasim_switch_context(&L->current->sp, L->scheduler_sp);
    if (L->failed) {   // never resumed after a failure, but be safe
        for (;;) cudasim_switch_context(&L->current->sp, L->scheduler_sp);
    }
}

// Abort the launch from inside a fiber: record the message and never come back. No C++
// exception crosses a fiber boundary: the launch's fibers are simply abandoned (kernel code owns
// no resources) and their stacks reused by the next launch.
[[noreturn]] inline void fail(const std::string& message) {
    Launch* L = g_launch;
    if (!L->failed) {
        L->failed = true;
        L->error = std::string(L->kernel) + ": " + message;
    }
    for (;;) cudasim_switch_context(&L->current->sp, L->scheduler_sp);
}

inline void record_failure(Launch* L, const std::string& message) {
    if (!L->failed) {
        L->failed = true;
        L->error = std::string(L->kernel) + ": " + message;
    }
}


// ---- warp ops ----------------------------------------------------------------------------------
inline unsigned long long complete_lane(const Warp& w, Fiber* lanes, unsigned lane) {
    auto value_of = [&](int src) { return lanes[src].value; };
    const Fiber& me = lanes[lane];
    switch (w.op) {
        case WarpOp::Sync: return 0;
        case WarpOp::ShflIdx: {
            const int width = w.width, base = lane & ~(width - 1);
            return value_of(base + (me.param & (width - 1)));
        }
        case WarpOp::ShflXor: {
            const int src = lane ^ me.param;
            return (src & ~(w.width - 1)) == (int(lane) & ~(w.width - 1)) ? value_of(src) : me.value;
        }
        case WarpOp::ShflDown: {
            const int src = int(lane) + me.param;
            return (src & ~(w.width - 1)) == (int(lane) & ~(w.width - 1)) && src < 32 ? value_of(src) : me.value;
        }
        case WarpOp::ShflUp: {
            const int src = int(lane) - me.param;
            return src >= 0 && (src & ~(w.width - 1)) == (int(lane) & ~(w.width - 1)) ? value_of(src) : me.value;
        }
        case WarpOp::Ballot: case WarpOp::Any: case WarpOp::All: {
            unsigned bits = 0;
            for (unsigned l = 0; l < 32; ++l) if ((w.mask >> l & 1u) && lanes[l].value) bits |= 1u << l;
            if (w.op == WarpOp::Ballot) return bits;
            if (w.op == WarpOp::Any) return bits != 0;
            return bits == w.mask;
        }
        default: return 0;
    }
}

inline const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::Sync: return "__syncwarp";
        case WarpOp::ShflIdx: return "__shfl_sync";
        case WarpOp::ShflXor: return "__shfl_xor_sync";
        case WarpOp::ShflDown: return "__shfl_down_sync";
        case WarpOp::ShflUp: return "__shfl_up_sync";
        case WarpOp::Ballot: return "__ballot_sync";
        case WarpOp::Any: return "__any_sync";
        case WarpOp::All: return "__all_sync";
        default: return "?";
    }
}

inline unsigned long long warp_op(WarpOp op, unsigned mask, unsigned long long value, int param,
                                  int width, const char* file, int line) {
    Launch* L = g_launch;
    Fiber* me = L->current;
    const unsigned lane = me->thread % 32;
    Fiber* lanes = &L->fibers[me->slot_base + (me->thread & ~31u)];
    Warp& w = L->warps[me->warp_slot];
    const Site site{file, line};
    char buf[256];
    if (!(mask >> lane & 1u)) {
        std::snprintf(buf, sizeof buf, "%s at %s: calling lane is not in its mask 0x%08x, %s",
                      op_name(op), at(site).c_str(), mask, where(*me).c_str());
        fail(buf);
    }
    if (w.arrived == 0) {
        w.op = op; w.site = site; w.mask = mask; w.width = width;
    } else if (w.op != op || !w.site.same(site) || w.mask != mask) {
        std::snprintf(buf, sizeof buf,
                      "warp barrier mismatch in warp %u of block %u: lane %u reached %s at %s with "
                      "mask 0x%08x while lanes 0x%08x wait in %s at %s with mask 0x%08x",
                      me->thread / 32, me->block, lane, op_name(op), at(site).c_str(), mask,
                      w.arrived, op_name(w.op), at(w.site).c_str(), w.mask);
        fail(buf);
    }
    const unsigned gone = mask & ~w.live;
    if (gone) {
        std::snprintf(buf, sizeof buf,
                      "%s at %s, %s: lanes 0x%08x of mask 0x%08x have exited (or do not exist)",
                      op_name(op), at(site).c_str(), where(*me).c_str(), gone, mask);
        fail(buf);
    }
    me->value = value;
    me->param = param;
    w.arrived |= 1u << lane;
    if (w.arrived == mask) {
        for (unsigned l = 0; l < 32; ++l) if (mask >> l & 1u) lanes[l].result = complete_lane(w, lanes, l);
        for (unsigned l = 0; l < 32; ++l) if (mask >> l & 1u && &lanes[l] != me) lanes[l].state = State::Runnable;
        w.arrived = 0;
        w.op = WarpOp::None;
        // the completing lane also yields, so the order of lanes after a barrier is the scheduler's
        yield_to_scheduler();
        return me->result;
    }
    me->state = State::Waiting;
    me->wait = Wait::Warp;
    yield_to_scheduler();
    return me->result;
}

template <typename T>
inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp value too large");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// ---- block and grid barriers --------------------------------------------------------------------
inline Block& my_block() { return g_launch->blocks[g_launch->current->block]; }

inline void release_block(Launch* L, unsigned block) {
    Block& b = L->blocks[block];
    for (unsigned t = 0; t < L->threads_per_block; ++t) {
        Fiber& f = L->fibers[b.slot_base + t];
        if (f.state == State::Waiting && f.wait == Wait::Block) f.state = State::Runnable;
    }
    b.arrived = 0;
}

inline void syncthreads(const char* file, int line) {
    Launch* L = g_launch;
    Fiber* me = L->current;
    Block& b = my_block();
    const Site site{file, line};
    if (b.arrived == 0) {
        b.site = site;
    } else if (!b.site.same(site)) {
        fail("__syncthreads mismatch in block " + std::to_string(me->block) + ": " + where(*me) +
             " reached " + at(site) + " while " + std::to_string(b.arrived) + " threads wait at " +
             at(b.site));
    }
    ++b.arrived;
    if (b.arrived == b.live) {
        release_block(L, me->block);
        yield_to_scheduler();
        return;
    }
    me->state = State::Waiting;
    me->wait = Wait::Block;
    yield_to_scheduler();
}

inline void release_grid(Launch* L) {
    for (Fiber& f : L->fibers)
        if (f.state == State::Waiting && f.wait == Wait::Grid) f.state = State::Runnable;
    L->grid_arrived = 0;
}

inline void grid_sync(const char* file, int line) {
    Launch* L = g_launch;
    Fiber* me = L->current;
    const Site site{file, line};
    if (!L->cfg->cooperative)
        fail("grid.sync() at " + at(site) + " in a launch that is not cooperative "
             "(cudaErrorCooperativeLaunchRequired / illegal instruction on a GPU)");
    if (L->grid_arrived == 0) {
        L->grid_site = site;
    } else if (!L->grid_site.same(site)) {
        fail("grid.sync mismatch: " + where(*me) + " reached " + at(site) + " while " +
             std::to_string(L->grid_arrived) + " threads wait at " + at(L->grid_site));
    }
    ++L->grid_arrived;
    if (L->grid_arrived == L->grid_live) {
        release_grid(L);
        yield_to_scheduler();
        return;
    }
    me->state = State::Waiting;
    me->wait = Wait::Grid;
    yield_to_scheduler();
}

// ---- shared memory --------------------------------------------------------------------------------
template <typename T>
inline T* dynamic_shared() {
    return reinterpret_cast<T*>(my_block().dynamic_shared.data());
}

template <typename T>
inline T& static_shared(int id) {
    Launch* L = g_launch;
    Block& b = my_block();
    if (b.static_slots.size() <= static_cast<std::size_t>(id)) b.static_slots.resize(id + 1, nullptr);
    if (!b.static_slots[id]) {
        b.static_bytes += sizeof(T);
        if (b.static_bytes + L->cfg->dynamic_shared_bytes > L->cfg->shared_limit_bytes) {
            fail("CUDA_ERROR_INVALID_VALUE: static shared memory (" + std::to_string(b.static_bytes) +
                 " bytes so far) + dynamic (" + std::to_string(L->cfg->dynamic_shared_bytes) +
                 ") exceeds the per-block limit of " + std::to_string(L->cfg->shared_limit_bytes));
        }
        b.static_areas.emplace_back(sizeof(T) + 16, 0xff);  // poisoned: NaN bytes
        void* p = b.static_areas.back().data();
        std::size_t space = sizeof(T) + 16;
        b.static_slots[id] = std::align(16, sizeof(T), p, space);
    }
    return *reinterpret_cast<T*>(b.static_slots[id]);
}

// ---- fibers --------------------------------------------------------------------------------------
inline void* stack_top(std::size_t i) {
    while (g_stacks.size() <= i) {
        void* base = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) return nullptr;
        mprotect(base, kGuardBytes, PROT_NONE);   // overflow faults instead of corrupting
        g_stacks.push_back(base);
    }
    return static_cast<char*>(g_stacks[i]) + kStackBytes + kGuardBytes;
}

inline void on_exit(Launch* L, Fiber* me);

[[noreturn]] inline void fiber_main() {
    Launch* L = g_launch;
    L->body();
    on_exit(L, L->current);
    L->current->state = State::Exited;
    for (;;) cudasim_switch_context(&L->current->sp, L->scheduler_sp);
}

inline void init_fiber(Fiber& f, void* top) {
    auto* sp = static_cast<std::uint64_t*>(top);
    *--sp = 0;                                                     // fake return address
    *--sp = reinterpret_cast<std::uint64_t>(&fiber_main);          // where ret goes
    for (int r = 0; r < 6; ++r) *--sp = 0;                         // rbp rbx r12-r15
    *--sp = 0x1F80ull | (0x037Full << 32);                         // mxcsr, x87 control word
    f.sp = sp;
    f.state = State::Runnable;
}

inline void on_exit(Launch* L, Fiber* me) {
    Block& b = L->blocks[me->block];
    Warp& w = L->warps[me->warp_slot];
    const unsigned lane = me->thread % 32;
    w.live &= ~(1u << lane);
    if (w.arrived && (w.mask >> lane & 1u)) {
        record_failure(L, where(*me) + " exited while lanes 0x" + [&] {
            char h[16]; std::snprintf(h, sizeof h, "%08x", w.arrived); return std::string(h); }() +
            " wait for it in " + op_name(w.op) + " at " + at(w.site));
    }
    --b.live;
    --L->grid_live;
    if (b.arrived && b.arrived == b.live) release_block(L, me->block);
    if (L->grid_arrived) {
        if (b.live == 0)
            record_failure(L, "block " + std::to_string(me->block) + " exited while " +
                              std::to_string(L->grid_arrived) + " threads wait in grid.sync at " +
                              at(L->grid_site) + " (deadlock on a GPU)");
        else if (L->grid_arrived == L->grid_live) release_grid(L);
    }
}

// Run the fibers in L->fibers to completion (or failure). Returns false on failure.
inline bool schedule(Launch* L) {
    const std::size_t n = L->fibers.size();
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = L->cfg->order == 1 ? n - 1 - i : i;
    std::mt19937_64 rng(L->cfg->seed);
    for (;;) {
        if (L->cfg->order == 2) std::shuffle(order.begin(), order.end(), rng);
        bool ran = false, live = false;
        for (std::size_t i : order) {
            Fiber& f = L->fibers[i];
            if (f.state == State::Exited) continue;
            live = true;
            if (f.state != State::Runnable) continue;
            ran = true;
            L->current = &f;
            g_thread_idx = f.thread_idx;
            g_block_idx = f.block_idx;
            cudasim_switch_context(&L->scheduler_sp, f.sp);
            if (L->failed) return false;
        }
        if (!live) return true;
        if (!ran) {
            std::string msg = "deadlock: no thread can run; waiting:";
            int shown = 0;
            for (const Fiber& f : L->fibers) {
                if (f.state != State::Waiting || shown++ >= 8) continue;
                const Warp& w = L->warps[f.warp_slot];
                const Block& b = L->blocks[f.block];
                msg += " [" + where(f) + " in " +
                       (f.wait == Wait::Block ? "__syncthreads at " + at(b.site)
                        : f.wait == Wait::Grid ? "grid.sync at " + at(L->grid_site)
                        : std::string(op_name(w.op)) + " at " + at(w.site)) + "]";
            }
            record_failure(L, msg);
            return false;
        }
    }
}

inline bool check_canary(Launch* L, unsigned block) {
    const auto& d = L->blocks[block].dynamic_shared;
    for (std::size_t i = d.size() - kCanaryBytes; i < d.size(); ++i) {
        if (d[i] != kCanaryByte) {
            record_failure(L, "write past the end of dynamic shared memory (" +
                              std::to_string(L->cfg->dynamic_shared_bytes) + " bytes) in block " +
                              std::to_string(block) + ", byte +" +
                              std::to_string(i - (d.size() - kCanaryBytes)));
            return false;
        }
    }
    return true;
}

// Set up the fibers of blocks [first..] listed in `ids` and run them.
inline bool run_blocks(Launch* L, const std::vector<unsigned>& ids) {
    const unsigned tpb = L->threads_per_block;
    const LaunchConfig& c = *L->cfg;
    L->fibers.assign(ids.size() * tpb, Fiber{});
    L->warps.assign(ids.size() * L->warps_per_block, Warp{});
    L->grid_live = static_cast<unsigned>(ids.size()) * tpb;
    L->grid_arrived = 0;
    for (std::size_t bi = 0; bi < ids.size(); ++bi) {
        const unsigned id = ids[bi];
        Block& b = L->blocks[id];
        b.live = tpb;
        b.arrived = 0;
        b.slot_base = static_cast<unsigned>(bi * tpb);
        b.dynamic_shared.assign(c.dynamic_shared_bytes + kCanaryBytes, 0xff);
        std::memset(b.dynamic_shared.data() + c.dynamic_shared_bytes, kCanaryByte, kCanaryBytes);
        b.static_areas.clear();
        b.static_slots.clear();
        b.static_bytes = 0;
        const uint3 bidx{id % c.grid[0], id / c.grid[0] % c.grid[1], id / (c.grid[0] * c.grid[1])};
        for (unsigned t = 0; t < tpb; ++t) {
            Fiber& f = L->fibers[bi * tpb + t];
            f.block = id;
            f.thread = t;
            f.slot_base = static_cast<unsigned>(bi * tpb);
            f.warp_slot = static_cast<unsigned>(bi * L->warps_per_block + t / 32);
            f.block_idx = bidx;
            f.thread_idx = uint3{t % c.block[0], t / c.block[0] % c.block[1], t / (c.block[0] * c.block[1])};
            void* top = stack_top(bi * tpb + t);
            if (!top) { record_failure(L, "out of memory for fiber stacks"); return false; }
            init_fiber(f, top);
        }
        for (unsigned w = 0; w < L->warps_per_block; ++w) {
            const unsigned lanes = std::min(32u, tpb - 32 * w);
            L->warps[bi * L->warps_per_block + w].live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
        }
    }
    if (!schedule(L)) return false;
    for (unsigned id : ids) if (!check_canary(L, id)) return false;
    return true;
}

inline int run_launch(Launch& L, char* err, int errlen) {
    const LaunchConfig& c = *L.cfg;
    L.threads_per_block = c.block[0] * c.block[1] * c.block[2];
    L.warps_per_block = (L.threads_per_block + 31) / 32;
    const unsigned n_blocks = c.grid[0] * c.grid[1] * c.grid[2];
    L.blocks.assign(n_blocks, Block{});
    g_block_dim = dim3{c.block[0], c.block[1], c.block[2]};
    g_grid_dim = dim3{c.grid[0], c.grid[1], c.grid[2]};
    std::vector<unsigned> ids(n_blocks);
    for (unsigned i = 0; i < n_blocks; ++i) ids[i] = c.order == 1 ? n_blocks - 1 - i : i;
    if (c.order == 2) { std::mt19937_64 rng(c.seed ^ 0x5eedull); std::shuffle(ids.begin(), ids.end(), rng); }
    Launch* saved = g_launch;
    g_launch = &L;
    bool ok = true;
    if (c.cooperative) {
        ok = run_blocks(&L, ids);
    } else {
        for (unsigned id : ids) {
            if (!(ok = run_blocks(&L, std::vector<unsigned>{id}))) break;
        }
    }
    g_launch = saved;
    if (!ok) {
        std::snprintf(err, errlen, "%s", L.error.c_str());
        return 1;
    }
    return 0;
}

// ---- parameter types as a string, from the kernel's function type --------------------------------
template <typename T> struct type_name { static std::string get() { return "?"; } };
#define CUDASIM_TYPE_NAME(T) template <> struct type_name<T> { static std::string get() { return #T; } };
CUDASIM_TYPE_NAME(float) CUDASIM_TYPE_NAME(double) CUDASIM_TYPE_NAME(int)
CUDASIM_TYPE_NAME(unsigned) CUDASIM_TYPE_NAME(long long) CUDASIM_TYPE_NAME(unsigned long long)
CUDASIM_TYPE_NAME(bool) CUDASIM_TYPE_NAME(char) CUDASIM_TYPE_NAME(unsigned char)
CUDASIM_TYPE_NAME(signed char) CUDASIM_TYPE_NAME(short) CUDASIM_TYPE_NAME(unsigned short)
CUDASIM_TYPE_NAME(long) CUDASIM_TYPE_NAME(unsigned long) CUDASIM_TYPE_NAME(void)
#undef CUDASIM_TYPE_NAME
template <typename T> struct type_name<T*> {
    static std::string get() {
        return (std::is_const<T>::value ? "const " : "") + type_name<std::remove_cv_t<T>>::get() + "*";
    }
};

template <typename... P>
inline std::string signature_of(void (*)(P...)) {
    std::string s;
    ((s += (s.empty() ? "" : ",") + type_name<std::decay_t<P>>::get()), ...);
    return s;
}

template <typename... P, std::size_t... I>
inline int launch_impl(void (*kernel)(P...), const char* name, void** args, const LaunchConfig* cfg,
                       char* err, int errlen, std::index_sequence<I...>) {
    std::tuple<std::decay_t<P>...> values{*static_cast<std::decay_t<P>*>(args[I])...};
    Launch L;
    L.cfg = cfg;
    L.kernel = name;
    L.body = [&] { std::apply(kernel, values); };
    return run_launch(L, err, errlen);
}

template <typename... P>
inline int launch(void (*kernel)(P...), const char* name, void** args, const LaunchConfig* cfg,
                  char* err, int errlen) {
    return launch_impl(kernel, name, args, cfg, err, errlen, std::index_sequence_for<P...>{});
}

}  // namespace cudasim

// ---- device-side names as kernels see them -------------------------------------------------------
#define threadIdx (::cudasim::g_thread_idx)
#define blockIdx (::cudasim::g_block_idx)
#define blockDim (::cudasim::g_block_dim)
#define gridDim (::cudasim::g_grid_dim)

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::cudasim::syncthreads(file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    ::cudasim::warp_op(::cudasim::WarpOp::Sync, mask, 0, 0, 32, file, line);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ::cudasim::from_bits<T>(::cudasim::warp_op(::cudasim::WarpOp::ShflIdx, mask,
                                                      ::cudasim::to_bits(var), src_lane, width, file, line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ::cudasim::from_bits<T>(::cudasim::warp_op(::cudasim::WarpOp::ShflXor, mask,
                                                      ::cudasim::to_bits(var), lane_mask, width, file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ::cudasim::from_bits<T>(::cudasim::warp_op(::cudasim::WarpOp::ShflDown, mask,
                                                      ::cudasim::to_bits(var), int(delta), width, file, line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ::cudasim::from_bits<T>(::cudasim::warp_op(::cudasim::WarpOp::ShflUp, mask,
                                                      ::cudasim::to_bits(var), int(delta), width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    return static_cast<unsigned>(::cudasim::warp_op(::cudasim::WarpOp::Ballot, mask, pred != 0, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
    return static_cast<int>(::cudasim::warp_op(::cudasim::WarpOp::Any, mask, pred != 0, 0, 32, file, line));
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
    return static_cast<int>(::cudasim::warp_op(::cudasim::WarpOp::All, mask, pred != 0, 0, 32, file, line));
}
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
