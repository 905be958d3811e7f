/* session_fuzz.c - libFuzzer target for a session's receive path, TLS
 * included (csrc/session.c over csrc/tls.c and csrc/wire.c).
 *
 * Once per process: a Lua state with odo.core, a CA and two node
 * certificates (Ed25519) in a temporary folder, and a TLS context for each
 * node. Per input, byte 0 selects and the rest is sent:
 *   bit 0      1: the client sends no HELLO (the server is still
 *              introducing, so the input meets the before-HELLO rules);
 *              0: the server has the client's real HELLO (session open)
 *   bits 1-7   k: the rest is written in pieces of k bytes, the peers
 *              exchanging what they have after each (0: in one piece)
 * A fresh raw client (odo.core's tls_pipe, the bare TLS channel under a
 * session) and a server session complete their handshake in memory, the
 * client writes the rest raw into its TLS stream, ciphertext moves both
 * ways for a few rounds, then the server hears end of file.
 *
 * A bug found is a crash: any Lua error (the core raising, or an event
 * list that is not well formed) aborts with its message.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_odo_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Makes the certificates and contexts; returns the function run per
 * input. */
static const char setup_lua[] =
    "local core, dir = require 'odo.core', ...\n"
    "local ca, cakey = dir .. '/ca.pem', dir .. '/ca.key'\n"
    "assert(core.cert_make_ca { cert = ca, key = cakey, days = 2 })\n"
    "local function ctx(n)\n"
    "  local o = { ca = ca, cert = dir .. '/' .. n .. '.pem', key = dir .. '/' .. n .. '.key' }\n"
    "  assert(core.cert_make_node { ca_cert = ca, ca_key = cakey, cert = o.cert,\n"
    "    key = o.key, name = n, days = 2 })\n"
    "  return assert(core.tls_context(o))\n"
    "end\n"
    "local cctx, sctx = ctx('client'), ctx('server')\n"
    /* the fields each event carries, by kind */
    "local SHAPE = {\n"
    "  handshake = { peer = 'string' },\n"
    "  hello = { id = 'string', port = 'integer', features = 'integer',\n"
    "    version = 'integer', instance = 'integer' },\n"
    "  pong = { rtt = 'number' },\n"
    "  message = { type = 'integer', payload = 'string' },\n"
    "  closed = { code = 'integer', name = 'string', reason = 'string', by = 'string' },\n"
    "}\n"
    "local function check(evs, seen, who)\n"
    "  if type(evs) ~= 'table' then error(who .. ': events are a ' .. type(evs)) end\n"
    "  for k in pairs(evs) do\n"
    "    if math.type(k) ~= 'integer' or k < 1 or k > #evs then\n"
    "      error(who .. ': events are not a list') end\n"
    "  end\n"
    "  for _, e in ipairs(evs) do\n"
    "    local shape = type(e) == 'table' and SHAPE[e.event]\n"
    "    if not shape then error(who .. ': not an event: ' .. tostring(e.event or e)) end\n"
    "    for k, t in pairs(shape) do\n"
    "      local v = e[k]\n"
    "      if (math.type(v) or type(v)) ~= t and not (t == 'number' and type(v) == t) then\n"
    "        error(('%s: %s.%s is a %s'):format(who, e.event, k, type(v))) end\n"
    "    end\n"
    "    if seen.closed then error(who .. ': ' .. e.event .. ' after closed') end\n"
    "    seen[e.event] = (seen[e.event] or 0) + 1\n"
    "    if e.event ~= 'message' and seen[e.event] > 1 then\n"
    "      error(who .. ': a second ' .. e.event) end\n"
    "    if e.event == 'message' and (e.type < 0x10 or e.type > 0xff) then\n"
    "      error(who .. ': a message of type ' .. e.type) end\n"
    "    if e.event == 'closed' and e.by ~= 'us' and e.by ~= 'peer' then\n"
    "      error(who .. ': closed by ' .. e.by) end\n"
    "    if e.event == 'pong' and who == 'server' then error('server: an unasked pong') end\n"
    "  end\n"
    "end\n"
    "local function pump(c, s, ss, rounds)\n"
    "  for _ = 1, rounds do\n"
    "    local o, moved = c:output(), false\n"
    "    if o then check(s:feed(o), ss, 'server'); moved = true end\n"
    "    o = s:output()\n"
    "    if o then s:written(#o); c:feed(o); moved = true end\n"
    "    if not moved then return end\n"
    "  end\n"
    "end\n"
    "return function(input)\n"
    "  local sel, rest = input:byte(1) or 0, input:sub(2)\n"
    "  local c = assert(core.tls_pipe(cctx))\n"
    "  local s = core.session(sctx, { server = true, max_frame = 65536 })\n"
    "  local ss = {}\n"
    "  if sel % 2 == 0 then\n"
    "    c:write(core.wire_encode('hello', { id = cctx:id(), port = 1, features = 1 }))\n"
    "  end\n"
    "  pump(c, s, ss, 16)\n"
    "  if not ss.handshake or ss.closed or (sel % 2 == 0) ~= (ss.hello == 1) then\n"
    "    error('setup: the server is not ready: ' .. s:info().state) end\n"
    "  local piece = sel // 2\n"
    "  if piece == 0 then piece = math.max(#rest, 1) end\n"
    "  for i = 1, #rest, piece do\n"
    "    c:write(rest:sub(i, i + piece - 1))\n"
    "    pump(c, s, ss, 4)\n"
    "  end\n"
    "  check(s:eof(), ss, 'server')\n"
    "  if not ss.closed or s:info().state ~= 'closed' then\n"
    "    error('server: not closed after eof') end\n"
    "  check(s:eof(), ss, 'server')\n"
    "  c:release()\n"
    "  s:release()\n"
    "end\n";

static lua_State *L;
static int run_ref = LUA_NOREF;
static char tmpdir[] = "/tmp/odo-fuzz.XXXXXX";
static int have_tmpdir;

static void remove_tmpdir(void) {
  DIR *d;
  struct dirent *e;
  char path[sizeof tmpdir + 256];
  if (!have_tmpdir) return;
  have_tmpdir = 0;
  d = opendir(tmpdir);
  if (d != NULL) {
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(tmpdir);
}

static int traceback(lua_State *l) {
  luaL_traceback(l, l, luaL_tolstring(l, 1, NULL), 1);
  return 1;
}

/* Calls the function under nargs arguments on top; aborts on an error. */
static void call(int nargs, int nresults, const char *what) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, nresults, base) != LUA_OK) {
    fprintf(stderr, "session_fuzz: %s: %s\n", what, lua_tostring(L, -1));
    abort();
  }
  lua_remove(L, base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  if (mkdtemp(tmpdir) == NULL) {
    perror("session_fuzz: mkdtemp");
    abort();
  }
  have_tmpdir = 1;
  atexit(remove_tmpdir);
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "odo.core", luaopen_odo_core, 0);
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, setup_lua, sizeof setup_lua - 1, "=session_fuzz") != LUA_OK) {
    fprintf(stderr, "session_fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushstring(L, tmpdir);
  call(1, 1, "setup");
  run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* the contexts hold what they need: the files can go now (a crash
   * leaves through _Exit, past atexit) */
  remove_tmpdir();
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
  lua_pushlstring(L, (const char *)data, size);
  call(1, 0, "input");
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
