/* The machine's limit for a registration: a UDP responder that does the
 * least any registrar must do per request and nothing else. Blocking
 * recvfrom, copy the Via, From, To, Call-ID and CSeq lines into the answer,
 * sendto. A REGISTER without Authorization gets a 401 with a fixed digest
 * challenge, one with Authorization a 200 echoing its Contact; nothing is
 * checked, stored or remembered. Like fwd.c for RTP, it tells how much of a
 * registrar's CPU per registration is the kernel's and the wake-ups', i.e.
 * what no registrar on this machine can go below.
 *
 * usage: answer PORT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static int starts(const char *line, size_t len, const char *name) {
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: answer PORT\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        return 1;
    }
    static char in[65536], out[70000];
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, in, sizeof in - 1, 0, (struct sockaddr *)&from, &fl);
        if (n <= 0 || strncmp(in, "SIP/", 4) == 0)
            continue;
        in[n] = 0;
        int authorized = 0;
        const char *contact = NULL;
        size_t contact_len = 0;
        char copied[4096];
        size_t cl = 0;
        for (char *line = strstr(in, "\r\n"); line && line[2] != '\r';) {
            line += 2;
            char *end = strstr(line, "\r\n");
            if (!end)
                break;
            size_t len = end - line;
            if (starts(line, len, "Authorization:"))
                authorized = 1;
            else if (starts(line, len, "Contact:")) {
                contact = line;
                contact_len = len;
            } else if ((starts(line, len, "Via:") || starts(line, len, "From:") ||
                        starts(line, len, "Call-ID:") || starts(line, len, "CSeq:")) &&
                       cl + len + 2 < sizeof copied) {
                memcpy(copied + cl, line, len + 2);
                cl += len + 2;
            } else if (starts(line, len, "To:") && cl + len + 14 < sizeof copied) {
                memcpy(copied + cl, line, len);
                cl += len;
                cl += (size_t)sprintf(copied + cl, ";tag=answer\r\n");
            }
            line = end;
        }
        int m;
        if (!authorized)
            m = snprintf(out, sizeof out,
                         "SIP/2.0 401 Unauthorized\r\n%.*sWWW-Authenticate: Digest "
                         "realm=\"bench.test\", nonce=\"5f1e0c2a9b7d4e63\", algorithm=MD5, "
                         "qop=\"auth\"\r\nContent-Length: 0\r\n\r\n",
                         (int)cl, copied);
        else if (contact)
            m = snprintf(out, sizeof out, "SIP/2.0 200 OK\r\n%.*s%.*s;expires=3600\r\nContent-Length: 0\r\n\r\n",
                         (int)cl, copied, (int)contact_len, contact);
        else
            m = snprintf(out, sizeof out, "SIP/2.0 200 OK\r\n%.*sContent-Length: 0\r\n\r\n", (int)cl, copied);
        if (m > 0 && m < (int)sizeof out)
            sendto(s, out, m, 0, (struct sockaddr *)&from, fl);
    }
}
