/*
 * Multiboot v1 loader: see include/shardvm/multiboot.h.
 *
 * Behaviour follows QEMU 7.2's -kernel for multiboot images, checked
 * against it with a probe kernel: the header is searched 4-byte aligned in
 * the first 8 KiB; with flag bit 16 the header's address fields decide what
 * is loaded (even for an ELF file), otherwise the file must be an ELF whose
 * PT_LOAD segments go to their physical addresses; the command line is
 * "<kernel path> <append>"; module descriptors and strings follow the
 * kernel, page aligned, and the modules follow them.  Unlike QEMU, ELF64
 * files are accepted (segments at p_paddr, entry below 4 GiB), and every
 * inconsistency is an error message instead of exit().
 */
#include "shardvm/multiboot.h"
#include "shardvm/error.h"
#include "shardvm/main-loop.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
#define PAGE_ALIGN(x) (((x) + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1))

/* Linux boot protocol: "HdrS" at 0x202 marks a bzImage's setup header. */
#define LINUX_HDRS_OFFSET 0x202
#define LINUX_HDRS_MAGIC  0x53726448u

/* Multiboot information structure field offsets (spec section 3.3). */
enum {
    MBI_FLAGS = 0,
    MBI_MEM_LOWER = 4,
    MBI_MEM_UPPER = 8,
    MBI_CMDLINE = 16,
    MBI_MODS_COUNT = 20,
    MBI_MODS_ADDR = 24,
    MBI_MMAP_LENGTH = 44,
    MBI_MMAP_ADDR = 48,
    MBI_BOOT_LOADER_NAME = 64,
    MBI_SIZE = 88,
    MOD_SIZE = 16,  /* mod_start, mod_end, string, reserved */
    MMAP_ENTRY = 24 /* size (=20), base_addr, length, type */
};

#define LOW_MEM_END  0xa0000u   /* 640 KiB: conventional memory ends */
#define HIGH_MEM     0x100000u  /* 1 MiB: extended memory starts */
#define FOUR_GIB     0x100000000ull

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void st64(uint8_t *p, uint64_t v)
{
    st32(p, (uint32_t)v);
    st32(p + 4, (uint32_t)(v >> 32));
}

/* The host address of [gpa, gpa+len) when it lies inside one RAM range. */
static uint8_t *ram_ptr(const MultibootParams *p, uint64_t gpa, uint64_t len)
{
    for (size_t i = 0; i < p->n_ram; i++) {
        const MultibootRam *r = &p->ram[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size &&
            len <= r->size - (gpa - r->gpa)) {
            return (uint8_t *)r->hva + (gpa - r->gpa);
        }
    }
    return NULL;
}

/*
 * Everything the loader puts in guest RAM, so that no two objects share a
 * byte: the fixed memory map and information structure, each kernel
 * segment, the area of descriptors and strings, each module.
 */
typedef struct Placed {
    uint64_t start, end;
    char what[48];
} Placed;
typedef struct Layout {
    GArray *obj; /* Placed, in placement order */
} Layout;

/* Record [start, end) as @what; an error naming both when it overlaps
 * something already placed.  Empty ranges take no room.  (Quadratic, but
 * there are a handful of segments and modules.) */
static int claim(Layout *l, uint64_t start, uint64_t end, const char *what,
                 GError **errp)
{
    if (end <= start) {
        return 0;
    }
    for (guint i = 0; i < l->obj->len; i++) {
        const Placed *o = &g_array_index(l->obj, Placed, i);
        if (start < o->end && o->start < end) {
            return shardvm_error_set(errp, -ERANGE,
                                     "%s (0x%" G_GINT64_MODIFIER "x-0x%"
                                     G_GINT64_MODIFIER "x) overlaps %s (0x%"
                                     G_GINT64_MODIFIER "x-0x%"
                                     G_GINT64_MODIFIER "x)", what, start, end,
                                     o->what, o->start, o->end);
        }
    }
    Placed n = { start, end, "" };
    g_strlcpy(n.what, what, sizeof(n.what));
    g_array_append_val(l->obj, n);
    return 0;
}

