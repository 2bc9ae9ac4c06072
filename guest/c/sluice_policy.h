/* sluice_policy.h: a header-only helper for Sluice policies in C.
 *
 * It sits on top of the bindings `wit-bindgen c` generates for the
 * contract (guest/c/bindings/policy_world.h, committed; regenerate with
 * guest/c/regen-bindings.sh) and gives:
 *
 *   - strings: make a WIT string from a C string (heap copy), a C string
 *     from a WIT string, compare, lower-case;
 *   - verdicts: continue, accept, reject and tempfail replies; data-stage
 *     results with added header fields;
 *   - host calls: log a line, add to a counter (ignoring access-denied);
 *   - a small JSON reader for the `init` config (objects, arrays,
 *     strings, integers, true/false/null).
 *
 * Memory rules of the generated bindings (manual memory management):
 *   - an export receives its arguments as owned values: free them (the
 *     generated `*_free` functions) before returning, and drop the
 *     borrowed message of on-data
 *     (sluice_policy_message_message_drop_borrow), or the call traps;
 *   - whatever an export returns is freed by the bindings after the host
 *     has read it, so every string in a result must be heap-allocated
 *     (sp_string() copies; never point a result at a literal).
 *
 * Built with `python -m ziglang cc --target=wasm32-wasi
 * -mexec-model=reactor` (wasi-libc provides malloc and string.h; nothing
 * here imports a WASI function, so the core module needs no adapter), then
 * `wasm-tools component new`. `sluice policy build DIR` does both.
 */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy_world.h"

typedef policy_world_string_t sp_str_t;
typedef exports_sluice_policy_policy_verdict_t sp_verdict_t;

/* ------------------------------------------------------------------ */
/* Strings                                                             */

/* A heap copy of `s` as a WIT string (what results must hold). */
static inline sp_str_t sp_string(const char *s) {
    sp_str_t out;
    size_t n = strlen(s);
    out.ptr = (uint8_t *)malloc(n ? n : 1);
    if (n) memcpy(out.ptr, s, n);
    out.len = n;
    return out;
}

/* A heap copy of `len` octets as a WIT string. */
static inline sp_str_t sp_string_n(const char *s, size_t len) {
    sp_str_t out;
    out.ptr = (uint8_t *)malloc(len ? len : 1);
    if (len) memcpy(out.ptr, s, len);
    out.len = len;
    return out;
}

/* A NUL-terminated heap copy of a WIT string; free() it. */
static inline char *sp_cstr(const sp_str_t *s) {
    char *out = (char *)malloc(s->len + 1);
    if (s->len) memcpy(out, s->ptr, s->len);
    out[s->len] = '\0';
    return out;
}

/* A heap copy of a C string; free() it. */
static inline char *sp_strdup(const char *s) {
    size_t n = strlen(s);
    char *out = (char *)malloc(n + 1);
    memcpy(out, s, n + 1);
    return out;
}

/* The concatenation of `a` and `b`, on the heap; free() it. */
static inline char *sp_concat(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *out = (char *)malloc(na + nb + 1);
    memcpy(out, a, na);
    memcpy(out + na, b, nb + 1);
    return out;
}

/* ASCII lower case, in place. Returns `s`. */
static inline char *sp_lower(char *s) {
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return s;
}

static inline bool sp_is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Strip leading and trailing ASCII white space, in place. Returns `s`. */
static inline char *sp_trim(char *s) {
    size_t start = 0, end = strlen(s);
    while (start < end && sp_is_space(s[start])) start++;
    while (end > start && sp_is_space(s[end - 1])) end--;
    memmove(s, s + start, end - start);
    s[end - start] = '\0';
    return s;
}

static inline bool sp_starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static inline bool sp_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Decimal text of `n`, on the heap; free() it. */
static inline char *sp_itoa(long long n) {
    char buf[24];
    size_t i = sizeof buf;
    bool neg = n < 0;
    unsigned long long u = neg ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    buf[--i] = '\0';
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg) buf[--i] = '-';
    return sp_strdup(buf + i);
}

/* ------------------------------------------------------------------ */
/* Verdicts                                                            */

static inline void sp_continue(sp_verdict_t *ret) {
    ret->tag = SLUICE_POLICY_TYPES_VERDICT_CONTINUE;
}

static inline void sp_accept(sp_verdict_t *ret) {
    ret->tag = SLUICE_POLICY_TYPES_VERDICT_ACCEPT;
}

/* Refuse: a 4xx `code` gives `tempfail`, anything else `reject`. The
 * strings are copied. */
