// The CPU emulator's engine: launches (a pool of OS threads, one per CUDA
// thread of a block), block and warp barriers, dynamic shared memory, and
// the CUDA runtime API the backend and its tests call. The model and its
// limits are described at the top of cuda_emu.h.
#include "tests/cuda_emu/cuda_emu.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

__thread uint3 emu_thread_idx_;
__thread uint3 emu_block_idx_;
__thread dim3 emu_block_dim_ = dim3(1, 1, 1);
__thread dim3 emu_grid_dim_ = dim3(1, 1, 1);

namespace {

// ---- what sm_90 allows ----------------------------------------------------------

const int kMaxThreads = 1024;
const size_t kDefaultSmem = 48 * 1024;
const size_t kMaxSmemOptin = 232448; // 227 KiB
const int kSmCount = 132;
const size_t kDefaultDeviceMemory = (size_t)80 << 30;
// The PROT_NONE guard on each side of a dry run's allocation: offsets up to
// this far past either end fault.
const size_t kDryGuard = (size_t)1 << 30;

// ---- futex waits ------------------------------------------------------------------

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex words");

void futex_wait(std::atomic<uint32_t> *w, uint32_t seen)
{
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAIT_PRIVATE, seen, nullptr,
            nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t> *w)
{
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

// Waits until *w differs from seen. Spinning only pays when every thread
// has a core of its own; otherwise it steals the time of the threads that
// the waiter is waiting for.
void wait_change(std::atomic<uint32_t> *w, uint32_t seen, bool spin)
{
    if (spin)
        for (int i = 0; i < 2000; i++) {
            if (w->load(std::memory_order_acquire) != seen)
                return;
            __builtin_ia32_pause();
        }
    while (w->load(std::memory_order_acquire) == seen)
        futex_wait(w, seen);
}

// ---- the executable's symbols: kernel names and kernel statics ------------------

// Kernels are mostly static or template functions, which dladdr cannot
// name, so the symbol table of /proc/self/exe is read once.
struct elf_sym {
    uintptr_t addr; // run-time address
    size_t size;
    std::string name; // mangled
};

struct elf_index {
    std::vector<elf_sym> funcs;   // sorted by address
    std::vector<elf_sym> statics; // zero-initialised function-local statics ("_ZZ...")
};

void elf_load(elf_index &ix)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(Elf64_Ehdr)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    const size_t size = (size_t)sb.st_size;
    void *map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    const unsigned char *base = (const unsigned char *)map;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    uintptr_t bias = 0;
    if (eh->e_type == ET_DYN) // a PIE: the main program is dl_iterate_phdr's first object
        dl_iterate_phdr(
            [](struct dl_phdr_info *pi, size_t, void *out) {
                *(uintptr_t *)out = pi->dlpi_addr;
                return 1;
            },
            &bias);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        !eh->e_shoff || eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > size) {
        munmap(map, size);
        return;
    }
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(base + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum ||
            sh[i].sh_offset + sh[i].sh_size > size)
            continue;
        const Elf64_Shdr &strs = sh[sh[i].sh_link];
        if (strs.sh_offset + strs.sh_size > size)
            continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(base + sh[i].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; k++) {
            const int type = ELF64_ST_TYPE(sym[k].st_info);
            if (sym[k].st_value == 0 || sym[k].st_name >= strs.sh_size ||
                (type != STT_FUNC && type != STT_OBJECT))
                continue;
            const char *nm = (const char *)base + strs.sh_offset + sym[k].st_name;
            elf_sym e{(uintptr_t)sym[k].st_value + bias, (size_t)sym[k].st_size, nm};
            if (type == STT_FUNC)
                ix.funcs.push_back(e);
            else if (strncmp(nm, "_ZZ", 3) == 0 && sym[k].st_size > 0 &&
                     sym[k].st_shndx < eh->e_shnum && sh[sym[k].st_shndx].sh_type == SHT_NOBITS)
                ix.statics.push_back(e);
        }
    }
    munmap(map, size);
    std::sort(ix.funcs.begin(), ix.funcs.end(),
              [](const elf_sym &x, const elf_sym &y) { return x.addr < y.addr; });
}

std::mutex g_elf_mutex;

const elf_index &elf(void)
{
    static elf_index *ix = nullptr;
    std::lock_guard<std::mutex> lock(g_elf_mutex);
    if (!ix) {
        ix = new elf_index;
        elf_load(*ix);
    }
    return *ix;
}

// The mangled name of the function at addr, or "".
std::string mangled_name(const void *addr)
{
    const elf_index &ix = elf();
    uintptr_t a = (uintptr_t)addr;
    auto it = std::upper_bound(ix.funcs.begin(), ix.funcs.end(), a,
                               [](uintptr_t v, const elf_sym &e) { return v < e.addr; });
    while (it != ix.funcs.begin()) {
        --it;
        if (it->addr == a || (a > it->addr && a < it->addr + it->size))
            return it->name;
        if (it->addr < a)
            break;
    }
    Dl_info info;
    if (dladdr(addr, &info) && info.dli_sname && info.dli_saddr == addr)
        return info.dli_sname;
    return "";
}

std::string symbol_name(const void *addr)
{
    std::string m = mangled_name(addr);
    if (m.empty()) {
        char buf[32];
        snprintf(buf, sizeof buf, "%p", addr);
        return buf;
    }
    int st = 0;
    char *d = abi::__cxa_demangle(m.c_str(), nullptr, nullptr, &st);
    std::string s = d ? d : m;
    free(d);
    return s;
}

struct byte_range {
    unsigned char *p;
    size_t n;
};