/* Copy @filesz bytes to guest @gpa and zero up to @memsz (bss), after
 * checking that the range is RAM and overlaps nothing placed before. */
static int place(const MultibootParams *p, Layout *l, uint64_t gpa,
                 const uint8_t *src, uint64_t filesz, uint64_t memsz,
                 const char *what, GError **errp)
{
    g_assert(filesz <= memsz);
    uint8_t *dst = ram_ptr(p, gpa, memsz);
    if (gpa + memsz < gpa || !dst) {
        return shardvm_error_set(errp, -ERANGE,
                                 "%s at 0x%" G_GINT64_MODIFIER "x-0x%"
                                 G_GINT64_MODIFIER "x is outside guest RAM",
                                 what, gpa, gpa + memsz);
    }
    int r = claim(l, gpa, gpa + memsz, what, errp);
    if (r < 0) {
        return r;
    }
    memcpy(dst, src, filesz);
    memset(dst + filesz, 0, memsz - filesz);
    return 0;
}

long multiboot_find_header(const uint8_t *image, size_t size)
{
    size_t limit = MIN(size, (size_t)MULTIBOOT_SEARCH_LIMIT);

    for (size_t off = 0; off + 12 <= limit; off += 4) {
        uint32_t magic = ld32(image + off);
        uint32_t flags = ld32(image + off + 4);
        uint32_t sum = ld32(image + off + 8);
        if (magic == MULTIBOOT_HEADER_MAGIC &&
            (uint32_t)(magic + flags + sum) == 0) {
            return (long)off;
        }
    }
    return -1;
}

/* One loadable segment, whatever the ELF class. */
typedef struct Segment {
    uint64_t offset, paddr, vaddr, filesz, memsz;
} Segment;

/* Kernel extent and entry, filled by the two image loaders. */
typedef struct Kernel {
    uint64_t low, high, entry;
} Kernel;

static bool is_elf(const uint8_t *img, size_t size)
{
    return size >= EI_NIDENT && memcmp(img, ELFMAG, SELFMAG) == 0;
}

/* Read the program header at @ph into @s; false when it is not PT_LOAD. */
static bool elf_segment(const uint8_t *ph, bool is64, Segment *s)
{
    if (is64) {
        Elf64_Phdr h;
        memcpy(&h, ph, sizeof(h));
        *s = (Segment){ h.p_offset, h.p_paddr, h.p_vaddr, h.p_filesz,
                        h.p_memsz };
        return h.p_type == PT_LOAD;
    }
    Elf32_Phdr h;
    memcpy(&h, ph, sizeof(h));
    *s = (Segment){ h.p_offset, h.p_paddr, h.p_vaddr, h.p_filesz, h.p_memsz };
    return h.p_type == PT_LOAD;
}

/*
 * Load an ELF kernel's PT_LOAD segments at their physical addresses.  The
 * entry point is e_entry, translated to a physical address when it lies in
 * a segment linked at a different virtual address (higher-half kernels).
 */
