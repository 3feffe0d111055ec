/* SPDX-License-Identifier: MIT */
/* Evidence for how a worker process died: the OOM-kill count of its memory cgroup, and the
 * message that names the death. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "procs_internal.h"

/* ---- OOM evidence ------------------------------------------------------------------------
 * A worker killed by a SIGKILL that tandem did not send is said to be "likely killed for
 * memory" only when the OOM-kill count of this process's memory cgroup rose since the worker
 * was spawned. The count is the oom_kill line of <root><path>/memory.events (cgroup v2), where
 * <path> is the "0::<path>" line of /proc/self/cgroup (the workers are forked from us and stay
 * in our cgroup) and <root> is the cgroup2 mount, /sys/fs/cgroup. For a path of "/" (the
 * cgroup root, or inside a container's cgroup namespace) <root>/memory.events is read.
 *
 * Environment (read once at runtime open, only when the config's use_env is on):
 *   TDM_CGROUP_ROOT  the cgroup2 mount to read under instead of /sys/fs/cgroup (tests point
 *                    it at a fake tree holding <path>/memory.events).
 */
void tdm__procs_cgroup_locate(tdm__procs *p)
{
    const char *root = "/sys/fs/cgroup";
    if (p->rt->cfg.use_env) {
        const char *e = getenv("TDM_CGROUP_ROOT");
        if (e && *e)
            root = e;
    }
    p->cg_events[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) {
        snprintf(p->cg_why, sizeof p->cg_why, "cannot read /proc/self/cgroup (%s)",
                 strerror(errno));
        return;
    }
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        found = snprintf(p->cg_path, sizeof p->cg_path, "%s", line + 3) < (int)sizeof p->cg_path;
    }
    fclose(f);
    if (!found || p->cg_path[0] != '/') {
        snprintf(p->cg_why, sizeof p->cg_why, "no cgroup v2 entry in /proc/self/cgroup");
        return;
    }
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/')
        rl--;
    const char *path = strcmp(p->cg_path, "/") == 0 ? "" : p->cg_path;
    if (snprintf(p->cg_events, sizeof p->cg_events, "%.*s%s/memory.events", (int)rl, root, path) >=
        (int)sizeof p->cg_events) {
        p->cg_events[0] = '\0';
        snprintf(p->cg_why, sizeof p->cg_why, "the cgroup's path is too long");
    }
}

/* The cgroup's count of OOM kills, or -1 with why it could not be read. */
long tdm__procs_oom_read(const tdm__procs *p, char *why, size_t len)
{
    if (!p->cg_events[0]) {
        snprintf(why, len, "%s", p->cg_why);
        return -1;
    }
    FILE *f = fopen(p->cg_events, "re");
    if (!f) {
        snprintf(why, len, "cannot read %.120s (%s)", p->cg_events, strerror(errno));
        return -1;
    }
    char key[64];
    long v, kills = -1;
    while (fscanf(f, "%63s %ld", key, &v) == 2)
        if (strcmp(key, "oom_kill") == 0)
            kills = v;
    fclose(f);
    if (kills < 0)
        snprintf(why, len, "no oom_kill count in %.120s", p->cg_events);
    return kills;
}

void tdm__procs_describe_death(tdm__procs *p, int k, pid_t pid, int status, char *detail,
                               size_t len)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !p->killed_by_us[k]) {
        /* Read only now, at a death: never on the path of a batch. */
        char why[192];
        long kills = tdm__procs_oom_read(p, why, sizeof why);
        if (kills >= 0 && p->oom_base[k] < 0) {
            snprintf(why, sizeof why,
                     "the OOM-kill count could not be read when the worker "
                     "started");
            kills = -1;
        }
        if (kills > p->oom_base[k])
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL: likely killed for memory (the "
                     "cgroup %s recorded an OOM kill)",
                     k, (int)pid, p->cg_path);
        else if (kills >= 0)
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL, not sent by tandem (no OOM "
                     "kill recorded in its memory cgroup)",
                     k, (int)pid);
        else
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL, not sent by tandem (OOM "
                     "evidence unavailable: %s)",
                     k, (int)pid, why);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(detail, len, "worker process %d (pid %d) killed by signal %d (%s)", k, (int)pid,
                 sig, strsignal(sig));
    } else if (WIFEXITED(status)) {
        snprintf(detail, len, "worker process %d (pid %d) exited with status %d inside the batch",
                 k, (int)pid, WEXITSTATUS(status));
    } else {
        snprintf(detail, len, "worker process %d (pid %d) ended (wait status 0x%x)", k, (int)pid,
                 (unsigned)status);
    }
}
