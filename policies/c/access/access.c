/* access in C: allow and deny lists for the client address, the HELO
 * name, the sender and the recipients, with the configuration keys of the
 * Rust policy `policies/rust/access` (see its README for the patterns). It
 * behaves as the Rust policy does (case is folded for ASCII letters, as
 * there), which tests/lang-policies checks session by session through the
 * gateway; only the error texts for a malformed config are shorter.
 *
 * At each stage an allow match wins over a deny match; an allowed value
 * gets "continue" (or "accept" with allow_action = "accept"), a denied one
 * the configured reply (550 5.7.1 Access denied by default).
 *
 * Build: sluice policy build policies/c/access
 */
#include "sluice_policy.h"

/* One pattern, parsed. */
typedef enum {
    PAT_EXACT,      /* the whole value (an address, or a HELO name) */
    PAT_NULL,       /* "<>": the null sender */
    PAT_DOMAIN,     /* any address at `text` */
    PAT_SUBDOMAIN,  /* any address (or HELO name) below `text` */
    PAT_LOCAL,      /* "user@": that local part at any domain */
} pat_kind_t;

typedef struct {
    pat_kind_t kind;
    char *text;
} pattern_t;

typedef struct {
    pattern_t *items;
    size_t len;
} list_t;

/* Allow and deny lists of one stage. */
typedef struct {
    list_t allow, deny;
} lists_t;

/* A network: 4 (IPv4) or 16 (IPv6) address octets and a prefix length. */
typedef struct {
    uint8_t addr[16];
    int octets;
    int len;
} network_t;

typedef struct {
    network_t *items;
    size_t len;
} networks_t;

static struct {
    bool allow_accepts;
    networks_t allow_networks, deny_networks;
    lists_t helo, senders, recipients;
    uint16_t code;
    char *status, *text;
} config;

static const char *const KEYS[] = {
    "allow_networks", "deny_networks", "allow_helo", "deny_helo",
    "allow_senders", "deny_senders", "allow_recipients", "deny_recipients",
    "allow_action", "reject_code", "reject_status", "reject_text", NULL,
};

/* [A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*, 1 to 253 octets. */
static bool valid_name(const char *name) {
    size_t n = strlen(name);
    bool label_empty = true;
    if (n == 0 || n > 253) return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label_empty) return false;
            label_empty = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            label_empty = false;
        } else {
            return false;
        }
    }
    return !label_empty;
}

static bool has_space(const char *s) {
    for (; *s; s++)
        if (sp_is_space(*s)) return true;
    return false;
}

/* Parse an address pattern (lower-cased, trimmed) into `out`. */
static bool address_pattern(char *p, pattern_t *out) {
    if (strcmp(p, "<>") == 0) {
        out->kind = PAT_NULL;
        return true;
    }
    char *at = strchr(p, '@');
    if (!*p || has_space(p) || (at && strchr(at + 1, '@'))) return false;
    const char *domain = p;
    if (at) {
        *at = '\0';
        domain = at + 1;
        if (*p) { /* a local part */
            if (strchr(p, '*')) return false;
            if (!*domain) {
                out->kind = PAT_LOCAL;
                out->text = sp_strdup(p);
                return true;
            }
            if (!valid_name(domain)) return false;
            *at = '@';
            out->kind = PAT_EXACT;
            out->text = sp_strdup(p);
            return true;
        }
    }
    if (sp_starts_with(domain, "*.")) {
        if (!valid_name(domain + 2)) return false;
        out->kind = PAT_SUBDOMAIN;
        out->text = sp_concat(".", domain + 2);
        return true;
    }
    if (!valid_name(domain)) return false;
    out->kind = PAT_DOMAIN;
    out->text = sp_strdup(domain);
    return true;
}

