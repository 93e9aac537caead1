/*
 * rategen: a constant-rate HTTP/1.1 load generator for `npm run bench` (compiled there with gcc when
 * it is present; the Node generator in loadgen.ts is the fallback).
 *
 *   rategen ADDRESS PORT CONNECTIONS SECONDS RATE [HOST] [PATH]
 *
 * Request i is due at start + i/RATE. It goes out on an idle keep-alive connection at once; when
 * every connection is busy it waits for one, and its latency still counts from the time it was due
 * (no coordinated omission). The schedule runs on a timerfd (nanosecond deadlines), so the
 * generator adds microseconds, not the millisecond ticks of a JavaScript timer. Responses are read
 * by Content-Length or chunked framing. Prints one JSON line: requests, errors, seconds, rps and
 * p50/p90/p99/p999/max latency in milliseconds. RATEGEN_DUMP=FILE writes "due_ms latency_ms" per
 * answered request, to see whether slow requests come together (a stall) or one by one.
 *
 * Bounded: SECONDS of sending plus at most 10 s for the last replies; IPv4 addresses only (the bench
 * talks to loopback or to network namespaces it made).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

enum parse { HEAD, BODY_LEN, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER };

struct conn {
  int fd;
  int busy;
  int64_t due;       /* when the request in flight was due (ns) */
  enum parse state;
  int status;
  long long remaining; /* body bytes (BODY_LEN) or chunk bytes (CHUNK_DATA) left */
  char head[8192];   /* response head, or the current chunk-size / trailer line */
  size_t head_len;
};

static struct sockaddr_in g_addr;
static char g_req[1024];
static size_t g_req_len;
static double *g_lat;
static FILE *g_dump; /* RATEGEN_DUMP=FILE: one line per answered request, "due_ms latency_ms" */
static int64_t g_t0;
static long long g_done, g_errors;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int open_conn(int ep, struct conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  c->busy = 0;
  c->head_len = 0;
  c->state = HEAD;
  return 0;
}

