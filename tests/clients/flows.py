#!/usr/bin/env python3
"""Flows for the network-policy tests, run inside a test's namespace and cgroup (the policy
programs act on the sockets of a cgroup, so both ends must be processes placed there).

  flows.py serve ADDR PORT...   TCP and UDP servers on every ADDR:PORT; a TCP connection gets
                                "hello PORT\\n" and is held open, echoing lines; a datagram is
                                answered with "hello PORT". Prints "ready" once listening.
  flows.py probe                for every line "SRC DST PROTO PORT" on stdin (SRC "-" for the
                                routing's choice), one attempt: prints "ok" or "err KIND".
                                A dropped packet shows as "err timeout" after 0.6 s.
  flows.py hold SRC DST PORT    one TCP connection held open; for every line on stdin sends
                                it and prints the echo, or "err KIND" once it broke.
"""

import errno
import socket
import sys
import threading

TIMEOUT = 0.6


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def kind(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def serve(addr, ports):
    def tcp(port):
        s = socket.socket(family(addr), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(128)
        ready.release()
        while True:
            conn, _ = s.accept()
            threading.Thread(target=echo, args=(conn, port), daemon=True).start()

    def echo(conn, port):
        try:
            conn.sendall(b"hello %d\n" % port)
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def udp(port):
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        s.bind((addr, port))
        ready.release()
        while True:
            _, peer = s.recvfrom(4096)
            try:
                s.sendto(b"hello %d" % port, peer)
            except OSError:
                pass

    ready = threading.Semaphore(0)
    for port in ports:
        threading.Thread(target=tcp, args=(port,), daemon=True).start()
        threading.Thread(target=udp, args=(port,), daemon=True).start()
    for _ in range(2 * len(ports)):
        ready.acquire()
    print("ready", flush=True)
    threading.Event().wait()


def attempt(src, dst, proto, port):
    kind_ = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family(dst), kind_)
    s.settimeout(TIMEOUT)
    try:
        if src != "-":
            s.bind((src, 0))
        if proto == "tcp":
            s.connect((dst, port))
            line = s.makefile().readline()
        else:
            s.sendto(b"ping", (dst, port))
            line = s.recv(4096).decode()
        if not line.startswith("hello"):
            return "err noanswer"
        return "ok"
    except OSError as e:
        return "err " + kind(e)
    finally:
        s.close()


def probe():
    for line in sys.stdin:
        fields = line.split()
        if len(fields) != 4:
            print("err usage", flush=True)
            continue
        src, dst, proto, port = fields
        print(attempt(src, dst, proto, int(port)), flush=True)


def hold(src, dst, port):
    s = socket.socket(family(dst), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        if src != "-":
            s.bind((src, 0))
        s.connect((dst, port))
        f = s.makefile("rwb")
        print("ok " + f.readline().decode().strip(), flush=True)
    except OSError as e:
        print("err " + kind(e), flush=True)
        return
    for line in sys.stdin:
        try:
            f.write(line.encode())
            f.flush()
            answer = f.readline().decode().strip()
            print(("echo " + answer) if answer else "err closed", flush=True)
        except OSError as e:
            print("err " + kind(e), flush=True)


def main():
    args = sys.argv[1:]
    if args[:1] == ["serve"] and len(args) >= 3:
        serve(args[1], [int(p) for p in args[2:]])
    elif args == ["probe"]:
        probe()
    elif args[:1] == ["hold"] and len(args) == 4:
        hold(args[1], args[2], int(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
