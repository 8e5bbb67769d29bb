// pread + the checksum sidecar's page sums (src/storagenode/page-checksums.ts) in one call, so a
// read's crc32c runs where its bytes land: on libuv's thread pool for the async variant, instead
// of on the single event-loop thread of the agent or the storage node after the read.
//
//   preadSums(fd, buf, position, sums, expected|null[, sumFd, sumPosition]) -> Promise<{ bytesRead, badPage }>
//   preadSumsSync(fd, buf, position, sums, expected|null[, sumFd, sumPosition]) -> { bytesRead, badPage }
//   pageSumsSync(buf, sums, portable) -> undefined      (buffers already in memory; tests)
//   pwriteSumsSync(fd, buf, position, sums, sumFd, sumPosition) -> undefined
//     The write twin, for the node's page-aligned writes: pwrite all of buf at position, then
//     the page values of buf into sums and pwrite them to sumFd at sumPosition — one call
//     instead of a pwrite, a crc call and a second pwrite from JavaScript (and no event-loop turn
//     between the bytes and their sums). buf a whole number of pages, position page-aligned.
//     A failed data pwrite throws before the sums are touched (Error .code, .op 'pwrite'); a
//     failed sums pwrite throws with .op 'pwrite-sums' (the bytes are written, their sums not:
//     what a crash between the two leaves too — the caller reports it as the sidecar's error)
//   fdatasyncAll(fds) -> Promise<Int32Array>              fds an Int32Array; fdatasync of each, in
//     order, on one thread-pool thread; the answer holds each one's errno (0: done). A flush
//     makes a disk's versions and their sidecars durable in a few such calls instead of one
//     FileHandle.datasync (a promise and a pool round trip) per file
//   linkCountSync(fd) -> number                          st_nlink of fd: 0 once the file is removed.
//     The short-circuit read checks it before every read; fs.fstatSync builds a whole Stats
//     object for it (7-12 % of the agent's CPU on random 4 KiB reads, profiled)
//   hardware: true when crc32c runs on SSE4.2's crc32 instruction
//
// buf (a Uint8Array) is filled from `position` on; what lies past the end of the file reads as
// zeros (bytesRead says where the file ended). sums (a Uint8Array of at least 4 bytes per 4 KiB
// page of buf, a partial last page counting as one) gets one u32 LE per page: the sidecar's value,
// crc32c(page zero-padded to 4 KiB) ^ crc32c(zero page), which is the raw crc (start 0, no final
// xor) of the padded page. With expected (same layout) the first page whose value differs is
// badPage, else -1. With sumFd (and expected as the scratch buffer), expected is first filled
// from sumFd at sumPosition — the sidecar's stored values of these pages, entries past its end
// reading as 0 — *after* the bytes are read, so a write landing in between shows as a mismatch,
// never as a match: the check of a read whose sums are not cached, in one call instead of a
// second pread from JavaScript (its binding cost ~13 % of the agent's CPU on random 4 KiB reads).
// A failed pread rejects/throws an Error with .code (e.g. 'EBADF'); bad arguments throw a
// TypeError. The caller keeps fd (and sumFd) open until the promise settles.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <node_api.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define PAGE 4096

// --- crc32c (Castagnoli, reflected 0x82F63B78), raw: no inversion in or out -------------------

static uint32_t table[8][256];
static int use_hw = 0;

static void init_tables (void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
  }
}

// Slicing by 8: the fallback for CPUs without SSE4.2 (~1 GB/s against ~8 with the instruction).
static uint32_t crc_portable (uint32_t crc, const uint8_t *p, size_t n) {
  while (n > 0 && ((uintptr_t) p & 7) != 0) { crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8); n--; }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc;  // little-endian: the crc meets the first four bytes
    crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
          table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
    p += 8; n -= 8;
  }
  while (n-- > 0) crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hw (uint32_t crc, const uint8_t *p, size_t n) {
  uint64_t c = crc;
  while (n > 0 && ((uintptr_t) p & 7) != 0) { c = _mm_crc32_u8((uint32_t) c, *p++); n--; }
  while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = _mm_crc32_u64(c, w); p += 8; n -= 8; }
  while (n-- > 0) c = _mm_crc32_u8((uint32_t) c, *p++);
  return (uint32_t) c;
}
#endif

static const uint8_t ZEROS[PAGE];

