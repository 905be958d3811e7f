/* config.h - what libmdnsd's installed headers (1035.h, mdnsd.h) expect
 * from the build that includes them: they #include "config.h", a file
 * libmdnsd 0.12 does not install. This directory is on the include path
 * of csrc/mdns*.c only for that. */
#ifndef ODO_MDNSD_SHIM_CONFIG_H
#define ODO_MDNSD_SHIM_CONFIG_H
#define HAVE_NETINET_IN_H 1
#define HAVE_SYS_SOCKET_H 1
#endif