// The static __shared__ variables of a kernel: the zero-initialised
// function-local statics of the kernel function itself ("_ZZ<kernel>E...").
// Those of device functions it calls are not found.
const std::vector<byte_range> &kernel_statics(const void *fn)
{
    static std::map<const void *, std::vector<byte_range>> *cache =
        new std::map<const void *, std::vector<byte_range>>;
    auto it = cache->find(fn);
    if (it != cache->end())
        return it->second;
    std::vector<byte_range> &v = (*cache)[fn];
    std::string m = mangled_name(fn);
    if (m.empty())
        return v;
    std::string prefix = m.compare(0, 2, "_Z") == 0
                             ? "_ZZ" + m.substr(2) + "E"
                             : "_ZZ" + std::to_string(m.size()) + m + "E";
    for (const elf_sym &e : elf().statics)
        if (e.name.compare(0, prefix.size(), prefix) == 0)
            v.push_back(byte_range{(unsigned char *)e.addr, e.size});
    return v;
}

// ---- the launch in progress ----------------------------------------------------------

enum op_kind { OP_NONE, OP_SHFL, OP_VOTE, OP_SYNCWARP, OP_MATCH_ANY, OP_MATCH_ALL, OP_REDUCE };

struct warp_state {
    int live;          // lanes that have not returned
    uint32_t livemask; // which
    int arrived;       // lanes at the pending warp intrinsic
    int waiting;       // of them, asleep
    op_kind op;        // the pending intrinsic
    const char *opname;
    unsigned mask;
    uint32_t part[2]; // lanes that took part, per generation parity
    uint64_t slot[2][32];
    std::atomic<uint32_t> gen;
};

struct launch_state {
    // Set by the launching thread, read-only while the workers run.
    const void *fn;
    void (*run)(void *);
    void *closure;
    dim3 grid, block;
    int nthreads, nwarps;
    long long nblocks;
    long long first_block; // 0, or the last block in a dry run
    unsigned char *smem;   // the kernel's view of dynamic shared memory
    unsigned char *smem_alloc;
    size_t smem_bytes;
    const std::vector<byte_range> *statics; // the kernel's static __shared__
    bool spin;

    // The running block's barriers, under mu.
    pthread_mutex_t mu;
    int live;    // threads that have not returned
    int blocked; // threads asleep at a barrier or warp intrinsic
    int bar_arrived, bar_waiting;
    int bar_count[2];
    const char *bar_name;
    std::atomic<uint32_t> bar_gen;
    warp_state warps[kMaxThreads / 32];

    // Between blocks and at the end.
    std::atomic<int> end_arrived;
    std::atomic<uint32_t> end_gen;
    std::atomic<int> remaining;
    std::atomic<uint32_t> done;
};

launch_state g_launch;
std::mutex g_launch_mutex; // one launch at a time: static __shared__ is per kernel
__thread int t_tid = -1;   // linear thread index in the block; -1 outside kernels

// Shared memory holds garbage when a block starts: 0xFF bytes, NaN as floats.
void fill_smem(launch_state &L)
{
    if (L.smem_bytes)
        memset(L.smem, 0xff, L.smem_bytes);
    for (const byte_range &r : *L.statics)
        memset(r.p, 0xff, r.n);
}

void reset_block(launch_state &L)
{
    L.live = L.nthreads;
    L.blocked = 0;
    L.bar_arrived = L.bar_waiting = 0;
    for (int w = 0; w < L.nwarps; w++) {
        warp_state &W = L.warps[w];
        int lanes = L.nthreads - w * 32 < 32 ? L.nthreads - w * 32 : 32;
        W.live = lanes;
        W.livemask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
        W.arrived = W.waiting = 0;
        W.op = OP_NONE;
    }
}

// The message, naming the kernel, block and thread when inside one; abort.
[[noreturn]] void vfail(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (t_tid >= 0) {
        launch_state &L = g_launch;
        fprintf(stderr,
                "cuda_emu: kernel %s, grid (%u,%u,%u) block (%u,%u,%u): block (%u,%u,%u) "
                "thread (%u,%u,%u) (warp %d lane %d): %s\n",
                symbol_name(L.fn).c_str(), L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y,
                L.block.z, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
                threadIdx.z, t_tid >> 5, t_tid & 31, msg);
    } else {
        fprintf(stderr, "cuda_emu: %s\n", msg);
    }
    fflush(stderr);
    abort();
}

[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
}

void require_kernel(const char *name)
{
    if (t_tid < 0)
        fail("%s called outside a kernel", name);
}

// Called with mu held when a thread goes to sleep: if every live thread
// sleeps, nothing can wake them.
void check_deadlock(launch_state &L)
{
    if (L.live == 0 || L.blocked != L.live)
        return;
    std::string who;
    char buf[160];
    snprintf(buf, sizeof buf, "%d of %d threads have returned; ", L.nthreads - L.live,
             L.nthreads);
    who += buf;
    if (L.bar_arrived) {
        snprintf(buf, sizeof buf, "%d wait at %s; ", L.bar_arrived, L.bar_name);
        who += buf;
    }
    for (int w = 0; w < L.nwarps; w++)
        if (L.warps[w].arrived) {
            snprintf(buf, sizeof buf, "warp %d: %d lanes (mask %08x) wait at %s; ", w,
                     L.warps[w].arrived, L.warps[w].part[L.warps[w].gen.load() & 1],
                     L.warps[w].opname);
            who += buf;
        }
    fail("deadlock: every live thread of the block waits: %s(a __syncthreads or warp "
         "intrinsic that some live threads never reach)",
         who.c_str());
}

// Both with mu held; the caller wakes the sleepers after unlocking.
void release_bar(launch_state &L)
{
    L.blocked -= L.bar_waiting;
    L.bar_waiting = 0;
    L.bar_arrived = 0;
    L.bar_gen.fetch_add(1, std::memory_order_release);
}

void release_warp(launch_state &L, warp_state &W)
{
    L.blocked -= W.waiting;
    W.waiting = 0;
    W.arrived = 0;
    W.op = OP_NONE;
    W.gen.fetch_add(1, std::memory_order_release);
}