static int load_elf(const MultibootParams *p, Layout *l, Kernel *k,
                    GError **errp)
{
    const uint8_t *img = p->image;
    size_t size = p->image_size;
    bool is64 = img[EI_CLASS] == ELFCLASS64;
    uint64_t phoff, entry;
    unsigned phnum, phentsize, machine;

    if ((img[EI_CLASS] != ELFCLASS32 && !is64) || img[EI_DATA] != ELFDATA2LSB) {
        return shardvm_error_set(errp, -ENOEXEC,
                                 "not a little-endian ELF32/ELF64 file");
    }
    if (is64) {
        Elf64_Ehdr eh;
        if (size < sizeof(eh)) {
            goto truncated;
        }
        memcpy(&eh, img, sizeof(eh));
        phoff = eh.e_phoff, phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        entry = eh.e_entry, machine = eh.e_machine;
    } else {
        Elf32_Ehdr eh;
        if (size < sizeof(eh)) {
            goto truncated;
        }
        memcpy(&eh, img, sizeof(eh));
        phoff = eh.e_phoff, phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        entry = eh.e_entry, machine = eh.e_machine;
    }
    if (machine != EM_386 && machine != EM_X86_64) {
        return shardvm_error_set(errp, -ENOEXEC,
                                 "ELF machine %u is not x86", machine);
    }
    size_t want = is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
    if (phnum == 0 || phentsize < want) {
        return shardvm_error_set(errp, -ENOEXEC,
                                 "ELF file has no program headers");
    }
    if (phoff > size || (uint64_t)phnum * phentsize > size - phoff) {
        goto truncated;
    }

    k->low = UINT64_MAX;
    k->high = 0;
    bool entry_mapped = false;
    uint64_t entry_phys = entry;
    for (unsigned i = 0; i < phnum; i++) {
        Segment s;
        if (!elf_segment(img + phoff + (uint64_t)i * phentsize, is64, &s) ||
            s.memsz == 0) {
            continue;
        }
        if (s.offset > size || s.filesz > size - s.offset) {
            goto truncated;
        }
        if (s.filesz > s.memsz) {
            return shardvm_error_set(errp, -EINVAL,
                                     "ELF segment %u: p_filesz (0x%"
                                     G_GINT64_MODIFIER "x) is larger than "
                                     "p_memsz (0x%" G_GINT64_MODIFIER "x)",
                                     i, s.filesz, s.memsz);
        }
        char what[48];
        g_snprintf(what, sizeof(what), "ELF segment %u", i);
        int r = place(p, l, s.paddr, img + s.offset, s.filesz, s.memsz, what,
                      errp);
        if (r < 0) {
            return r;
        }
        k->low = MIN(k->low, s.paddr);
        k->high = MAX(k->high, s.paddr + s.memsz);
        if (!entry_mapped && entry >= s.vaddr && entry - s.vaddr < s.memsz) {
            entry_phys = s.paddr + (entry - s.vaddr);
            entry_mapped = true;
        }
    }
    if (k->high == 0) {
        return shardvm_error_set(errp, -ENOEXEC,
                                 "ELF file has no loadable segment");
    }
    if (entry_phys >= FOUR_GIB) {
        return shardvm_error_set(errp, -ENOEXEC,
                                 "entry point 0x%" G_GINT64_MODIFIER "x is "
                                 "above 4 GiB (multiboot enters in 32-bit "
                                 "protected mode)", entry_phys);
    }
    k->entry = entry_phys;
    return 0;

truncated:
    return shardvm_error_set(errp, -EINVAL,
                             "ELF file is truncated (%zu bytes)", size);
}

/*
 * Load an image with the header's address fields (flag bit 16): the file
 * from (header offset - (header_addr - load_addr)) goes to load_addr, up to
 * load_end_addr (0: the end of the file), zeroed up to bss_end_addr.
 */
static int load_kludge(const MultibootParams *p, Layout *l, size_t hdr,
                       Kernel *k, GError **errp)
{
    const uint8_t *h = p->image + hdr;
    if (hdr + 32 > p->image_size) {
        return shardvm_error_set(errp, -EINVAL,
                                 "multiboot header is truncated");
    }
    uint32_t header_addr = ld32(h + 12), load_addr = ld32(h + 16);
    uint32_t load_end = ld32(h + 20), bss_end = ld32(h + 24);
    uint32_t entry = ld32(h + 28);

    if (header_addr < load_addr || header_addr - load_addr > hdr) {
        return shardvm_error_set(errp, -EINVAL,
                                 "multiboot header_addr 0x%x and load_addr "
                                 "0x%x do not match the header's file "
                                 "offset %zu", header_addr, load_addr, hdr);
    }
    uint64_t file_off = hdr - (header_addr - load_addr);
    uint64_t load_size;
    if (load_end) {
        if (load_end < load_addr) {
            return shardvm_error_set(errp, -EINVAL,
                                     "multiboot load_end_addr 0x%x is below "
                                     "load_addr 0x%x", load_end, load_addr);
        }
        load_size = load_end - load_addr;
        if (load_size > p->image_size - file_off) {
            return shardvm_error_set(errp, -EINVAL,
                                     "kernel file is truncated: %zu bytes, "
                                     "the multiboot header asks for %"
                                     G_GINT64_MODIFIER "u from offset %"
                                     G_GINT64_MODIFIER "u", p->image_size,
                                     load_size, file_off);
        }
    } else {
        load_size = p->image_size - file_off;
    }
    uint64_t mem_size = load_size;
    if (bss_end) {
        if (bss_end < load_addr + load_size) {
            return shardvm_error_set(errp, -EINVAL,
                                     "multiboot bss_end_addr 0x%x is below "
                                     "the loaded image's end", bss_end);
        }
        mem_size = bss_end - load_addr;
    }
    int r = place(p, l, load_addr, p->image + file_off, load_size, mem_size,
                  "kernel image", errp);
    if (r < 0) {
        return r;
    }
    k->low = load_addr;
    k->high = load_addr + mem_size;
    k->entry = entry;
    return 0;
}