/* Parse a HELO name pattern (lower-cased, trimmed) into `out`. */
static bool helo_pattern(char *p, pattern_t *out) {
    size_t n = strlen(p);
    if (n && p[n - 1] == '.') p[n - 1] = '\0';
    if (!*p || has_space(p)) return false;
    if (sp_starts_with(p, "*.")) {
        if (!p[2] || strchr(p + 2, '*')) return false;
        out->kind = PAT_SUBDOMAIN;
        out->text = sp_concat(".", p + 2);
        return true;
    }
    if (strchr(p, '*')) return false;
    out->kind = PAT_EXACT;
    out->text = sp_strdup(p);
    return true;
}

/* Whether the (lower-cased) address matches. */
static bool address_matches(const pattern_t *pat, const char *addr) {
    if (pat->kind == PAT_NULL) return *addr == '\0';
    if (!*addr) return false;
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";
    switch (pat->kind) {
    case PAT_EXACT: return strcmp(addr, pat->text) == 0;
    case PAT_DOMAIN: return strcmp(domain, pat->text) == 0;
    case PAT_SUBDOMAIN: return sp_ends_with(domain, pat->text);
    case PAT_LOCAL: {
        size_t local = at ? (size_t)(at - addr) : strlen(addr);
        return strlen(pat->text) == local && memcmp(addr, pat->text, local) == 0;
    }
    default: return false;
    }
}

static bool helo_matches(const pattern_t *pat, const char *name) {
    if (pat->kind == PAT_SUBDOMAIN) return sp_ends_with(name, pat->text);
    return strcmp(name, pat->text) == 0;
}

static char *key_error(const char *key, const char *what) {
    char *a = sp_concat("config key `", key);
    char *b = sp_concat(a, "`: ");
    char *c = sp_concat(b, what);
    free(a);
    free(b);
    return c;
}

/* Read the list `key` with `parse`; NULL, or an error message. */
static char *read_list(const sp_json_t *cfg, const char *key,
                       bool (*parse)(char *, pattern_t *), const char *bad, list_t *out) {
    const sp_json_t *v = sp_json_get(cfg, key);
    if (!v || v->type == SP_JSON_NULL) return NULL;
    if (v->type != SP_JSON_ARRAY) return key_error(key, "must be a list of strings");
    out->items = (pattern_t *)calloc(v->len ? v->len : 1, sizeof *out->items);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i].type != SP_JSON_STRING) return key_error(key, "must be a list of strings");
        char *p = sp_lower(sp_trim(sp_strdup(v->items[i].string)));
        bool ok = parse(p, &out->items[out->len]);
        free(p);
        if (!ok) {
            char *q = sp_concat("\"", v->items[i].string);
            char *r = sp_concat(q, bad);
            char *e = key_error(key, r);
            free(q);
            free(r);
            return e;
        }
        out->len++;
    }
    return NULL;
}

/* Dotted-quad IPv4 into out[4]. */
static bool parse_v4(const char *s, uint8_t out[4]) {
    for (int i = 0; i < 4; i++) {
        int digits = 0, v = 0;
        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (*s++ - '0');
            if (++digits > 3 || v > 255) return false;
        }
        if (!digits) return false;
        out[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.') return false;
    }
    return *s == '\0';
}