void thread_returned(launch_state &L)
{
    warp_state &W = L.warps[t_tid >> 5];
    pthread_mutex_lock(&L.mu);
    L.live--;
    W.live--;
    W.livemask &= ~(1u << (t_tid & 31));
    bool wake_bar = false, wake_warp = false;
    if (L.bar_arrived > 0 && L.bar_arrived == L.live) {
        release_bar(L);
        wake_bar = true;
    }
    if (W.arrived > 0 && W.arrived == W.live) {
        release_warp(L, W);
        wake_warp = true;
    }
    check_deadlock(L);
    pthread_mutex_unlock(&L.mu);
    if (wake_bar)
        futex_wake_all(&L.bar_gen);
    if (wake_warp)
        futex_wake_all(&W.gen);
}

// The barrier at the end of every block, over all the launch's threads
// (returned or not); the last one prepares the next block.
void block_end(launch_state &L, bool more)
{
    uint32_t g = L.end_gen.load(std::memory_order_acquire);
    if (L.end_arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == L.nthreads) {
        if (more) {
            reset_block(L);
            fill_smem(L);
        }
        L.end_arrived.store(0, std::memory_order_relaxed);
        L.end_gen.fetch_add(1, std::memory_order_release);
        futex_wake_all(&L.end_gen);
    } else {
        wait_change(&L.end_gen, g, L.spin);
    }
}

void run_blocks(int tid)
{
    launch_state &L = g_launch;
    const dim3 b = L.block, g = L.grid;
    emu_block_dim_ = b;
    emu_grid_dim_ = g;
    emu_thread_idx_.x = (unsigned)tid % b.x;
    emu_thread_idx_.y = (unsigned)tid / b.x % b.y;
    emu_thread_idx_.z = (unsigned)tid / (b.x * b.y);
    for (long long blk = L.first_block; blk < L.nblocks; blk++) {
        emu_block_idx_.x = (unsigned)(blk % g.x);
        emu_block_idx_.y = (unsigned)(blk / g.x % g.y);
        emu_block_idx_.z = (unsigned)(blk / ((long long)g.x * g.y));
        t_tid = tid;
        L.run(L.closure);
        thread_returned(L);
        t_tid = -1;
        block_end(L, blk + 1 < L.nblocks);
    }
    if (L.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        L.done.store(1, std::memory_order_release);
        futex_wake_all(&L.done);
    }
}

// ---- the thread pool ---------------------------------------------------------------

struct worker {
    pthread_t thread;
    int id;
    std::atomic<uint32_t> seq; // bumped to start a launch
};

worker g_workers[kMaxThreads];
int g_nworkers;
int g_ncpu;

void *worker_main(void *arg)
{
    worker *w = (worker *)arg;
    uint32_t seen = 0;
    for (;;) {
        uint32_t s;
        while ((s = w->seq.load(std::memory_order_acquire)) == seen)
            futex_wait(&w->seq, seen);
        seen = s;
        run_blocks(w->id);
    }
    return nullptr;
}

// A forked child has none of the parent's threads.
void after_fork_child(void)
{
    g_nworkers = 0;
    new (&g_launch_mutex) std::mutex();
}

void grow_pool(int n)
{
    static bool atfork = false;
    if (!atfork) {
        pthread_atfork(nullptr, nullptr, after_fork_child);
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        g_ncpu = c > 0 ? (int)c : 1;
        atfork = true;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)4 << 20);
    for (; g_nworkers < n; g_nworkers++) {
        worker &w = g_workers[g_nworkers];
        w.id = g_nworkers;
        w.seq.store(0, std::memory_order_relaxed);
        int e = pthread_create(&w.thread, &attr, worker_main, &w);
        if (e != 0)
            fail("cannot start thread %d of the pool: %s", g_nworkers, strerror(e));
        pthread_detach(w.thread);
    }
    pthread_attr_destroy(&attr);
}

// ---- device memory -----------------------------------------------------------------

enum mem_kind { MEM_DEVICE, MEM_HOST };

struct allocation {
    size_t size;
    mem_kind kind;
    // A dry run's device memory: address space from mmap, never filled,
    // and a small heap block (its address complemented, so that nothing
    // points to it) for LeakSanitizer to report if it is never freed.
    void *map;
    size_t map_bytes;
    uintptr_t leak_marker;
};

// Keyed by the complement of the start address: ordered by decreasing
// start, and not a pointer to LeakSanitizer, so device memory nobody frees
// is reported as a leak with the stack of its cudaMalloc.
std::mutex g_mem_mutex;
std::map<uintptr_t, allocation> g_allocs;
size_t g_device_bytes;

uintptr_t alloc_key(const void *p)
{
    return ~(uintptr_t)p;
}

size_t device_memory_total(void)
{
    static size_t total = 0;
    if (!total) {
        const char *e = getenv("DIT_CUDA_EMU_MEM_MB");
        total = e && atoll(e) > 0 ? (size_t)atoll(e) << 20 : kDefaultDeviceMemory;
    }
    return total;
}

// The allocation holding [p, p + n), with n == 0 meaning p may be its end.
// Call with g_mem_mutex held.
const allocation *find_alloc(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.lower_bound(alloc_key(p)); // the last start <= a
    if (it == g_allocs.end())
        return nullptr;
    uintptr_t start = ~it->first;
    if (a - start > it->second.size || a - start + n > it->second.size)
        return nullptr;
    return &it->second;
}

bool is_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    const allocation *al = find_alloc(p, n);
    return al && al->kind == MEM_DEVICE;
}