/*
 * The e820-like memory map: RAM below 640 KiB usable, 640 KiB-1 MiB
 * reserved (the legacy VGA/ROM hole, even though RAM backs it), all other
 * RAM usable, including RAM above 4 GiB.  Returns the number of entries
 * (at most @max) written to @out as {base, length, type}.
 */
typedef struct MmapEntry {
    uint64_t base, len;
    uint32_t type;
} MmapEntry;

static size_t build_mmap(const MultibootParams *p, MmapEntry *out, size_t max,
                         uint64_t *mem_upper_end)
{
    size_t n = 0;
    bool hole_done = false;

    *mem_upper_end = HIGH_MEM;
    for (size_t i = 0; i < p->n_ram; i++) {
        uint64_t start = p->ram[i].gpa, end = start + p->ram[i].size;
        if (start < LOW_MEM_END && n < max) {
            out[n++] = (MmapEntry){ start, MIN(end, LOW_MEM_END) - start,
                                    MULTIBOOT_MEMORY_AVAILABLE };
        }
        if (!hole_done && end > LOW_MEM_END && n < max) {
            out[n++] = (MmapEntry){ LOW_MEM_END, HIGH_MEM - LOW_MEM_END,
                                    MULTIBOOT_MEMORY_RESERVED };
            hole_done = true;
        }
        if (end > HIGH_MEM && n < max) {
            uint64_t s = MAX(start, (uint64_t)HIGH_MEM);
            out[n++] = (MmapEntry){ s, end - s, MULTIBOOT_MEMORY_AVAILABLE };
            /* mem_upper: contiguous RAM from 1 MiB, below 4 GiB. */
            if (s == *mem_upper_end) {
                *mem_upper_end = MIN(end, FOUR_GIB);
            }
        }
    }
    return n;
}

/* Bytes of the area after the kernel: descriptors then strings. */
static uint64_t info_size(const MultibootParams *p, const char *append)
{
    uint64_t n = (uint64_t)p->n_modules * MOD_SIZE;
    for (size_t i = 0; i < p->n_modules; i++) {
        n += strlen(p->modules[i].cmdline ? p->modules[i].cmdline : "") + 1;
    }
    n += strlen(p->kernel_name) + 1 + strlen(append) + 1;
    n += sizeof(MULTIBOOT_LOADER_NAME);
    return n;
}

/* Append string @s at *@cur (guest address), return its address. */
static uint32_t put_string(uint8_t *area, uint64_t area_gpa, uint64_t *cur,
                           const char *s)
{
    size_t len = strlen(s) + 1;
    uint32_t at = (uint32_t)*cur;
    memcpy(area + (*cur - area_gpa), s, len);
    *cur += len;
    return at;
}

/*
 * Write module descriptors, strings, the modules and the information
 * structure; the area starts at the first page after the kernel.
 */
