/* The progress bar draws on a terminal only, with count, rate and ETA. */
#include "tests/harness.h"
#include "libcommon/log.h"
#include "libcommon/progress.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

TEST(durations_read_naturally)
{
    char buf[32];
    progress_format_duration(3.14, buf, sizeof buf);
    CHECK_STR(buf, "3.1s");
    progress_format_duration(123, buf, sizeof buf);
    CHECK_STR(buf, "2m03s");
    progress_format_duration(3723, buf, sizeof buf);
    CHECK_STR(buf, "1h02m03s");
    progress_format_duration(-1, buf, sizeof buf);
    CHECK_STR(buf, "?");
}

/* Runs a bar of 10 items with stderr on fd and returns what was written. */
static char *bar_output(int fd, int read_fd, enum log_level level)
{
    int saved = dup(2);
    dup2(fd, 2);
    log_set_level(level);
    struct progress *p = progress_start("encode", "img", 10);
    for (int i = 0; i < 10; i++) {
        progress_add(p, 1);
        usleep(15000); /* past the 100 ms redraw interval a few times */
    }
    progress_finish(p);
    progress_add(NULL, 1); /* NULL is allowed */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    static char buf[8192];
    size_t n = 0;
    struct pollfd pfd = {read_fd, POLLIN, 0};
    while (n < sizeof buf - 1 && poll(&pfd, 1, 100) > 0) {
        ssize_t r = read(read_fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += r;
    }
    buf[n] = '\0';
    return buf;
}

TEST(bar_on_a_terminal_shows_count_rate_and_time)
{
    int master, slave;
    CHECK_INT(openpty(&master, &slave, NULL, NULL, NULL), 0);
    char *out = bar_output(slave, master, LOG_NORMAL);
    CHECK_CONTAINS(out, "encode: 10/10 img (100%)");
    CHECK_CONTAINS(out, "img/s");
    CHECK_CONTAINS(out, "took");
    close(slave);
    close(master);
}

TEST(bar_is_silent_off_a_terminal_and_when_quiet)
{
    int fds[2];
    CHECK_INT(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    CHECK_STR(bar_output(fds[1], fds[0], LOG_NORMAL), "");
    close(fds[0]);
    close(fds[1]);

    int master, slave;
    CHECK_INT(openpty(&master, &slave, NULL, NULL, NULL), 0);
    CHECK_STR(bar_output(slave, master, LOG_QUIET), "");
    close(slave);
    close(master);
}

TEST(log_levels_and_prefixes)
{
    int fds[2];
    CHECK_INT(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    int saved = dup(2);
    dup2(fds[1], 2);
    log_set_program("dit-x");
    log_set_level(LOG_QUIET);
    log_info("hidden info");
    log_warn("hidden warning");
    log_error("shown %d", 1);
    log_set_level(LOG_NORMAL);
    log_info("info %s", "shown");
    log_debug("hidden debug");
    log_set_level(LOG_VERBOSE);
    log_debug("debug shown");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[1024];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    CHECK_STR(buf, "dit-x: error: shown 1\ndit-x: info shown\ndit-x: debug shown\n");
    close(fds[0]);
    close(fds[1]);
}
