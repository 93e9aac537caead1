/*
 * The original destination of a connection redirected by iptables/nft REDIRECT (transparent capture,
 * as istio-proxy does): getsockopt(SO_ORIGINAL_DST) for IPv4 (and v4-mapped peers on a dual-stack
 * socket), IP6T_SO_ORIGINAL_DST for IPv6. Node has no API for it; this is the whole native part.
 *
 *   getOriginalDst(fd: number, ipv6: boolean) -> { address: string, port: number, family: 4 | 6 }
 *   throws an Error with `errno` set when the kernel has no original destination for the socket.
 */
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

static napi_value fail(napi_env env, const char *what, int err) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s (errno %d)", what, strerror(err), err);
  napi_value msg, error, code;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &code);
  napi_set_named_property(env, error, "errno", code);
  napi_throw(env, error);
  return NULL;
}

static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "getOriginalDst(fd, ipv6)");
    return NULL;
  }
  int32_t fd;
  bool ipv6;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &ipv6) != napi_ok) {
    napi_throw_type_error(env, NULL, "getOriginalDst(fd: number, ipv6: boolean)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  /* The level follows the peer: IPv4 (or v4-mapped) is SOL_IP, IPv6 is SOL_IPV6. */
  int rc = ipv6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
                : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) return fail(env, "getsockopt(SO_ORIGINAL_DST)", errno);
  char text[INET6_ADDRSTRLEN];
  int port, family;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    port = ntohs(a->sin_port);
    family = 4;
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    port = ntohs(a->sin6_port);
    family = 6;
  } else {
    return fail(env, "getsockopt(SO_ORIGINAL_DST): unexpected address family", EAFNOSUPPORT);
  }
  napi_value result, v;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, result, "address", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, result, "port", v);
  napi_create_int32(env, family, &v);
  napi_set_named_property(env, result, "family", v);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "getOriginalDst", NAPI_AUTO_LENGTH, get_original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "getOriginalDst", fn);
  return exports;
}
