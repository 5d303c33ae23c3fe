/*
 * endpoint.c - see endpoint.h.
 */
#include "net/endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int parse_port(const char *s, int *port)
{
    char *end;
    if (!*s)
        return -EINVAL;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 65535)
        return -EINVAL;
    *port = (int)v;
    return 0;
}

static int parse_unix(weft_endpoint_t *ep, const char *path)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&ep->addr;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(un->sun_path))
        return -EINVAL;
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    ep->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

static int resolve(weft_endpoint_t *ep, const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
    ep->len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ep->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&ep->addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&ep->addr)->sin6_port = htons((uint16_t)port);
    return 0;
}

int weft_endpoint_parse(weft_endpoint_t *ep, const char *text)
{
    char host[256];
    int port;
    if (!ep || !text)
        return -EINVAL;
    memset(ep, 0, sizeof(*ep));
    if (!strncmp(text, "unix:", 5))
        return parse_unix(ep, text + 5);

    const char *colon;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        hlen = (size_t)(close - text - 1);
        memcpy(host, text + 1, hlen < sizeof(host) ? hlen : 0);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return -EINVAL;
        hlen = (size_t)(colon - text);
        memcpy(host, text, hlen < sizeof(host) ? hlen : 0);
    }
    if (hlen >= sizeof(host) || parse_port(colon + 1, &port) != 0)
        return -EINVAL;
    host[hlen] = '\0';

    struct sockaddr_in *in = (struct sockaddr_in *)&ep->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ep->addr;
    if (hlen == 0 || !strcmp(host, "*") || !strcmp(host, "0.0.0.0")) {
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        ep->len = sizeof(*in6);
        return 0;
    } else if (text[0] == '[') {
        return -EINVAL;
    } else {
        return resolve(ep, host, port);
    }
    in->sin_port = htons((uint16_t)port);
    ep->len = sizeof(*in);
    return 0;
}

char *weft_endpoint_format(const weft_endpoint_t *ep, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addr;
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%d", ip, ntohs(in->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%d", ip, ntohs(in6->sin6_port));
        break;
    }
    case AF_UNIX:
        snprintf(buf, size, "unix:%s", ((const struct sockaddr_un *)(const void *)sa)->sun_path);
        break;
    default:
        snprintf(buf, size, "(unknown)");
    }
    return buf;
}

int weft_endpoint_port(const weft_endpoint_t *ep)
{
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addr;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return -1;
}

bool weft_endpoint_equal(const weft_endpoint_t *a, const weft_endpoint_t *b)
{
    return a->len == b->len && memcmp(&a->addr, &b->addr, a->len) == 0;
}

int weft_endpoint_from_peer(weft_endpoint_t *ep, int fd)
{
    memset(ep, 0, sizeof(*ep));
    ep->len = sizeof(ep->addr);
    return getpeername(fd, (struct sockaddr *)&ep->addr, &ep->len) == 0 ? 0 : -errno;
}

int weft_endpoint_from_local(weft_endpoint_t *ep, int fd)
{
    memset(ep, 0, sizeof(*ep));
    ep->len = sizeof(ep->addr);
    return getsockname(fd, (struct sockaddr *)&ep->addr, &ep->len) == 0 ? 0 : -errno;
}
