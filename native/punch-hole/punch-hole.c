// fallocate(2) for the storage node, which Node's fs does not offer: punch a hole so a discarded
// range of a block version file reads as zeros and its space goes back to the filesystem.
//
//   punchHole(fd, offset, length) -> undefined; throws an Error with .code = 'EOPNOTSUPP' etc.
//
// Synchronous: punching is a metadata operation (no data is written), like the small pread and
// pwrite calls the block store already makes on the event loop.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <node_api.h>

static napi_value throw_errno (napi_env env, int err) {
  napi_value code, msg, error;
  const char *name = err == EOPNOTSUPP ? "EOPNOTSUPP" : err == ENOSPC ? "ENOSPC" : err == EBADF ? "EBADF" : err == EINVAL ? "EINVAL" : err == ENOSYS ? "ENOSYS" : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_throw(env, error);
  return NULL;
}

static napi_value punch_hole (napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t offset, length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || fd < 0 || offset < 0 || length <= 0) {
    napi_throw_type_error(env, "EINVAL", "punchHole(fd, offset, length): non-negative integers, length > 0");
    return NULL;
  }
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) length) != 0) return throw_errno(env, errno);
  return NULL;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "punchHole", NAPI_AUTO_LENGTH, punch_hole, NULL, &fn);
  napi_set_named_property(env, exports, "punchHole", fn);
  return exports;
}
