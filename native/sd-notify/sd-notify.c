// sd_notify(3) from libsystemd for the daemons (Type=notify units): Node cannot send on the
// AF_UNIX datagram socket systemd names in NOTIFY_SOCKET (its dgram module speaks UDP only), and
// `systemd-notify` run as a child is unreliable (systemd may drop a message whose sender exited
// before it was read). libsystemd's own sd_notify handles abstract sockets and credentials.
//
//   notify(state) -> number: > 0 sent, 0 no NOTIFY_SOCKET (not under systemd); throws on error
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include <systemd/sd-daemon.h>

static napi_value notify (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char state[1024];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_string_utf8(env, argv[0], state, sizeof state, &len) != napi_ok || len == 0 || len >= sizeof state - 1) {
    napi_throw_type_error(env, "EINVAL", "notify(state): a non-empty string under 1 KiB");
    return NULL;
  }
  // unset_environment = 0: children (none today) and later calls keep NOTIFY_SOCKET.
  int r = sd_notify(0, state);
  if (r < 0) {
    napi_throw_error(env, "ENOTIFY", strerror(-r));
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, r, &out);
  return out;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "notify", NAPI_AUTO_LENGTH, notify, NULL, &fn);
  napi_set_named_property(env, exports, "notify", fn);
  return exports;
}