static uint32_t crc_raw (uint32_t crc, const uint8_t *p, size_t n, int hw) {
#if defined(__x86_64__)
  if (hw) return crc_hw(crc, p, n);
#endif
  return crc_portable(crc, p, n);
}

#if defined(__x86_64__)
// Three whole pages at once: the crc32 instruction takes 3 cycles to give its result and can
// start one every cycle, so one page's chain of dependent steps uses a third of it; three
// independent chains fill it (the crc of a 1 MiB read: ~0.15 ms on one chain — the 0.83 of a
// sequential read's speed with checksums on, bench/ab-cost.ts — against a third of that).
__attribute__((target("sse4.2")))
static void crc_hw_3pages (const uint8_t *p, uint32_t out[3]) {
  uint64_t c0 = 0, c1 = 0, c2 = 0;
  for (size_t i = 0; i < PAGE; i += 8) {
    uint64_t w0, w1, w2;
    memcpy(&w0, p + i, 8); memcpy(&w1, p + PAGE + i, 8); memcpy(&w2, p + 2 * PAGE + i, 8);
    c0 = _mm_crc32_u64(c0, w0); c1 = _mm_crc32_u64(c1, w1); c2 = _mm_crc32_u64(c2, w2);
  }
  out[0] = (uint32_t) c0; out[1] = (uint32_t) c1; out[2] = (uint32_t) c2;
}
#endif

static void put_sum (uint8_t *sums, size_t i, uint32_t c) {
  sums[4 * i] = c & 0xff; sums[4 * i + 1] = (c >> 8) & 0xff; sums[4 * i + 2] = (c >> 16) & 0xff; sums[4 * i + 3] = c >> 24;
}

// Page values of buf[0, len) into sums; with expected, the first differing page (else -1).
static int64_t page_sums (const uint8_t *buf, size_t len, uint8_t *sums, const uint8_t *expected, int hw) {
  size_t pages = (len + PAGE - 1) / PAGE;
  size_t i = 0;
#if defined(__x86_64__)
  if (hw) {
    for (; i + 3 <= len / PAGE; i += 3) {
      uint32_t c[3];
      crc_hw_3pages(buf + i * PAGE, c);
      put_sum(sums, i, c[0]); put_sum(sums, i + 1, c[1]); put_sum(sums, i + 2, c[2]);
    }
  }
#endif
  for (; i < pages; i++) {
    size_t n = len - i * PAGE < PAGE ? len - i * PAGE : PAGE;
    uint32_t c = crc_raw(0, buf + i * PAGE, n, hw);
    if (n < PAGE) c = crc_raw(c, ZEROS, PAGE - n, hw);  // a partial page is summed zero-padded
    put_sum(sums, i, c);
  }
  if (expected != NULL) {
    for (size_t k = 0; k < pages; k++) if (memcmp(sums + 4 * k, expected + 4 * k, 4) != 0) return (int64_t) k;
  }
  return -1;
}

// --- N-API ------------------------------------------------------------------------------------

typedef struct {
  int fd;
  int64_t position;
  uint8_t *buf; size_t len;
  uint8_t *sums; size_t sums_len;
  uint8_t *expected; size_t expected_len;
  int sum_fd;           // -1: expected (if any) is given, not read
  int64_t sum_position;
  napi_ref refs[3];
  napi_deferred deferred;
  napi_async_work work;
  int64_t bytes_read, bad_page;
  int err;
} job_t;

static void run (job_t *j) {
  size_t got = 0;
  while (got < j->len) {
    ssize_t n = pread(j->fd, j->buf + got, j->len - got, (off_t) (j->position + (int64_t) got));
    if (n < 0) { if (errno == EINTR) continue; j->err = errno; return; }
    if (n == 0) break;
    got += (size_t) n;
  }
  if (got < j->len) memset(j->buf + got, 0, j->len - got);  // past the end of the file: zeros
  j->bytes_read = (int64_t) got;
  if (j->sum_fd >= 0) {
    size_t need = 4 * ((j->len + PAGE - 1) / PAGE), have = 0;
    while (have < need) {
      ssize_t n = pread(j->sum_fd, j->expected + have, need - have, (off_t) (j->sum_position + (int64_t) have));
      if (n < 0) { if (errno == EINTR) continue; j->err = errno; return; }
      if (n == 0) break;
      have += (size_t) n;
    }
    if (have < need) memset(j->expected + have, 0, need - have);  // past the sidecar's end: 0
  }
  j->bad_page = page_sums(j->buf, j->len, j->sums, j->expected, use_hw);
}