// Address space for a dry run's allocation of size bytes: PROT_NONE guards
// of kDryGuard on both sides, and the allocation at the end of its pages
// (256-byte aligned, as cudaMalloc's) so that running past its end faults
// within 255 bytes. Readable and writable when blocks run, lazily (pages
// never touched cost nothing; read, they are zeros); nullptr when the
// address space runs out.
void *dry_map(size_t size, bool access, void **map, size_t *map_bytes)
{
    const size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = (size + ps - 1) / ps * ps;
    const size_t total = kDryGuard + body + kDryGuard;
    void *base = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                      0);
    if (base == MAP_FAILED)
        return nullptr;
    char *b = (char *)base + kDryGuard;
    if (access && mprotect(b, body, PROT_READ | PROT_WRITE) != 0) {
        munmap(base, total);
        return nullptr;
    }
    *map = base;
    *map_bytes = total;
    return b + (body - (size + 255) / 256 * 256);
}

// Is [p, p + n) in a dry run's allocation? (Its copies are skipped.)
bool is_dry(const void *p, size_t n)
{
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    const allocation *al = find_alloc(p, n);
    return al && al->map;
}

bool is_accessible_from_kernel(const void *p)
{
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    return find_alloc(p, 0) != nullptr; // device or pinned host memory
}

// Is some byte of [p, p + n) device memory? (A host range must not overlap it.)
bool touches_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    uintptr_t a = (uintptr_t)p;
    // From the last allocation starting inside the range down to the first
    // that ends before it.
    for (auto it = g_allocs.lower_bound(alloc_key((const char *)p + (n ? n - 1 : 0)));
         it != g_allocs.end(); ++it) {
        if (~it->first + it->second.size <= a)
            break;
        if (it->second.kind == MEM_DEVICE)
            return true;
    }
    return false;
}

// ---- errors ---------------------------------------------------------------------------

__thread cudaError_t t_last_error = cudaSuccess;

cudaError_t record(cudaError_t e)
{
    if (e != cudaSuccess)
        t_last_error = e;
    return e;
}

std::mutex g_attr_mutex;
std::map<const void *, int> g_smem_limit; // cudaFuncAttributeMaxDynamicSharedMemorySize

size_t smem_limit_of(const void *fn)
{
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    auto it = g_smem_limit.find(fn);
    return it == g_smem_limit.end() ? kDefaultSmem : (size_t)it->second;
}

bool trace_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("DIT_CUDA_EMU_TRACE");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

// Seconds a launch may run before the emulator gives up on it (0: forever).
double launch_timeout_s(void)
{
    static double t = -1;
    if (t < 0) {
        const char *e = getenv("DIT_CUDA_EMU_TIMEOUT");
        t = e && *e ? atof(e) : 300;
        if (t < 0)
            t = 0;
    }
    return t;
}

// ---- dry runs ------------------------------------------------------------------------

enum dry_mode { DRY_OFF, DRY_CONFIG, DRY_LAST };

// Read at every call, so that a test can set it after the process started.
dry_mode dry_mode_now(void)
{
    const char *e = getenv("DIT_CUDA_EMU_DRYRUN");
    if (!e || !*e || strcmp(e, "0") == 0)
        return DRY_OFF;
    return strcmp(e, "last") == 0 ? DRY_LAST : DRY_CONFIG;
}

struct sigaction g_old_segv;

// When a dry run's blocks run, a fault is most likely an offset past an
// allocation, into its guard: name the kernel, the thread and the nearest
// allocation, then let the previous action (the default: a core dump) end
// the process as the access is retried.
void dry_segv(int sig, siginfo_t *si, void *)
{
    const void *a = si->si_addr;
    char where[160] = "";
    if (g_mem_mutex.try_lock()) {
        auto it = g_allocs.lower_bound(alloc_key(a)); // the last start <= a
        if (it != g_allocs.end())
            snprintf(where, sizeof where,
                     ", %zu bytes from the start of the %zu-byte allocation %p",
                     (size_t)((uintptr_t)a - ~it->first), it->second.size, (void *)~it->first);
        g_mem_mutex.unlock();
    }
    if (t_tid >= 0) {
        const launch_state &L = g_launch;
        fprintf(stderr,
                "cuda_emu: kernel %s, grid (%u,%u,%u) block (%u,%u,%u): block (%u,%u,%u) "
                "thread (%u,%u,%u): dry run: memory fault at %p%s\n",
                symbol_name(L.fn).c_str(), L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y,
                L.block.z, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
                threadIdx.z, a, where);
    } else {
        fprintf(stderr, "cuda_emu: dry run: memory fault outside a kernel at %p%s\n", a, where);
    }
    sigaction(sig, &g_old_segv, nullptr);
}

// Only over the default action: a sanitizer's handler prints more.
void install_dry_segv(void)
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction old;
        if (sigaction(SIGSEGV, nullptr, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
            old.sa_handler != SIG_DFL)
            return;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = dry_segv;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        g_old_segv = old;
        sigaction(SIGSEGV, &sa, nullptr);
    });
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// ---- streams and events ------------------------------------------------------------------

} // namespace

struct CUstream_st {
    unsigned magic;
};
struct CUevent_st {
    unsigned magic;
    double ms;
    bool recorded;
};

namespace {
const unsigned kStreamMagic = 0x57AE4D01u, kEventMagic = 0xE7E47001u;

bool valid_stream(cudaStream_t s)
{
    return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread ||
           s->magic == kStreamMagic;
}
} // namespace

// ---- the emulator's entry points ----------------------------------------------------------

void *emu_dynamic_smem(void)
{
    require_kernel("emu_dynamic_smem (DYNAMIC_SMEM)");
    return g_launch.smem;
}