static int write_info(const MultibootParams *p, Layout *l, const Kernel *k,
                      MultibootBoot *boot, GError **errp)
{
    const char *append = p->append ? p->append : "";
    uint64_t area = PAGE_ALIGN(k->high);
    uint64_t area_size = info_size(p, append);
    uint8_t *a = ram_ptr(p, area, area_size);
    if (!a || area + area_size > FOUR_GIB) {
        return shardvm_error_set(errp, -ERANGE,
                                 "no guest RAM below 4 GiB for the multiboot "
                                 "information after the kernel (0x%"
                                 G_GINT64_MODIFIER "x)", area);
    }
    int r = claim(l, area, area + area_size, "module list and command lines",
                  errp);
    if (r < 0) {
        return r;
    }

    /* Modules, each page aligned, after the descriptors and strings. */
    uint64_t mod_gpa = PAGE_ALIGN(area + area_size);
    uint64_t cur = area + (uint64_t)p->n_modules * MOD_SIZE;
    for (size_t i = 0; i < p->n_modules; i++) {
        const MultibootModule *m = &p->modules[i];
        char what[48];
        g_snprintf(what, sizeof(what), "module %zu", i);
        if (mod_gpa + m->size >= FOUR_GIB) {
            return shardvm_error_set(errp, -ERANGE,
                                     "%s does not fit below 4 GiB", what);
        }
        r = place(p, l, mod_gpa, m->data, m->size, m->size, what, errp);
        if (r < 0) {
            return r;
        }
        uint8_t *d = a + (uint64_t)i * MOD_SIZE;
        st32(d + 0, (uint32_t)mod_gpa);
        st32(d + 4, (uint32_t)(mod_gpa + m->size));
        st32(d + 8, put_string(a, area, &cur, m->cmdline ? m->cmdline : ""));
        st32(d + 12, 0);
        mod_gpa = PAGE_ALIGN(mod_gpa + m->size);
    }

    char *cmdline = g_strdup_printf("%s %s", p->kernel_name, append);
    uint32_t cmdline_gpa = put_string(a, area, &cur, cmdline);
    g_free(cmdline);
    uint32_t name_gpa = put_string(a, area, &cur, MULTIBOOT_LOADER_NAME);

    MmapEntry map[MULTIBOOT_MMAP_MAX];
    uint64_t upper_end;
    size_t n = build_mmap(p, map, G_N_ELEMENTS(map), &upper_end);
    uint8_t *mm = ram_ptr(p, MULTIBOOT_MMAP_ADDR, n * MMAP_ENTRY);
    uint8_t *mbi = ram_ptr(p, MULTIBOOT_MBI_ADDR, MBI_SIZE);
    if (!mm || !mbi) {
        return shardvm_error_set(errp, -ERANGE,
                                 "guest RAM does not cover 0x%x-0x%x for the "
                                 "multiboot information", MULTIBOOT_MMAP_ADDR,
                                 MULTIBOOT_MBI_ADDR + MBI_SIZE);
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = mm + i * MMAP_ENTRY;
        st32(e, MMAP_ENTRY - 4); /* size excludes the size field itself */
        st64(e + 4, map[i].base);
        st64(e + 12, map[i].len);
        st32(e + 20, map[i].type);
    }

    memset(mbi, 0, MBI_SIZE);
    st32(mbi + MBI_FLAGS, MULTIBOOT_INFO_MEMORY | MULTIBOOT_INFO_CMDLINE |
                          MULTIBOOT_INFO_MODS | MULTIBOOT_INFO_MMAP |
                          MULTIBOOT_INFO_BOOTLOADER);
    st32(mbi + MBI_MEM_LOWER, LOW_MEM_END / 1024);
    st32(mbi + MBI_MEM_UPPER, (uint32_t)((upper_end - HIGH_MEM) / 1024));
    st32(mbi + MBI_CMDLINE, cmdline_gpa);
    st32(mbi + MBI_MODS_COUNT, (uint32_t)p->n_modules);
    st32(mbi + MBI_MODS_ADDR, (uint32_t)area);
    st32(mbi + MBI_MMAP_LENGTH, (uint32_t)(n * MMAP_ENTRY));
    st32(mbi + MBI_MMAP_ADDR, MULTIBOOT_MMAP_ADDR);
    st32(mbi + MBI_BOOT_LOADER_NAME, name_gpa);

    boot->mbi_addr = MULTIBOOT_MBI_ADDR;
    boot->info_end = p->n_modules ? mod_gpa : cur;
    return 0;
}