/* IPv6 text (with "::" and an optional dotted-quad tail) into out[16]. */
static bool parse_v6(const char *s, uint8_t out[16]) {
    uint16_t head[8], tail[8];
    int nh = 0, nt = 0;
    bool gap = false;
    uint8_t v4[4];
    if (s[0] == ':' && s[1] == ':') {
        gap = true;
        s += 2;
    } else if (*s == ':') {
        return false;
    }
    while (*s) {
        if (nh + nt >= 8) return false;
        /* a dotted-quad tail takes two groups */
        const char *dot = strchr(s, '.');
        if (dot && !strchr(s, ':')) {
            if (nh + nt > 6 || !parse_v4(s, v4)) return false;
            uint16_t *g = gap ? tail : head;
            int *n = gap ? &nt : &nh;
            g[(*n)++] = (uint16_t)(v4[0] << 8 | v4[1]);
            g[(*n)++] = (uint16_t)(v4[2] << 8 | v4[3]);
            s += strlen(s);
            break;
        }
        int digits = 0;
        unsigned v = 0;
        int h;
        while ((h = sp_json_hex(*s)) >= 0) {
            v = v * 16 + (unsigned)h;
            s++;
            if (++digits > 4) return false;
        }
        if (!digits) return false;
        if (gap) tail[nt++] = (uint16_t)v;
        else head[nh++] = (uint16_t)v;
        if (*s == ':') {
            s++;
            if (*s == ':') {
                if (gap) return false;
                gap = true;
                s++;
            } else if (!*s) {
                return false;
            }
        } else if (*s) {
            return false;
        }
    }
    if (gap ? nh + nt > 7 : nh != 8) return false;
    uint16_t groups[8] = {0};
    for (int i = 0; i < nh; i++) groups[i] = head[i];
    for (int i = 0; i < nt; i++) groups[8 - nt + i] = tail[i];
    for (int i = 0; i < 8; i++) {
        out[2 * i] = (uint8_t)(groups[i] >> 8);
        out[2 * i + 1] = (uint8_t)groups[i];
    }
    return true;
}

/* An address into `out` (len: a network of one). IPv4-mapped IPv6
 * addresses stay IPv6 here; see canonical(). */
static bool parse_ip(const char *s, network_t *out) {
    memset(out, 0, sizeof *out);
    if (strchr(s, ':')) {
        out->octets = 16;
        out->len = 128;
        return parse_v6(s, out->addr);
    }
    out->octets = 4;
    out->len = 32;
    return parse_v4(s, out->addr);
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 address. */
static void canonical(network_t *ip) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (ip->octets == 16 && memcmp(ip->addr, mapped, 12) == 0) {
        memmove(ip->addr, ip->addr + 12, 4);
        memset(ip->addr + 4, 0, 12);
        ip->octets = 4;
        ip->len = 32;
    }
}

/* "addr/len" or a plain address (trimmed). */
static bool parse_network(char *text, network_t *out) {
    char *slash = strchr(text, '/');
    if (slash) *slash = '\0';
    if (!parse_ip(text, out)) return false;
    if (slash) {
        const char *p = slash + 1;
        int len = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 4) {
            len = len * 10 + (*p++ - '0');
            digits++;
        }
        if (!digits || *p || len > out->octets * 8) return false;
        out->len = len;
    }
    return true;
}

static bool network_contains(const network_t *net, const network_t *ip) {
    if (net->octets != ip->octets) return false;
    int full = net->len / 8, rest = net->len % 8;
    if (memcmp(net->addr, ip->addr, (size_t)full) != 0) return false;
    if (!rest) return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (ip->addr[full] & mask);
}

static char *read_networks(const sp_json_t *cfg, const char *key, networks_t *out) {
    const sp_json_t *v = sp_json_get(cfg, key);
    if (!v || v->type == SP_JSON_NULL) return NULL;
    if (v->type != SP_JSON_ARRAY) return key_error(key, "must be a list of strings");
    out->items = (network_t *)calloc(v->len ? v->len : 1, sizeof *out->items);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i].type != SP_JSON_STRING) return key_error(key, "must be a list of strings");
        char *text = sp_trim(sp_strdup(v->items[i].string));
        bool ok = parse_network(text, &out->items[out->len]);
        free(text);
        if (!ok) {
            char *q = sp_concat("\"", v->items[i].string);
            char *r = sp_concat(q, "\" is not an IP address or network");
            char *e = key_error(key, r);
            free(q);
            free(r);
            return e;
        }
        out->len++;
    }
    return NULL;
}

