// Copied for loadbench's cold-start benchmark (benchmarks/section_coldstart.py) from the
// project's research material: ../shared/research/climit/sse_server.c (described in
// ../shared/research/client-limits.md). Its event format already is what loadbench reads
// (chat.completion.chunk with choices[0].delta.content, then data: [DONE]); it answers
// every POST path, /v1/chat/completions included. One change, marked "loadbench:": PORT 0
// binds a free port, and the start-up line names the port actually bound.
// Built by benchmarks/cserver/build.py (cc -O2 into a cache directory).
//
// sse_server.c -- minimal single-threaded epoll HTTP/1.1 keep-alive
// OpenAI-style SSE server (POST /v1/chat/completions).
//
// Build: gcc -O2 -o sse_server sse_server.c
// Run:   ./sse_server PORT [N_TOKENS] [TTFT_US] [ITL_US]
//
// Per request overrides (query string): ?n=16&ttft=100000&itl=20000 (us).
// Otherwise "max_tokens":N in the JSON body sets N.
// Body containing "stream":false / "stream": false -> non-streaming JSON.
// With TTFT=ITL=0 the whole (pre-rendered, cached per N) chunked SSE body is
// written with one write(). With a delay, each token is written at
//   due_k = t_request_parsed + TTFT + k*ITL  (drift-free schedule)
// and every chunk carries "t":<CLOCK_MONOTONIC ns at write> (and the first one
// "r":<ns when request was parsed>) so a client can compute its own error.
// SIGINT/SIGTERM prints server-side lateness stats (t - due) and exits.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define MAXEV 1024

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct {
  int fd;
  uint64_t req_id;
  char *in;
  size_t in_len, in_cap;
  char *out;
  size_t out_len, out_off, out_cap;
  int streaming, tokens_total, tokens_sent;
  uint64_t itl_ns, ttft_ns, recv_ns;
  int close_after, epollout;
} conn_t;

typedef struct {
  uint64_t due;
  int fd;
  uint64_t req_id;
} tmr_t;

static conn_t *conns[MAXFD];
static tmr_t *heap;
static size_t heap_n, heap_cap;
static int epfd;
static uint64_t next_req_id = 1;
static int def_n = 16;
static uint64_t def_ttft = 0, def_itl = 0;
static volatile sig_atomic_t stop_flag = 0;
// lateness histogram, 1us buckets up to 1s
#define LAT_BUCKETS 1000000
static uint32_t *lat_hist;
static uint64_t lat_count, lat_max, events_sent, reqs_done;

static void on_sig(int s) { (void)s; stop_flag = 1; }

static void heap_push(tmr_t t) {
  if (heap_n == heap_cap) {
    heap_cap = heap_cap ? heap_cap * 2 : 4096;
    heap = realloc(heap, heap_cap * sizeof(tmr_t));
  }
  size_t i = heap_n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (heap[p].due <= t.due) break;
    heap[i] = heap[p];
    i = p;
  }
  heap[i] = t;
}
static tmr_t heap_pop(void) {
  tmr_t top = heap[0];
  tmr_t last = heap[--heap_n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    uint64_t md = last.due;
    if (l < heap_n && heap[l].due < md) { m = l; md = heap[l].due; }
    if (r < heap_n && heap[r].due < md) { m = r; }
    if (m == i) break;
    heap[i] = heap[m];
    i = m;
  }
  if (heap_n) heap[i] = last;
  return top;
}

static void conn_close(conn_t *c) {
  close(c->fd);
  conns[c->fd] = NULL;
  free(c->in);
  free(c->out);
  free(c);
}

static void set_epollout(conn_t *c, int on) {
  if (c->epollout == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = c->fd};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->epollout = on;
}

// returns -1 if connection was closed
static int flush_out(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { set_epollout(c, 1); return 0; }
      conn_close(c);
      return -1;
    }
    c->out_off += (size_t)w;
  }
  c->out_off = c->out_len = 0;
  set_epollout(c, 0);
  if (c->close_after && !c->streaming) { conn_close(c); return -1; }
  return 0;
}

static void out_append(conn_t *c, const char *p, size_t n) {
  if (c->out_len + n > c->out_cap) {
    if (c->out_off) {  // compact
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
      size_t nc = c->out_cap ? c->out_cap : 4096;
      while (nc < c->out_len + n) nc *= 2;
      c->out = realloc(c->out, nc);
      c->out_cap = nc;
    }
  }
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
}

