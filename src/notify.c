/*
 * notify: sd_notify(3) datagrams to the service manager (see notify.h).
 *
 * The protocol is a newline-separated list of VAR=value assignments in one
 * datagram to the AF_UNIX socket named by NOTIFY_SOCKET.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

#define NOTIFY_STATUS_MAX 256

static struct {
    bool initialised;
    int fd;                  /* -1: disabled (no NOTIFY_SOCKET, or unusable) */
    struct sockaddr_un addr; /* where to send */
    socklen_t addrlen;
    bool send_failed;                    /* a failure was logged already */
    char last_status[NOTIFY_STATUS_MAX]; /* "STATUS=..." last sent */
} st = {.fd = -1};

/* Fill st.addr from NOTIFY_SOCKET; returns 0, or -1 if unset or unusable. */
static int parse_address(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0)
        return -1;
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof st.addr.sun_path) {
        log_debug("notify: NOTIFY_SOCKET '%s' is not a usable AF_UNIX address; ignored", name);
        return -1;
    }
    memset(&st.addr, 0, sizeof st.addr);
    st.addr.sun_family = AF_UNIX;
    memcpy(st.addr.sun_path, name, len);
    if (name[0] == '@')
        st.addr.sun_path[0] = '\0'; /* abstract: the name is exactly len bytes, no NUL */
    st.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    return 0;
}

static void init(void)
{
    if (st.initialised)
        return;
    st.initialised = true;
    if (parse_address(getenv("NOTIFY_SOCKET")) < 0)
        return;
    st.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (st.fd < 0)
        log_debug("notify: socket: %s; notifications disabled", strerror(errno));
}

static void send_message(const char *msg)
{
    init();
    if (st.fd < 0)
        return;
    ssize_t n = sendto(st.fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
                       (const struct sockaddr *)&st.addr, st.addrlen);
    if (n < 0 && !st.send_failed) {
        st.send_failed = true;
        log_debug("notify: sending to NOTIFY_SOCKET failed: %s (not logged again)",
                  strerror(errno));
    }
}

bool notify_enabled(void)
{
    init();
    return st.fd >= 0;
}

void notify_ready(void)
{
    send_message("READY=1");
}

void notify_status(const char *fmt, ...)
{
    if (!notify_enabled())
        return;
    char msg[NOTIFY_STATUS_MAX];
    int prefix = snprintf(msg, sizeof msg, "STATUS=");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + prefix, sizeof msg - (size_t)prefix, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (strcmp(msg, st.last_status) == 0)
        return;
    memcpy(st.last_status, msg, sizeof msg);
    send_message(msg);
}

void notify_stopping(void)
{
    send_message("STOPPING=1");
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[80];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    send_message(msg);
}

void notify_watchdog(void)
{
    send_message("WATCHDOG=1");
}

/* A positive decimal number without trailing junk, or 0. */
static unsigned long long parse_positive(const char *text)
{
    if (!text || *text < '0' || *text > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    return errno || *end ? 0 : v;
}

double notify_watchdog_interval(void)
{
    if (!notify_enabled())
        return 0.0;
    unsigned long long usec = parse_positive(getenv("WATCHDOG_USEC"));
    const char *pid = getenv("WATCHDOG_PID");
    if (usec == 0 || (pid && parse_positive(pid) != (unsigned long long)getpid()))
        return 0.0;
    return (double)usec / 2e6;
}

void notify_close(void)
{
    if (st.fd >= 0)
        close(st.fd);
    memset(&st, 0, sizeof st);
    st.fd = -1;
}