static const char *errno_code (int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case EIO: return "EIO";
    case EINVAL: return "EINVAL";
    case EISDIR: return "EISDIR";
    case EFAULT: return "EFAULT";
    case EOVERFLOW: return "EOVERFLOW";
    case ENXIO: return "ENXIO";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EFBIG: return "EFBIG";
    default: return "EIO";
  }
}

static napi_value make_error (napi_env env, const char *op, int err) {
  napi_value code, msg, error, num;
  char text[256];
  snprintf(text, sizeof text, "%s: %s: %s", errno_code(err), op, strerror(err));
  napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  return error;
}

static napi_value make_result (napi_env env, job_t *j) {
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int64(env, j->bytes_read, &v);
  napi_set_named_property(env, out, "bytesRead", v);
  napi_create_int64(env, j->bad_page, &v);
  napi_set_named_property(env, out, "badPage", v);
  return out;
}

static int get_bytes (napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  void *p;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &off) != napi_ok || type != napi_uint8_array) return 0;
  *data = p;
  return 1;
}

static int is_nullish (napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

#define USAGE "(fd, buf, position, sums, expected|null[, sumFd, sumPosition]): fd an integer >= 0, buf a Uint8Array, position an integer >= 0, sums a Uint8Array of >= 4 bytes per 4 KiB page of buf, expected null or as sums (not null with sumFd), sumFd an integer >= 0, sumPosition an integer >= 0"

// Fills j from (fd, buf, position, sums, expected); 0 (a TypeError thrown) when they are wrong.
static int parse (napi_env env, napi_callback_info info, job_t *j, napi_value argv[7], const char *name) {
  size_t argc = 7;
  double pos, sum_pos = 0;
  char msg[400];
  memset(j, 0, sizeof *j);
  size_t exp_len = 0;
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 4 &&
    napi_get_value_int32(env, argv[0], &j->fd) == napi_ok && j->fd >= 0 &&
    get_bytes(env, argv[1], &j->buf, &j->len) &&
    napi_get_value_double(env, argv[2], &pos) == napi_ok && pos >= 0 && pos <= 9007199254740991.0 && pos == (double) (int64_t) pos &&
    get_bytes(env, argv[3], &j->sums, &j->sums_len) && j->sums_len >= 4 * ((j->len + PAGE - 1) / PAGE);
  if (ok && argc >= 5 && !is_nullish(env, argv[4])) {
    ok = get_bytes(env, argv[4], &j->expected, &exp_len) && exp_len >= 4 * ((j->len + PAGE - 1) / PAGE);
  }
  j->sum_fd = -1;
  if (ok && argc >= 6 && !is_nullish(env, argv[5])) {
    ok = j->expected != NULL && napi_get_value_int32(env, argv[5], &j->sum_fd) == napi_ok && j->sum_fd >= 0 &&
      argc >= 7 && napi_get_value_double(env, argv[6], &sum_pos) == napi_ok && sum_pos >= 0 && sum_pos <= 9007199254740991.0 && sum_pos == (double) (int64_t) sum_pos;
  }
  if (!ok) {
    snprintf(msg, sizeof msg, "%s" USAGE, name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return 0;
  }
  j->position = (int64_t) pos;
  j->sum_position = (int64_t) sum_pos;
  j->expected_len = exp_len;
  return 1;
}

static void work_execute (napi_env env, void *data) { (void) env; run((job_t *) data); }

static void work_complete (napi_env env, napi_status status, void *data) {
  job_t *j = data;
  if (status != napi_ok) j->err = j->err != 0 ? j->err : EIO;  // cancelled: never expected
  if (j->err != 0) napi_reject_deferred(env, j->deferred, make_error(env, "pread", j->err));
  else napi_resolve_deferred(env, j->deferred, make_result(env, j));
  for (int i = 0; i < 3; i++) if (j->refs[i] != NULL) napi_delete_reference(env, j->refs[i]);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value pread_sums (napi_env env, napi_callback_info info) {
  napi_value argv[7], promise, name;
  job_t *j = malloc(sizeof *j);
  if (j == NULL) { napi_throw_error(env, "ENOMEM", "preadSums: out of memory"); return NULL; }
  if (!parse(env, info, j, argv, "preadSums")) { free(j); return NULL; }
  // The buffers stay alive (and where they are) until the work item is done with them.
  napi_create_reference(env, argv[1], 1, &j->refs[0]);
  napi_create_reference(env, argv[3], 1, &j->refs[1]);
  if (j->expected != NULL) napi_create_reference(env, argv[4], 1, &j->refs[2]);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "ukai:preadSums", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, work_execute, work_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static napi_value pread_sums_sync (napi_env env, napi_callback_info info) {
  napi_value argv[7];
  job_t j;
  if (!parse(env, info, &j, argv, "preadSumsSync")) return NULL;
  run(&j);
  if (j.err != 0) { napi_throw(env, make_error(env, "pread", j.err)); return NULL; }
  return make_result(env, &j);
}

static napi_value page_sums_sync (napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint8_t *buf, *sums;
  size_t len, sums_len;
  bool portable = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      !get_bytes(env, argv[0], &buf, &len) || !get_bytes(env, argv[1], &sums, &sums_len) ||
      sums_len < 4 * ((len + PAGE - 1) / PAGE) ||
      (argc >= 3 && napi_get_value_bool(env, argv[2], &portable) != napi_ok)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pageSumsSync(buf, sums, portable?): Uint8Arrays, sums >= 4 bytes per 4 KiB page of buf");
    return NULL;
  }
  page_sums(buf, len, sums, NULL, use_hw && !portable);
  return NULL;
}

// Writes all of buf[0, len) at pos (EINTR and short writes retried): 0, or the errno.
static int pwrite_all (int fd, const uint8_t *buf, size_t len, int64_t pos) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t) (pos + (int64_t) done));
    if (n < 0) { if (errno == EINTR) continue; return errno; }
    if (n == 0) return EIO;  // never for a regular file; not an endless loop either
    done += (size_t) n;
  }
  return 0;
}

