/*
 * A tiny HTTP/1.0 responder for node smoke tests: every request gets
 * "hello from <hostname>\n". One connection at a time; SIGTERM ends it.
 *
 *   hello [PORT] [ADDRESS]     (defaults: 8080 0.0.0.0 - inside a pod's
 *                               network namespace that is the pod's own
 *                               addresses only)
 *
 * Built with `gcc -static` by scripts/node/images.sh.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

/* Read until the end of the request head (or 8 KiB, or 5 s of silence). */
static void read_head(int fd) {
    char buf[8192];
    size_t used = 0;
    struct timeval tv = {5, 0};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (used < sizeof buf - 1) {
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n <= 0) {
            return;
        }
        used += (size_t)n;
        buf[used] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL) {
            return;
        }
    }
}

static void write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    const char *addr = argc > 2 ? argv[2] : "0.0.0.0";
    char host[256] = "unknown", body[512], head[256];
    struct sockaddr_in sin;
    int one = 1, ls;

    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGPIPE, SIG_IGN);
    gethostname(host, sizeof host - 1);

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "usage: hello [PORT] [IPv4 ADDRESS]\n");
        return 2;
    }
    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0) {
        perror("hello: socket");
        return 1;
    }
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(ls, 64) < 0) {
        perror("hello: bind/listen");
        return 1;
    }
    fprintf(stderr, "hello: listening on %s:%d as uid %d\n", addr, port, (int)getuid());

    for (;;) {
        int fd = accept(ls, NULL, NULL);
        int blen, hlen;
        if (fd < 0) {
            continue;
        }
        read_head(fd);
        blen = snprintf(body, sizeof body, "hello from %s\n", host);
        hlen = snprintf(head, sizeof head,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %d\r\nConnection: close\r\n\r\n",
                        blen);
        write_all(fd, head, (size_t)hlen);
        write_all(fd, body, (size_t)blen);
        close(fd);
    }
}
