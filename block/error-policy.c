/*
 * werror= / rerror=: QEMU's BlockdevOnError names and the action a policy
 * takes for one failed request (QEMU's blk_get_error_action()).
 */
#include "shardvm/block.h"

#include <errno.h>
#include <string.h>

static const char *const policy_names[] = {
    [BLOCK_ERROR_POLICY_AUTO] = "auto",
    [BLOCK_ERROR_POLICY_REPORT] = "report",
    [BLOCK_ERROR_POLICY_IGNORE] = "ignore",
    [BLOCK_ERROR_POLICY_ENOSPC] = "enospc",
    [BLOCK_ERROR_POLICY_STOP] = "stop",
};

int block_error_policy_parse(const char *s, bool allow_auto,
                             BlockErrorPolicy *out)
{
    for (size_t i = allow_auto ? 0 : 1; i < G_N_ELEMENTS(policy_names); i++) {
        if (!strcmp(s, policy_names[i])) {
            *out = (BlockErrorPolicy)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *block_error_policy_name(BlockErrorPolicy p)
{
    return (unsigned)p < G_N_ELEMENTS(policy_names) ? policy_names[p] : "?";
}

const char *block_error_action_name(BlockErrorAction a)
{
    switch (a) {
    case BLOCK_ERROR_ACTION_IGNORE:
        return "ignore";
    case BLOCK_ERROR_ACTION_STOP:
        return "stop";
    default:
        return "report";
    }
}

BlockErrorAction block_error_action(BlockErrorPolicy policy, int err)
{
    switch (policy) {
    case BLOCK_ERROR_POLICY_IGNORE:
        return BLOCK_ERROR_ACTION_IGNORE;
    case BLOCK_ERROR_POLICY_STOP:
        return BLOCK_ERROR_ACTION_STOP;
    case BLOCK_ERROR_POLICY_ENOSPC:
        return err == -ENOSPC ? BLOCK_ERROR_ACTION_STOP
                              : BLOCK_ERROR_ACTION_REPORT;
    default:
        return BLOCK_ERROR_ACTION_REPORT;
    }
}