static inline void sp_refuse(sp_verdict_t *ret, uint16_t code, const char *enhanced,
                             const char *text) {
    sluice_policy_types_reply_t reply;
    reply.code = code;
    reply.enhanced = sp_string(enhanced);
    reply.text = sp_string(text);
    if (code / 100 == 4) {
        ret->tag = SLUICE_POLICY_TYPES_VERDICT_TEMPFAIL;
        ret->val.tempfail = reply;
    } else {
        ret->tag = SLUICE_POLICY_TYPES_VERDICT_REJECT;
        ret->val.reject = reply;
    }
}

typedef exports_sluice_policy_policy_data_result_t sp_data_result_t;

/* A data-stage result: "continue" and no changes. */
static inline void sp_data_continue(sp_data_result_t *ret) {
    sp_continue(&ret->verdict);
    ret->changes.ptr = NULL;
    ret->changes.len = 0;
}

/* Append a change to a data-stage result (the list grows on the heap). */
static inline sluice_policy_types_change_t *sp_data_change(sp_data_result_t *ret) {
    size_t n = ret->changes.len + 1;
    ret->changes.ptr = (sluice_policy_types_change_t *)realloc(ret->changes.ptr,
                                                               n * sizeof *ret->changes.ptr);
    ret->changes.len = n;
    return &ret->changes.ptr[n - 1];
}

/* Ask for a header field to be added (the strings are copied). */
static inline void sp_data_add_header(sp_data_result_t *ret, const char *name,
                                      const char *value) {
    sluice_policy_types_change_t *c = sp_data_change(ret);
    c->tag = SLUICE_POLICY_TYPES_CHANGE_ADD_HEADER;
    c->val.add_header.name = sp_string(name);
    c->val.add_header.value = sp_string(value);
}

/* ------------------------------------------------------------------ */
/* Host calls                                                          */

typedef enum {
    SP_TRACE = SLUICE_POLICY_LOG_LEVEL_TRACE,
    SP_DEBUG = SLUICE_POLICY_LOG_LEVEL_DEBUG,
    SP_INFO = SLUICE_POLICY_LOG_LEVEL_INFO,
    SP_WARN = SLUICE_POLICY_LOG_LEVEL_WARN,
    SP_ERROR = SLUICE_POLICY_LOG_LEVEL_ERROR,
} sp_level_t;

/* Log one line (borrowed: nothing to free). */
static inline void sp_log(sp_level_t level, const char *message) {
    sp_str_t s;
    policy_world_string_set(&s, message);
    sluice_policy_log_log((sluice_policy_log_level_t)level, &s);
}

/* Add `delta` to the counter `name`; false when the host refused (e.g.
 * the `metrics` capability was not granted), which a policy may ignore. */
static inline bool sp_counter_add(const char *name, uint32_t delta) {
    sp_str_t s;
    sluice_policy_metrics_host_error_t err;
    policy_world_string_set(&s, name);
    if (sluice_policy_metrics_counter_add(&s, delta, &err)) return true;
    sluice_policy_metrics_host_error_free(&err);
    return false;
}

/* ------------------------------------------------------------------ */
/* JSON (for the config given to `init`)                               */

typedef enum { SP_JSON_NULL, SP_JSON_BOOL, SP_JSON_INT, SP_JSON_NUMBER, SP_JSON_STRING,
               SP_JSON_ARRAY, SP_JSON_OBJECT } sp_json_type_t;

typedef struct sp_json {
    sp_json_type_t type;
    bool boolean;
    long long integer;  /* SP_JSON_INT */
    char *string;       /* SP_JSON_STRING (NUL-terminated, UTF-8) */
    size_t len;         /* items of an array or object */
    struct sp_json *items;
    char **keys;        /* SP_JSON_OBJECT */
} sp_json_t;

typedef struct {
    const char *p, *end;
} sp_json_cursor_t;