// send bytes: write directly if nothing is queued, queue the remainder
static int send_bytes(conn_t *c, const char *p, size_t n) {
  if (c->out_len == c->out_off) {
    c->out_len = c->out_off = 0;
    while (n > 0) {
      ssize_t w = write(c->fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        conn_close(c);
        return -1;
      }
      p += w;
      n -= (size_t)w;
    }
    if (n == 0) {
      if (c->close_after && !c->streaming) { conn_close(c); return -1; }
      return 0;
    }
  }
  out_append(c, p, n);
  set_epollout(c, 1);
  return 0;
}

static const char *CHUNK_PRE =
    "data: {\"id\":\"chatcmpl-0123456789abcdef\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"bench-model\",";
static const char *CHUNK_MID = "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok\"},\"logprobs\":null,\"finish_reason\":";
static const char *STREAM_HDR =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    "transfer-encoding: chunked\r\n\r\n";
static const char *DONE_TAIL = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";

// render one SSE event as an HTTP chunk into buf; returns length
static size_t render_chunk(char *buf, int last, uint64_t t, uint64_t r, int stamped) {
  char ev[512];
  int n;
  if (!stamped)
    n = snprintf(ev, sizeof ev, "%s%s%s}]}\n\n", CHUNK_PRE, CHUNK_MID, last ? "\"stop\"" : "null");
  else if (r)
    n = snprintf(ev, sizeof ev, "%s\"t\":%llu,\"r\":%llu,%s%s}]}\n\n", CHUNK_PRE, (unsigned long long)t,
                 (unsigned long long)r, CHUNK_MID, last ? "\"stop\"" : "null");
  else
    n = snprintf(ev, sizeof ev, "%s\"t\":%llu,%s%s}]}\n\n", CHUNK_PRE, (unsigned long long)t, CHUNK_MID,
                 last ? "\"stop\"" : "null");
  int h = sprintf(buf, "%x\r\n", n);
  memcpy(buf + h, ev, (size_t)n);
  memcpy(buf + h + n, "\r\n", 2);
  return (size_t)(h + n + 2);
}

typedef struct cache_ent {
  int n, stream;
  char *buf;
  size_t len;
  struct cache_ent *next;
} cache_ent;
static cache_ent *cache;

