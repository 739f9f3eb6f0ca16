/*
 * Multiboot v1 boot loader (what QEMU's -kernel does for multiboot
 * kernels): find the multiboot header, place the kernel's segments in guest
 * RAM, load the modules and build the multiboot information structure.
 *
 * The loader is pure: it works on byte buffers and writes guest RAM through
 * the host mappings the caller lists in MultibootRam, so unit tests run it
 * without KVM.  Only multiboot_load_files() touches the file system.
 *
 * Guest-physical layout (QEMU's, so a kernel that boots on QEMU boots here):
 *   0x9000   memory map (mmap_addr), at most MULTIBOOT_MMAP_MAX entries
 *   0x9500   the multiboot information structure (EBX)
 *   kernel   at its ELF physical addresses (or the header's load_addr)
 *   after the kernel's last byte, page aligned: module descriptors, module
 *            command lines, the kernel command line, the boot loader name;
 *   then each module, page aligned.
 */
#ifndef SHARDVM_MULTIBOOT_H
#define SHARDVM_MULTIBOOT_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MULTIBOOT_HEADER_MAGIC     0x1BADB002u
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u /* EAX at entry */
#define MULTIBOOT_SEARCH_LIMIT     8192        /* header within these bytes */
#define MULTIBOOT_HEADER_ADDR_FLAG (1u << 16)  /* a.out kludge address fields */

/* Where the loader puts its structures (QEMU's addresses). */
#define MULTIBOOT_MMAP_ADDR 0x9000u
#define MULTIBOOT_MBI_ADDR  0x9500u
#define MULTIBOOT_MMAP_MAX  ((MULTIBOOT_MBI_ADDR - MULTIBOOT_MMAP_ADDR) / 24)

/* multiboot_info.flags bits the loader sets. */
#define MULTIBOOT_INFO_MEMORY     (1u << 0)
#define MULTIBOOT_INFO_CMDLINE    (1u << 2)
#define MULTIBOOT_INFO_MODS       (1u << 3)
#define MULTIBOOT_INFO_MMAP       (1u << 6)
#define MULTIBOOT_INFO_BOOTLOADER (1u << 9)

/* Name written to boot_loader_name. */
#define MULTIBOOT_LOADER_NAME "shardvm"

/* Memory map entry types. */
#define MULTIBOOT_MEMORY_AVAILABLE 1u
#define MULTIBOOT_MEMORY_RESERVED  2u

/*
 * One range of guest RAM and where it is mapped in this process.  The
 * loader writes only inside these ranges and describes them (and nothing
 * else) as RAM in the memory map.  Ranges must not overlap.
 */
typedef struct MultibootRam {
    uint64_t gpa;  /* guest-physical start */
    uint64_t size; /* bytes */
    void *hva;     /* host address of gpa */
} MultibootRam;

/* A module: its bytes and its command line (file name and arguments). */
typedef struct MultibootModule {
    const uint8_t *data;
    size_t size;
    const char *cmdline;
} MultibootModule;

/* What to load.  The loader copies everything it needs; nothing is kept. */
typedef struct MultibootParams {
    const uint8_t *image;    /* the kernel file's bytes */
    size_t image_size;
    const char *kernel_name; /* first word of the command line (QEMU: the
                              * -kernel path) */
    const char *append;      /* -append, may be NULL (= "") */
    const MultibootModule *modules;
    size_t n_modules;
    const MultibootRam *ram;
    size_t n_ram;
} MultibootParams;

/* Result: where the boot processor starts. */
typedef struct MultibootBoot {
    uint32_t entry;        /* EIP in 32-bit protected mode */
    uint32_t mbi_addr;     /* EBX */
    uint64_t kernel_start; /* lowest byte the kernel occupies */
    uint64_t kernel_end;   /* one past its highest byte (bss included) */
    uint64_t info_end;     /* one past the last module / string written */
} MultibootBoot;

/*
 * multiboot_load: check @p->image, copy its segments into guest RAM, zero
 * bss, copy the modules and write the memory map, strings and multiboot
 * information.  Returns 0 and fills @boot, or a negative errno with a
 * message in @errp (-ENOEXEC: not a loadable multiboot kernel, e.g. no
 * header, a Linux bzImage, ELF64 entry above 4 GiB; -EINVAL: a truncated
 * or inconsistent image; -ERANGE: something does not fit in guest RAM).
 * Guest RAM may be partly written on failure.  Any thread; pure.
 */
int multiboot_load(const MultibootParams *p, MultibootBoot *boot,
                   GError **errp);

/*
 * multiboot_find_header: offset of the first valid multiboot header (magic
 * and checksum) in the first MULTIBOOT_SEARCH_LIMIT bytes of @image, or -1.
 */
long multiboot_find_header(const uint8_t *image, size_t size);

/*
 * multiboot_split_modules: split an -initrd value into module command
 * lines, QEMU's way: entries are separated by ',' and ",," stands for a
 * literal comma; a module's file name is its command line up to the first
 * space.  Returns a NULL-terminated array (g_strfreev()); never NULL.
 */
char **multiboot_split_modules(const char *initrd);

/* The kernel and module files, read into memory (multiboot_files_read()). */
typedef struct MultibootFiles {
    uint8_t *image;            /* the kernel file */
    size_t image_size;
    MultibootModule *modules;  /* data owned; cmdline points into cmdlines */
    size_t n_modules;
    char **cmdlines;           /* the -initrd entries */
} MultibootFiles;

/*
 * multiboot_files_read: read @kernel_path and the modules of @initrd (may
 * be NULL) into @f.  Each must be a regular file (checked with fstat()
 * before reading; opened non-blocking, so a FIFO never hangs), and the
 * kernel and modules together may not exceed @limit bytes (the guest RAM
 * size), so /dev/zero or a huge sparse file is refused before a byte is
 * read.  Between chunks of a large file, pending SIGTERM/SIGINT/SIGHUP are
 * handled (main_loop_poll_signals()) and end the read with -EINTR.
 * Returns 0, or a negative errno with a message naming the file and the
 * real errno text ("cannot read kernel 'k/x': Not a directory").  @f is
 * cleared on failure; free it with multiboot_files_clear().  Main thread,
 * at start-up (BQL held once the main loop is initialised).
 */
int multiboot_files_read(const char *kernel_path, const char *initrd,
                         uint64_t limit, MultibootFiles *f, GError **errp);

/* multiboot_files_clear: free what @f holds. */
void multiboot_files_clear(MultibootFiles *f);

/*
 * multiboot_files_load: multiboot_load() of the files in @f with
 * "@kernel_path @append" as the command line; a message prefixed with
 * "cannot boot '@kernel_path': ".  Any thread.
 */
int multiboot_files_load(const MultibootFiles *f, const char *kernel_path,
                         const char *append, const MultibootRam *ram,
                         size_t n_ram, MultibootBoot *boot, GError **errp);

/*
 * multiboot_load_files: multiboot_files_read() with the total size of @ram
 * as the limit, then multiboot_files_load().  Main thread, at start-up.
 */
int multiboot_load_files(const char *kernel_path, const char *append,
                         const char *initrd, const MultibootRam *ram,
                         size_t n_ram, MultibootBoot *boot, GError **errp);

#ifdef __cplusplus
}
#endif

#endif
