/*
 * The command line of build/shardvm, in QEMU's spelling (-kernel, -m 256M,
 * -smp 2, -object iothread,id=io0, -device isa-debug-exit,iobase=0xf4...).
 *
 * Parsing is pure: argv in, a ShardvmOptions out, or a GError whose
 * message names the offending option ("-m: invalid size 'abc'").  It
 * neither prints nor exits; system/main.c does that.
 */
#ifndef SHARDVM_OPTIONS_H
#define SHARDVM_OPTIONS_H

#include "shardvm/chardev.h"
#include "shardvm/iothread.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPTIONS_DEFAULT_RAM  (128ull << 20) /* QEMU's default -m */
#define OPTIONS_MIN_RAM      (2ull << 20)   /* room for the boot structures */
#define OPTIONS_MAX_RAM      (1ull << 40)
#define OPTIONS_MAX_CPUS     64             /* = VM_MAX_VCPUS (vcpu/) */

/* One -object iothread. */
typedef struct IOThreadOption {
    char *id;
    IOThreadProps props;
} IOThreadOption;

/* The parsed command line.  Strings are owned (options_clear() frees). */
typedef struct ShardvmOptions {
    char *kernel;        /* -kernel FILE, NULL if absent */
    char *append;        /* -append, NULL if absent */
    char *initrd;        /* -initrd "mod1 args,mod2" (multiboot modules) */
    uint64_t ram_size;   /* -m, bytes */
    unsigned cpus;       /* -smp */
    ChardevBackend serial; /* -serial; CHARDEV_NONE: no serial port */
    char *serial_path;   /* CHARDEV_FILE */
    bool serial_given;   /* -serial appeared (else -nographic/default) */
    bool nographic;
    char *name;          /* -name, NULL if absent */
    char *cpu_model;     /* -cpu, "host" if absent */
    bool debug_exit;     /* -device isa-debug-exit */
    uint16_t debug_exit_iobase;
    uint16_t debug_exit_iosize;
    GArray *iothreads;   /* IOThreadOption, in command-line order */
    GPtrArray *drives;   /* BlockOptions * (block.h): -drive and -blockdev,
                          * in command-line order, ids unique */
    GPtrArray *devices;  /* DeviceOption * (device.h): -device other than
                          * isa-debug-exit, in command-line order */
    /* ---- the monitor and process options (QMP, issue 12) ---- */
    GPtrArray *qmp;      /* char *: -qmp listener addresses, normalised
                          * ("unix:PATH", "tcp:HOST:PORT"); NULL if none */
    GPtrArray *chardevs; /* char *: "ID=ADDR" of -chardev socket */
    GPtrArray *mons;     /* char *: chardev ids of -mon mode=control */
    bool start_paused;   /* -S: status prelaunch until "cont" */
    bool no_shutdown;    /* -no-shutdown: stop instead of exiting */
    bool nodefaults;     /* -nodefaults: no default serial port */
    char *pidfile;       /* -pidfile FILE */
    bool daemonize;      /* -daemonize */
    bool help;           /* -h / -help: print usage, exit 0 */
    bool version;        /* -version: print version, exit 0 */
} ShardvmOptions;

/*
 * options_parse: parse @argv[1..@argc-1] into @o (which it initialises;
 * call options_clear() afterwards whatever the result).  Returns 0, or
 * -EINVAL with a message such as "-foo: invalid option" in @errp.  Any
 * thread; pure.
 */
int options_parse(int argc, char **argv, ShardvmOptions *o, GError **errp);

/* options_clear: free what @o owns and zero it. */
void options_clear(ShardvmOptions *o);

/* options_usage: the -help text (static storage). */
const char *options_usage(void);

/*
 * options_parse_size: exactly the size syntax QEMU 7.2 accepts: a decimal
 * number (a fraction such as "1.5" or "256." allowed, no exponent) or a 0x
 * hex integer, with an optional suffix B, K, M, G, T, P, E (any case;
 * powers of 1024).  The value is first read as bytes, so a fraction needs
 * a suffix; then, as QEMU does for -m, a value whose last character is a
 * digit is multiplied by @unit ("0x100" with MiB is 256 MiB, "1.5" is
 * refused, "1.0" is 1 MiB).  Returns 0 or -EINVAL (also on overflow).
 */
int options_parse_size(const char *s, uint64_t unit, uint64_t *out);

/*
 * options_parse_keyval: split QEMU's "value,key=value,..." syntax into a
 * table of key -> value (",," stands for a literal comma).  A first item
 * without '=' is the value of @implied_key (when @implied_key is NULL
 * that is an error).  A repeated key or an empty key is an error naming
 * @opt.  Returns the table (g_hash_table_unref()) or NULL with @errp set.
 */
GHashTable *options_parse_keyval(const char *opt, const char *arg,
                                 const char *implied_key, GError **errp);

#ifdef __cplusplus
}
#endif

#endif
