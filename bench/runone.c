/*
 * runone: run one command, print "WALL_SECONDS MAXRSS_KIB EXIT_STATUS".
 *
 * Used by bench/check.sh.  The clock is CLOCK_MONOTONIC read just before
 * fork() and just after wait4() returns, so the figure includes process
 * creation and teardown, the same for every tool measured.  The peak RSS
 * comes from the rusage wait4() returns for this one child (not the
 * cumulative RUSAGE_CHILDREN maximum).  The helper itself is a few hundred
 * KiB, so the copy of it the child holds between fork() and exec() does
 * not inflate the figure the way forking from a Python interpreter would.
 *
 * The child's stdout and stderr go to /dev/null unless OUT is given with
 * -o OUT, in which case stdout goes there.
 *
 * Usage: runone [-o OUT] PROGRAM [ARG...]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *out = "/dev/null";
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-o") == 0) {
        out = argv[2];
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: runone [-o OUT] PROGRAM [ARG...]\n");
        return 64;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("runone: fork");
        return 71;
    }
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_WRONLY);
        if (fd < 0 || nul < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(nul, 2);
        execvp(argv[first], argv + first);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("runone: wait4");
        return 71;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("%.6f %ld %d\n", wall, ru.ru_maxrss, code);
    return 0;
}
