/*
 * procstat: process_* metrics from /proc/self (see procstat.h), named and
 * computed as the Prometheus client libraries do, so dashboards made for
 * any exporter work unchanged.
 */
#include "procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* The fields of /proc/self/stat this needs (proc(5) numbers them from 1). */
struct pstat {
    unsigned long utime, stime; /* 14, 15: clock ticks */
    unsigned long long start;   /* 22: clock ticks after boot */
    unsigned long vsize;        /* 23: bytes */
    long rss;                   /* 24: pages */
};

/* Returns 0, or -1 when the file cannot be read or parsed. */
static int read_stat(struct pstat *p)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: start after its last ')'. */
    char *s = strrchr(buf, ')');
    if (!s)
        return -1;
    int got = sscanf(s + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
                     "%llu %lu %ld",
                     &p->utime, &p->stime, &p->start, &p->vsize, &p->rss);
    return got == 5 ? 0 : -1;
}

/*
 * The start time, seconds since the epoch, from the start's clock ticks
 * after boot: now less the time since boot (CLOCK_BOOTTIME) gives the
 * boot. Not /proc/stat's btime: the unit's ProcSubset=pid hides that file.
 * Computed once: it does not change, and scrapes then agree to the digit.
 */
static double start_time(unsigned long long start_ticks, long ticks)
{
    static double start;
    struct timespec now, boot;
    if (start == 0 && clock_gettime(CLOCK_REALTIME, &now) == 0 &&
        clock_gettime(CLOCK_BOOTTIME, &boot) == 0)
        start = (double)now.tv_sec + now.tv_nsec / 1e9 - (boot.tv_sec + boot.tv_nsec / 1e9) +
                (double)start_ticks / (double)ticks;
    return start;
}

/* Open file descriptors: the entries of /proc/self/fd, less the one reading it. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static void gauge(struct mbuf *out, const char *name, const char *type, const char *help,
                  double value)
{
    metrics_family(out, name, type, help);
    mbuf_printf(out, "%s %.17g\n", name, value);
}

void procstat_render(struct mbuf *out)
{
    struct pstat p;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (read_stat(&p) == 0 && ticks > 0) {
        gauge(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent",
              (double)(p.utime + p.stime) / (double)ticks);
        gauge(out, "process_resident_memory_bytes", "gauge", "Resident memory size",
              (double)p.rss * (double)page);
        gauge(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size", (double)p.vsize);
        double start = start_time(p.start, ticks);
        if (start > 0)
            gauge(out, "process_start_time_seconds", "gauge",
                  "Start time of the process since the epoch, in seconds", start);
    }
    long fds = open_fds();
    if (fds >= 0)
        gauge(out, "process_open_fds", "gauge", "Open file descriptors", (double)fds);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        gauge(out, "process_max_fds", "gauge", "The most file descriptors the process may open",
              (double)lim.rlim_cur);
}
