/*
 * Command-line parsing.  The line is copied once (the multiboot info may
 * live in memory a guest program later reuses), then split in place into
 * NUL-terminated keys and values.
 */
#include "cmdline.h"

#include "string.h"

#define CMDLINE_WORDS   64

static char cmdline_text[CMDLINE_MAX];          /* trimmed copy, for printing */
static char cmdline_buf[CMDLINE_MAX];           /* split into words */
static const char *cmdline_keys[CMDLINE_WORDS];
static const char *cmdline_vals[CMDLINE_WORDS];
static int cmdline_nwords;

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

void cmdline_init(const char *raw)
{
    size_t n = 0;
    char *p;

    if (!raw) {
        raw = "";
    }
    while (is_space(*raw)) {
        raw++;
    }
    /* Drop a leading image path: the first word, if it has no '='. */
    {
        const char *w = raw;
        bool has_eq = false;

        while (*w && !is_space(*w)) {
            has_eq |= *w == '=';
            w++;
        }
        if (!has_eq && w != raw) {
            raw = w;
            while (is_space(*raw)) {
                raw++;
            }
        }
    }
    while (raw[n] && n < CMDLINE_MAX - 1) {
        n++;
    }
    while (n && is_space(raw[n - 1])) {
        n--;
    }
    memcpy(cmdline_text, raw, n);
    cmdline_text[n] = '\0';
    memcpy(cmdline_buf, raw, n + 1);

    cmdline_nwords = 0;
    p = cmdline_buf;
    while (*p && cmdline_nwords < CMDLINE_WORDS) {
        char *key, *eq;

        while (is_space(*p)) {
            *p++ = '\0';
        }
        if (!*p) {
            break;
        }
        key = p;
        eq = NULL;
        while (*p && !is_space(*p)) {
            if (*p == '=' && !eq) {
                eq = p;
            }
            p++;
        }
        if (*p) {
            *p++ = '\0';
        }
        if (eq) {
            *eq = '\0';
        }
        cmdline_keys[cmdline_nwords] = key;
        cmdline_vals[cmdline_nwords] = eq ? eq + 1 : "";
        cmdline_nwords++;
    }
}

const char *cmdline_get(void)
{
    return cmdline_text;
}

static const char *cmdline_lookup(const char *key)
{
    for (int i = cmdline_nwords - 1; i >= 0; i--) {
        if (!strcmp(cmdline_keys[i], key)) {
            return cmdline_vals[i];
        }
    }
    return NULL;
}

bool cmdline_has(const char *key)
{
    return cmdline_lookup(key) != NULL;
}

const char *cmdline_str(const char *key, const char *def)
{
    const char *v = cmdline_lookup(key);

    return v ? v : def;
}

bool cmdline_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    bool any = false;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        unsigned d;

        if (*s >= '0' && *s <= '9') {
            d = (unsigned)(*s - '0');
        } else if (base == 16 && *s >= 'a' && *s <= 'f') {
            d = (unsigned)(*s - 'a' + 10);
        } else if (base == 16 && *s >= 'A' && *s <= 'F') {
            d = (unsigned)(*s - 'A' + 10);
        } else {
            break;
        }
        v = v * base + d;
        any = true;
    }
    if (!any) {
        return false;
    }
    switch (*s) {
    case 'k': case 'K': v <<= 10; s++; break;
    case 'm': case 'M': v <<= 20; s++; break;
    case 'g': case 'G': v <<= 30; s++; break;
    default: break;
    }
    if (*s) {
        return false;
    }
    *out = v;
    return true;
}

uint64_t cmdline_u64(const char *key, uint64_t def)
{
    const char *v = cmdline_lookup(key);
    uint64_t n;

    return v && cmdline_parse_u64(v, &n) ? n : def;
}

int64_t cmdline_int(const char *key, int64_t def)
{
    const char *v = cmdline_lookup(key);
    uint64_t n;

    if (!v) {
        return def;
    }
    if (*v == '-') {
        return cmdline_parse_u64(v + 1, &n) ? -(int64_t)n : def;
    }
    return cmdline_parse_u64(v, &n) ? (int64_t)n : def;
}
