/*
 * Unit tests for notify: the datagrams sd_notify(3) defines, received on a
 * socket bound here (a path and an abstract name), the watchdog interval
 * from WATCHDOG_USEC / WATCHDOG_PID, and no-ops without NOTIFY_SOCKET.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

struct receiver {
    int fd;
    char name[100]; /* NOTIFY_SOCKET value */
};

/* Bind a datagram socket: a file under /tmp, or an abstract name ("@..."). */
static void receiver_open(struct receiver *r, bool abstract)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(r->name, sizeof r->name, "%s/projectord-notify-test-%ld", abstract ? "@" : "/tmp",
             (long)getpid());
    size_t len = strlen(r->name);
    memcpy(addr.sun_path, r->name, len);
    if (abstract)
        addr.sun_path[0] = '\0';
    else
        unlink(r->name);
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(r->fd >= 0);
    assert_int_equal(bind(r->fd, (struct sockaddr *)&addr,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
                     0);
    setenv("NOTIFY_SOCKET", r->name, 1);
    notify_close(); /* read the environment again */
}

static void receiver_close(struct receiver *r)
{
    close(r->fd);
    if (r->name[0] == '/')
        unlink(r->name);
    unsetenv("NOTIFY_SOCKET");
    notify_close();
}

/* The next datagram, or "" when none is waiting. */
static const char *next_message(struct receiver *r)
{
    static char buf[512];
    ssize_t n = recv(r->fd, buf, sizeof buf - 1, 0);
    if (n < 0) {
        assert_int_equal(errno, EAGAIN);
        n = 0;
    }
    buf[n] = '\0';
    return buf;
}

static void check_messages(bool abstract)
{
    struct receiver r;
    receiver_open(&r, abstract);
    assert_true(notify_enabled());
    notify_ready();
    assert_string_equal(next_message(&r), "READY=1");
    notify_status("running: %d projection(s)\nsecond line", 4);
    assert_string_equal(next_message(&r), "STATUS=running: 4 projection(s) second line");
    notify_status("running: %d projection(s)\nsecond line", 4); /* unchanged: not sent */
    assert_string_equal(next_message(&r), "");
    notify_watchdog();
    assert_string_equal(next_message(&r), "WATCHDOG=1");
    notify_stopping();
    assert_string_equal(next_message(&r), "STOPPING=1");
    notify_reloading();
    const char *msg = next_message(&r);
    unsigned long long usec = 0;
    assert_int_equal(sscanf(msg, "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
    assert_true(usec > 0);
    receiver_close(&r);
}

static void test_path_socket(void **state)
{
    (void)state;
    check_messages(false);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    check_messages(true);
}

static void test_no_socket_is_a_noop(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "2000000", 1);
    notify_close();
    assert_false(notify_enabled());
    notify_ready();
    notify_status("x");
    notify_watchdog();
    assert_true(notify_watchdog_interval() == 0.0);
    unsetenv("WATCHDOG_USEC");
}

static void test_unusable_socket_is_ignored(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    notify_close();
    assert_false(notify_enabled());
    setenv("NOTIFY_SOCKET", "/nonexistent/projectord-notify", 1);
    notify_close();
    notify_ready(); /* fails: logged once, ignored */
    notify_ready();
    unsetenv("NOTIFY_SOCKET");
    notify_close();
}

static void test_watchdog_interval(void **state)
{
    (void)state;
    struct receiver r;
    receiver_open(&r, false);
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_true(notify_watchdog_interval() == 0.0);
    setenv("WATCHDOG_USEC", "2000000", 1);
    assert_true(notify_watchdog_interval() == 1.0);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_true(notify_watchdog_interval() == 1.0);
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1); /* meant for another process */
    assert_true(notify_watchdog_interval() == 0.0);
    unsetenv("WATCHDOG_PID");
    const char *bad[] = {"0", "-5", "12x", "", "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        assert_true(notify_watchdog_interval() == 0.0);
    }
    unsetenv("WATCHDOG_USEC");
    receiver_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_no_socket_is_a_noop),
        cmocka_unit_test(test_unusable_socket_is_ignored),
        cmocka_unit_test(test_watchdog_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
