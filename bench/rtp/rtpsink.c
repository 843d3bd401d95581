/* rtpsink: receives RTP on one UDP port for SECONDS and reports, over all
 * senders (one per source port), packets received and loss: per sender the
 * packets missing between the first and last sequence number seen.
 *
 *   rtpsink PORT SECONDS  ->  "senders N received R expected E loss L%"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAXSRC 65536
#define BATCH 64

static uint32_t first[MAXSRC], last[MAXSRC], count[MAXSRC];
static unsigned char seen[MAXSRC];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: rtpsink PORT SECONDS\n"); return 2; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char buf[BATCH][256];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in from[BATCH];
    double end = now() + atof(argv[2]);
    /* Sequence numbers are tracked unwrapped: 16-bit, extended per sender. */
    while (now() < end) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = buf[i]; iov[i].iov_len = sizeof buf[i];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i]; msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(s, msgs, BATCH, MSG_WAITFORONE, NULL);
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_len < 12) continue;
            unsigned port = ntohs(from[i].sin_port);
            uint16_t seq = (uint8_t)buf[i][2] << 8 | (uint8_t)buf[i][3];
            if (!seen[port]) { seen[port] = 1; first[port] = last[port] = seq; count[port] = 1; continue; }
            uint32_t ext = last[port] + (uint16_t)(seq - (uint16_t)last[port]);
            if ((uint16_t)(seq - (uint16_t)last[port]) < 0x8000) last[port] = ext;
            count[port]++;
        }
    }
    unsigned long senders = 0, received = 0, expected = 0;
    for (int p = 0; p < MAXSRC; p++) {
        if (!seen[p]) continue;
        senders++; received += count[p]; expected += last[p] - first[p] + 1;
    }
    printf("senders %lu received %lu expected %lu loss %.3f\n", senders, received, expected,
           expected ? 100.0 * (double)(expected > received ? expected - received : 0) / expected : 0.0);
    return 0;
}