// Throws make_error(what, err) with .op = op (which of the two writes failed); returns NULL.
static napi_value throw_with_op (napi_env env, const char *what, const char *op, int err) {
  napi_value e = make_error(env, what, err), op_value;
  napi_create_string_utf8(env, op, NAPI_AUTO_LENGTH, &op_value);
  napi_set_named_property(env, e, "op", op_value);
  napi_throw(env, e);
  return NULL;
}

static napi_value pwrite_sums_sync (napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  int fd, sum_fd;
  uint8_t *buf, *sums;
  size_t len, sums_len;
  double pos, sum_pos;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      !get_bytes(env, argv[1], &buf, &len) || len % PAGE != 0 ||
      napi_get_value_double(env, argv[2], &pos) != napi_ok || pos < 0 || pos > 9007199254740991.0 || pos != (double) (int64_t) pos || ((int64_t) pos) % PAGE != 0 ||
      !get_bytes(env, argv[3], &sums, &sums_len) || sums_len < 4 * (len / PAGE) ||
      napi_get_value_int32(env, argv[4], &sum_fd) != napi_ok || sum_fd < 0 ||
      napi_get_value_double(env, argv[5], &sum_pos) != napi_ok || sum_pos < 0 || sum_pos > 9007199254740991.0 || sum_pos != (double) (int64_t) sum_pos) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pwriteSumsSync(fd, buf, position, sums, sumFd, sumPosition): fd and sumFd integers >= 0, buf a Uint8Array of whole 4 KiB pages, position a multiple of 4096, sums a Uint8Array of >= 4 bytes per page of buf, sumPosition an integer >= 0");
    return NULL;
  }
  int err = pwrite_all(fd, buf, len, (int64_t) pos);
  if (err != 0) return throw_with_op(env, "pwrite", "pwrite", err);
  page_sums(buf, len, sums, NULL, use_hw);
  err = pwrite_all(sum_fd, sums, 4 * (len / PAGE), (int64_t) sum_pos);
  if (err != 0) return throw_with_op(env, "pwrite checksums", "pwrite-sums", err);
  return NULL;
}

static napi_value link_count_sync (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int fd;
  struct stat st;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "linkCountSync(fd): fd an integer >= 0");
    return NULL;
  }
  if (fstat(fd, &st) != 0) { napi_throw(env, make_error(env, "fstat", errno)); return NULL; }
  napi_create_double(env, (double) st.st_nlink, &out);
  return out;
}