static cache_ent *get_prerendered(int n, int stream) {
  for (cache_ent *e = cache; e; e = e->next)
    if (e->n == n && e->stream == stream) return e;
  cache_ent *e = calloc(1, sizeof *e);
  e->n = n;
  e->stream = stream;
  if (stream) {
    size_t cap = strlen(STREAM_HDR) + (size_t)n * 512 + 64;
    e->buf = malloc(cap);
    size_t off = 0;
    memcpy(e->buf, STREAM_HDR, strlen(STREAM_HDR));
    off += strlen(STREAM_HDR);
    for (int i = 0; i < n; i++) off += render_chunk(e->buf + off, i == n - 1, 0, 0, 0);
    memcpy(e->buf + off, DONE_TAIL, strlen(DONE_TAIL));
    off += strlen(DONE_TAIL);
    e->len = off;
  } else {
    size_t cap = (size_t)n * 4 + 1024;
    char *body = malloc(cap);
    int bl = sprintf(body,
                     "{\"id\":\"chatcmpl-0123456789abcdef\",\"object\":\"chat.completion\",\"created\":1700000000,"
                     "\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                     "\"content\":\"");
    for (int i = 0; i < n; i++) { memcpy(body + bl, " tok", 4); bl += 4; }
    bl += sprintf(body + bl,
                  "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":8,"
                  "\"completion_tokens\":%d,\"total_tokens\":%d}}",
                  n, n + 8);
    e->buf = malloc((size_t)bl + 256);
    int hl = sprintf(e->buf, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n", bl);
    memcpy(e->buf + hl, body, (size_t)bl);
    e->len = (size_t)(hl + bl);
    free(body);
  }
  e->next = cache;
  cache = e;
  return e;
}

static long qparam(const char *path, size_t plen, const char *key, long dflt) {
  const char *q = memchr(path, '?', plen);
  if (!q) return dflt;
  size_t kl = strlen(key);
  const char *end = path + plen;
  const char *p = q + 1;
  while (p < end) {
    if ((size_t)(end - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') return strtol(p + kl + 1, NULL, 10);
    const char *amp = memchr(p, '&', (size_t)(end - p));
    if (!amp) break;
    p = amp + 1;
  }
  return dflt;
}

static int emit_token(conn_t *c, uint64_t due);

// try to parse and serve requests from the input buffer; -1 if closed
static int process_input(conn_t *c) {
  while (!c->streaming && c->in_len > 0) {
    char *hend = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!hend) return 0;
    size_t hlen = (size_t)(hend - c->in) + 4;
    long clen = 0;
    int close_hdr = 0;
    // headers
    char *line = memchr(c->in, '\n', hlen);
    char *rl_end = line;
    while (line && line < hend) {
      char *ls = line + 1;
      char *le = memchr(ls, '\n', (size_t)(c->in + hlen - ls));
      if (!le) break;
      if ((size_t)(le - ls) > 15 && strncasecmp(ls, "content-length:", 15) == 0) clen = strtol(ls + 15, NULL, 10);
      else if ((size_t)(le - ls) > 11 && strncasecmp(ls, "connection:", 11) == 0) {
        if (memmem(ls, (size_t)(le - ls), "close", 5)) close_hdr = 1;
      }
      line = le;
    }
    if (c->in_len < hlen + (size_t)clen) return 0;
    // request line: METHOD SP PATH SP VERSION
    char *sp1 = memchr(c->in, ' ', (size_t)(rl_end - c->in));
    char *path = sp1 ? sp1 + 1 : c->in;
    char *sp2 = memchr(path, ' ', (size_t)(rl_end - path));
    size_t plen = sp2 ? (size_t)(sp2 - path) : 0;
    char *body = c->in + hlen;
    int stream = 1;
    if (clen > 0 && (memmem(body, (size_t)clen, "\"stream\":false", 14) || memmem(body, (size_t)clen, "\"stream\": false", 15)))
      stream = 0;
    if (strncmp(c->in, "GET", 3) == 0) stream = (int)qparam(path, plen, "stream", 0);
    long n = def_n;
    char *mt = clen > 0 ? memmem(body, (size_t)clen, "\"max_tokens\":", 13) : NULL;
    if (mt) n = strtol(mt + 13, NULL, 10);
    n = qparam(path, plen, "n", n);
    if (n < 1) n = 1;
    uint64_t ttft = (uint64_t)qparam(path, plen, "ttft", (long)(def_ttft / 1000)) * 1000;
    uint64_t itl = (uint64_t)qparam(path, plen, "itl", (long)(def_itl / 1000)) * 1000;
    // consume request
    size_t used = hlen + (size_t)clen;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->close_after = close_hdr;
    reqs_done++;
    if (!stream || (ttft == 0 && itl == 0)) {
      cache_ent *e = get_prerendered((int)n, stream);
      if (stream) events_sent += (uint64_t)n + 1;
      if (send_bytes(c, e->buf, e->len) < 0) return -1;
      continue;
    }
    // timed stream
    c->streaming = 1;
    c->tokens_total = (int)n;
    c->tokens_sent = 0;
    c->ttft_ns = ttft;
    c->itl_ns = itl;
    c->recv_ns = now_ns();
    c->req_id = next_req_id++;
    if (send_bytes(c, STREAM_HDR, strlen(STREAM_HDR)) < 0) return -1;
    tmr_t t = {.due = c->recv_ns + ttft, .fd = c->fd, .req_id = c->req_id};
    if (ttft == 0) return emit_token(c, t.due);
    heap_push(t);
  }
  return 0;
}

static int emit_token(conn_t *c, uint64_t due) {
  char buf[600];
  uint64_t t = now_ns();
  uint64_t late = t > due ? (t - due) / 1000 : 0;
  lat_hist[late < LAT_BUCKETS ? late : LAT_BUCKETS - 1]++;
  lat_count++;
  if (late > lat_max) lat_max = late;
  int last = c->tokens_sent == c->tokens_total - 1;
  size_t n = render_chunk(buf, last, t, c->tokens_sent == 0 ? c->recv_ns : 0, 1);
  c->tokens_sent++;
  events_sent++;
  if (last) {
    memcpy(buf + n, DONE_TAIL, strlen(DONE_TAIL));
    n += strlen(DONE_TAIL);
    events_sent++;
    c->streaming = 0;
  }
  if (send_bytes(c, buf, n) < 0) return -1;
  if (!last) {
    tmr_t nt = {.due = c->recv_ns + c->ttft_ns + (uint64_t)c->tokens_sent * c->itl_ns, .fd = c->fd, .req_id = c->req_id};
    heap_push(nt);
    return 0;
  }
  return process_input(c);
}

static void handle_read(conn_t *c) {
  for (int iter = 0; iter < 4; iter++) {
    if (c->in_cap - c->in_len < 4096) {
      c->in_cap = c->in_cap ? c->in_cap * 2 : 8192;
      c->in = realloc(c->in, c->in_cap);
    }
    ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (r == 0) { conn_close(c); return; }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      conn_close(c);
      return;
    }
    c->in_len += (size_t)r;
    if ((size_t)r < 4096) break;
  }
  process_input(c);
}

static void print_stats(void) {
  uint64_t acc = 0, p50 = 0, p99 = 0, p999 = 0;
  int g50 = 0, g99 = 0, g999 = 0;
  for (uint64_t i = 0; i < LAT_BUCKETS && lat_count; i++) {
    acc += lat_hist[i];
    if (!g50 && acc * 2 >= lat_count) { p50 = i; g50 = 1; }
    if (!g99 && acc * 100 >= lat_count * 99) { p99 = i; g99 = 1; }
    if (!g999 && acc * 1000 >= lat_count * 999) { p999 = i; g999 = 1; break; }
  }
  fprintf(stderr,
          "{\"server\":\"c\",\"requests\":%llu,\"events\":%llu,\"timed_events\":%llu,"
          "\"late_us_p50\":%llu,\"late_us_p99\":%llu,\"late_us_p999\":%llu,\"late_us_max\":%llu}\n",
          (unsigned long long)reqs_done, (unsigned long long)events_sent, (unsigned long long)lat_count,
          (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)p999, (unsigned long long)lat_max);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 8800;
  if (argc > 2) def_n = atoi(argv[2]);
  if (argc > 3) def_ttft = (uint64_t)atol(argv[3]) * 1000;
  if (argc > 4) def_itl = (uint64_t)atol(argv[4]) * 1000;
  lat_hist = calloc(LAT_BUCKETS, sizeof(uint32_t));
  prctl(PR_SET_TIMERSLACK, 1UL);  // 1 ns slack: fire timers on time
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_sig};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
  socklen_t alen = sizeof a;  // loadbench: PORT 0 picks a free port; announce the real one
  if (getsockname(lfd, (struct sockaddr *)&a, &alen) == 0) port = ntohs(a.sin_port);
  listen(lfd, 4096);
  epfd = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
  fprintf(stderr, "sse_server(c) listening 127.0.0.1:%d n=%d ttft_us=%llu itl_us=%llu\n", port, def_n,
          (unsigned long long)(def_ttft / 1000), (unsigned long long)(def_itl / 1000));
  struct epoll_event evs[MAXEV];
  while (!stop_flag) {
    struct timespec ts, *tp = NULL;
    if (heap_n) {
      uint64_t now = now_ns(), due = heap[0].due;
      uint64_t d = due > now ? due - now : 0;
      ts.tv_sec = (time_t)(d / 1000000000ull);
      ts.tv_nsec = (long)(d % 1000000000ull);
      tp = &ts;
    }
    int n = epoll_pwait2(epfd, evs, MAXEV, tp, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll");
      break;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        for (int k = 0; k < 256; k++) {
          int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (cfd < 0) break;
          if (cfd >= MAXFD) { close(cfd); continue; }
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn_t *c = calloc(1, sizeof *c);
          c->fd = cfd;
          conns[cfd] = c;
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
          epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
        }
        continue;
      }
      conn_t *c = conns[fd];
      if (!c) continue;
      if (evs[i].events & EPOLLOUT) {
        if (flush_out(c) < 0) continue;
        if (!c->streaming && c->in_len) { if (process_input(c) < 0) continue; }
      }
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) handle_read(c);
    }
    uint64_t now = now_ns();
    for (int k = 0; heap_n && heap[0].due <= now && k < 100000; k++) {
      tmr_t t = heap_pop();
      conn_t *c = conns[t.fd];
      if (!c || c->req_id != t.req_id || !c->streaming) continue;
      emit_token(c, t.due);
    }
  }
  print_stats();
  return 0;
}
