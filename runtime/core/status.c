/* SPDX-License-Identifier: MIT */
/* Status names and descriptions, generated from TDM_STATUS_MAP. */
#include "internal.h"

const char *tdm_strerror(int status)
{
    switch (status) {
#define TDM__STATUS_DESC(name, value, desc)                                                        \
    case TDM_##name:                                                                               \
        return desc;
        TDM_STATUS_MAP(TDM__STATUS_DESC)
#undef TDM__STATUS_DESC
    default:
        return "unknown status";
    }
}

const char *tdm_status_name(int status)
{
    switch (status) {
#define TDM__STATUS_NAME(name, value, desc)                                                        \
    case TDM_##name:                                                                               \
        return "TDM_" #name;
        TDM_STATUS_MAP(TDM__STATUS_NAME)
#undef TDM__STATUS_NAME
    default:
        return "TDM_UNKNOWN";
    }
}

int tdm_version(void)
{
    return TDM_VERSION_NUMBER;
}

const char *tdm_version_string(void)
{
    return TDM_VERSION_STRING;
}