/* A connection failed or closed: the request in flight (if any) is an error; open a new one. */
static void reset_conn(int ep, struct conn *c) {
  if (c->busy) g_errors++;
  if (c->fd >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  open_conn(ep, c);
}

static int send_req(struct conn *c, int64_t due) {
  /* The request is small: it fits the socket buffer of a fresh or idle keep-alive connection. */
  ssize_t n = write(c->fd, g_req, g_req_len);
  if (n != (ssize_t)g_req_len) return -1;
  c->busy = 1;
  c->due = due;
  c->state = HEAD;
  c->head_len = 0;
  c->status = 0;
  return 0;
}

static void finish(struct conn *c) {
  if (c->status >= 200 && c->status < 400) {
    g_lat[g_done++] = (double)(now_ns() - c->due) / 1e6;
    if (g_dump) fprintf(g_dump, "%.3f %.4f\n", (double)(c->due - g_t0) / 1e6, g_lat[g_done - 1]);
  }
  else g_errors++;
  c->busy = 0;
}

/* Take the response head in c->head: status and framing. Returns -1 when it cannot be read. */
static int take_head(struct conn *c) {
  c->head[c->head_len] = 0;
  if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1) return -1;
  c->remaining = 0;
  c->state = BODY_LEN;
  for (char *line = strstr(c->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    char *l = line + 2;
    if (strncasecmp(l, "content-length:", 15) == 0) c->remaining = atoll(l + 15);
    else if (strncasecmp(l, "transfer-encoding:", 18) == 0) {
      char *end = strstr(l, "\r\n"), *k = strcasestr(l, "chunked");
      if (k && (!end || k < end)) c->state = CHUNK_SIZE;
    }
  }
  c->head_len = 0;
  return 0;
}

/* Feed bytes from the socket; may finish the response. Returns -1 on a framing error. */
static int feed(struct conn *c, const char *p, size_t n) {
  while (n > 0) {
    if (!c->busy) return -1; /* bytes nobody asked for */
    switch (c->state) {
    case HEAD:
    case CHUNK_SIZE:
    case CHUNK_CRLF:
    case TRAILER: {
      /* Line-oriented states: collect up to the terminator. */
      if (c->head_len >= sizeof c->head - 1) return -1;
      c->head[c->head_len++] = *p++;
      n--;
      size_t L = c->head_len;
      if (c->state == HEAD) {
        if (L >= 4 && memcmp(c->head + L - 4, "\r\n\r\n", 4) == 0) {
          if (take_head(c) < 0) return -1;
          if (c->state == BODY_LEN && c->remaining == 0) finish(c);
        }
      } else if (L >= 2 && memcmp(c->head + L - 2, "\r\n", 2) == 0) {
        if (c->state == CHUNK_SIZE) {
          c->remaining = strtoll(c->head, NULL, 16);
          c->state = c->remaining == 0 ? TRAILER : CHUNK_DATA;
        } else if (c->state == CHUNK_CRLF) {
          c->state = CHUNK_SIZE;
        } else if (L == 2) { /* TRAILER: the empty line ends the message */
          finish(c);
        }
        c->head_len = 0;
      }
      break;
    }
    case BODY_LEN:
    case CHUNK_DATA: {
      size_t take = (size_t)c->remaining < n ? (size_t)c->remaining : n;
      c->remaining -= (long long)take;
      p += take;
      n -= take;
      if (c->remaining == 0) {
        if (c->state == BODY_LEN) finish(c);
        else c->state = CHUNK_CRLF;
      }
      break;
    }
    }
  }
  return 0;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double p) {
  if (g_done == 0) return 0;
  long long i = (long long)(p / 100.0 * (double)g_done);
  if (i >= g_done) i = g_done - 1;
  return g_lat[i];
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: rategen ADDRESS PORT CONNECTIONS SECONDS RATE [HOST] [PATH]\n");
    return 2;
  }
  int nconn = atoi(argv[3]);
  double seconds = atof(argv[4]), rate = atof(argv[5]);
  const char *host = argc > 6 ? argv[6] : "bench", *path = argc > 7 ? argv[7] : "/";
  if (nconn < 1 || nconn > 4096 || seconds <= 0 || seconds > 600 || rate <= 0 || rate > 1e6) {
    fprintf(stderr, "rategen: connections 1-4096, seconds 0-600, rate 0-1e6\n");
    return 2;
  }
  memset(&g_addr, 0, sizeof g_addr);
  g_addr.sin_family = AF_INET;
  g_addr.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &g_addr.sin_addr) != 1) {
    fprintf(stderr, "rategen: not an IPv4 address: %s\n", argv[1]);
    return 2;
  }
  g_req_len = (size_t)snprintf(g_req, sizeof g_req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rategen\r\n\r\n", path, host);
  if (g_req_len >= sizeof g_req) return 2;
  long long total = (long long)(seconds * rate);
  g_lat = calloc((size_t)total + 1, sizeof *g_lat);
  struct conn *conns = calloc((size_t)nconn, sizeof *conns);
  if (!g_lat || !conns) return 1;

  int ep = epoll_create1(0);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
  for (int i = 0; i < nconn; i++) open_conn(ep, &conns[i]);
  usleep(100000); /* let the connections finish their handshakes */

  const int64_t interval = (int64_t)(1e9 / rate);
  const int64_t t0 = now_ns();
  g_t0 = t0;
  if (getenv("RATEGEN_DUMP")) g_dump = fopen(getenv("RATEGEN_DUMP"), "w");
  const int64_t hard_end = t0 + (int64_t)((seconds + 10) * 1e9);
  long long sent = 0, waiting = 0; /* waiting: due but no idle connection yet */
  int64_t first_waiting = 0;       /* due time of the oldest waiting request */
  static char buf[BUF];
  struct epoll_event evs[256];

  for (;;) {
    int64_t now = now_ns();
    /* Send everything due (the waiting ones first, oldest first). */
    while (sent < total && t0 + sent * interval <= now) {
      if (waiting == 0) first_waiting = t0 + sent * interval;
      waiting++;
      sent++;
    }
    for (int i = 0; i < nconn && waiting > 0; i++) {
      struct conn *c = &conns[i];
      if (c->busy || c->fd < 0) continue;
      if (send_req(c, first_waiting) < 0) {
        reset_conn(ep, c);
        continue;
      }
      waiting--;
      first_waiting += interval;
    }
    long long inflight = 0;
    for (int i = 0; i < nconn; i++) inflight += conns[i].busy;
    if ((sent >= total && waiting == 0 && inflight == 0) || now > hard_end) break;
    if (sent < total) {
      struct itimerspec its = {0};
      int64_t next = t0 + sent * interval;
      its.it_value.tv_sec = next / 1000000000LL;
      its.it_value.tv_nsec = next % 1000000000LL;
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      if (!c) {
        uint64_t x;
        while (read(tfd, &x, sizeof x) > 0) {}
        continue;
      }
      for (;;) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r > 0) {
          if (feed(c, buf, (size_t)r) < 0) {
            reset_conn(ep, c);
            break;
          }
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        reset_conn(ep, c); /* EOF or error */
        break;
      }
    }
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  if (g_dump) fclose(g_dump);
  long long unanswered = 0;
  for (int i = 0; i < nconn; i++) unanswered += conns[i].busy;
  g_errors += unanswered + waiting + (total - sent);
  qsort(g_lat, (size_t)g_done, sizeof *g_lat, cmp);
  printf("{\"requests\":%lld,\"errors\":%lld,\"seconds\":%.3f,\"rps\":%.1f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,\"max\":%.4f}\n",
         g_done, g_errors, secs, (double)g_done / secs, pct(50), pct(90), pct(99), pct(99.9), g_done ? g_lat[g_done - 1] : 0.0);
  return 0;
}
