/*
 * The guest's command line (multiboot cmdline, QEMU's -append): words
 * separated by spaces; a word "key=value" sets key, a word "key" sets it
 * to "".  A first word without '=' is the image path the loader put in
 * front (QEMU and GRUB do) and is dropped.  The last occurrence of a key
 * wins.  Read-only after boot: any vCPU may call the getters.
 */
#ifndef GUEST_CMDLINE_H
#define GUEST_CMDLINE_H

#include <stdbool.h>
#include <stdint.h>

/* Longest command line kept; the rest is cut off. */
#define CMDLINE_MAX     1024

/* cmdline_init: take a copy of @raw (NULL: empty).  BSP, before SMP. */
void cmdline_init(const char *raw);

/* cmdline_get: the command line without the image path, trimmed. */
const char *cmdline_get(void);

/* cmdline_has: whether @key was given. */
bool cmdline_has(const char *key);

/* cmdline_str: the value of @key, or @def when absent. */
const char *cmdline_str(const char *key, const char *def);

/*
 * cmdline_u64: the value of @key as an unsigned number (decimal, or hex
 * with 0x; an optional k/m/g suffix multiplies by 2^10/2^20/2^30).
 * Returns @def when absent or not a number.
 */
uint64_t cmdline_u64(const char *key, uint64_t def);

/* cmdline_int: like cmdline_u64 but signed ("-5" allowed). */
int64_t cmdline_int(const char *key, int64_t def);

/*
 * cmdline_parse_u64: parse @s as cmdline_u64 does.  Returns true and sets
 * *@out when the whole string is a number.
 */
bool cmdline_parse_u64(const char *s, uint64_t *out);

#endif
