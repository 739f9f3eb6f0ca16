/* The buffer arena and run-time mappings of device windows above 4 GiB. */
#include "mem.h"

#include "string.h"

/* Multiboot v1 info (flags bit 0: mem_lower/mem_upper in KiB valid). */
struct mem_mb_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
};

#define MEM_ARENA_START     (8ull << 20)
#define MEM_DEFAULT_END     (32ull << 20)
#define MEM_MAX_END         (3ull << 30)

#define PTE_P       0x001ull
#define PTE_RW      0x002ull
#define PTE_US      0x004ull
#define PTE_PWT     0x008ull
#define PTE_PCD     0x010ull
#define PTE_PS      0x080ull
#define PTE_DIR     (PTE_P | PTE_RW | PTE_US)
#define PTE_ADDR    0x000ffffffffff000ull

#define MEM_PT_POOL 8

extern uint32_t boot_mb_info;
extern char _bss_end[];
extern uint64_t pml4[512];

static uint64_t mem_next, mem_end;

static uint64_t mem_pt_pool[MEM_PT_POOL][512] __attribute__((aligned(4096)));
static unsigned mem_pt_used;

static void mem_arena_init(void)
{
    const struct mem_mb_info *mb =
        (const struct mem_mb_info *)(uintptr_t)boot_mb_info;
    uint64_t start = ((uint64_t)(uintptr_t)_bss_end + (1 << 20) + 0xfff) & ~0xfffull;

    mem_next = start > MEM_ARENA_START ? start : MEM_ARENA_START;
    mem_end = MEM_DEFAULT_END;
    if (mb && (mb->flags & 1) && mb->mem_upper) {
        mem_end = (1ull << 20) + (uint64_t)mb->mem_upper * 1024;
    }
    if (mem_end > MEM_MAX_END) {
        mem_end = MEM_MAX_END;
    }
    if (mem_end < mem_next) {
        mem_end = mem_next;
    }
}

void *mem_alloc(size_t size, size_t align)
{
    uint64_t p;

    if (!mem_end) {
        mem_arena_init();
    }
    if (align < 16) {
        align = 16;
    }
    p = (mem_next + align - 1) & ~(uint64_t)(align - 1);
    if (p > mem_end || mem_end - p < size) {
        return NULL;
    }
    mem_next = p + size;
    memset((void *)(uintptr_t)p, 0, size);
    return (void *)(uintptr_t)p;
}

uint64_t mem_arena_left(void)
{
    if (!mem_end) {
        mem_arena_init();
    }
    return mem_end - mem_next;
}

/* The table @entry points to, taking one from the pool if not present. */
static uint64_t *mem_table(uint64_t *entry)
{
    uint64_t *t;

    if (*entry & PTE_P) {
        return (uint64_t *)(uintptr_t)(*entry & PTE_ADDR);
    }
    if (mem_pt_used == MEM_PT_POOL) {
        return NULL;
    }
    t = mem_pt_pool[mem_pt_used++];
    /* The pool is zeroed bss: the new table is complete before it is linked. */
    __atomic_store_n(entry, (uint64_t)(uintptr_t)t | PTE_DIR, __ATOMIC_RELEASE);
    return t;
}

int mem_map_device(uint64_t phys, uint64_t size)
{
    uint64_t end = phys + size;

    if (end <= (1ull << 32)) {
        return 0;
    }
    if (end > (1ull << 47) || end < phys) {
        return -1;
    }
    for (uint64_t a = phys & ~((2ull << 20) - 1); a < end; a += 2ull << 20) {
        uint64_t *pdpt, *pd;

        if (a < (1ull << 32)) {
            continue;
        }
        pdpt = mem_table(&pml4[(a >> 39) & 511]);
        pd = pdpt ? mem_table(&pdpt[(a >> 30) & 511]) : NULL;
        if (!pd) {
            return -1;
        }
        if (!(pd[(a >> 21) & 511] & PTE_P)) {
            __atomic_store_n(&pd[(a >> 21) & 511],
                             a | PTE_DIR | PTE_PS | PTE_PCD | PTE_PWT,
                             __ATOMIC_RELEASE);
        }
    }
    return 0;
}