namespace emu {

void trap(const char *what)
{
    fail("%s", what);
}

bool dryrun()
{
    return dry_mode_now() != DRY_OFF;
}

void abort_kernel(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
}

void launch(const launch_args &a)
{
    if (t_tid >= 0)
        fail("a kernel launches a kernel (dynamic parallelism is not emulated)");
    const dim3 g = a.grid, b = a.block;
    unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
        threads > (unsigned long long)kMaxThreads || g.x == 0 || g.y == 0 || g.z == 0 ||
        g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
        record(cudaErrorInvalidConfiguration);
        return;
    }
    if (a.smem > smem_limit_of(a.fn)) {
        record(cudaErrorInvalidValue);
        return;
    }
    if (!valid_stream(a.stream)) {
        record(cudaErrorInvalidResourceHandle);
        return;
    }
    for (int i = 0; i < a.nargs; i++)
        if (a.pointers[i] && !is_accessible_from_kernel(a.pointers[i]))
            fail("kernel %s: argument %d (%p) is not device memory (a host pointer, or freed)",
                 symbol_name(a.fn).c_str(), i + 1, a.pointers[i]);
    const dry_mode dry = dry_mode_now();
    if (dry == DRY_CONFIG) {
        if (trace_on())
            fprintf(stderr,
                    "cuda_emu: %s grid (%u,%u,%u) block (%u,%u,%u) dynamic smem %zu: dry run\n",
                    symbol_name(a.fn).c_str(), g.x, g.y, g.z, b.x, b.y, b.z, a.smem);
        return;
    }
    if (dry == DRY_LAST)
        install_dry_segv();

    std::lock_guard<std::mutex> lock(g_launch_mutex);
    double t0 = trace_on() ? now_ms() : 0;
    launch_state &L = g_launch;
    static bool mutex_ready = false;
    if (!mutex_ready) {
        pthread_mutex_init(&L.mu, nullptr);
        mutex_ready = true;
    }
    L.fn = a.fn;
    L.run = a.run;
    L.closure = a.closure;
    L.grid = g;
    L.block = b;
    L.nthreads = (int)threads;
    L.nwarps = (L.nthreads + 31) / 32;
    L.nblocks = (long long)g.x * g.y * g.z;
    L.first_block = dry == DRY_LAST ? L.nblocks - 1 : 0;
    L.smem_bytes = a.smem;
    L.statics = &kernel_statics(a.fn);
    // A GPU puts dynamic shared memory after the kernel's static variables,
    // promising only the 16-byte alignment DYNAMIC_SMEM declares: with
    // statics it starts 16 past a multiple of 128 here. Its end is the end
    // of the buffer, so that ASan sees accesses past it.
    const size_t skew = L.statics->empty() ? 0 : 16;
    void *sm = nullptr;
    if (posix_memalign(&sm, 128, a.smem + skew) != 0)
        fail("out of host memory for %zu bytes of shared memory", a.smem);
    L.smem_alloc = (unsigned char *)sm;
    L.smem = L.smem_alloc + skew;
    grow_pool(L.nthreads);
    L.spin = L.nthreads <= g_ncpu;
    reset_block(L);
    fill_smem(L);
    L.end_arrived.store(0);
    L.remaining.store(L.nthreads);
    L.done.store(0);
    for (int i = 0; i < L.nthreads; i++) {
        g_workers[i].seq.fetch_add(1, std::memory_order_release);
        futex_wake_all(&g_workers[i].seq);
    }
    // A kernel that spins on something no block will ever set (e.g. waiting
    // for another block, which runs only after this one) would hang CI.
    const double t_start = now_ms(), limit_ms = launch_timeout_s() * 1e3;
    while (L.done.load(std::memory_order_acquire) == 0) {
        struct timespec ts = {1, 0};
        syscall(SYS_futex, reinterpret_cast<uint32_t *>(&L.done), FUTEX_WAIT_PRIVATE, 0, &ts,
                nullptr, 0);
        if (limit_ms > 0 && now_ms() - t_start > limit_ms)
            fail("kernel %s grid (%u,%u,%u) block (%u,%u,%u) still runs after %.0f s "
                 "(DIT_CUDA_EMU_TIMEOUT): an endless loop, or a wait for another block?",
                 symbol_name(a.fn).c_str(), g.x, g.y, g.z, b.x, b.y, b.z, limit_ms / 1e3);
    }
    free(L.smem_alloc);
    L.smem = L.smem_alloc = nullptr;
    if (trace_on()) {
        size_t st = 0;
        for (const byte_range &r : *L.statics)
            st += r.n;
        fprintf(stderr,
                "cuda_emu: %s grid (%u,%u,%u) block (%u,%u,%u) dynamic smem %zu, static smem "
                "%zu: %.2f ms%s\n",
                symbol_name(a.fn).c_str(), g.x, g.y, g.z, b.x, b.y, b.z, a.smem, st,
                now_ms() - t0, dry == DRY_LAST ? " (dry run: last block only)" : "");
    }
}

int syncthreads(int pred, const char *name)
{
    require_kernel(name);
    launch_state &L = g_launch;
    pthread_mutex_lock(&L.mu);
    uint32_t g = L.bar_gen.load(std::memory_order_relaxed);
    int p = g & 1;
    if (L.bar_arrived == 0) {
        L.bar_count[p] = 0;
        L.bar_name = name;
    }
    L.bar_count[p] += pred != 0;
    L.bar_arrived++;
    if (L.bar_arrived == L.live) {
        int count = L.bar_count[p];
        release_bar(L);
        pthread_mutex_unlock(&L.mu);
        futex_wake_all(&L.bar_gen);
        return count;
    }
    L.bar_waiting++;
    L.blocked++;
    check_deadlock(L);
    pthread_mutex_unlock(&L.mu);
    wait_change(&L.bar_gen, g, L.spin);
    // The counts of this generation stay until the one after next, which
    // cannot start before every thread has left this one.
    return L.bar_count[p];
}