static inline void sp_json_ws(sp_json_cursor_t *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline int sp_json_hex(char h) {
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    if (h >= 'A' && h <= 'F') return h - 'A' + 10;
    return -1;
}

static inline bool sp_json_u4(sp_json_cursor_t *c, unsigned *out) {
    unsigned v = 0;
    if (c->end - c->p < 4) return false;
    for (int i = 0; i < 4; i++) {
        int h = sp_json_hex(c->p[i]);
        if (h < 0) return false;
        v = v * 16 + (unsigned)h;
    }
    c->p += 4;
    *out = v;
    return true;
}

static inline char *sp_json_string(sp_json_cursor_t *c) {
    /* c->p is just past the opening quote; the result is at most as long
     * as the escaped text. */
    char *out = (char *)malloc((size_t)(c->end - c->p) + 1);
    size_t n = 0;
    while (c->p < c->end && *c->p != '"') {
        char ch = *c->p++;
        if (ch != '\\') {
            out[n++] = ch;
            continue;
        }
        if (c->p >= c->end) break;
        ch = *c->p++;
        switch (ch) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'u': {
            unsigned cp, lo;
            if (!sp_json_u4(c, &cp)) goto fail;
            if (cp >= 0xD800 && cp < 0xDC00 && c->end - c->p >= 6 && c->p[0] == '\\' &&
                c->p[1] == 'u') {
                c->p += 2;
                if (!sp_json_u4(c, &lo)) goto fail;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: out[n++] = ch; break; /* \" \\ \/ */
        }
    }
    if (c->p >= c->end) goto fail;
    c->p++; /* closing quote */
    out[n] = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

static inline void sp_json_free(sp_json_t *v);

static inline bool sp_json_value(sp_json_cursor_t *c, sp_json_t *v, int depth) {
    memset(v, 0, sizeof *v);
    sp_json_ws(c);
    if (c->p >= c->end || depth > 64) return false;
    char ch = *c->p;
    if (ch == '"') {
        c->p++;
        v->type = SP_JSON_STRING;
        v->string = sp_json_string(c);
        return v->string != NULL;
    }
    if (ch == '{' || ch == '[') {
        bool object = ch == '{';
        char close = object ? '}' : ']';
        size_t cap = 0;
        v->type = object ? SP_JSON_OBJECT : SP_JSON_ARRAY;
        c->p++;
        sp_json_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return true;
        }
        for (;;) {
            if (v->len == cap) {
                cap = cap ? cap * 2 : 4;
                v->items = (sp_json_t *)realloc(v->items, cap * sizeof *v->items);
                if (object) v->keys = (char **)realloc(v->keys, cap * sizeof *v->keys);
            }
            if (object) {
                sp_json_ws(c);
                if (c->p >= c->end || *c->p != '"') return false;
                c->p++;
                char *key = sp_json_string(c);
                if (!key) return false;
                sp_json_ws(c);
                if (c->p >= c->end || *c->p != ':') {
                    free(key);
                    return false;
                }
                c->p++;
                v->keys[v->len] = key;
            }
            bool ok = sp_json_value(c, &v->items[v->len], depth + 1);
            v->len++;
            if (!ok) return false;
            sp_json_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (c->p < c->end && *c->p == close) {
                c->p++;
                return true;
            }
            return false;
        }
    }
    if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
        c->p += 4;
        v->type = SP_JSON_BOOL;
        v->boolean = true;
        return true;
    }
    if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
        c->p += 5;
        v->type = SP_JSON_BOOL;
        return true;
    }
    if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
        c->p += 4;
        return true;
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        bool neg = ch == '-', integer = true, digits = false;
        unsigned long long u = 0;
        if (neg) c->p++;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (u > 100000000000000000ULL) integer = false;
            u = u * 10 + (unsigned long long)(*c->p++ - '0');
            digits = true;
        }
        if (!digits) return false;
        while (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E' ||
                                 *c->p == '+' || *c->p == '-' ||
                                 (*c->p >= '0' && *c->p <= '9'))) {
            integer = false;
            c->p++;
        }
        v->type = integer ? SP_JSON_INT : SP_JSON_NUMBER;
        v->integer = neg ? -(long long)u : (long long)u;
        return true;
    }
    return false;
}

/* Parse `len` octets of JSON into `out`; false (with `out` freed) when it
 * is not JSON. Free a parsed value with sp_json_free(). */
static inline bool sp_json_parse(const char *text, size_t len, sp_json_t *out) {
    sp_json_cursor_t c = {text, text + len};
    bool ok = sp_json_value(&c, out, 0);
    sp_json_ws(&c);
    if (!ok || c.p != c.end) {
        sp_json_free(out);
        return false;
    }
    return true;
}

static inline void sp_json_free(sp_json_t *v) {
    free(v->string);
    for (size_t i = 0; i < v->len; i++) {
        sp_json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

/* The member `key` of an object, or NULL. */
static inline const sp_json_t *sp_json_get(const sp_json_t *object, const char *key) {
    if (object->type != SP_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < object->len; i++)
        if (strcmp(object->keys[i], key) == 0) return &object->items[i];
    return NULL;
}

#endif /* SLUICE_POLICY_H */
