/* One PING per second on a kept connection: redis-cli's twin for bench/reference.py.
 *
 * Why: it sends the bytes and makes the system calls `redis-cli -r -1 -i 1 ping` makes (connect, TCP_NODELAY,
 * then per second one write of "*1\r\n$4\r\nPING\r\n" and one read), so two groups that differ only in *when*
 * they sleep can be compared. Built by the bench with `cc -O2` into a temporary directory.
 *
 *   ping_client PORT after-reply   sleep 1 s after each reply (redis-cli -i 1; the reply goes to stdout)
 *   ping_client PORT grid          one PING on every tick of a fixed one-second grid (random phase)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char PING[] = "*1\r\n$4\r\nping\r\n"; /* as redis-cli sends what was typed */

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int port = atoi(argv[1]), grid = strcmp(argv[2], "grid") == 0, one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    srand((unsigned)getpid());
    tick.tv_nsec += rand() % 1000000000; /* phases spread over the second */
    if (tick.tv_nsec >= 1000000000) { tick.tv_sec += 1; tick.tv_nsec -= 1000000000; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
    char reply[64];
    for (;;) {
        if (write(fd, PING, sizeof PING - 1) != (ssize_t)(sizeof PING - 1)) return 1;
        ssize_t got = read(fd, reply, sizeof reply);
        if (got <= 0) return 1;
        if (grid) {
            tick.tv_sec += 1;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
        } else {
            struct timespec second = {1, 0};
            if (write(STDOUT_FILENO, reply, (size_t)got) < 0) return 1;
            nanosleep(&second, NULL);
        }
    }
}