namespace {

// The warp barrier and exchange shared by every warp intrinsic: each live
// lane puts a value in, and gets back the generation's slots and the set
// of lanes that took part.
const uint64_t *warp_exchange(op_kind op, const char *name, unsigned mask, uint64_t value,
                              uint32_t *part)
{
    require_kernel(name);
    launch_state &L = g_launch;
    const int lane = t_tid & 31;
    warp_state &W = L.warps[t_tid >> 5];
    pthread_mutex_lock(&L.mu);
    if ((W.livemask & ~mask) != 0)
        fail("%s with mask %08x leaves out live lanes %08x (the emulator, like the project's "
             "rules, wants every live lane of the warp in the mask)",
             name, mask, W.livemask & ~mask);
    uint32_t g = W.gen.load(std::memory_order_relaxed);
    int p = g & 1;
    if (W.arrived == 0) {
        W.op = op;
        W.opname = name;
        W.mask = mask;
        W.part[p] = 0;
    } else if (W.op != op || strcmp(W.opname, name) != 0) {
        fail("lanes of warp %d meet at different warp intrinsics: %s here, %s in lanes %08x",
             t_tid >> 5, name, W.opname, W.part[p]);
    } else if (W.mask != mask) {
        fail("lanes of warp %d call %s with different masks: %08x here, %08x in lanes %08x",
             t_tid >> 5, name, mask, W.mask, W.part[p]);
    }
    W.part[p] |= 1u << lane;
    W.slot[p][lane] = value;
    W.arrived++;
    if (W.arrived == W.live) {
        release_warp(L, W);
        pthread_mutex_unlock(&L.mu);
        futex_wake_all(&W.gen);
    } else {
        W.waiting++;
        L.blocked++;
            check_deadlock(L);
        pthread_mutex_unlock(&L.mu);
        wait_change(&W.gen, g, L.spin);
    }
    *part = W.part[p];
    return W.slot[p];
}

void need_lane(uint32_t part, int src, const char *name)
{
    if (part & (1u << src))
        return;
    const launch_state &L = g_launch;
    int linear = (t_tid & ~31) + src;
    fail("%s reads lane %d, which %s", name, src,
         linear >= L.nthreads ? "does not exist (the block's last warp is partial)"
                              : "has returned from the kernel");
}

} // namespace

uint64_t shfl(shfl_mode mode, unsigned mask, uint64_t bits, int b, int width, const char *name)
{
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
        fail("%s: width %d is not a power of two in [1, 32]", name, width);
    uint32_t part;
    const uint64_t *slot = warp_exchange(OP_SHFL, name, mask, bits, &part);
    // PTX shfl.sync: c = ((32 - width) << 8) | (up ? 0 : 31).
    const int lane = t_tid & 31;
    const int segmask = 32 - width;
    const int cval = mode == SHFL_UP ? 0 : 31;
    const int bval = b & 31;
    const int max_lane = (lane & segmask) | (cval & ~segmask);
    const int min_lane = lane & segmask;
    int j;
    bool in;
    switch (mode) {
    case SHFL_UP:
        j = lane - bval;
        in = j >= max_lane;
        break;
    case SHFL_DOWN:
        j = lane + bval;
        in = j <= max_lane;
        break;
    case SHFL_XOR:
        j = lane ^ bval;
        in = j <= max_lane;
        break;
    default:
        j = min_lane | (bval & ~segmask);
        in = j <= max_lane;
        break;
    }
    if (!in)
        return bits;
    need_lane(part, j, name);
    return slot[j];
}

unsigned vote(vote_mode mode, unsigned mask, int pred, const char *name)
{
    uint32_t part;
    const uint64_t *slot = warp_exchange(OP_VOTE, name, mask, pred != 0, &part);
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((part & mask & (1u << l)) && slot[l])
            ballot |= 1u << l;
    switch (mode) {
    case VOTE_ANY:
        return ballot != 0;
    case VOTE_ALL:
        return ballot == (part & mask);
    default:
        return ballot;
    }
}

void syncwarp(unsigned mask)
{
    uint32_t part;
    warp_exchange(OP_SYNCWARP, "__syncwarp", mask, 0, &part);
}

unsigned activemask()
{
    require_kernel("__activemask");
    launch_state &L = g_launch;
    pthread_mutex_lock(&L.mu);
    unsigned m = L.warps[t_tid >> 5].livemask;
    pthread_mutex_unlock(&L.mu);
    return m;
}

unsigned match_any(unsigned mask, uint64_t value, const char *name)
{
    uint32_t part;
    const uint64_t *slot = warp_exchange(OP_MATCH_ANY, name, mask, value, &part);
    unsigned m = 0;
    for (int l = 0; l < 32; l++)
        if ((part & mask & (1u << l)) && slot[l] == value)
            m |= 1u << l;
    return m;
}

unsigned match_all(unsigned mask, uint64_t value, int *pred, const char *name)
{
    uint32_t part;
    const uint64_t *slot = warp_exchange(OP_MATCH_ALL, name, mask, value, &part);
    for (int l = 0; l < 32; l++)
        if ((part & mask & (1u << l)) && slot[l] != value) {
            *pred = 0;
            return 0;
        }
    *pred = 1;
    return part & mask;
}

uint64_t reduce(reduce_mode mode, int is_signed, unsigned mask, uint64_t value, const char *name)
{
    uint32_t part;
    const uint64_t *slot = warp_exchange(OP_REDUCE, name, mask, value, &part);
    uint64_t acc = 0;
    bool first = true;
    for (int l = 0; l < 32; l++) {
        if (!(part & mask & (1u << l)))
            continue;
        uint64_t v = slot[l];
        if (first) {
            acc = v;
            first = false;
            continue;
        }
        bool less = is_signed ? (int64_t)v < (int64_t)acc : (uint32_t)v < (uint32_t)acc;
        switch (mode) {
        case RED_ADD: acc += v; break;
        case RED_MIN: acc = less ? v : acc; break;
        case RED_MAX: acc = less ? acc : v; break;
        case RED_AND: acc &= v; break;
        case RED_OR: acc |= v; break;
        case RED_XOR: acc ^= v; break;
        }
    }
    return acc;
}

} // namespace emu

