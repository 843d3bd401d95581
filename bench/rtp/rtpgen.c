/* RTP load generator for bench/run: N calls of G.711-sized packets (172
 * bytes: 12-byte RTP header, 160 bytes payload) at 50 packets/s each way
 * through a relay, with send timestamps in the payload, measuring loss and
 * one-way latency through the relay (generator to relay to generator).
 *
 *   rtpgen PORTS_FILE PORT_A PORT_B SECONDS
 *
 * PORTS_FILE has one line per call, "relay_port_a relay_port_b": side A of
 * the relay gets our packets from 127.0.0.1:PORT_A and forwards them to
 * side B's party, 127.0.0.1:PORT_B, and the other way round. One sending
 * socket per side (sendmmsg, 16 packets a call, spread evenly over each
 * 20 ms), one receiving thread (recvmmsg). Prints one line: sent, received, loss %, p50/p99/max latency.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT 172
#define BATCH 64
#define BUCKETS 100000 /* latency histogram, 1 us buckets up to 100 ms */

static int ncalls, sock[2];
static uint16_t *relay_port[2];
static atomic_int done;
static uint64_t received, hist[BUCKETS + 1], lat_max;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int udp_socket(uint16_t port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("bind");
        exit(2);
    }
    return s;
}

static void *receiver(void *arg) {
    (void)arg;
    static unsigned char bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct pollfd pfd[2] = {{.fd = sock[0], .events = POLLIN}, {.fd = sock[1], .events = POLLIN}};
    while (!atomic_load(&done)) {
        if (poll(pfd, 2, 50) <= 0) continue;
        for (int side = 0; side < 2; side++) {
            if (!(pfd[side].revents & POLLIN)) continue;
            for (int i = 0; i < BATCH; i++) {
                iov[i] = (struct iovec){bufs[i], sizeof bufs[i]};
                msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
            }
            int n = recvmmsg(sock[side], msgs, BATCH, MSG_DONTWAIT, NULL);
            uint64_t t = now_ns();
            for (int i = 0; i < n; i++) {
                uint64_t sent;
                memcpy(&sent, bufs[i] + 12, sizeof sent);
                uint64_t us = (t - sent) / 1000;
                hist[us < BUCKETS ? us : BUCKETS]++;
                if (us > lat_max) lat_max = us;
                received++;
            }
        }
    }
    return NULL;
}

static uint64_t percentile(double p) {
    uint64_t want = (uint64_t)(p * (double)received), seen = 0;
    for (int i = 0; i <= BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) return (uint64_t)i;
    }
    return BUCKETS;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: rtpgen PORTS_FILE PORT_A PORT_B SECONDS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    int cap = 16;
    relay_port[0] = malloc(cap * sizeof(uint16_t));
    relay_port[1] = malloc(cap * sizeof(uint16_t));
    unsigned a, b;
    while (fscanf(f, "%u %u", &a, &b) == 2) {
        if (ncalls == cap) {
            cap *= 2;
            relay_port[0] = realloc(relay_port[0], cap * sizeof(uint16_t));
            relay_port[1] = realloc(relay_port[1], cap * sizeof(uint16_t));
        }
        relay_port[0][ncalls] = (uint16_t)a;
        relay_port[1][ncalls] = (uint16_t)b;
        ncalls++;
    }
    fclose(f);
    sock[0] = udp_socket((uint16_t)atoi(argv[2]));
    sock[1] = udp_socket((uint16_t)atoi(argv[3]));
    int seconds = atoi(argv[4]);
    pthread_t rx;
    pthread_create(&rx, NULL, receiver, NULL);

    static unsigned char pkts[BATCH][PKT];
    struct sockaddr_in to[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    uint64_t sent = 0, send_errors = 0, start = now_ns();
    /* Packets are spread evenly over each 20 ms tick, in small batches
     * alternating sides: a burst of every call's packet at once would queue
     * behind itself and measure the burst, not the relay. */
    const int small = 16;
    int per_side = (ncalls + small - 1) / small, batches = 2 * per_side;
    uint64_t gap = 20000000u / (uint64_t)batches;
    int ticks = seconds * 50;
    for (int tick = 0; tick < ticks; tick++) {
        for (int bi = 0; bi < batches; bi++) {
            int side = bi % 2, first = (bi / 2) * small;
            int n = 0;
            uint64_t t = now_ns();
            for (int c = first; n < small && c < ncalls; n++, c++) {
                unsigned char *p = pkts[n];
                memset(p, 0, PKT);
                p[0] = 0x80; /* RTP version 2, PT 0 (PCMU) */
                uint16_t seq = htons((uint16_t)tick);
                uint32_t ts = htonl((uint32_t)tick * 160), ssrc = htonl((uint32_t)c << 1 | (uint32_t)side);
                memcpy(p + 2, &seq, 2);
                memcpy(p + 4, &ts, 4);
                memcpy(p + 8, &ssrc, 4);
                memcpy(p + 12, &t, sizeof t);
                to[n] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(relay_port[side][c])};
                to[n].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                iov[n] = (struct iovec){p, PKT};
                msgs[n] = (struct mmsghdr){.msg_hdr = {.msg_name = &to[n], .msg_namelen = sizeof to[n], .msg_iov = &iov[n], .msg_iovlen = 1}};
            }
            int k = sendmmsg(sock[side], msgs, (unsigned)n, 0);
            if (k > 0) sent += (uint64_t)k;
            if (k < n) send_errors += (uint64_t)(n - (k > 0 ? k : 0));
            /* Pace by absolute deadlines. */
            uint64_t next = start + (uint64_t)tick * 20000000u + (uint64_t)(bi + 1) * gap;
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u), .tv_nsec = (long)(next % 1000000000u)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
    }
    usleep(300000); /* let the last packets through */
    atomic_store(&done, 1);
    pthread_join(rx, NULL);
    double loss = sent ? 100.0 * (double)(sent - (received < sent ? received : sent)) / (double)sent : 100.0;
    printf("calls %d sent %llu received %llu loss %.3f%% send_errors %llu latency_us p50 %llu p99 %llu max %llu\n",
           ncalls, (unsigned long long)sent, (unsigned long long)received, loss, (unsigned long long)send_errors,
           (unsigned long long)percentile(0.50), (unsigned long long)percentile(0.99), (unsigned long long)lat_max);
    return 0;
}
