/* certgen.c - making certificates for `odo cert`: a CA and node
 * certificates with Ed25519 keys, through the OpenSSL C API. */
#include "identity.h"

void odo_certgen_open(lua_State *L) {
  (void)L;
}
