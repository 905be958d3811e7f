# odo-journal build. `make demo` and `make test` work on a fresh Debian 12
# machine: both install what is missing first (make deps).

LUA        ?= lua5.4
LUA_INC    ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN        = -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS   += $(LUA_INC)
LIBS        = -lleveldb -lssl -lcrypto -pthread
LIBS       += -lcares
BUSTED      = busted --lua=$(LUA)

# Compiler lines are hidden (errors still show); `make V=1` shows them.
V          ?= 0
Q           = $(if $(filter 1,$(V)),,@)

SRC   = $(sort $(wildcard csrc/*.c))
OBJ   = $(SRC:csrc/%.c=build/obj/%.o)
AOBJ  = $(SRC:csrc/%.c=build/asan-obj/%.o)
CORE  = build/odo/core.so
ACORE = build/asan/odo/core.so
ASAN  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps test test-build test-asan test-valgrind lint demo bench bench-store bench-local bench-transport bench-sync fuzz fuzz-smoke docs clean check-compat

all: $(CORE)

deps:
	@scripts/install-deps

$(CORE): $(OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(CC) -shared -o $@ $(OBJ) $(LIBS)

build/obj/%.o: csrc/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -fPIC -MMD -MP -c $< -o $@

$(ACORE): $(AOBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(ASAN) -o $@ $(AOBJ) $(LIBS)

build/asan-obj/%.o: csrc/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g $(ASAN) $(WARN) -fPIC -MMD -MP -c $< -o $@

-include $(OBJ:.o=.d) $(AOBJ:.o=.d)

TOOLS = build/tools/ldb build/tools/powercut.so

build/tools/%: spec/tools/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) -O2 $(WARN) -o $@ $< $(LIBS)

# The power-cut shim (spec/power_loss_e2e_spec.lua), preloaded into a writer.
build/tools/powercut.so: spec/tools/powercut.c
	@mkdir -p $(dir $@)
	$(CC) -O2 $(WARN) -fPIC -shared -o $@ $< -ldl

# What the suite needs: .ci/run makes this, then runs scripts/run-specs
# itself, so that the summary is the last line it prints.
test-build: deps all $(TOOLS)

# The whole suite (scripts/run-specs): busted's TAP output per spec file,
# the skipped tests and "# N skipped", then "N passed, N failed" as the
# script's last line. On a failure make exits non-zero and adds its own
# "make: *** [Makefile:NN: test] Error 1" after it.
test: test-build
	@scripts/run-specs

# The suite against the core built with AddressSanitizer, UBSan and leak
# checks. The interpreter is not instrumented, so the runtimes are
# preloaded. Leaks are checked at the end of each spec file while the
# module is loaded (spec/asan_helper.lua), not at exit, where LeakSanitizer
# would lose track of an unloaded module's pointers and flag child tools.
test-asan: deps $(ACORE) $(TOOLS)
	@echo "sanitizer run: $(words $(ASAN_SPECS)) spec files" 
	@ODO_CPATH=build/asan/?.so ODO_BUSTED_HELPER=spec/asan_helper.lua \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:leak_check_at_exit=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ODO_SLOW=4 scripts/run-specs $(ASAN_SPECS)

# The sanitizer run covers every spec but the multi-process end-to-end
# ones (the same C paths, many processes: minutes under ASan).
ASAN_SPECS ?= $(or $(SPECS),$(filter-out %_e2e_spec.lua,$(sort $(wildcard spec/*_spec.lua))))

# The C-level specs under valgrind's memcheck: no error and no definite
# leak (LevelDB's and OpenSSL's process-lifetime allocations are "still
# reachable" or "possibly lost", not reported). The process specs run
# 20-50 times slower under it and are left to the sanitizer run.
VALGRIND_SPECS ?= spec/store_spec.lua spec/session_spec.lua spec/snapshot_builder_spec.lua \
  spec/storage_vectors_spec.lua spec/protocol_vectors_spec.lua spec/sync_vectors_spec.lua spec/sync_spec.lua
test-valgrind: deps all $(TOOLS)
	@echo "valgrind run: $(words $(VALGRIND_SPECS)) spec files"
	@ODO_WRAP="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite --suppressions=spec/valgrind.supp" ODO_SLOW=20 \
	  scripts/run-specs $(VALGRIND_SPECS)

lint: $(OBJ)
	luacheck lua spec examples bench $(wildcard bin/odo)
	scripts/check-layers build/obj
	scripts/check-private

demo: deps all
	@$(LUA) examples/demo.lua
	@examples/demo-cli.sh

bench: bench-store bench-local bench-transport bench-sync

bench-store: deps all build/bench/store_baseline
	$(LUA) bench/store.lua build/bench/store_baseline

bench-local: deps all build/bench/store_baseline
	$(LUA) bench/local.lua build/bench/store_baseline

# What serving metrics costs: a scrape of 10,000 streams, and bench/sync's
# catch-up with both nodes scraped every second against without.
.PHONY: bench-metrics
bench-metrics: deps all
	$(LUA) bench/metrics.lua

bench-transport: deps all build/bench/tls_pump
	$(LUA) bench/transport.lua build/bench/tls_pump

bench-sync: deps all build/bench/sync_pipe
	$(LUA) bench/sync.lua build/bench/sync_pipe

# The swarm at scale (bench/scale.lua): N odo run processes from one seed
# (N = 10, 30, 100; 200 with ODO_LONG=1; ODO_SCALE_N=...), then 100 and
# 1,000 simulated nodes in one process (ODO_SCALE_SIM); ODO_SCALE_PART=a|b.
.PHONY: bench-scale
bench-scale: deps all
	ulimit -n 65536 2>/dev/null || true; $(LUA) bench/scale.lua

# odo tail and odo append through a running node against the store read
# directly (bench/control.lua; ODO_BENCH_EVENTS, default 500000).
.PHONY: bench-control
bench-control: deps all
	$(LUA) bench/control.lua

# odo against Redis Streams, NATS JetStream and Hypercore doing the same
# work in one invocation (bench/peers.lua, method in bench/README.md).
# The peers' servers, python3-redis and the benchmark-only npm packages
# (into build/bench-npm, never used by odo) are installed when missing.
# ODO_BENCH_EVENTS (default 1000000) shrinks it for a quick check.
.PHONY: bench-peers
bench-peers: deps all
	@bench/peers/install build/bench-npm
	$(LUA) bench/peers.lua

# Where a replica's catch-up spends its CPU: bench-sync's catch-up with
# the replica under `perf record -g` (linux-perf); prints the top symbols.
.PHONY: bench-profile-sync
bench-profile-sync: deps all
	$(LUA) bench/profile_sync.lua

FUZZ_SECONDS ?= 60
fuzz: deps
	fuzz/run $(FUZZ_SECONDS)

fuzz-smoke: deps
	fuzz/run 15

build/bench/%: bench/%.c bench/common.h
	@mkdir -p $(dir $@)
	$(CC) -O2 $(WARN) -o $@ $< $(LIBS)

# Multicast DNS: libmdnsd (BSD, sans-I/O; docs/MDNS.md says why), linked
# into the core. Debian's libmdnsd-dev ships no .pc file: pkg-config when
# there is one. Its headers include a "config.h" they do not install:
# csrc/mdnsd-shim has it.
MDNSD_INC  := -Icsrc/mdnsd-shim $(shell pkg-config --cflags libmdnsd 2>/dev/null)
MDNSD_LIBS := $(shell pkg-config --libs libmdnsd 2>/dev/null || echo -lmdnsd)
CPPFLAGS   += $(MDNSD_INC)
LIBS       += $(MDNSD_LIBS)

# Any LDoc warning fails the target.
docs: deps
	ldoc --fatalwarnings .

# Lua 5.1 (LuaJIT's API), which the rockspec promises: compiles the core
# against the 5.1 headers (the C stays portable through csrc/compat.h),
# builds it as build/lua5.1/odo/core.so, then runs scripts/compat-smoke.lua
# under lua5.1 with that core and lua/ first on the paths (the Lua side is
# plain 5.1 through lua/odo/compat.lua). Silent but for the smoke's summary.
check-compat: deps build/lua5.1/odo/core.so
	@lua5.1 scripts/compat-smoke.lua

build/lua5.1/odo/core.so: $(SRC) $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	@$(CC) -I/usr/include/lua5.1 $(MDNSD_INC) $(CFLAGS) $(WARN) -fPIC -shared -o $@ $(SRC) $(LIBS)

# LuaJIT 2.1 (luajit2's headers, as OpenResty and LÖVE run it): the core
# built against them as build/luajit/odo/core.so, and the same compat smoke
# run under `luajit` with that core.
LUAJIT_INC ?= -I/usr/include/luajit-2.1
.PHONY: luajit check-luajit bench-embed

luajit: build/luajit/odo/core.so

check-luajit: deps build/luajit/odo/core.so
	@luajit scripts/compat-smoke.lua

build/luajit/odo/core.so: $(SRC) $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	@$(CC) $(LUAJIT_INC) $(MDNSD_INC) $(CFLAGS) $(WARN) -fPIC -shared -o $@ $(SRC) $(LIBS)

# A host loop stepping a node once per 16 ms frame while it appends and
# catches up a peer's stream: the steps' p99 and max, under Lua 5.4 and
# LuaJIT (bench/embed.lua).
bench-embed: deps all build/luajit/odo/core.so
	$(LUA) bench/embed.lua
	luajit bench/embed.lua

# spec/love_e2e_spec.lua and openresty_e2e_spec.lua need the LuaJIT core.
test-build: build/luajit/odo/core.so

# csrc/*.o and odo/ are what a `luarocks make` in the checkout leaves
# (rockspec/check builds in a copy); ./odo/core.so would shadow the core
# under test through busted's ./?.so.
clean:
	rm -rf build luarocks-tree *.rock odo
	rm -f csrc/*.o

# ---- odo.dht: DHT discovery over OpenDHT (GPL-3.0+), a module of its own ----
# Never linked into odo.core (MIT). Built only when OpenDHT's headers are
# installed (`make deps` installs libopendht-dev); `make dht` builds it,
# `make`, test-build and test-asan build it when they can. README "Discovery
# through a DHT" says what loading it means for a program's licence.
DHT_HEADERS  = $(wildcard /usr/include/opendht/dhtrunner.h)
CXX         ?= c++
DHT_CXXWARN  = -Wall -Wextra -Werror -Wshadow -Wmissing-declarations -Wno-unused-parameter
DHT_FLAGS    = -std=c++17 $(LUA_INC) $(shell pkg-config --cflags opendht 2>/dev/null)
DHT_LIBS     = $(shell pkg-config --libs opendht 2>/dev/null || echo -lopendht) -pthread
DHT          = build/odo/dht.so
ADHT         = build/asan/odo/dht.so

.PHONY: dht bench-dht

dht: $(DHT)

$(DHT): csrc-dht/dht.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(DHT_FLAGS) $(CFLAGS) $(DHT_CXXWARN) -fPIC -shared -o $@ $< $(DHT_LIBS)

$(ADHT): csrc-dht/dht.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(DHT_FLAGS) -O1 -g $(ASAN) $(DHT_CXXWARN) -fPIC -shared -o $@ $< $(DHT_LIBS)

all: $(if $(DHT_HEADERS),$(DHT))
test-build: $(if $(DHT_HEADERS),$(DHT))
test-asan: $(if $(DHT_HEADERS),$(ADHT))
# OpenDHT, GnuTLS and msgpack are not instrumented and keep their own
# threads and caches: spec/dht.supp lists their frames (ours still fail).
test-asan: export LSAN_OPTIONS = suppressions=$(CURDIR)/spec/dht.supp:print_suppressions=0

bench-dht: deps all dht
	$(LUA) bench/dht.lua
