/* The reference floor for bench/run's RTP scenario: the least a userspace
 * relay can do. For N calls it binds two UDP ports per call and forwards
 * whatever arrives on one to a fixed party behind the other (no latching,
 * no counters), reading with recvmmsg and writing with sendmmsg, one
 * thread, epoll.
 *
 *   fwd CALLS FIRST_PORT PARTY_PORT_A PARTY_PORT_B PORTS_FILE
 *
 * Writes "port_a port_b" per call to PORTS_FILE, then "ready" on stdout,
 * and forwards until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64

static int bind_port(uint16_t port) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: fwd CALLS FIRST_PORT PARTY_PORT_A PARTY_PORT_B PORTS_FILE\n");
        return 2;
    }
    int calls = atoi(argv[1]);
    int port = atoi(argv[2]);
    struct sockaddr_in party[2];
    for (int side = 0; side < 2; side++) {
        party[side] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3 + side]))};
        party[side].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    /* fds[2*i] faces party A, fds[2*i+1] party B. */
    int *fds = malloc(sizeof(int) * 2 * (size_t)calls);
    int ep = epoll_create1(0);
    FILE *out = fopen(argv[5], "w");
    for (int i = 0; i < 2 * calls; i++) {
        while ((fds[i] = bind_port((uint16_t)port)) < 0) port += 2;
        port += 2;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        if (i % 2 == 1) {
            struct sockaddr_in a, b;
            socklen_t l = sizeof a;
            getsockname(fds[i - 1], (struct sockaddr *)&a, &l);
            l = sizeof b;
            getsockname(fds[i], (struct sockaddr *)&b, &l);
            fprintf(out, "%u %u\n", ntohs(a.sin_port), ntohs(b.sin_port));
        }
    }
    fclose(out);
    printf("ready\n");
    fflush(stdout);

    static unsigned char bufs[BATCH][2048];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            int from = i % 2, other = i ^ 1;
            for (int j = 0; j < BATCH; j++) {
                iov[j] = (struct iovec){bufs[j], sizeof bufs[j]};
                msgs[j] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[j], .msg_iovlen = 1}};
            }
            int got = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;
            for (int j = 0; j < got; j++) {
                iov[j].iov_len = msgs[j].msg_len;
                msgs[j].msg_hdr.msg_name = &party[1 - from];
                msgs[j].msg_hdr.msg_namelen = sizeof party[0];
            }
            sendmmsg(fds[other], msgs, (unsigned)got, 0);
        }
    }
}