static char *read_string(const sp_json_t *cfg, const char *key, const char *fallback,
                         char **out) {
    const sp_json_t *v = sp_json_get(cfg, key);
    if (v && v->type != SP_JSON_STRING && v->type != SP_JSON_NULL)
        return key_error(key, "must be a string");
    *out = sp_strdup(v && v->type == SP_JSON_STRING ? v->string : fallback);
    return NULL;
}

static char *configure(const sp_json_t *cfg) {
    char *err;
    if (cfg->type != SP_JSON_OBJECT) return sp_strdup("the config must be a JSON object");
    for (size_t i = 0; i < cfg->len; i++) {
        bool known = false;
        for (const char *const *k = KEYS; *k; k++) known = known || strcmp(*k, cfg->keys[i]) == 0;
        if (!known) {
            char *a = sp_concat("config key `", cfg->keys[i]);
            char *b = sp_concat(a, "` is not known");
            free(a);
            return b;
        }
    }
    if ((err = read_networks(cfg, "allow_networks", &config.allow_networks)) ||
        (err = read_networks(cfg, "deny_networks", &config.deny_networks)))
        return err;
    const char *bad_address =
        "\" is not an address pattern (user@domain, @domain, *.domain, user@ or <>)";
    const char *bad_helo = "\" is not a HELO name pattern";
    if ((err = read_list(cfg, "allow_helo", helo_pattern, bad_helo, &config.helo.allow)) ||
        (err = read_list(cfg, "deny_helo", helo_pattern, bad_helo, &config.helo.deny)) ||
        (err = read_list(cfg, "allow_senders", address_pattern, bad_address,
                         &config.senders.allow)) ||
        (err = read_list(cfg, "deny_senders", address_pattern, bad_address,
                         &config.senders.deny)) ||
        (err = read_list(cfg, "allow_recipients", address_pattern, bad_address,
                         &config.recipients.allow)) ||
        (err = read_list(cfg, "deny_recipients", address_pattern, bad_address,
                         &config.recipients.deny)))
        return err;

    char *action;
    if ((err = read_string(cfg, "allow_action", "continue", &action))) return err;
    bool accept = strcmp(action, "accept") == 0;
    bool valid = accept || strcmp(action, "continue") == 0;
    free(action);
    if (!valid) return key_error("allow_action", "must be \"continue\" or \"accept\"");
    config.allow_accepts = accept;

    const sp_json_t *code = sp_json_get(cfg, "reject_code");
    config.code = 550;
    if (code && code->type != SP_JSON_NULL) {
        if (code->type != SP_JSON_INT || code->integer < 400 || code->integer > 599)
            return key_error("reject_code", "must be a 4xx or 5xx reply code");
        config.code = (uint16_t)code->integer;
    }
    unsigned cls = config.code / 100u;
    char fallback[6] = {(char)('0' + cls), '.', '7', '.', '1', '\0'};
    if ((err = read_string(cfg, "reject_status", fallback, &config.status))) return err;
    /* class.subject.detail, 1 to 3 digits each, of the code's class */
    int parts = 1, digits = 0;
    bool status_ok = config.status[0] == (char)('0' + cls);
    for (const char *p = config.status; *p && status_ok; p++) {
        if (*p == '.') {
            status_ok = digits > 0;
            parts++;
            digits = 0;
        } else {
            status_ok = *p >= '0' && *p <= '9' && ++digits <= 3;
        }
    }
    if (!status_ok || parts != 3 || digits == 0)
        return key_error("reject_status",
                         "is not an enhanced status code of the class of reject_code");
    if ((err = read_string(cfg, "reject_text", "Access denied", &config.text))) return err;
    if (strchr(config.text, '\r') || strchr(config.text, '\n'))
        return key_error("reject_text", "must be one line");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Exports                                                             */

/* Set by a successful init: describe then declares only the stages with
 * a list (the host skips the others' calls); before init, all of them. */
static bool initialised;

void exports_sluice_policy_policy_describe(exports_sluice_policy_policy_description_t *ret) {
    sluice_policy_types_stage_t stages[4];
    size_t n = 0;
    if (!initialised || config.allow_networks.len || config.deny_networks.len)
        stages[n++] = SLUICE_POLICY_TYPES_STAGE_CONNECT;
    if (!initialised || config.helo.allow.len || config.helo.deny.len)
        stages[n++] = SLUICE_POLICY_TYPES_STAGE_HELO;
    if (!initialised || config.senders.allow.len || config.senders.deny.len)
        stages[n++] = SLUICE_POLICY_TYPES_STAGE_MAIL_FROM;
    if (!initialised || config.recipients.allow.len || config.recipients.deny.len)
        stages[n++] = SLUICE_POLICY_TYPES_STAGE_RCPT;
    ret->name = sp_string("access");
    ret->version = sp_string("0.1.0");
    ret->stages.ptr = (sluice_policy_types_stage_t *)malloc(n ? n * sizeof stages[0] : 1);
    if (n) memcpy(ret->stages.ptr, stages, n * sizeof stages[0]);
    ret->stages.len = n;
}

bool exports_sluice_policy_policy_init(policy_world_string_t *config_json,
                                       policy_world_string_t *err) {
    sp_json_t cfg;
    char *message;
    if (!sp_json_parse((const char *)config_json->ptr, config_json->len, &cfg)) {
        message = sp_strdup("the config is not JSON");
    } else {
        message = configure(&cfg);
        sp_json_free(&cfg);
    }
    policy_world_string_free(config_json);
    initialised = message == NULL;
    if (!message) return true;
    *err = sp_string(message);
    free(message);
    return false;
}

/* Allow wins over deny: the first of `allow` (then of `deny`), arrays of
 * `size`-octet items, that `matches` the value. `what` names the value in
 * the log line. */
static void decide_with(const void *allow, size_t allow_len, const void *deny, size_t deny_len,
                        size_t size, const void *value, const char *what,
                        bool (*matches)(const void *, const void *), sp_verdict_t *ret) {
    sp_continue(ret);
    for (size_t i = 0; i < allow_len; i++) {
        if (matches((const char *)allow + i * size, value)) {
            char *line = sp_concat(what, " allowed");
            sp_log(SP_DEBUG, line);
            free(line);
            sp_counter_add("allowed", 1); /* metrics may not be granted */
            if (config.allow_accepts) sp_accept(ret);
            return;
        }
    }
    for (size_t i = 0; i < deny_len; i++) {
        if (matches((const char *)deny + i * size, value)) {
            char *line = sp_concat(what, " denied");
            sp_log(SP_INFO, line);
            free(line);
            sp_counter_add("denied", 1);
            sp_refuse(ret, config.code, config.status, config.text);
            return;
        }
    }
}

static bool address_matches_any(const void *pat, const void *addr) {
    return address_matches((const pattern_t *)pat, (const char *)addr);
}

static bool helo_matches_any(const void *pat, const void *name) {
    return helo_matches((const pattern_t *)pat, (const char *)name);
}

static void decide(const lists_t *lists, const char *value, const char *what,
                   bool (*matches)(const void *, const void *), sp_verdict_t *ret) {
    decide_with(lists->allow.items, lists->allow.len, lists->deny.items, lists->deny.len,
                sizeof(pattern_t), value, what, matches, ret);
}

static bool in_network(const void *net, const void *ip) {
    return network_contains((const network_t *)net, (const network_t *)ip);
}

void exports_sluice_policy_policy_on_connect(exports_sluice_policy_policy_session_t *session,
                                             exports_sluice_policy_policy_verdict_t *ret) {
    sp_continue(ret);
    if (config.allow_networks.len || config.deny_networks.len) {
        char *text = sp_cstr(&session->client_ip);
        network_t ip;
        if (!parse_ip(text, &ip)) {
            char *a = sp_concat("client address \"", text);
            char *line = sp_concat(a, "\" is not an IP address");
            sp_log(SP_WARN, line);
            free(a);
            free(line);
        } else {
            /* An IPv4-mapped IPv6 client counts as its IPv4 address. */
            canonical(&ip);
            char *label = sp_concat("client ", text);
            decide_with(config.allow_networks.items, config.allow_networks.len,
                        config.deny_networks.items, config.deny_networks.len, sizeof(network_t),
                        &ip, label, in_network, ret);
            free(label);
        }
        free(text);
    }
    sluice_policy_types_session_free(session);
}

static void check_address(const lists_t *lists, policy_world_string_t *addr, const char *what,
                          sp_verdict_t *ret) {
    sp_continue(ret);
    if (!lists->allow.len && !lists->deny.len) return;
    char *original = sp_cstr(addr);
    char *lower = sp_lower(sp_strdup(original));
    char *a = sp_concat(what, " ");
    char *label = sp_concat(a, *original ? original : "<>");
    decide(lists, lower, label, address_matches_any, ret);
    free(a);
    free(label);
    free(lower);
    free(original);
}

void exports_sluice_policy_policy_on_helo(exports_sluice_policy_policy_session_t *session,
                                          policy_world_string_t *name,
                                          exports_sluice_policy_policy_verdict_t *ret) {
    sp_continue(ret);
    if (config.helo.allow.len || config.helo.deny.len) {
        char *original = sp_cstr(name);
        char *lower = sp_lower(sp_trim(sp_strdup(original)));
        size_t n = strlen(lower);
        if (n && lower[n - 1] == '.') lower[n - 1] = '\0';
        char *label = sp_concat("HELO ", original);
        decide(&config.helo, lower, label, helo_matches_any, ret);
        free(label);
        free(lower);
        free(original);
    }
    sluice_policy_types_session_free(session);
    policy_world_string_free(name);
}

void exports_sluice_policy_policy_on_mail_from(exports_sluice_policy_policy_session_t *session,
                                               policy_world_string_t *sender,
                                               exports_sluice_policy_policy_list_param_t *params,
                                               exports_sluice_policy_policy_verdict_t *ret) {
    check_address(&config.senders, sender, "sender", ret);
    sluice_policy_types_session_free(session);
    policy_world_string_free(sender);
    exports_sluice_policy_policy_list_param_free(params);
}

void exports_sluice_policy_policy_on_rcpt(exports_sluice_policy_policy_session_t *session,
                                          exports_sluice_policy_policy_envelope_t *envelope,
                                          policy_world_string_t *recipient,
                                          exports_sluice_policy_policy_list_param_t *params,
                                          exports_sluice_policy_policy_verdict_t *ret) {
    check_address(&config.recipients, recipient, "recipient", ret);
    sluice_policy_types_session_free(session);
    sluice_policy_types_envelope_free(envelope);
    policy_world_string_free(recipient);
    exports_sluice_policy_policy_list_param_free(params);
}

/* Not declared in describe(): the host never calls these. */
void exports_sluice_policy_policy_on_data(exports_sluice_policy_policy_session_t *session,
                                          exports_sluice_policy_policy_envelope_t *envelope,
                                          exports_sluice_policy_policy_borrow_message_t message,
                                          exports_sluice_policy_policy_data_result_t *ret) {
    sluice_policy_message_message_drop_borrow(message); /* borrowed handles must be dropped */
    sluice_policy_types_session_free(session);
    sluice_policy_types_envelope_free(envelope);
    sp_continue(&ret->verdict);
    ret->changes.ptr = NULL;
    ret->changes.len = 0;
}

void exports_sluice_policy_policy_on_route(exports_sluice_policy_policy_envelope_t *envelope,
                                           policy_world_string_t *recipient,
                                           exports_sluice_policy_policy_route_t *ret) {
    sluice_policy_types_envelope_free(envelope);
    policy_world_string_free(recipient);
    ret->tag = SLUICE_POLICY_TYPES_ROUTE_DEFAULT;
}