int multiboot_load(const MultibootParams *p, MultibootBoot *boot,
                   GError **errp)
{
    const uint8_t *img = p->image;
    size_t size = p->image_size;
    Kernel k = { 0 };
    Layout layout = { g_array_new(FALSE, FALSE, sizeof(Placed)) };
    Layout *l = &layout;
    int r;

    if (size == 0) {
        r = shardvm_error_set(errp, -ENOEXEC, "the file is empty");
        goto out;
    }
    if (size >= LINUX_HDRS_OFFSET + 4 &&
        ld32(img + LINUX_HDRS_OFFSET) == LINUX_HDRS_MAGIC) {
        r = shardvm_error_set(errp, -ENOEXEC,
                              "a Linux bzImage is not supported: shardvm "
                              "boots multiboot v1 kernels");
        goto out;
    }
    long hdr = multiboot_find_header(img, size);
    bool elf = is_elf(img, size);
    if (hdr < 0) {
        r = shardvm_error_set(errp, -ENOEXEC,
                              "no multiboot header in the first %d bytes "
                              "(%s): shardvm boots multiboot v1 kernels",
                              MULTIBOOT_SEARCH_LIMIT,
                              elf ? "an ELF file" : "not an ELF file");
        goto out;
    }
    /* The fixed structures first: every later object is checked against
     * them (the memory map and information are written last). */
    r = claim(l, MULTIBOOT_MMAP_ADDR, MULTIBOOT_MBI_ADDR + MBI_SIZE,
              "the multiboot information", errp);
    if (r < 0) {
        goto out;
    }
    uint32_t flags = ld32(img + hdr + 4);
    if (flags & MULTIBOOT_HEADER_ADDR_FLAG) {
        r = load_kludge(p, l, (size_t)hdr, &k, errp);
    } else if (elf) {
        r = load_elf(p, l, &k, errp);
    } else {
        r = shardvm_error_set(errp, -ENOEXEC,
                              "not an ELF file and its multiboot header has "
                              "no address fields (flag bit 16)");
    }
    if (r < 0) {
        goto out;
    }
    r = write_info(p, l, &k, boot, errp);
    if (r < 0) {
        goto out;
    }
    boot->entry = (uint32_t)k.entry;
    boot->kernel_start = k.low;
    boot->kernel_end = k.high;
out:
    g_array_free(layout.obj, TRUE);
    return r;
}

char **multiboot_split_modules(const char *initrd)
{
    GPtrArray *out = g_ptr_array_new();
    GString *cur = g_string_new(NULL);

    for (const char *s = initrd; s && *s; s++) {
        if (*s == ',' && s[1] == ',') {
            g_string_append_c(cur, ',');
            s++;
        } else if (*s == ',') {
            g_ptr_array_add(out, g_string_free(cur, FALSE));
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *s);
        }
    }
    if (initrd && *initrd) {
        g_ptr_array_add(out, g_string_free(cur, FALSE));
    } else {
        g_string_free(cur, TRUE);
    }
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
}

/* How much a file read does between two looks at pending signals. */
#define READ_CHUNK (16u << 20)

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/*
 * Read the whole file @path into *@data.  It must be a regular file of at
 * most @limit bytes, checked with fstat() before anything is read (a FIFO,
 * /dev/zero or an 8 GiB sparse file are refused at once).  The open is
 * non-blocking, so a FIFO without a writer cannot hang it.  Pending
 * SIGTERM/SIGINT/SIGHUP are looked at between chunks.  Messages name the
 * file and keep the errno text: "cannot read kernel 'F': Not a directory".
 */
