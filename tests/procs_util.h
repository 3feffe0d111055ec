/* SPDX-License-Identifier: MIT */
/* Helpers for the worker-process tests (test_procfault.c, test_torture.c): the processes of
 * a runtime, descriptors, a watchdog. */
#ifndef TDM_PROCS_UTIL_H
#define TDM_PROCS_UTIL_H

#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Children of `parent` (live or zombie), at most max in out[]; returns how many. `state`, when
 * given, receives each one's state letter. */
static inline int pu_children(pid_t parent, pid_t *out, char *state, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        char st = '?';
        if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == parent) {
            if (out)
                out[n] = (pid_t)atoi(e->d_name);
            if (state)
                state[n] = st;
            n++;
        }
    }
    closedir(d);
    return n;
}

/* The state letter of pid ('\0' when there is no such process). */
static inline char pu_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '\0';
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : '?';
}

/* The fork server of the only runtime with worker processes this process has open (its only
 * child that is not a zombie), or -1. */
static inline pid_t pu_server(void)
{
    pid_t kids[16];
    char st[16];
    int n = pu_children(getpid(), kids, st, 16);
    for (int i = 0; i < n; i++)
        if (st[i] != 'Z')
            return kids[i];
    return -1;
}

/* Waits until pid is a zombie or gone, at most ms milliseconds; true if it is. */
static inline bool pu_wait_ended(pid_t pid, int ms)
{
    for (int i = 0; i < ms; i++) {
        char s = pu_state(pid);
        if (s == '\0' || s == 'Z' || s == 'X')
            return true;
        usleep(1000);
    }
    return false;
}

/* Waits until pid is stopped, at most ms milliseconds. */
static inline bool pu_wait_stopped(pid_t pid, int ms)
{
    for (int i = 0; i < ms; i++) {
        char s = pu_state(pid);
        if (s == 'T' || s == 't')
            return true;
        usleep(1000);
    }
    return false;
}

/* Descriptors open in this process whose target starts with prefix (all when ""). */
static inline int pu_fds(const char *prefix)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k < 0)
            continue;
        target[k] = '\0';
        if (strncmp(target, prefix, strlen(prefix)) == 0)
            n++;
    }
    closedir(d);
    return n - (*prefix == '\0'); /* (the directory's own descriptor) */
}

static inline double pu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
