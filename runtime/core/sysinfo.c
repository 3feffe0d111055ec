/* SPDX-License-Identifier: MIT */
/* Facts about the machine: cores, memory, /dev/shm, the page-lock limit. */
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "internal.h"

static uint64_t meminfo_kb(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    size_t klen = strlen(key);
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            sscanf(line + klen + 1, "%llu", &kb);
            break;
        }
    }
    fclose(f);
    return kb;
}

int tdm_system_info_get(tdm_system_info *info)
{
    if (!info)
        return tdm__err(NULL, TDM_EINVAL, "tdm_system_info_get: info is NULL");
    memset(info, 0, sizeof *info);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    info->online_cores = n > 0 ? (int)n : 1;
    cpu_set_t set;
    info->usable_cores =
        sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : info->online_cores;
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0)
        info->memory_bytes = (uint64_t)pages * (uint64_t)psize;
    info->memory_available_bytes = meminfo_kb("MemAvailable") * 1024u;
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0) {
        info->shm_total_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
        info->shm_free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
        info->memlock_limit_bytes = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
    return 0;
}