static int read_file(const char *what, const char *path, uint64_t limit,
                     uint8_t **data, size_t *size, GError **errp)
{
    struct stat st;
    int r = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

    *data = NULL;
    *size = 0;
    if (fd < 0) {
        int e = errno;
        return shardvm_error_set(errp, -e, "cannot read %s '%s': %s", what,
                                 path, g_strerror(e));
    }
    if (fstat(fd, &st) < 0) {
        int e = errno;
        r = shardvm_error_set(errp, -e, "cannot read %s '%s': %s", what, path,
                              g_strerror(e));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = shardvm_error_set(errp, -EINVAL, "cannot read %s '%s': %s, not a "
                              "regular file", what, path,
                              file_kind(st.st_mode));
        goto out;
    }
    if ((uint64_t)st.st_size > limit) {
        r = shardvm_error_set(errp, -EFBIG, "cannot read %s '%s': %"
                              G_GUINT64_FORMAT " bytes is more than the "
                              "%" G_GUINT64_FORMAT " bytes of guest RAM left",
                              what, path, (uint64_t)st.st_size, limit);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = g_try_malloc(len ? len : 1);
    if (!buf) {
        r = shardvm_error_set(errp, -ENOMEM, "cannot read %s '%s': %s", what,
                              path, g_strerror(ENOMEM));
        goto out;
    }
    size_t done = 0;
    while (done < len) {
        if (main_loop_poll_signals() == SHUTDOWN_HOST_SIGNAL) {
            r = shardvm_error_set(errp, -EINTR, "reading %s '%s' "
                                  "interrupted by signal %d", what, path,
                                  main_loop_shutdown_signal());
            break;
        }
        ssize_t n = pread(fd, buf + done, MIN(len - done, READ_CHUNK),
                          (off_t)done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            r = shardvm_error_set(errp, -e, "cannot read %s '%s': %s", what,
                                  path, n < 0 ? g_strerror(e)
                                  : "the file shrank while being read");
            break;
        }
        done += (size_t)n;
    }
    if (r < 0) {
        g_free(buf);
        goto out;
    }
    *data = buf;
    *size = len;
out:
    close(fd);
    return r;
}

int multiboot_files_read(const char *kernel_path, const char *initrd,
                         uint64_t limit, MultibootFiles *f, GError **errp)
{
    memset(f, 0, sizeof(*f));
    f->cmdlines = multiboot_split_modules(initrd);
    f->n_modules = g_strv_length(f->cmdlines);
    f->modules = g_new0(MultibootModule, f->n_modules ? f->n_modules : 1);

    int r = read_file("kernel", kernel_path, limit, &f->image,
                      &f->image_size, errp);
    uint64_t left = limit - f->image_size;
    for (size_t i = 0; r == 0 && i < f->n_modules; i++) {
        /* The file name ends at the first space; the rest are arguments. */
        char *file = g_strndup(f->cmdlines[i], strcspn(f->cmdlines[i], " "));
        uint8_t *data;
        size_t size;
        r = read_file("module", file, left, &data, &size, errp);
        g_free(file);
        if (r == 0) {
            f->modules[i] = (MultibootModule){ data, size, f->cmdlines[i] };
            left -= size;
        }
    }
    if (r < 0) {
        multiboot_files_clear(f);
    }
    return r;
}

void multiboot_files_clear(MultibootFiles *f)
{
    for (size_t i = 0; f->modules && i < f->n_modules; i++) {
        g_free((gpointer)f->modules[i].data);
    }
    g_free(f->modules);
    g_free(f->image);
    g_strfreev(f->cmdlines);
    memset(f, 0, sizeof(*f));
}

int multiboot_files_load(const MultibootFiles *f, const char *kernel_path,
                         const char *append, const MultibootRam *ram,
                         size_t n_ram, MultibootBoot *boot, GError **errp)
{
    MultibootParams p = {
        .image = f->image, .image_size = f->image_size,
        .kernel_name = kernel_path, .append = append,
        .modules = f->modules, .n_modules = f->n_modules,
        .ram = ram, .n_ram = n_ram,
    };
    GError *lerr = NULL;
    int r = multiboot_load(&p, boot, &lerr);
    if (r < 0) {
        shardvm_error_set(errp, r, "cannot boot '%s': %s", kernel_path,
                          lerr->message);
        g_error_free(lerr);
    }
    return r;
}

int multiboot_load_files(const char *kernel_path, const char *append,
                         const char *initrd, const MultibootRam *ram,
                         size_t n_ram, MultibootBoot *boot, GError **errp)
{
    MultibootFiles f;
    uint64_t total = 0;

    for (size_t i = 0; i < n_ram; i++) {
        total += ram[i].size;
    }
    int r = multiboot_files_read(kernel_path, initrd, total, &f, errp);
    if (r == 0) {
        r = multiboot_files_load(&f, kernel_path, append, ram, n_ram, boot,
                                 errp);
        multiboot_files_clear(&f);
    }
    return r;
}