// ---- the CUDA runtime API ------------------------------------------------------------------

extern "C" {

// For tests compiled for both the GPU and the emulator: a weak reference to
// this is non-NULL only in the emulator's build, where dry runs exist.
int emu_dryrun_supported(void)
{
    return 1;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = t_last_error;
    t_last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return t_last_error;
}

#define EMU_ERRORS(X)                                                                         \
    X(cudaSuccess, "no error")                                                                \
    X(cudaErrorInvalidValue, "invalid argument")                                              \
    X(cudaErrorMemoryAllocation, "out of memory")                                             \
    X(cudaErrorInitializationError, "initialization error")                                   \
    X(cudaErrorLaunchFailure, "unspecified launch failure")                                   \
    X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")               \
    X(cudaErrorInvalidDeviceFunction, "invalid device function")                              \
    X(cudaErrorInvalidConfiguration, "invalid configuration argument")                        \
    X(cudaErrorInvalidDevice, "invalid device ordinal")                                       \
    X(cudaErrorInvalidSymbol, "invalid device symbol")                                        \
    X(cudaErrorInvalidDevicePointer, "invalid device pointer")                                \
    X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                   \
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")                              \
    X(cudaErrorNotReady, "device not ready")                                                  \
    X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                \
    X(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version") \
    X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                    \
    X(cudaErrorMisalignedAddress, "misaligned address")                                       \
    X(cudaErrorNotSupported, "operation not supported")                                       \
    X(cudaErrorUnknown, "unknown error")

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
#define X(code, text)                                                                         \
    case code:                                                                                \
        return text;
        EMU_ERRORS(X)
#undef X
    default:
        return "unrecognized error code";
    }
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
#define X(code, text)                                                                         \
    case code:                                                                                \
        return #code;
        EMU_ERRORS(X)
