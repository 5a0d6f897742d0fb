/*
 * notify: the systemd notification protocol (sd_notify(3)), without
 * libsystemd.
 *
 * When the service manager sets NOTIFY_SOCKET (a path, or an abstract
 * socket written with a leading '@'), each call sends one datagram on a
 * non-blocking AF_UNIX socket opened on first use; without NOTIFY_SOCKET
 * every call is a no-op. A failed send never blocks the loop and never
 * stops the daemon: it is logged once at debug level and ignored.
 *
 * The module owns its socket and a copy of the last status line; it holds
 * no caller memory. It keeps process-wide state and is meant for the loop's
 * thread only.
 */
#ifndef PROJECTORD_NOTIFY_H
#define PROJECTORD_NOTIFY_H

#include <stdbool.h>

/* True when NOTIFY_SOCKET names a socket we can send to. */
bool notify_enabled(void);

/* READY=1: startup is complete (after the first connect), or a reload is. */
void notify_ready(void);

/*
 * STATUS=...: a one-line summary for `systemctl status` (newlines become
 * spaces). Sent only when the text differs from the last one sent.
 */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STOPPING=1: shutdown has begun. */
void notify_stopping(void);

/*
 * RELOADING=1 with MONOTONIC_USEC=now, as Type=notify-reload (systemd 253+)
 * expects; older managers accept it too. Send it when a SIGHUP reload
 * starts, and notify_ready() when it is done (whether or not it applied).
 */
void notify_reloading(void);

/* WATCHDOG=1: the loop is alive. */
void notify_watchdog(void);

/*
 * How often to call notify_watchdog(), in seconds: half of WATCHDOG_USEC,
 * or 0 when there is no watchdog (WATCHDOG_USEC unset or invalid,
 * WATCHDOG_PID set to another process, or notifications disabled).
 */
double notify_watchdog_interval(void);

/* Close the socket and forget NOTIFY_SOCKET; the next call reads it again. */
void notify_close(void);

#endif
