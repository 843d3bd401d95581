#!/usr/bin/env python3
"""Sets up N calls on rtpengine through its ng control protocol (bencode over
UDP): an offer with party A's SDP, an answer with party B's, as a SIP proxy
would. Writes "port_a port_b" per call: the rtpengine ports that party A
and party B must send to.

    rtpengine_calls.py NG_PORT CALLS PARTY_PORT_A PARTY_PORT_B PORTS_FILE
"""
import os
import re
import socket
import sys


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(v)


def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i, out = i + 1, []
        while b[i:i + 1] != b"e":
            x, i = bdecode(b, i)
            out.append(x)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k.decode()] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def sdp(port):
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" % port)


def main():
    ng_port, calls, pa, pb, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    cookie = 0

    def ng(cmd):
        nonlocal cookie
        cookie += 1
        c = b"%d_%d" % (os.getpid(), cookie)
        s.sendto(c + b" " + bencode(cmd), ("127.0.0.1", ng_port))
        while True:
            data = s.recv(65535)
            rc, _, body = data.partition(b" ")
            if rc == c:
                reply, _ = bdecode(body)
                if reply.get("result") != b"ok":
                    sys.exit("rtpengine: %r" % reply)
                return reply

    def port_of(reply):
        return int(re.search(rb"m=audio (\d+)", reply["sdp"]).group(1))

    with open(out, "w") as f:
        for i in range(calls):
            cid = "bench-%d" % i
            offer = ng({"command": "offer", "call-id": cid, "from-tag": "a%d" % i, "sdp": sdp(pa)})
            answer = ng({"command": "answer", "call-id": cid, "from-tag": "a%d" % i, "to-tag": "b%d" % i,
                         "sdp": sdp(pb)})
            # The offer's SDP goes to B (where B sends), the answer's to A.
            f.write("%d %d\n" % (port_of(answer), port_of(offer)))


main()
