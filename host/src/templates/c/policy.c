/* {{name}}: a Sluice policy in C. It refuses senders of the domains listed
 * in `deny_domains` at MAIL FROM and marks every message it lets through
 * with an `X-{{Class}}: checked` header.
 *
 * The bindings hand every export its arguments as owned values: free them
 * before returning. Whatever an export returns is freed after the host has
 * read it: strings in results must be on the heap (sp_string()).
 */
#include "sluice_policy.h"

/* The config, parsed once per instance by init. */
static char **deny_domains;
static size_t deny_count;

void exports_sluice_policy_policy_describe(exports_sluice_policy_policy_description_t *ret) {
    /* The gateway calls only the hooks of these stages. */
    static const sluice_policy_types_stage_t stages[] = {
        SLUICE_POLICY_TYPES_STAGE_MAIL_FROM,
        SLUICE_POLICY_TYPES_STAGE_DATA,
    };
    ret->name = sp_string("{{name}}");
    ret->version = sp_string("0.1.0");
    ret->stages.ptr = (sluice_policy_types_stage_t *)malloc(sizeof stages);
    memcpy(ret->stages.ptr, stages, sizeof stages);
    ret->stages.len = sizeof stages / sizeof stages[0];
}

/* Once per instance, before any hook; an error refuses the config. */
static const char *configure(const sp_json_t *cfg) {
    if (cfg->type != SP_JSON_OBJECT) return "the config must be a JSON object";
    for (size_t i = 0; i < cfg->len; i++)
        if (strcmp(cfg->keys[i], "deny_domains") != 0)
            return "unknown config key (known: deny_domains)";
    const sp_json_t *list = sp_json_get(cfg, "deny_domains");
    if (!list) return NULL;
    if (list->type != SP_JSON_ARRAY) return "config key `deny_domains`: must be a list of strings";
    deny_domains = (char **)calloc(list->len ? list->len : 1, sizeof *deny_domains);
    for (size_t i = 0; i < list->len; i++) {
        if (list->items[i].type != SP_JSON_STRING)
            return "config key `deny_domains`: must be a list of strings";
        deny_domains[deny_count++] = sp_lower(sp_strdup(list->items[i].string));
    }
    return NULL;
}

bool exports_sluice_policy_policy_init(policy_world_string_t *config, policy_world_string_t *err) {
    sp_json_t cfg;
    const char *message = "the config is not JSON";
    if (sp_json_parse((const char *)config->ptr, config->len, &cfg)) {
        message = configure(&cfg);
        sp_json_free(&cfg);
    }
    policy_world_string_free(config);
    if (!message) return true;
    *err = sp_string(message);
    return false;
}

void exports_sluice_policy_policy_on_mail_from(exports_sluice_policy_policy_session_t *session,
                                               policy_world_string_t *sender,
                                               exports_sluice_policy_policy_list_param_t *params,
                                               exports_sluice_policy_policy_verdict_t *ret) {
    char *address = sp_cstr(sender);
    const char *at = strrchr(address, '@');
    sp_continue(ret);
    if (at) {
        char *domain = sp_lower(sp_strdup(at + 1));
        for (size_t i = 0; i < deny_count; i++) {
            if (strcmp(domain, deny_domains[i]) == 0) {
                char *line = sp_concat("sender ", address);
                char *logged = sp_concat(line, " refused");
                char *a = sp_concat("sender domain ", domain);
                char *text = sp_concat(a, " is not accepted");
                sp_log(SP_INFO, logged);
                sp_refuse(ret, 550, "5.7.1", text);
                free(line);
                free(logged);
                free(a);
                free(text);
                break;
            }
        }
        free(domain);
    }
    free(address);
    sluice_policy_types_session_free(session);
    policy_world_string_free(sender);
    exports_sluice_policy_policy_list_param_free(params);
}

void exports_sluice_policy_policy_on_data(exports_sluice_policy_policy_session_t *session,
                                          exports_sluice_policy_policy_envelope_t *envelope,
                                          exports_sluice_policy_policy_borrow_message_t message,
                                          exports_sluice_policy_policy_data_result_t *ret) {
    /* Read the message with sluice_policy_message_method_message_*(message,
     * ...); the borrowed handle must be dropped before returning. */
    sluice_policy_message_message_drop_borrow(message);
    sp_data_continue(ret);
    sp_data_add_header(ret, "X-{{Class}}", "checked");
    sluice_policy_types_session_free(session);
    sluice_policy_types_envelope_free(envelope);
}

/* Stages not declared in describe(): the host never calls these. */
void exports_sluice_policy_policy_on_connect(exports_sluice_policy_policy_session_t *session,
                                             exports_sluice_policy_policy_verdict_t *ret) {
    sluice_policy_types_session_free(session);
    sp_continue(ret);
}

void exports_sluice_policy_policy_on_helo(exports_sluice_policy_policy_session_t *session,
                                          policy_world_string_t *name,
                                          exports_sluice_policy_policy_verdict_t *ret) {
    sluice_policy_types_session_free(session);
    policy_world_string_free(name);
    sp_continue(ret);
}

void exports_sluice_policy_policy_on_rcpt(exports_sluice_policy_policy_session_t *session,
                                          exports_sluice_policy_policy_envelope_t *envelope,
                                          policy_world_string_t *recipient,
                                          exports_sluice_policy_policy_list_param_t *params,
                                          exports_sluice_policy_policy_verdict_t *ret) {
    sluice_policy_types_session_free(session);
    sluice_policy_types_envelope_free(envelope);
    policy_world_string_free(recipient);
    exports_sluice_policy_policy_list_param_free(params);
    sp_continue(ret);
}

void exports_sluice_policy_policy_on_route(exports_sluice_policy_policy_envelope_t *envelope,
                                           policy_world_string_t *recipient,
                                           exports_sluice_policy_policy_route_t *ret) {
    sluice_policy_types_envelope_free(envelope);
    policy_world_string_free(recipient);
    ret->tag = SLUICE_POLICY_TYPES_ROUTE_DEFAULT;
}