// --- fdatasyncAll ---------------------------------------------------------------------------

typedef struct {
  int32_t *fds; size_t n;
  int32_t *errs;       // malloc'ed: the answer's bytes, copied out on completion
  napi_ref ref;        // keeps fds (the caller's Int32Array) alive and in place
  napi_deferred deferred;
  napi_async_work work;
} sync_job_t;

static void sync_execute (napi_env env, void *data) {
  (void) env;
  sync_job_t *j = data;
  for (size_t i = 0; i < j->n; i++) {
    int r;
    do { r = fdatasync(j->fds[i]); } while (r != 0 && errno == EINTR);
    j->errs[i] = r == 0 ? 0 : errno;
  }
}

static void sync_complete (napi_env env, napi_status status, void *data) {
  sync_job_t *j = data;
  napi_value ab, out;
  void *p;
  if (status != napi_ok) for (size_t i = 0; i < j->n; i++) j->errs[i] = j->errs[i] != 0 ? j->errs[i] : EIO;  // cancelled: never expected
  napi_create_arraybuffer(env, j->n * sizeof(int32_t), &p, &ab);
  if (j->n > 0) memcpy(p, j->errs, j->n * sizeof(int32_t));
  napi_create_typedarray(env, napi_int32_array, j->n, ab, 0, &out);
  napi_resolve_deferred(env, j->deferred, out);
  napi_delete_reference(env, j->ref);
  napi_delete_async_work(env, j->work);
  free(j->errs);
  free(j);
}

static napi_value fdatasync_all (napi_env env, napi_callback_info info) {
  size_t argc = 1, len, off;
  napi_value argv[1], promise, name, ab;
  bool is = false;
  napi_typedarray_type type;
  void *p;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_is_typedarray(env, argv[0], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[0], &type, &len, &p, &ab, &off) != napi_ok || type != napi_int32_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fdatasyncAll(fds): fds an Int32Array of file descriptors");
    return NULL;
  }
  for (size_t i = 0; i < len; i++) {
    if (((int32_t *) p)[i] < 0) { napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fdatasyncAll(fds): a negative file descriptor"); return NULL; }
  }
  sync_job_t *j = calloc(1, sizeof *j);
  if (j != NULL) j->errs = calloc(len > 0 ? len : 1, sizeof(int32_t));
  if (j == NULL || j->errs == NULL) { if (j != NULL) free(j); napi_throw_error(env, "ENOMEM", "fdatasyncAll: out of memory"); return NULL; }
  j->fds = p; j->n = len;
  napi_create_reference(env, argv[0], 1, &j->ref);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "ukai:fdatasyncAll", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, sync_execute, sync_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

NAPI_MODULE_INIT () {
  napi_value fn, hw;
  init_tables();
#if defined(__x86_64__)
  __builtin_cpu_init();
  use_hw = __builtin_cpu_supports("sse4.2");
#endif
  napi_create_function(env, "preadSums", NAPI_AUTO_LENGTH, pread_sums, NULL, &fn);
  napi_set_named_property(env, exports, "preadSums", fn);
  napi_create_function(env, "preadSumsSync", NAPI_AUTO_LENGTH, pread_sums_sync, NULL, &fn);
  napi_set_named_property(env, exports, "preadSumsSync", fn);
  napi_create_function(env, "pageSumsSync", NAPI_AUTO_LENGTH, page_sums_sync, NULL, &fn);
  napi_set_named_property(env, exports, "pageSumsSync", fn);
  napi_create_function(env, "pwriteSumsSync", NAPI_AUTO_LENGTH, pwrite_sums_sync, NULL, &fn);
  napi_set_named_property(env, exports, "pwriteSumsSync", fn);
  napi_create_function(env, "fdatasyncAll", NAPI_AUTO_LENGTH, fdatasync_all, NULL, &fn);
  napi_set_named_property(env, exports, "fdatasyncAll", fn);
  napi_create_function(env, "linkCountSync", NAPI_AUTO_LENGTH, link_count_sync, NULL, &fn);
  napi_set_named_property(env, exports, "linkCountSync", fn);
  napi_get_boolean(env, use_hw != 0, &hw);
  napi_set_named_property(env, exports, "hardware", hw);
  return exports;
}