#undef X
    default:
        return "cudaErrorUnknown";
    }
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : record(cudaErrorInvalidDevice);
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (device != 0)
        return record(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = kSmCount; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)kMaxSmemOptin; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)kDefaultSmem; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 233472; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreads; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = 32; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = 65536; break;
    case cudaDevAttrTotalConstantMemory: *value = 65536; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrIntegrated: *value = 0; break;
    case cudaDevAttrCanMapHostMemory: *value = 1; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    case cudaDevAttrCooperativeLaunch: *value = 0; break;
    default:
        fail("cudaDeviceGetAttribute(%d) is not emulated: add it to tests/cuda_emu/emu.cc",
             (int)attr);
    }
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (device != 0)
        return record(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CPU emulator of sm_90 (tests/cuda_emu)");
    p->totalGlobalMem = device_memory_total();
    p->sharedMemPerBlock = kDefaultSmem;
    p->sharedMemPerBlockOptin = kMaxSmemOptin;
    p->sharedMemPerMultiprocessor = 233472;
    p->regsPerBlock = 65536;
    p->regsPerMultiprocessor = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = kMaxThreads;
    p->maxThreadsDim[0] = 1024;
    p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = kSmCount;
    p->maxThreadsPerMultiProcessor = 2048;
    p->maxBlocksPerMultiProcessor = 32;
    p->l2CacheSize = 50 << 20;
    p->unifiedAddressing = 1;
    p->canMapHostMemory = 1;
    p->concurrentKernels = 1;
    p->memoryPoolsSupported = 1;
    p->memoryBusWidth = 5120;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void)
{
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    *ptr = nullptr;
    if (size == 0)
        return cudaSuccess;
    const dry_mode dry = dry_mode_now();
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (size > device_memory_total() - g_device_bytes)
        return record(cudaErrorMemoryAllocation);
    if (dry != DRY_OFF) {
        void *map = nullptr;
        size_t map_bytes = 0;
        void *p = dry_map(size, dry == DRY_LAST, &map, &map_bytes);
        if (!p)
            return record(cudaErrorMemoryAllocation);
        g_allocs[alloc_key(p)] = allocation{size, MEM_DEVICE, map, map_bytes,
                                            ~(uintptr_t)malloc(1)};
        g_device_bytes += size;
        *ptr = p;
        return cudaSuccess;
    }
    void *p = nullptr;
    if (posix_memalign(&p, 256, size) != 0)
        return record(cudaErrorMemoryAllocation);
    // Uninitialised device memory reads as NaN.
    memset(p, 0xff, size);
    g_allocs[alloc_key(p)] = allocation{size, MEM_DEVICE, nullptr, 0, 0};
    g_device_bytes += size;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocAsync(void **ptr, size_t size, cudaStream_t stream)
{
    if (!valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    return cudaMalloc(ptr, size);
}

static cudaError_t free_kind(void *ptr, mem_kind kind)
{
    if (!ptr)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_allocs.find(alloc_key(ptr));
    if (it == g_allocs.end() || it->second.kind != kind)
        return record(cudaErrorInvalidValue);
    if (kind == MEM_DEVICE)
        g_device_bytes -= it->second.size;
    void *map = it->second.map;
    const size_t map_bytes = it->second.map_bytes;
    const uintptr_t marker = it->second.leak_marker;
    g_allocs.erase(it);
    if (map) {
        munmap(map, map_bytes);
        free((void *)~marker);
    } else {
        free(ptr);
    }
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    return free_kind(ptr, MEM_DEVICE);
}

cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream)
{
    if (!valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    return free_kind(ptr, MEM_DEVICE);
}

cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags)
{
    (void)flags;
    *ptr = nullptr;
    void *p = nullptr;
    if (posix_memalign(&p, 256, size ? size : 1) != 0)
        return record(cudaErrorMemoryAllocation);
    memset(p, 0xff, size ? size : 1);
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    g_allocs[alloc_key(p)] = allocation{size ? size : 1, MEM_HOST, nullptr, 0, 0};
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    return cudaHostAlloc(ptr, size, 0);
}

cudaError_t cudaFreeHost(void *ptr)
{
    return free_kind(ptr, MEM_HOST);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total)
{
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    *total = device_memory_total();
    *free_bytes = *total - g_device_bytes;
    return cudaSuccess;
}

static cudaError_t copy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                        cudaStream_t stream)
{
    if (!valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    if (n == 0)
        return cudaSuccess;
    if (kind == cudaMemcpyDefault) {
        bool dd = is_device(dst, n), sd = is_device(src, n);
        kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDeviceToDevice)
        return record(cudaErrorInvalidMemcpyDirection);
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    // The device side must lie in one allocation, the host side outside all.
    if (dst_dev ? !is_device(dst, n) : touches_device(dst, n))
        return record(cudaErrorInvalidValue);
    if (src_dev ? !is_device(src, n) : touches_device(src, n))
        return record(cudaErrorInvalidValue);
    // A dry run's memory is never filled, and reads as zeros on the host.
    if (dst_dev && is_dry(dst, n))
        return cudaSuccess;
    if (src_dev && is_dry(src, n)) {
        memset(dst, 0, n);
        return cudaSuccess;
    }
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    return copy(dst, src, n, kind, nullptr);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    return copy(dst, src, n, kind, stream);
}

cudaError_t cudaMemset(void *ptr, int value, size_t n)
{
    if (n == 0)
        return cudaSuccess;
    if (!is_device(ptr, n))
        return record(cudaErrorInvalidValue);
    if (is_dry(ptr, n))
        return cudaSuccess;
    memset(ptr, value, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t n, cudaStream_t stream)
{
    if (!valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    return cudaMemset(ptr, value, n);
}

// __constant__ and __device__ variables are plain globals here.
cudaError_t cudaMemcpyToSymbol(const void *symbol, const void *src, size_t n, size_t offset,
                               enum cudaMemcpyKind kind)
{
    if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return record(cudaErrorInvalidMemcpyDirection);
    memmove((char *)symbol + offset, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyToSymbolAsync(const void *symbol, const void *src, size_t n, size_t offset,
                                    enum cudaMemcpyKind kind, cudaStream_t stream)
{
    if (!valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    return cudaMemcpyToSymbol(symbol, src, n, offset, kind);
}

cudaError_t cudaMemcpyFromSymbol(void *dst, const void *symbol, size_t n, size_t offset,
                                 enum cudaMemcpyKind kind)
{
    if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return record(cudaErrorInvalidMemcpyDirection);
    memmove(dst, (const char *)symbol + offset, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    (void)flags;
    cudaStream_t s = new CUstream_st;
    s->magic = kStreamMagic;
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (!stream || stream == cudaStreamLegacy || stream == cudaStreamPerThread ||
        stream->magic != kStreamMagic)
        return record(cudaErrorInvalidResourceHandle);
    stream->magic = 0;
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    return valid_stream(stream) ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    return valid_stream(stream) ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    (void)flags;
    cudaEvent_t e = new CUevent_st;
    e->magic = kEventMagic;
    e->ms = 0;
    e->recorded = false;
    *event = e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

static bool valid_event(cudaEvent_t e)
{
    return e && e->magic == kEventMagic;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    if (!valid_event(event) || !valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    event->ms = now_ms();
    event->recorded = true;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    return valid_event(event) ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventQuery(cudaEvent_t event)
{
    return valid_event(event) ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    (void)flags;
    if (!valid_event(event) || !valid_stream(stream))
        return record(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!valid_event(start) || !valid_event(end))
        return record(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded)
        return record(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    if (!valid_event(event))
        return record(cudaErrorInvalidResourceHandle);
    event->magic = 0;
    delete event;
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    if (!func)
        return record(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > kMaxSmemOptin)
            return record(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> lock(g_attr_mutex);
        g_smem_limit[func] = value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return value >= -1 && value <= 100 ? cudaSuccess : record(cudaErrorInvalidValue);
    fail("cudaFuncSetAttribute(%d) is not emulated: add it to tests/cuda_emu/emu.cc", (int)attr);
}

cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *func)
{
    if (!func)
        return record(cudaErrorInvalidDeviceFunction);
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = kMaxThreads;
    attr->numRegs = 32;
    attr->ptxVersion = 90;
    attr->binaryVersion = 90;
    attr->maxDynamicSharedSizeBytes = (int)smem_limit_of(func);
    attr->preferredShmemCarveout = -1;
    return cudaSuccess;
}

cudaError_t cudaFuncGetName(const char **name, const void *func)
{
    // Names are kept for the life of the process, as the runtime's are.
    static std::mutex m;
    static std::map<const void *, std::string> *names = new std::map<const void *, std::string>;
    if (!func)
        return record(cudaErrorInvalidDeviceFunction);
    std::lock_guard<std::mutex> lock(m);
    auto it = names->find(func);
    if (it == names->end())
        it = names->emplace(func, symbol_name(func)).first;
    *name = it->second.c_str();
    return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, const void *func,
                                                                   int block_size,
                                                                   size_t dyn_smem,
                                                                   unsigned int flags)
{
    (void)flags;
    if (!func)
        return record(cudaErrorInvalidDeviceFunction);
    if (block_size <= 0 || block_size > kMaxThreads || dyn_smem > smem_limit_of(func))
        return record(cudaErrorInvalidValue);
    int warps = (block_size + 31) / 32;
    int n = 64 / warps; // 2048 threads per SM
    if (n > 32)
        n = 32;
    if (dyn_smem) {
        int by_smem = (int)(233472 / (dyn_smem + 1024));
        if (by_smem < n)
            n = by_smem;
    }
    *blocks = n;
    return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, const void *func,
                                                          int block_size, size_t dyn_smem)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, func, block_size,
                                                                  dyn_smem, 0);
}

} // extern "C"
